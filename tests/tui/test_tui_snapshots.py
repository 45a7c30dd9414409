"""SVG snapshots of the main screens (pytest-textual-snapshot; `--snapshot-update` rewrites them).

The conversation is a stored session with fixed statistics, so every frame is deterministic;
animations are off and the cursor does not blink.
"""

from __future__ import annotations

import pytest
from tui_helpers import MODEL, make_app, ready

from mtprun.tui.store import Message, ModelFile

REPLY = ("<think>\nThe user wants a small function; keep it short.\n</think>\n\n"
         "Here it is:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\nCall `add(2, 3)` to get **5**.")
STATS = {"generated": 41, "prompt_tokens": 22, "decode_tokens_per_s": 38.5, "drafted": 52, "accepted": 30,
         "acceptance_rate": 30 / 52, "mean_accepted_length": 2.15, "accepted_per_position": [0.81, 0.5, 0.26],
         "steps": 19, "prefill_tokens_per_s": 210.0, "seconds": {}}


@pytest.fixture
def session(store, model):
    mf = ModelFile.of(MODEL)
    older = store.create_session("Sorting a list in place", mf, {})
    store.add_message(older, Message("user", "How do I sort a list in place?"), mf)
    sid = store.create_session("Write a function that adds two numbers", mf, {"temp": 0.0, "draft_depth": 3})
    store.add_message(sid, Message("user", "Write a function that adds two numbers."), mf)
    ids = model.tokenize(REPLY)
    origins = "".join("t" if i % 3 == 2 else "d" for i in range(len(ids)))
    store.add_message(sid, Message("assistant", REPLY, token_ids=ids, origins=origins, stats=STATS,
                                   started=1.0, finished=2.0), mf)
    return sid


def _app(store, model, settings, session):
    app = make_app(store, model, settings, resume=session)
    app.animation_level = "none"
    return app


async def _steady(pilot) -> None:
    screen = await ready(pilot)
    screen.query_one("#input").cursor_blink = False
    await pilot.pause()


def test_chat_screen(snap_compare, store, model, settings, session):
    assert snap_compare(_app(store, model, settings, session), terminal_size=(100, 32), run_before=_steady)


def test_help_screen(snap_compare, store, model, settings, session):
    assert snap_compare(_app(store, model, settings, session), press=["f1"], terminal_size=(100, 40), run_before=_steady)


def test_token_origins(snap_compare, store, model, settings, session):
    assert snap_compare(_app(store, model, settings, session), press=["ctrl+o"], terminal_size=(100, 32),
                        run_before=_steady)


def test_sessions_sidebar(snap_compare, store, model, settings, session):
    assert snap_compare(_app(store, model, settings, session), press=["ctrl+b"], terminal_size=(100, 32),
                        run_before=_steady)
