"""Helpers of the chat UI tests: the fixture model, apps, and driving a reply to its end."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
MODEL = FIXTURES / "tinycoder" / "llamacpp-q8_0.gguf"
# `mtprun chat` / `mtprun sessions` as runner/cli.py is to wire them; becomes ["mtprun"] once wired
MTPRUN = [sys.executable, "-m", "mtprun.runner.cli"]
N_PREDICT = 16


def make_app(store, model, settings, **kwargs: Any):
    from mtprun.tui.app import ChatApp

    return ChatApp(store, lambda: model, settings, **kwargs)


async def until(pilot, condition, timeout: float = 30.0) -> None:
    """Let the app run until `condition()` holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {condition}")
        await pilot.pause(0.02)


async def ready(pilot) -> Any:
    """The chat screen, once the model has loaded."""
    screen = pilot.app.screen
    await until(pilot, lambda: screen.engine is not None or (screen.conv.read_only or "").startswith("The model"))
    await pilot.pause()
    return screen


async def submit(pilot, line: str) -> None:
    """Put `line` in the input and press Enter (typing it key by key is slow)."""
    box = pilot.app.screen.query_one("#input")
    box.text = line
    await pilot.press("enter")


async def send(pilot, text: str, wait: bool = True):
    """Type `text`, press Enter and (if `wait`) let the reply finish; returns the screen."""
    screen = pilot.app.screen
    await submit(pilot, text)
    await until(pilot, lambda: screen.generating or screen.conv.last_reply() is not None)
    if wait:
        await until(pilot, lambda: not screen.generating)
        await pilot.pause()
    return screen


def fresh_tokens(model, messages: list[dict], settings, n_predict: int | None = None) -> list[int]:
    """The tokens a fresh context gives for this history (MTP off: the tokens are the same either way)."""
    from mtprun.runner.chat_template import render_chat

    prompt = render_chat(model.chat_template, messages, add_generation_prompt=True, enable_thinking=settings.thinking)
    gen = model.generate(model.tokenize(prompt), n_predict=n_predict or settings.n_predict, **settings.sampling())
    return gen.tokens
