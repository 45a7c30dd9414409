"""A conversation with a model, saved as it goes; used by the Textual app and the plain REPL alike.

No UI here: `Conversation.reply` generates in the calling thread (the app's thread worker, or the
REPL's helper thread) and hands tokens over in batches.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

from mtprun.runner.api import Model
from mtprun.runner.chat_template import render_chat
from mtprun.runner.errors import MtprunError
from mtprun.runner.stats import GenerationStats
from mtprun.tui.store import Message, ModelFile, Store, StoreError

# The template's opening of a think block at the end of the generation prompt (or an empty, closed one).
_THINK_PREFIX = re.compile(r"<think>\s*(?:</think>\s*)?$")


@dataclass
class Settings:
    mtp: bool = True
    draft_depth: int | str = "auto"  # tokens drafted per step, or "auto" (the runner picks, per step)
    temp: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    seed: int = 0
    n_predict: int = 256
    thinking: bool = True
    system: str | None = None

    @property
    def depth(self) -> int | str:
        return self.draft_depth if self.mtp else 0

    def sampling(self) -> dict[str, Any]:
        return {"temp": self.temp, "top_k": self.top_k, "top_p": self.top_p, "min_p": self.min_p, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: "Settings") -> "Settings":
        """`base` updated with the known keys of `d` (a session saved by another version may have more or fewer)."""
        known = {f.name for f in fields(cls)}
        return cls(**{**asdict(base), **{k: v for k, v in d.items() if k in known}})


class Engine:
    """A loaded model and the file it came from; one generation at a time uses it."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.file = ModelFile.of(model.path)
        # An abandoned (stopped) generation finishes its current step before the next may start.
        self.lock = threading.Lock()

    @property
    def max_depth(self) -> int:
        return self.model.max_draft if self.model.has_mtp else 0

    def spec_depth(self, settings: Settings) -> int | str:
        """The runner's spec_draft_n_max for these settings on this model."""
        if self.max_depth == 0 or settings.depth == 0:
            return 0
        return "auto" if settings.depth == "auto" else min(int(settings.depth), self.max_depth)


@dataclass
class Batch:
    """Tokens generated since the last batch, and the runner's statistics so far."""

    token_ids: list[int]
    text: str
    origins: str
    stats: dict[str, Any]


def stats_snapshot(stats: GenerationStats) -> dict[str, Any]:
    """The runner's figures for a reply (what the status bar shows and each message keeps), as JSON
    gives them back (so a reply in memory equals the same reply loaded from the store)."""
    return json.loads(json.dumps({**stats.as_dict(), "generated": stats.generated, "prompt_tokens": stats.prompt_tokens}))


class Conversation:
    """A session: settings, messages, and the engine that continues it (None when read-only)."""

    def __init__(self, store: Store, engine: Engine | None, settings: Settings,
                 session_id: int | None = None, messages: list[Message] | None = None,
                 read_only: str | None = None, on_warning: Callable[[str], None] = lambda _m: None) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.session_id = session_id
        self.messages: list[Message] = messages or []
        self.read_only = read_only  # why this session cannot continue, or None
        self.saved_model: ModelFile | None = None  # the model file a resumed session was made with
        self.on_warning = on_warning  # store failures: the conversation goes on in memory

    @classmethod
    def resume(cls, store: Store, session_id: int, engine: Engine | None, base: Settings,
               on_warning: Callable[[str], None] = lambda _m: None) -> "Conversation":
        info = store.session(session_id)
        conv = cls(store, engine, Settings.from_dict(info.settings, base), session_id, store.messages(session_id),
                   on_warning=on_warning)
        conv.saved_model = info.model
        conv.read_only = model_mismatch(info.model, engine)
        return conv

    def attach(self, engine: Engine) -> None:
        """The model has loaded: the conversation can continue if it was made with the same file."""
        self.engine = engine
        self.read_only = model_mismatch(self.saved_model, engine)

    # -- state
    @property
    def writable(self) -> bool:
        return self.engine is not None and self.read_only is None

    def last_reply(self) -> Message | None:
        return next((m for m in reversed(self.messages) if m.role == "assistant"), None)

    def chat_messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        return system + [{"role": m.role, "content": m.content} for m in self.messages]

    def prompt(self) -> str:
        assert self.engine is not None
        return render_chat(self.engine.model.chat_template, self.chat_messages(), add_generation_prompt=True,
                           enable_thinking=self.settings.thinking)

    # -- changes, each saved at once
    def add_user(self, text: str) -> Message:
        self._check_writable()
        assert self.engine is not None
        now = time.time()
        msg = Message("user", text, self.engine.model.tokenize(text, special=False), started=now, finished=now)
        self.messages.append(msg)
        self._save(msg)
        return msg

    def new_session(self) -> None:
        """Start afresh (the current session stays saved); its first message creates the new one."""
        self.messages, self.session_id = [], None
        self.read_only = None if self.engine is not None else self.read_only

    def drop_last_reply(self) -> Message:
        """Forget the last assistant reply (for regenerating it); the user message before it stays."""
        self._check_writable()
        if not self.messages or self.messages[-1].role != "assistant":
            raise MtprunError("there is no reply to regenerate.")
        msg = self.messages.pop()
        if msg.id is not None and self.session_id is not None:
            self._guard(lambda: self.store.delete_message(msg.id))
        return msg

    def save_settings(self) -> None:
        if self.session_id is not None:
            self._guard(lambda: self.store.update_session(self.session_id, settings=asdict(self.settings)))

    def _check_writable(self) -> None:
        if self.engine is None:
            raise MtprunError(self.read_only or "no model is loaded.")
        if self.read_only:
            raise MtprunError(self.read_only)

    def _save(self, msg: Message) -> None:
        assert self.engine is not None
        if self.session_id is None:
            title = msg.content.strip().splitlines()[0][:60] if msg.content.strip() else "(empty)"
            sid = self._guard(lambda: self.store.create_session(title, self.engine.file, asdict(self.settings)))
            if sid is None:
                return
            self.session_id = sid
        self._guard(lambda: self.store.add_message(self.session_id, msg, self.engine.file))

    def _guard(self, write: Callable[[], Any]) -> Any:
        try:
            return write()
        except StoreError as e:
            self.on_warning(f"not saved: {e}")
            return None

    # -- generation
    def reply(self, on_batch: Callable[[Batch], None], stop: threading.Event, interval: float = 1 / 30) -> Message:
        """Generate the assistant's reply to the conversation (in the calling thread), save it, return it.

        `on_batch` gets the new tokens at most every `interval` seconds (and once at the end); when
        `stop` is set, generation ends after the current token and the partial reply is kept.
        """
        self._check_writable()
        assert self.engine is not None
        model = self.engine.model
        prompt = self.prompt()
        prefix = m.group(0) if (m := _THINK_PREFIX.search(prompt)) else ""
        msg = Message("assistant", "", settings=asdict(self.settings), started=time.time())
        with self.engine.lock:
            gen = model.stream(model.tokenize(prompt), n_predict=self.settings.n_predict,
                               spec_draft_n_max=self.engine.spec_depth(self.settings),
                               **self.settings.sampling())
            decoder, eog = model.tokenizer.stream(), model.tokenizer.eog_ids
            pending = Batch([], prefix, "", {})
            steps, n_steps, in_step, last_post = gen.stats.steps, 0, 0, time.monotonic()
            tokens = iter(gen)
            try:
                for tok in tokens:
                    # the step record comes before its tokens: its first `accepted` tokens were drafts
                    if len(steps) != n_steps:
                        n_steps, in_step = len(steps), 0
                    in_step += 1
                    pending.token_ids.append(tok)
                    pending.origins += "d" if in_step <= steps[-1].accepted else "t"
                    if tok not in eog:
                        pending.text += decoder.feed(tok)
                    if stop.is_set():
                        break
                    if time.monotonic() - last_post >= interval:
                        pending.stats = stats_snapshot(gen.stats)
                        self._absorb(msg, pending, on_batch)
                        pending, last_post = Batch([], "", "", {}), time.monotonic()
            finally:
                tokens.close()  # type: ignore[attr-defined]
        pending.text += decoder.flush()
        pending.stats = stats_snapshot(gen.stats)
        self._absorb(msg, pending, on_batch)
        msg.stopped = stop.is_set()
        msg.finished = time.time()
        self.messages.append(msg)
        self._save(msg)
        return msg

    @staticmethod
    def _absorb(msg: Message, batch: Batch, on_batch: Callable[[Batch], None]) -> None:
        msg.content += batch.text
        msg.token_ids += batch.token_ids
        msg.origins += batch.origins
        msg.stats = batch.stats
        on_batch(batch)


def model_mismatch(saved: ModelFile | None, engine: Engine | None) -> str | None:
    """Why a session saved with `saved` cannot continue on `engine`'s model (None when it can)."""
    if saved is None or engine is None or saved.same_file(engine.file):
        return None
    if not Path(saved.path).exists():
        return f"Read-only: this session's model file {saved.path} is missing."
    try:
        now = ModelFile.of(saved.path)
    except OSError:
        now = None
    if not saved.same_file(now):
        return f"Read-only: this session's model file {saved.path} has changed since."
    return f"Read-only: this session was made with {saved.path}, not {engine.file.path}."
