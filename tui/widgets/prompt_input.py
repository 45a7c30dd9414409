"""The message input: multi-line; Enter sends, Shift+Enter / Ctrl+J starts a new line, Up on an empty
input recalls the last message."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea


class PromptInput(TextArea):
    BINDINGS = [
        # priority: TextArea itself would insert a newline for Enter
        Binding("enter", "submit", "Send", priority=True, id="send"),
        Binding("shift+enter,ctrl+j", "newline", "New line", id="newline"),
    ]

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            self.text = text
            super().__init__()

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, **kwargs)
        self.sent: list[str] = []  # for Up to recall

    def action_submit(self) -> None:
        # Enter is a priority binding: the app runs it as the key arrives, while keys that came in the
        # same burst just before it (tmux send-keys, a paste without bracketed paste) may still wait in
        # this widget's queue. Sending after them sends the whole text, not an empty or partial one.
        self.call_later(self._send)

    def _send(self) -> None:
        text = self.text.strip()
        if text:
            self.sent.append(text)
            self.clear()
            self.post_message(self.Submitted(text))

    def action_newline(self) -> None:
        self.insert("\n")

    def action_cursor_up(self, select: bool = False) -> None:
        if not self.text and self.sent:
            self.text = self.sent[-1]
            self.move_cursor(self.document.end)
        else:
            super().action_cursor_up(select)
