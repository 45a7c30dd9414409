"""One message of the conversation. A reply streams in as Markdown, its <think> reasoning in a
collapsed block above; with token origins on, the reply's text is shown coloured by where each token
came from instead (an accepted MTP draft, or the target model's own token)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Collapsible, Label, Markdown, Static
from textual.widgets._markdown import MarkdownStream

from mtprun.tui.engine import Batch
from mtprun.tui.export import split_think
from mtprun.tui.store import Message

if TYPE_CHECKING:
    from mtprun.runner.tokenizer import Tokenizer

DRAFT_STYLE = "$text-success on $success-muted"  # tokens the target accepted from the MTP head


def origin_content(token_ids: list[int], origins: str, tokenizer: "Tokenizer") -> Content:
    """The reply's text, each token's piece styled by its origin ('d' draft / 't' target)."""
    decoder, eog = tokenizer.stream(), tokenizer.eog_ids
    parts = [(decoder.feed(t), DRAFT_STYLE if o == "d" else "") for t, o in zip(token_ids, origins) if t not in eog]
    return Content.assemble(*parts, (decoder.flush(), ""))


class MessageView(Vertical):
    def __init__(self, msg: Message, tokenizer: "Tokenizer | None" = None) -> None:
        super().__init__(classes=msg.role)
        self.msg = msg
        self.tokenizer = tokenizer
        self._stream: MarkdownStream | None = None
        self._shown = ""  # the answer text already written to the Markdown stream

    def compose(self) -> ComposeResult:
        yield Label(self._header(), classes="header")
        if self.msg.role != "assistant":
            yield Static(self.msg.content, markup=False, classes="text")
            return
        thought, answer = split_think(self.msg.content)
        with Collapsible(title="Thinking", collapsed=True) as block:
            block.display = thought is not None
            yield Static(thought or "", markup=False, classes="thought")
        yield Markdown(answer, classes="body")
        yield Static("", classes="origins")

    def _header(self) -> str:
        if self.msg.role == "user":
            return "You"
        if self.msg.role == "system":
            return "System"
        parts = ["mtprun"]
        st = self.msg.stats
        if not self.msg.finished:
            parts.append("…")
        elif st:
            parts.append(f"{st['generated']} tokens, {st['decode_tokens_per_s']:.1f} tok/s")
            if st["drafted"]:
                parts.append(f"{st['acceptance_rate']:.0%} of drafts accepted")
        if self.msg.stopped:
            parts.append("stopped")
        return " · ".join(parts)

    # -- streaming
    def begin_stream(self) -> None:
        self._stream = Markdown.get_stream(self.query_one(".body", Markdown))

    async def add_batch(self, batch: Batch) -> None:
        """Append generated tokens; the answer's text goes to the Markdown stream."""
        self.msg.content += batch.text
        self.msg.token_ids += batch.token_ids
        self.msg.origins += batch.origins
        thought, answer = split_think(self.msg.content)
        block = self.query_one(Collapsible)
        block.display = thought is not None
        block.query_one(".thought", Static).update(thought or "")
        if self._stream is not None and answer.startswith(self._shown):
            await self._stream.write(answer[len(self._shown):])
            self._shown = answer
        self.show_origins()

    async def end_stream(self, final: Message) -> None:
        """Show the reply as saved: a full Markdown update, since a stream may end mid-fence or mid-token."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.msg = final
        thought, answer = split_think(final.content)
        self.query_one(Collapsible).display = thought is not None
        self.query_one(".thought", Static).update(thought or "")
        await self.query_one(".body", Markdown).update(answer)
        self.query_one(".header", Label).update(self._header())
        self.show_origins()

    def show_origins(self) -> None:
        """Fill the token-origin view (shown instead of the Markdown while the screen has -origins)."""
        if self.msg.role != "assistant" or not self.screen.has_class("-origins"):
            return
        view = self.query_one(".origins", Static)
        if self.tokenizer is None:
            view.update("(no model loaded to decode this reply's tokens)")
        else:
            view.update(origin_content(self.msg.token_ids, self.msg.origins, self.tokenizer))
