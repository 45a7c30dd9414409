"""The sessions sidebar: search, open (Enter), rename (r), delete (Delete)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, ListItem, ListView

from mtprun.tui.store import SessionInfo, Store


class SessionItem(ListItem):
    def __init__(self, info: SessionInfo) -> None:
        super().__init__(Label(info.title, classes="title", markup=False),
                         Label(f"{info.n_messages} messages", classes="meta"))
        self.info = info


class SessionList(ListView):
    BINDINGS = [
        Binding("r", "rename", "Rename", id="session_rename"),
        Binding("delete", "delete", "Delete", id="session_delete"),
    ]

    class Action(Message):
        def __init__(self, kind: str, info: SessionInfo) -> None:
            self.kind = kind  # open / rename / delete
            self.info = info
            super().__init__()

    def _post(self, kind: str) -> None:
        if isinstance(self.highlighted_child, SessionItem):
            self.post_message(self.Action(kind, self.highlighted_child.info))

    def action_rename(self) -> None:
        self._post("rename")

    def action_delete(self) -> None:
        self._post("delete")


class Sidebar(Vertical):
    def __init__(self, store: Store, **kwargs) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.current: int | None = None  # the open session

    def compose(self) -> ComposeResult:
        yield Input(placeholder="search sessions", id="search")
        yield SessionList(id="sessions")

    async def reload(self, current: int | None = None) -> None:
        """List the sessions that match the search, the `current` one highlighted."""
        self.current = current
        found = self.store.sessions(self.query_one("#search", Input).value.strip())
        sessions = self.query_one(SessionList)
        await sessions.clear()
        await sessions.extend(SessionItem(s) for s in found)
        sessions.index = next((i for i, s in enumerate(found) if s.id == current), 0 if found else None)

    async def on_input_changed(self, _event: Input.Changed) -> None:
        await self.reload(self.current)

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, SessionItem):
            self.post_message(SessionList.Action("open", event.item.info))
