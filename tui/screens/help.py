"""F1: the key bindings in force (after the config file's remapping) and the slash commands."""

from __future__ import annotations

from typing import Iterable

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from mtprun.tui import commands


def help_markdown(app: App, bindings: Iterable[Binding], keymap: dict[str, str]) -> str:
    lines = ["## Keys", "", "| key | does | id, for `[keys]` in config.toml |", "| --- | --- | --- |"]
    palette = Binding(app.COMMAND_PALETTE_BINDING, "command_palette", "Command palette")
    for b in [*bindings, palette]:
        if b.description:
            keys = (keymap.get(b.id, b.key) if b.id else b.key).split(",")
            shown = ", ".join(app.get_key_display(Binding(k.strip(), "")) for k in keys)
            lines.append(f"| {shown} | {b.description} | {f'`{b.id}`' if b.id else '-'} |")
    lines += ["", "## Commands", "", "Type them in the input, or pick them from the command palette (Ctrl+P).", "",
              "| command | does |", "| --- | --- |"]
    lines += [f"| `{c.usage.replace('|', '/')}` | {c.help} |" for c in commands.COMMANDS]
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(self.text)
