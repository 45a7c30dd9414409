"""A saved session as Markdown (to read) or JSON (everything the database keeps)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from mtprun.tui.store import Message, SessionInfo, Store

FORMATS = ("md", "json")


def split_think(content: str) -> tuple[str | None, str]:
    """(reasoning, answer) of an assistant turn; reasoning is None when the turn has none."""
    head = content.lstrip()
    if not head.startswith("<think>"):
        return None, content
    body = head[len("<think>"):]
    thought, sep, answer = body.partition("</think>")
    return (thought.strip() or None), answer.lstrip("\n") if sep else ""


def stats_line(stats: dict[str, Any] | None) -> str:
    """One line of a reply's statistics (the REPL prints it; Markdown exports end each reply with it)."""
    if not stats:
        return ""
    line = f"{stats['generated']} tokens, {stats['decode_tokens_per_s']:.1f} tok/s"
    if stats["drafted"]:
        per_pos = " ".join(f"{r:.0%}" for r in stats["accepted_per_position"])
        line += (f", accepted {stats['accepted']}/{stats['drafted']} drafts ({stats['acceptance_rate']:.0%}),"
                 f" mean accepted length {stats['mean_accepted_length']:.2f}, per position [{per_pos}]")
    return line


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).isoformat(timespec="seconds")


def to_markdown(info: SessionInfo, messages: list[Message]) -> str:
    out = [f"# {info.title}", ""]
    model = f"`{info.model.path}` ({info.model.size} bytes)" if info.model else "unknown"
    out += [f"Session {info.id}, started {_when(info.created)}, model {model}.", ""]
    if info.settings.get("system"):
        out += ["## System", "", info.settings["system"], ""]
    for m in messages:
        out += [f"## {m.role.capitalize()}", ""]
        if m.role != "assistant":
            out += [m.content, ""]
            continue
        thought, answer = split_think(m.content)
        if thought:
            out += ["<details><summary>Thinking</summary>", "", thought, "", "</details>", ""]
        out += [answer, ""]
        if answer.count("```") % 2:  # a reply stopped inside a code block: close it
            out += ["```", ""]
        note = stats_line(m.stats) + (" (stopped)" if m.stopped else "")
        if note.strip():
            out += [f"*{note.strip()}*", ""]
    return "\n".join(out)


def to_json(info: SessionInfo, messages: list[Message]) -> str:
    doc = {
        "id": info.id, "title": info.title, "created": info.created, "updated": info.updated,
        "model": asdict(info.model) if info.model else None, "settings": info.settings,
        "messages": [asdict(m) for m in messages],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def export(store: Store, session_id: int, fmt: str) -> str:
    info = store.session(session_id)
    messages = store.messages(session_id)
    return to_json(info, messages) if fmt == "json" else to_markdown(info, messages)
