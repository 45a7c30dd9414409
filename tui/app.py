"""`mtprun chat`: the Textual app. The chat screen does the work; the app adds the command palette's
commands and the user's key bindings."""

from __future__ import annotations

from functools import partial
from typing import Callable

from textual.app import App
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen

from mtprun.runner.api import Model
from mtprun.tui.engine import Settings
from mtprun.tui.export import split_think
from mtprun.tui.screens.chat import ChatScreen, code_blocks
from mtprun.tui.store import Store
from mtprun.tui.widgets.prompt_input import PromptInput


class ChatCommands(Provider):
    """The slash commands, in the command palette; those that need a value start the command in the input."""

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        screen = self.screen
        if not isinstance(screen, ChatScreen):
            return []
        s = screen.conv.settings
        run = lambda line: partial(screen.run_command, line)  # noqa: E731

        def edit(line: str) -> Callable[[], None]:
            def start() -> None:
                box = screen.query_one(PromptInput)
                box.text = line
                box.move_cursor(box.document.end)
                box.focus()
            return start

        max_depth = screen.engine.max_depth if screen.engine else 0
        out = [(f"MTP drafting: turn {'off' if s.mtp else 'on'}", run(f"/mtp {'off' if s.mtp else 'on'}"),
                f"now {'on, depth ' + str(s.draft_depth) if s.mtp else 'off'}")]
        out += [(f"Draft depth: {d}", run(f"/depth {d}"), "tokens drafted per step")
                for d in [*range(1, max_depth + 1), "auto"]]
        out += [(f"Thinking: turn {'off' if s.thinking else 'on'}", run(f"/think {'off' if s.thinking else 'on'}"),
                 "enable_thinking in the chat template")]
        for name, value in (("temp", s.temp), ("top-k", s.top_k), ("top-p", s.top_p), ("min-p", s.min_p), ("seed", s.seed)):
            out.append((f"Set {name}…", edit(f"/{name} "), f"now {value:g}"))
        out.append(("Set the system prompt…", edit("/system "), f"now {s.system!r}" if s.system else "none"))
        out += [("New conversation (clear)", run("/clear"), "the current one stays saved"),
                ("Regenerate the last reply", run("/regen"), ""),
                ("Copy the last reply", run("/copy"), "to the clipboard (OSC 52)")]
        last = screen.conv.last_reply()
        blocks = code_blocks(split_think(last.content)[1]) if last else []
        out += [(f"Copy code block {i}", run(f"/copy {i}"), b.splitlines()[0][:40] if b else "")
                for i, b in enumerate(blocks, 1)]
        out += [("Export as Markdown", run("/export md"), "to the current directory"),
                ("Export as JSON", run("/export json"), "to the current directory"),
                ("Token origins: colour by accepted draft / target", run("/origins"), ""),
                ("Sessions sidebar", run("/sessions"), "search, open, rename, delete"),
                ("Help: keys and commands", run("/help"), "")]
        return out

    async def discover(self) -> Hits:
        for name, command, help_text in self._commands():
            yield DiscoveryHit(name, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, command, help_text in self._commands():
            if (score := matcher.match(name)) > 0:
                yield Hit(score, matcher.highlight(name), command, help=help_text)


class ChatApp(App[int]):
    CSS_PATH = "chat.tcss"
    TITLE = "mtprun chat"
    COMMANDS = App.COMMANDS | {ChatCommands}

    def __init__(self, store: Store, load_model: Callable[[], Model], settings: Settings, *,
                 resume: int | None = None, notes: list[str] | None = None, keymap: dict[str, str] | None = None) -> None:
        super().__init__()
        self.store = store
        self.load_model = load_model
        self.settings = settings
        self.resume = resume
        self.notes = notes or []
        self.keymap = keymap or {}

    def on_mount(self) -> None:
        self.set_keymap(self.keymap)

    def get_default_screen(self) -> Screen:
        return ChatScreen(self.store, self.load_model, self.settings, self.resume, self.notes)
