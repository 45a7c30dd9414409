"""Choosing the target model's token from its logits: greedy, or top-k / top-p / min-p / temperature.

Randomness is keyed by (seed, position), not drawn from one running stream: the token at a position
depends only on that position's logits, so MTP on or off (any draft depth) yields the same tokens,
and speculative acceptance (draft kept iff it equals the target's own sample) stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temp: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temp <= 0.0


def sample_token(logits: np.ndarray, params: SamplingParams, position: int) -> int:
    """The token for `position` given its logits row (first index on ties when greedy)."""
    if params.greedy:
        return int(np.argmax(logits))
    logits = logits.astype(np.float64)
    order = np.argsort(-logits, kind="stable")
    if params.top_k > 0:
        order = order[: params.top_k]
    probs = _softmax(logits[order])
    if params.top_p < 1.0:
        # keep the smallest prefix whose mass reaches top_p (at least one token)
        keep = int(np.searchsorted(np.cumsum(probs), params.top_p) + 1)
        order, probs = order[:keep], probs[:keep]
    if params.min_p > 0.0:
        keep_mask = probs >= params.min_p * probs[0]
        order = order[keep_mask]
    probs = _softmax(logits[order] / params.temp)
    rng = np.random.default_rng([params.seed & 0xFFFFFFFF, position])
    return int(order[rng.choice(len(order), p=probs)])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()
