"""The chat screen: sessions sidebar, conversation, input, statistics bar.

The model loads, and each reply is generated, in thread workers; a generating worker posts its
tokens as `Tokens` messages in batches (engine.Conversation.reply batches them to the frame rate).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from markdown_it import MarkdownIt
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message as UIMessage
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker

from mtprun.runner.api import Model
from mtprun.runner.errors import MtprunError
from mtprun.tui import commands
from mtprun.tui.engine import Batch, Conversation, Engine, Settings
from mtprun.tui.export import FORMATS, export, split_think
from mtprun.tui.screens.dialogs import Confirm, TextPrompt
from mtprun.tui.screens.help import HelpScreen, help_markdown
from mtprun.tui.store import Message, Store, StoreError
from mtprun.tui.widgets.message import MessageView
from mtprun.tui.widgets.prompt_input import PromptInput
from mtprun.tui.widgets.sidebar import SessionList, Sidebar
from mtprun.tui.widgets.statusbar import StatsBar, figures


class Tokens(UIMessage):
    def __init__(self, view: MessageView, batch: Batch) -> None:
        self.view, self.batch = view, batch
        super().__init__()


class ReplyDone(UIMessage):
    def __init__(self, view: MessageView, reply: Message | None, error: str | None) -> None:
        self.view, self.reply, self.error = view, reply, error
        super().__init__()


class ModelReady(UIMessage):
    def __init__(self, engine: Engine | None, error: str | None) -> None:
        self.engine, self.error = engine, error
        super().__init__()


LOADING = "Loading the model…"


def code_blocks(markdown: str) -> list[str]:
    return [t.content for t in MarkdownIt().parse(markdown) if t.type == "fence"]


class ChatScreen(Screen):
    BINDINGS = [
        Binding("escape", "stop", "Stop", id="stop"),
        Binding("f1", "help", "Help", id="help"),
        Binding("f2", "toggle_mtp", "MTP on/off", show=False, id="mtp"),
        Binding("f3", "depth(-1)", "Draft depth −1", show=False, id="depth_down"),
        Binding("f4", "depth(1)", "Draft depth +1", show=False, id="depth_up"),
        Binding("f5", "toggle_think", "Thinking on/off", show=False, id="think"),
        Binding("ctrl+o", "toggle_origins", "Token origins", id="origins"),
        Binding("f9", "copy", "Copy last reply", show=False, id="copy"),
        Binding("ctrl+b", "toggle_sidebar", "Sessions", id="sessions"),
        Binding("ctrl+n", "clear", "New chat", show=False, id="clear"),
        Binding("ctrl+r", "regen", "Regenerate", show=False, id="regen"),
    ]

    def __init__(self, store: Store, load_model: Callable[[], Model], settings: Settings,
                 resume: int | None, notes: list[str]) -> None:
        super().__init__()
        self.store = store
        self.load_model = load_model
        self.base_settings = settings
        self.resume_id = resume
        self.notes = list(notes)  # lasting notices (store unusable, config ignored, model failed...)
        self.engine: Engine | None = None
        self.conv = Conversation(store, None, settings, read_only=LOADING, on_warning=self.warn)
        self.generating = False
        self._stop = threading.Event()
        self._live_stats: dict[str, Any] | None = None
        self._live_view: MessageView | None = None
        self._worker: Worker | None = None
        self._queued: str | None = None  # a message sent while the model loads, sent once it has

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Sidebar(self.store, id="sidebar")
            with Vertical(id="chat"):
                yield Static("", id="notice", markup=False)
                yield VerticalScroll(id="messages")
                yield PromptInput(id="input")
        yield StatsBar(id="stats")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one("#sidebar").display = False
        self.query_one("#messages").anchor()  # follows the reply while the view is at the bottom
        if self.resume_id is not None:
            await self.open_session(self.resume_id)
        self.refresh_notice()
        self.refresh_stats()
        self.query_one(PromptInput).focus()
        self._load()

    # -- model
    @work(thread=True, exclusive=True, group="load")
    def _load(self) -> None:
        try:
            self.post_message(ModelReady(Engine(self.load_model()), None))
        except Exception as e:  # any failure to load is shown, never a traceback in the UI
            text = str(e) if isinstance(e, MtprunError) else f"{type(e).__name__}: {e}"
            self.post_message(ModelReady(None, f"The model failed to load: {text}"))

    async def on_model_ready(self, event: ModelReady) -> None:
        if event.engine is None:
            self.conv.read_only = event.error
        else:
            self.engine = event.engine
            if self.base_settings.mtp and event.engine.max_depth == 0:
                self.base_settings.mtp = False
                self.notes.append(f"{Path(event.engine.model.path).name} has no MTP head; drafting is off.")
            self.conv.attach(event.engine)
            self._clamp_settings()
            for view in self.query(MessageView):
                view.tokenizer = event.engine.model.tokenizer
        self.refresh_notice()
        self.refresh_stats()
        queued, self._queued = self._queued, None
        if queued is not None:
            if self.conv.writable:
                await self.send(queued)
            else:  # the model failed, or the open session is read-only: the text goes back, not lost
                self._restore_input(queued)

    def _clamp_settings(self) -> None:
        if self.engine is not None:
            s = self.conv.settings
            if s.draft_depth != "auto":
                s.draft_depth = max(1, min(int(s.draft_depth), self.engine.max_depth))
            s.mtp = s.mtp and self.engine.max_depth > 0

    # -- notices and statistics
    def warn(self, text: str) -> None:
        """From any thread: a store failure and the like (the conversation goes on in memory)."""
        if threading.current_thread() is threading.main_thread():
            self.notify(text, severity="warning", timeout=8)
        else:
            self.app.call_from_thread(self.notify, text, severity="warning", timeout=8)

    def refresh_notice(self) -> None:
        lines = self.notes + ([self.conv.read_only] if self.conv.read_only else [])
        notice = self.query_one("#notice", Static)
        notice.update("\n".join(lines))
        notice.display = bool(lines)

    def refresh_stats(self) -> None:
        s = self.conv.settings
        if self.generating:
            state, stats = "generating", self._live_stats
        else:
            last = self.conv.last_reply()
            state, stats = ("stopped" if last and last.stopped else ""), (last.stats if last else None)
        if self.engine is None:
            state = "loading model…" if self.conv.read_only == LOADING else "read-only"
        model = self.engine.model if self.engine else None
        self.query_one(StatsBar).show(
            state, figures(stats, s.draft_depth, s.mtp, model.n_ctx if model else None),
            model.backend_name if model else "", Path(model.path).name if model else "")

    # -- sending and generating
    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        if event.text.startswith("/"):
            await self.run_command(event.text)
        else:
            await self.send(event.text)

    async def send(self, text: str) -> None:
        if self.generating:
            self.notify("A reply is being generated: Esc stops it.", severity="warning")
            return
        if self.engine is None and self.conv.read_only == LOADING:
            # Enter pressed while the model loads: the input was cleared, so the text would be lost
            if self._queued is not None:
                self._restore_input(text)
                self.notify("A message is already waiting for the model to load.", severity="warning")
            else:
                self._queued = text
                self.notify("The model is loading: the message is sent as soon as it is ready.", timeout=4)
            return
        try:
            msg = self.conv.add_user(text)
        except MtprunError as e:
            self.notify(str(e), severity="error")
            return
        await self.query_one("#messages").mount(MessageView(msg))
        await self.start_reply()

    def _restore_input(self, text: str) -> None:
        box = self.query_one(PromptInput)
        box.text = text if not box.text.strip() else f"{text}\n{box.text}"
        box.move_cursor(box.document.end)

    async def start_reply(self) -> None:
        view = MessageView(Message("assistant", ""), self.engine.model.tokenizer if self.engine else None)
        await self.query_one("#messages").mount(view)
        view.begin_stream()
        self._stop = threading.Event()
        self.generating, self._live_stats, self._live_view = True, None, view
        self.refresh_stats()
        self._worker = self._generate(view, self._stop)

    @work(thread=True, group="generate")
    def _generate(self, view: MessageView, stop: threading.Event) -> None:
        try:
            reply = self.conv.reply(lambda batch: self.post_message(Tokens(view, batch)), stop)
            self.post_message(ReplyDone(view, reply, None))
        except Exception as e:  # shown in the UI; the user message stays
            self.post_message(ReplyDone(view, None, str(e) if isinstance(e, MtprunError) else f"{type(e).__name__}: {e}"))

    async def on_tokens(self, event: Tokens) -> None:
        if event.view is not self._live_view:
            return
        await event.view.add_batch(event.batch)
        if event.batch.stats:
            self._live_stats = event.batch.stats
        self.refresh_stats()

    async def on_reply_done(self, event: ReplyDone) -> None:
        if event.view is not self._live_view:
            return
        if event.reply is None:
            await event.view.remove()
            self.notify(event.error or "generation failed", severity="error", timeout=10)
        else:
            await event.view.end_stream(event.reply)
        self.generating, self._live_view = False, None
        self.refresh_stats()

    def action_stop(self) -> None:
        if self.generating:
            self._stop.set()

    # -- commands (slash, palette, keys)
    async def run_command(self, line: str) -> None:
        try:
            name, arg = commands.parse(line)
            done = commands.apply_setting(self.conv.settings, name, arg, self.engine.max_depth if self.engine else 0)
            if done is not None:
                self.conv.save_settings()
                self.refresh_stats()
                self.notify(done, timeout=3)
            else:
                await getattr(self, f"cmd_{name}")(arg)
        except MtprunError as e:
            self.notify(str(e), severity="error")

    async def cmd_clear(self, _arg: str) -> None:
        await self.stop_and_wait()
        self.conv.new_session()
        await self.query_one("#messages").remove_children()
        self.refresh_notice()
        self.refresh_stats()

    async def cmd_regen(self, _arg: str) -> None:
        if self.generating:
            raise MtprunError("a reply is being generated: Esc stops it.")
        self.conv.drop_last_reply()
        views = self.query(MessageView)
        if views and views.last().msg.role == "assistant":
            await views.last().remove()
        await self.start_reply()

    async def cmd_copy(self, arg: str) -> None:
        last = self.conv.last_reply()
        if last is None:
            raise MtprunError("there is no reply to copy.")
        text = split_think(last.content)[1]
        if arg:
            blocks = code_blocks(text)
            if not blocks:
                raise MtprunError("the last reply has no code block.")
            text = blocks[int(commands.number(int, "copy", arg, 1, len(blocks))) - 1]
        self.app.copy_to_clipboard(text)
        self.notify(f"copied {'code block ' + arg if arg else 'the last reply'} ({len(text)} characters)", timeout=3)

    async def cmd_export(self, arg: str) -> None:
        fmt, _, path = arg.partition(" ")
        if fmt not in FORMATS:
            raise MtprunError("/export takes md or json, then optionally a file name.")
        if self.conv.session_id is None:
            raise MtprunError("nothing to export yet.")
        out = Path(path.strip() or f"mtprun-session-{self.conv.session_id}.{fmt}")
        try:
            out.write_text(export(self.store, self.conv.session_id, fmt), encoding="utf-8")
        except OSError as e:
            raise MtprunError(f"cannot write {out} ({e.strerror}).") from None
        self.notify(f"exported to {out}")

    async def cmd_origins(self, _arg: str) -> None:
        self.action_toggle_origins()

    async def cmd_sessions(self, _arg: str) -> None:
        await self.action_toggle_sidebar()

    async def cmd_help(self, _arg: str) -> None:
        self.action_help()

    async def cmd_quit(self, _arg: str) -> None:
        self._stop.set()
        self.app.exit()

    async def stop_and_wait(self) -> None:
        """Stop a reply in progress and let it be saved before the conversation changes."""
        if self.generating and self._worker is not None:
            self._stop.set()
            await self._worker.wait()
            self.generating, self._live_view = False, None  # its ReplyDone, when it comes, is stale

    # -- key actions
    def action_help(self) -> None:
        bindings = [*self.app.BINDINGS, *self.BINDINGS, *PromptInput.BINDINGS, *SessionList.BINDINGS]
        self.app.push_screen(HelpScreen(help_markdown(self.app, bindings, self.app.keymap)))

    async def action_toggle_mtp(self) -> None:
        await self.run_command(f"/mtp {'off' if self.conv.settings.mtp else 'on'}")

    async def action_depth(self, delta: int) -> None:
        """Step through 1 .. the model's most, then auto."""
        steps: list[int | str] = [*range(1, (self.engine.max_depth if self.engine else 0) + 1), "auto"]
        s = self.conv.settings
        at = steps.index(s.draft_depth) if s.draft_depth in steps else len(steps) - 1
        await self.run_command(f"/depth {steps[max(0, min(len(steps) - 1, at + delta))]}")

    async def action_toggle_think(self) -> None:
        await self.run_command(f"/think {'off' if self.conv.settings.thinking else 'on'}")

    def action_toggle_origins(self) -> None:
        self.toggle_class("-origins")
        for view in self.query(MessageView):
            view.show_origins()
        self.notify("token origins: green = accepted MTP draft" if self.has_class("-origins") else "token origins off",
                    timeout=3)

    async def action_copy(self) -> None:
        await self.run_command("/copy")

    async def action_clear(self) -> None:
        await self.run_command("/clear")

    async def action_regen(self) -> None:
        await self.run_command("/regen")

    async def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one(Sidebar)
        sidebar.display = not sidebar.display
        if sidebar.display:
            await sidebar.reload(self.conv.session_id)
            self.query_one(SessionList).focus()
        else:
            self.query_one(PromptInput).focus()

    # -- sessions
    async def open_session(self, session_id: int) -> None:
        from mtprun.tui.cli import resume

        await self.stop_and_wait()
        try:
            conv = resume(self.store, session_id, self.engine, self.base_settings)
        except StoreError as e:
            self.notes.append(str(e))
            return
        conv.on_warning = self.warn
        if self.engine is None and conv.read_only is None:
            conv.read_only = self.conv.read_only  # still loading, or the model failed
        self.conv = conv
        self._clamp_settings()
        container = self.query_one("#messages")
        await container.remove_children()
        tokenizer = self.engine.model.tokenizer if self.engine else None
        await container.mount_all(MessageView(m, tokenizer) for m in conv.messages)
        container.anchor()
        self.refresh_notice()
        self.refresh_stats()

    async def on_session_list_action(self, event: SessionList.Action) -> None:
        info = event.info
        if event.kind == "open":
            await self.open_session(info.id)
            self.query_one(PromptInput).focus()
        elif event.kind == "rename":
            def renamed(title: str | None) -> None:
                if title:
                    self.store.update_session(info.id, title=title)
                    self.run_worker(self.query_one(Sidebar).reload(self.conv.session_id))
            self.app.push_screen(TextPrompt("Rename the session:", info.title), renamed)
        else:
            async def deleted(yes: bool | None) -> None:
                if yes:
                    if info.id == self.conv.session_id:
                        await self.cmd_clear("")
                    self.store.delete_session(info.id)
                    await self.query_one(Sidebar).reload(self.conv.session_id)
            self.app.push_screen(Confirm(f"Delete the session {info.title!r}?"), deleted)
