"""Slash commands, shared by the app (and its command palette) and the plain REPL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mtprun.runner.errors import MtprunError
from mtprun.tui.engine import Settings


class CommandError(MtprunError):
    pass


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    tui_only: bool = False


COMMANDS: tuple[Command, ...] = (
    Command("mtp", "/mtp on|off", "MTP drafting on or off (the tokens are the same either way)"),
    Command("depth", "/depth N|auto", "tokens drafted per step by the MTP head (auto: re-chosen each step)"),
    Command("temp", "/temp X", "sampling temperature; 0 is greedy"),
    Command("top-k", "/top-k N", "keep the N most likely tokens (0: all)"),
    Command("top-p", "/top-p X", "nucleus sampling threshold"),
    Command("min-p", "/min-p X", "drop tokens below X times the top probability"),
    Command("seed", "/seed N", "sampling seed"),
    Command("max", "/max N", "most tokens per reply"),
    Command("think", "/think on|off", "let the model reason in a <think> block first"),
    Command("system", "/system [TEXT]", "set the system prompt (no text: clear it)"),
    Command("clear", "/clear", "start a new conversation (the old one stays saved)"),
    Command("regen", "/regen", "regenerate the last reply"),
    Command("copy", "/copy [N]", "copy the last reply, or its N-th code block (OSC 52)", tui_only=True),
    Command("export", "/export md|json [PATH]", "export the conversation as Markdown or JSON"),
    Command("origins", "/origins", "colour the replies' tokens by origin (accepted draft / target)", tui_only=True),
    Command("sessions", "/sessions", "show or hide the sessions sidebar", tui_only=True),
    Command("help", "/help", "list the commands and key bindings"),
    Command("quit", "/quit", "leave"),
)
BY_NAME = {c.name: c for c in COMMANDS}


def parse(line: str) -> tuple[str, str]:
    """("depth", "3") for "/depth 3"; unknown commands raise CommandError."""
    name, _, arg = line.strip()[1:].partition(" ")
    if name not in BY_NAME:
        raise CommandError(f"unknown command /{name} (/help lists them).")
    return name, arg.strip()


def number(kind: Callable[[str], float], name: str, arg: str, lo: float, hi: float | None = None) -> float:
    try:
        value = kind(arg)
    except ValueError:
        raise CommandError(f"/{name} takes a number, got {arg or 'nothing'!r}.") from None
    if value < lo or (hi is not None and value > hi):
        raise CommandError(f"/{name} must be between {lo} and {hi}." if hi is not None else f"/{name} must be at least {lo}.")
    return value


def _switch(name: str, arg: str) -> bool:
    if arg not in ("on", "off"):
        raise CommandError(f"/{name} takes on or off.")
    return arg == "on"


def apply_setting(settings: Settings, name: str, arg: str, max_depth: int) -> str | None:
    """Change `settings` for a setting command and say what it now is; None for other commands."""
    if name in ("mtp", "depth") and max_depth == 0:
        raise CommandError("this model has no MTP head.")
    if name == "mtp":
        settings.mtp = _switch(name, arg)
        return f"MTP {arg}"
    if name == "depth":
        if arg == "auto":
            settings.draft_depth, settings.mtp = "auto", True
        else:
            depth = int(number(int, name, arg, 0, max_depth))
            settings.mtp = depth > 0
            settings.draft_depth = depth or settings.draft_depth  # 0 turns MTP off, keeping the depth
        return f"draft depth {settings.draft_depth}" if settings.mtp else "MTP off"
    if name == "temp":
        settings.temp = number(float, name, arg, 0.0)
        return f"temperature {settings.temp:g}"
    if name == "top-k":
        settings.top_k = int(number(int, name, arg, 0))
        return f"top-k {settings.top_k}"
    if name == "top-p":
        settings.top_p = number(float, name, arg, 0.0, 1.0)
        return f"top-p {settings.top_p:g}"
    if name == "min-p":
        settings.min_p = number(float, name, arg, 0.0, 1.0)
        return f"min-p {settings.min_p:g}"
    if name == "seed":
        settings.seed = int(number(int, name, arg, 0))
        return f"seed {settings.seed}"
    if name == "max":
        settings.n_predict = int(number(int, name, arg, 1))
        return f"at most {settings.n_predict} tokens per reply"
    if name == "think":
        settings.thinking = _switch(name, arg)
        return f"thinking {arg}"
    if name == "system":
        settings.system = arg or None
        return "system prompt set" if arg else "system prompt cleared"
    return None
