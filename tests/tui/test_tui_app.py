"""Pilot tests of the chat app on the tinycoder fixture."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

from markdown_it import MarkdownIt
from textual import events
from tui_helpers import fresh_tokens, make_app, ready, send, submit, until

from mtprun.tui.cli import LAST
from mtprun.tui.store import Message, ModelFile
from mtprun.tui.widgets.message import MessageView
from mtprun.tui.widgets.statusbar import StatsBar, position_bars


def run(coro) -> None:
    asyncio.run(coro)


def test_reply_streams_is_saved_and_stats_bar_matches(model, store, settings):
    async def scenario():
        app = make_app(store, model, settings)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await ready(pilot)
            batches = []
            original = MessageView.add_batch

            async def spy(view, batch):
                batches.append(batch)
                await original(view, batch)

            MessageView.add_batch = spy
            try:
                await send(pilot, "Write a function that adds two numbers.")
            finally:
                MessageView.add_batch = original
            reply = screen.conv.last_reply()
            # streamed: the view got every token, in batches, and shows the saved reply
            assert sum(len(b.token_ids) for b in batches) == len(reply.token_ids) == settings.n_predict
            view = screen.query(MessageView).last()
            assert view.msg.content == reply.content and not view.msg.stopped
            # the tokens are what a fresh context gives for this history
            history = [{"role": "user", "content": "Write a function that adds two numbers."}]
            assert reply.token_ids == fresh_tokens(model, history, settings)
            # saved: the user message and the reply, with token ids, origins, statistics and settings
            saved = store.messages(screen.conv.session_id)
            assert [m.role for m in saved] == ["user", "assistant"]
            assert saved[1].token_ids == reply.token_ids and saved[1].origins == reply.origins
            assert saved[1].stats == reply.stats and saved[1].settings["draft_depth"] == 2
            assert store.session(screen.conv.session_id).model == ModelFile.of(model.path)
            # the bar shows the runner's figures for this reply
            st = reply.stats
            fields = screen.query_one(StatsBar).fields
            assert fields["speed"] == f"{st['decode_tokens_per_s']:.1f} tok/s"
            assert fields["acceptance"] == f"accept {st['accepted'] / st['drafted']:.0%}"
            assert fields["mean"] == f"mean len {st['mean_accepted_length']:.2f}"
            assert fields["positions"] == "pos " + position_bars(st["accepted_per_position"])
            assert fields["context"] == f"ctx {st['prompt_tokens'] + settings.n_predict}/{model.n_ctx}"
            assert fields["depth"] == "draft 2" and fields["backend"] == "numpy"
            # and those figures are the runner's: the same drafting, run directly, gives the same counts
            from mtprun.runner.chat_template import render_chat

            prompt = render_chat(model.chat_template, history, True, enable_thinking=False)
            direct = model.generate(model.tokenize(prompt), n_predict=settings.n_predict, spec_draft_n_max=2,
                                    **settings.sampling())
            assert (st["drafted"], st["accepted"]) == (direct.stats.drafted, direct.stats.accepted)
            assert st["accepted_per_position"] == direct.stats.accepted_per_position
            # origins: per step, the accepted drafts then the target's token
            assert reply.origins.count("d") == st["accepted"] and len(reply.origins) == len(reply.token_ids)

    run(scenario())


def test_escape_stops_at_once_and_next_reply_is_a_fresh_contexts(model, store, settings, monkeypatch):
    # a slower machine while the first reply streams: each model step takes 100 ms more, so the
    # reply cannot end (400 tokens, or end-of-generation) before Esc arrives
    run_step = model._ctx.backend.run
    monkeypatch.setattr(model._ctx.backend, "run", lambda graph, inputs: (time.sleep(0.1), run_step(graph, inputs))[1])

    async def scenario():
        app = make_app(store, model, replace(settings, n_predict=400))
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await ready(pilot)
            await send(pilot, "Write a class for a stack.", wait=False)
            await until(pilot, lambda: screen._live_view is not None and len(screen._live_view.msg.token_ids) >= 4)
            # a keypress during generation is handled within 100 ms (plus slack for a loaded CI machine)
            t0 = time.perf_counter()
            app.post_message(events.Key("x", "x"))
            while screen.query_one("#input").text != "x":
                await asyncio.sleep(0.002)
            print(f"keypress handled in {1000 * (time.perf_counter() - t0):.0f} ms")
            assert time.perf_counter() - t0 < 0.2
            await pilot.press("backspace", "escape")
            await until(pilot, lambda: not screen.generating)
            stopped = screen.conv.last_reply()
            assert stopped.stopped and 4 <= len(stopped.token_ids) < 400
            assert store.messages(screen.conv.session_id)[-1].stopped
            monkeypatch.undo()
            screen.conv.settings.n_predict = 16
            await send(pilot, "Now pop.")
            history = [{"role": "user", "content": "Write a class for a stack."},
                       {"role": "assistant", "content": stopped.content},
                       {"role": "user", "content": "Now pop."}]
            assert screen.conv.last_reply().token_ids == fresh_tokens(model, history, settings)

    run(scenario())


def test_draft_depth_and_mtp_change_at_runtime(model, store, settings):
    async def scenario():
        app = make_app(store, model, settings)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await ready(pilot)
            await pilot.press("f4")  # depth + 1
            assert screen.conv.settings.depth == 3
            await send(pilot, "def add(a, b):")
            r3 = screen.conv.last_reply()
            assert r3.settings["draft_depth"] == 3 and len(r3.stats["accepted_per_position"]) == 3
            await pilot.press("f2")  # MTP off
            assert not screen.conv.settings.mtp and screen.query_one(StatsBar).fields["depth"] == "MTP off"
            await submit(pilot, "/regen")
            await until(pilot, lambda: not screen.generating and screen.conv.last_reply() is not r3)
            off = screen.conv.last_reply()
            assert off.stats["drafted"] == 0 and off.token_ids == r3.token_ids  # lossless
            await submit(pilot, "/depth 1")
            assert screen.conv.settings.mtp and screen.conv.settings.depth == 1
            assert [m.role for m in store.messages(screen.conv.session_id)] == ["user", "assistant"]
            assert store.session(screen.conv.session_id).settings["draft_depth"] == 1

    run(scenario())


def test_resume_continues_like_a_fresh_context(model, store, settings):
    async def first():
        async with make_app(store, model, settings).run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "Write hello world.")

    async def second():
        other = replace(settings, temp=0.7)  # the session's own settings win
        async with make_app(store, model, other, resume=LAST).run_test(size=(100, 30)) as pilot:
            screen = await ready(pilot)
            assert [v.msg.role for v in screen.query(MessageView)] == ["user", "assistant"]
            assert screen.conv.settings.temp == 0.0 and screen.conv.read_only is None
            await send(pilot, "In C.")
            history = [{"role": m.role, "content": m.content} for m in screen.conv.messages[:-1]]
            assert screen.conv.last_reply().token_ids == fresh_tokens(model, history, settings)
            return screen.conv.session_id

    run(first())
    sid = asyncio.run(second())
    assert [m.role for m in store.messages(sid)] == ["user", "assistant", "user", "assistant"]
    assert len(store.sessions()) == 1


def test_export_markdown_and_json(model, store, settings, tmp_path):
    async def scenario():
        async with make_app(store, model, settings).run_test(size=(100, 30)) as pilot:
            screen = await ready(pilot)
            await send(pilot, "Write a sort function.")
            await submit(pilot, f"/export md {tmp_path / 'out.md'}")
            await submit(pilot, f"/export json {tmp_path / 'out.json'}")
            return screen.conv

    conv = asyncio.run(scenario())
    doc = json.loads((tmp_path / "out.json").read_text())
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant"]
    assert doc["messages"][1]["token_ids"] == conv.messages[1].token_ids
    assert doc["messages"][1]["stats"]["accepted"] == conv.messages[1].stats["accepted"]
    assert doc["model"]["size"] == ModelFile.of(conv.engine.model.path).size
    tokens = MarkdownIt().parse((tmp_path / "out.md").read_text())
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h2"]
    assert headings == ["User", "Assistant"]
    paragraphs = [t.content for t in tokens if t.type == "inline"]
    assert "Write a sort function." in paragraphs


def test_thinking_is_collapsed_and_origins_colour_tokens(model, store, settings):
    async def scenario():
        async with make_app(store, model, replace(settings, thinking=True, n_predict=24)).run_test(size=(100, 30)) as pilot:
            screen = await ready(pilot)
            await send(pilot, "Write a function that reverses a list.")
            reply = screen.conv.last_reply()
            assert reply.content.startswith("<think>")
            from textual.widgets import Collapsible

            block = screen.query(MessageView).last().query_one(Collapsible)
            assert block.display and block.collapsed
            await pilot.press("ctrl+o")
            await pilot.pause()
            view = screen.query(MessageView).last().query_one(".origins")
            assert view.display
            drafted = [s for s in view.render().spans if "success" in str(s.style)]
            assert len(drafted) == reply.origins.count("d") > 0

    run(scenario())


def test_palette_commands_help_and_keymap(model, store, settings):
    async def scenario():
        app = make_app(store, model, settings, keymap={"help": "f10"})
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await ready(pilot)
            await pilot.press("ctrl+p", *"Draft depth: 3", "enter")
            await pilot.pause()
            assert screen.conv.settings.depth == 3
            for line in ("/temp 0.5", "/top-k 7", "/top-p 0.9", "/min-p 0.1", "/seed 4", "/system Be brief.", "/think on"):
                await submit(pilot, line)
            s = screen.conv.settings
            assert (s.temp, s.top_k, s.top_p, s.min_p, s.seed, s.system, s.thinking) == (0.5, 7, 0.9, 0.1, 4, "Be brief.", True)
            await submit(pilot, "/depth 99")  # refused, nothing changes
            assert s.depth == 3
            await pilot.press("f10")
            await pilot.pause()
            from mtprun.tui.screens.help import HelpScreen

            assert isinstance(app.screen, HelpScreen) and "| esc | Stop | `stop` |" in app.screen.text
            assert "| f10 | Help | `help` |" in app.screen.text
            await pilot.press("escape")

    run(scenario())


def test_model_mismatch_opens_read_only(model, store, settings):
    fake = ModelFile("/nonexistent/model.gguf", 123, "0" * 64)
    sid = store.create_session("old chat", fake, {})
    store.add_message(sid, Message("user", "hi"), fake)

    async def scenario():
        async with make_app(store, model, settings, resume=sid).run_test(size=(100, 30)) as pilot:
            screen = await ready(pilot)
            assert "missing" in screen.conv.read_only
            assert "missing" in str(screen.query_one("#notice").render())
            await submit(pilot, "hello")
            await pilot.pause()
            assert not screen.generating and len(store.messages(sid)) == 1

    run(scenario())


def test_model_that_fails_to_load_leaves_the_ui_usable(store, settings):
    from mtprun.runner.errors import MtprunError

    def broken():
        raise MtprunError("bad.gguf is not a GGUF file")

    store.create_session("kept", None, {})

    async def scenario():
        from mtprun.tui.app import ChatApp

        async with ChatApp(store, broken, settings).run_test(size=(100, 30)) as pilot:
            screen = await ready(pilot)
            assert "bad.gguf is not a GGUF file" in str(screen.query_one("#notice").render())
            await pilot.press("ctrl+b")
            await pilot.pause()
            assert [i.info.title for i in screen.query("SessionItem")] == ["kept"]

    run(scenario())


def test_text_and_enter_in_one_burst_send_the_whole_text(model, store, settings):
    """Keys that reach the app together (a paste without bracketed paste, `tmux send-keys "text"
    Enter`) are all in the input when Enter, a priority binding the app runs at once, sends it: the
    message is the whole text, and the input is left empty."""

    async def scenario():
        app = make_app(store, model, replace(settings, n_predict=2))
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await ready(pilot)
            for key, char in [*((c, c) for c in "hello there"), ("enter", "\r")]:
                event = events.Key(key if key != " " else "space", char)
                event.set_sender(app)
                app._driver.send_message(event)  # no pause between the keys, as a burst arrives
            await until(pilot, lambda: screen.conv.last_reply() is not None and not screen.generating)
            assert [(m.role, m.content) for m in screen.conv.messages][0] == ("user", "hello there")
            assert screen.query_one("#input").text == ""

    run(scenario())


def test_sidebar_input_keys_and_copy(model, store, settings):
    mf = ModelFile.of(model.path)
    other = store.create_session("sorting lists", mf, {})
    store.add_message(other, Message("user", "sort a list"), mf)
    store.add_message(other, Message("assistant", "Use:\n\n```python\nxs.sort()\n```\n", token_ids=[1], origins="t"), mf)

    async def scenario():
        app = make_app(store, model, replace(settings, n_predict=4))
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await ready(pilot)
            box = screen.query_one("#input")
            await pilot.press(*"ab", "ctrl+j", "c")  # Ctrl+J: a new line, not a send
            assert box.text == "ab\nc"
            box.text = ""
            await send(pilot, "first")
            await pilot.press("up")  # recalls the last message into the empty input
            assert box.text == "first"
            box.text = ""
            await pilot.press("ctrl+b")
            screen.query_one("#search").value = "sort"
            await pilot.pause()
            titles = [i.info.title for i in screen.query("SessionItem")]
            assert titles == ["sorting lists"]
            screen.query_one("SessionList").focus()
            await pilot.press("enter")  # open it
            await pilot.pause()
            assert screen.conv.session_id == other and len(screen.query(MessageView)) == 2
            await submit(pilot, "/copy 1")
            assert app.clipboard == "xs.sort()\n"
            await pilot.press("ctrl+b")
            screen.query_one("SessionList").focus()
            await pilot.press("r")
            await pilot.pause()
            app.screen.query_one("Input").value = "renamed"
            await pilot.press("enter")
            await pilot.pause()
            assert store.session(other).title == "renamed"
            await pilot.press("delete", "y")
            await pilot.pause()
            assert [s.id for s in store.sessions()] != [] and other not in [s.id for s in store.sessions()]
            assert screen.conv.session_id is None and not screen.query(MessageView)

    run(scenario())


def test_a_message_sent_while_the_model_loads_is_sent_once_it_has(model, store, settings):
    import threading

    from mtprun.tui.app import ChatApp

    loaded = threading.Event()

    def slow():
        loaded.wait(30)
        return model

    async def scenario():
        async with ChatApp(store, slow, settings).run_test(size=(100, 30)) as pilot:
            screen = pilot.app.screen
            await submit(pilot, "def add(a, b):")
            await pilot.pause()
            await submit(pilot, "a second one")  # one waits at a time: this one goes back to the input
            await pilot.pause()
            assert screen.engine is None and not screen.query(MessageView)
            assert screen.query_one("#input").text == "a second one"
            loaded.set()
            await until(pilot, lambda: screen.conv.last_reply() is not None and not screen.generating)
            assert [m.content for m in screen.conv.messages if m.role == "user"] == ["def add(a, b):"]
            assert screen.query_one("#input").text == "a second one"

    run(scenario())


def test_a_message_sent_while_a_model_fails_to_load_goes_back_to_the_input(store, settings):
    import threading

    from mtprun.runner.errors import MtprunError
    from mtprun.tui.app import ChatApp

    failing = threading.Event()

    def broken():
        failing.wait(30)
        raise MtprunError("bad.gguf is not a GGUF file")

    async def scenario():
        async with ChatApp(store, broken, settings).run_test(size=(100, 30)) as pilot:
            screen = pilot.app.screen
            await submit(pilot, "hello there")
            await pilot.pause()
            assert screen.query_one("#input").text == ""
            failing.set()
            await ready(pilot)
            await until(pilot, lambda: screen.query_one("#input").text == "hello there")
            assert not screen.conv.messages

    run(scenario())
