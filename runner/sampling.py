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
    order = top_candidates(logits, params.top_k)
    values = logits[order].astype(np.float64)
    probs = _softmax(values)
    if params.top_p < 1.0:
        # keep the smallest prefix whose mass reaches top_p (at least one token)
        keep = int(np.searchsorted(np.cumsum(probs), params.top_p) + 1)
        order, values, probs = order[:keep], values[:keep], probs[:keep]
    if params.min_p > 0.0:
        keep_mask = probs >= params.min_p * probs[0]
        order, values = order[keep_mask], values[keep_mask]
    probs = _softmax(values / params.temp)
    rng = np.random.default_rng([params.seed & 0xFFFFFFFF, position])
    return int(order[rng.choice(len(order), p=probs)])


def top_candidates(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Token ids by falling logit, equal logits by id (a stable sort's order), the first `top_k` of them
    (every id where top_k <= 0). The top_k are found in one pass (argpartition), not by sorting the row:
    sorting a 248k vocabulary took ~25 ms a sampled token. NaNs (after every number, as a stable sort of
    the negated row puts them) take the sort."""
    n = logits.shape[0]
    if top_k <= 0 or top_k >= n or np.isnan(logits).any():
        return np.argsort(-logits.astype(np.float64), kind="stable")[: top_k if top_k > 0 else n]
    threshold = logits[np.argpartition(logits, n - top_k)[n - top_k :]].min()  # the top_k-th largest
    above = np.flatnonzero(logits > threshold)
    candidates = np.concatenate([above, np.flatnonzero(logits == threshold)[: top_k - len(above)]])
    return candidates[np.lexsort((candidates, -logits[candidates]))]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()
