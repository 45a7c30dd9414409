"""The stable Python API: `mtprun.load(...) -> Model`. The CLI, the benchmark, the UI and tests use it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from mtprun.native import create_backend
from mtprun.runner.adaptive import DEFAULT_AUTO_MAX, AdaptiveDepth, DepthPolicy, FixedDepth
from mtprun.runner.context import Context
from mtprun.runner.errors import MtprunError
from mtprun.runner.loader import LoadedModel, load_model
from mtprun.runner.sampling import SamplingParams
from mtprun.runner.speculative import decode
from mtprun.runner.stats import GenerationStats
from mtprun.runner.tokenizer import Tokenizer

DEFAULT_N_CTX = 4096


class Generation:
    """A generation in progress: iterate it for token ids as they are accepted; then read
    `.tokens`, `.text` and `.stats`."""

    def __init__(self, model: "Model", tokens: Iterator[int], stats: GenerationStats) -> None:
        self._model = model
        self._iter = tokens
        self.tokens: list[int] = []
        self.stats = stats

    def __iter__(self) -> Iterator[int]:
        for tok in self._iter:
            self.tokens.append(tok)
            yield tok

    def run(self) -> "Generation":
        for _ in self:
            pass
        return self

    @property
    def text(self) -> str:
        eog = self._model.tokenizer.eog_ids
        return self._model.detokenize([t for t in self.tokens if t not in eog])


class Model:
    def __init__(self, loaded: LoadedModel, backend: str, n_ctx: int, max_draft: int, threads: int | None,
                 activations: str = "f32") -> None:
        self.loaded = loaded
        self.path = loaded.path
        self.hparams = loaded.hp
        self.has_mtp = loaded.has_mtp
        self.max_draft = max_draft
        # One adaptive policy per model, carried from one generation to the next (chat turns,
        # benchmark prompts): what it measured (costs, acceptance) is still true of the next reply,
        # and a fresh policy would pay again for the probes that found drafts failing.
        self._auto_policy: AdaptiveDepth | None = None
        self.tokenizer = Tokenizer.from_gguf(loaded.file.reader, str(loaded.path))
        self.chat_template: str | None = loaded.file.get("tokenizer.chat_template", None)
        self.n_ctx = n_ctx
        engine = create_backend(backend, threads, activations=activations)
        self.backend_name = engine.name
        self._ctx = Context(loaded, engine, n_ctx, max_draft + 1 if loaded.has_mtp else 1)

    # -- text
    def tokenize(self, text: str, special: bool = True) -> list[int]:
        return self.tokenizer.tokenize(text, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.detokenize(list(ids))

    def memory_bandwidth(self) -> tuple[float, str] | None:
        """The backend's memory bandwidth test, where it has one and its buffer fits: (bytes a second,
        what was measured), else None. Takes a second or so and a 1 GiB buffer."""
        measure = getattr(self._ctx.backend, "memory_bandwidth", None)
        return measure() if measure is not None else None

    def device_memory_bytes(self) -> int | None:
        """Device memory the backend's buffers hold now (GPU backends), else None."""
        measure = getattr(self._ctx.backend, "device_memory_bytes", None)
        return measure() if measure is not None else None

    # -- inference
    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits at every position of `tokens`, in a fresh context, as one batch: [n_tokens, n_vocab]."""
        tokens = self._check_prompt(tokens)
        self._ctx.reset()
        out, _ = self._ctx.trunk(tokens, 0, list(range(len(tokens))))
        self._ctx.reset()
        return out

    def generate(self, prompt: Sequence[int] | str, n_predict: int = 128, **options) -> Generation:
        """Generate to completion; takes the same arguments as `stream`."""
        return self.stream(prompt, n_predict, **options).run()

    def stream(
        self,
        prompt: Sequence[int] | str,
        n_predict: int = 128,
        temp: float = 0.0,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        seed: int = 0,
        spec_draft_n_max: int | str = 0,
    ) -> Generation:
        """Start generating from `prompt` (token ids, or text tokenized with special tokens parsed).
        With `spec_draft_n_max` > 0 and an MTP head, up to that many tokens are drafted per step
        ("auto": the depth that maximises measured tokens/s, chosen before each step); the tokens
        are the same as without drafting."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        ids = self._check_prompt(ids)
        policy = self._depth_policy(spec_draft_n_max)
        if n_predict < 0:
            raise MtprunError(f"the number of tokens to predict must be positive, got {n_predict}.")
        sampling = SamplingParams(temp=temp, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed)
        stats = GenerationStats()
        tokens = decode(self._ctx, ids, n_predict, sampling, policy, frozenset(self.tokenizer.eog_ids), stats)
        return Generation(self, tokens, stats)

    def _depth_policy(self, spec_draft_n_max: int | str) -> DepthPolicy:
        if spec_draft_n_max == "auto":
            if self._auto_policy is None:
                self._auto_policy = AdaptiveDepth(n_max=min(DEFAULT_AUTO_MAX, self.max_draft))
            return self._auto_policy
        if isinstance(spec_draft_n_max, int) and 0 <= spec_draft_n_max <= self.max_draft:
            return FixedDepth(spec_draft_n_max)
        raise MtprunError(f"--spec-draft-n-max must be 'auto' or between 0 and {self.max_draft}, got {spec_draft_n_max!r}.")

    def _check_prompt(self, tokens: Sequence[int]) -> list[int]:
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise MtprunError("the prompt is empty.")
        if len(tokens) >= self.n_ctx:
            raise MtprunError(f"the prompt has {len(tokens)} tokens, more than the context size {self.n_ctx} allows.")
        bad = [t for t in tokens if not 0 <= t < self.hparams.n_vocab]
        if bad:
            raise MtprunError(f"token id {bad[0]} is outside the vocabulary (0..{self.hparams.n_vocab - 1}).")
        return tokens


def load(
    path: str | Path,
    backend: str = "auto",
    n_ctx: int | None = None,
    mtp_model: str | Path | None = None,
    max_draft: int = 8,
    threads: int | None = None,
    activations: str = "f32",
    mtp: bool = True,
) -> Model:
    """Open a Qwen3.5 / Qwen3.5-MoE GGUF (optionally with an MTP-only sidecar) on a backend
    ("auto": the fastest that starts here; "numpy" is the float32 reference). `activations`:
    "f32" (exact), "q8" (the CPU and CUDA backends' products take int8 activations, as llama.cpp's) or "q8x2"
    (two int8 planes, the second for the first's rounding error: near exact). `mtp=False` leaves the
    MTP head out (its weights, caches and verify snapshots): plain decoding only, in less memory."""
    loaded = load_model(path, mtp_model, mtp)
    if n_ctx is None:
        n_ctx = min(loaded.hp.n_ctx_train or DEFAULT_N_CTX, DEFAULT_N_CTX)
    if n_ctx < 8:
        raise MtprunError(f"context size {n_ctx} is too small (8 tokens at least).")
    return Model(loaded, backend, n_ctx, max_draft, threads, activations)
