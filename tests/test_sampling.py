"""Token choice: greedy ties, the top-k / top-p / min-p filters, and position-keyed randomness."""

from __future__ import annotations

import numpy as np

from mtprun.runner.sampling import SamplingParams, sample_token, top_candidates


def test_greedy_takes_the_first_of_tied_maxima():
    assert sample_token(np.array([0.0, 3.0, 3.0, 1.0], np.float32), SamplingParams(), 0) == 1


def test_sampling_follows_the_filtered_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.04, 0.01]))
    params = SamplingParams(temp=1.0, top_k=4, top_p=0.9, min_p=0.0, seed=3)
    counts = np.bincount([sample_token(logits, params, pos) for pos in range(6000)], minlength=5)
    # top-k drops token 4; top-p (0.9) keeps 0, 1, 2 (0.5 + 0.3 < 0.9 <= 0.95); renormalised
    expected = np.array([0.5, 0.3, 0.15, 0, 0]) / 0.95
    assert counts[3] == counts[4] == 0
    assert np.abs(counts / counts.sum() - expected).max() < 0.02


def test_min_p_drops_unlikely_tokens():
    logits = np.log(np.array([0.6, 0.35, 0.05]))
    params = SamplingParams(temp=1.0, top_k=0, top_p=1.0, min_p=0.1, seed=0)
    assert {sample_token(logits, params, pos) for pos in range(500)} == {0, 1}


def test_temperature_sharpens():
    logits = np.log(np.array([0.6, 0.4]))
    cold = SamplingParams(temp=0.25, top_k=0, top_p=1.0, min_p=0.0)
    share = np.mean([sample_token(logits, cold, pos) == 0 for pos in range(3000)])
    assert abs(share - 0.6**4 / (0.6**4 + 0.4**4)) < 0.03


def test_randomness_is_keyed_by_seed_and_position():
    logits = np.zeros(50)
    a = SamplingParams(temp=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=1)
    b = SamplingParams(temp=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=2)
    same = [sample_token(logits, a, p) for p in range(40)]
    assert same == [sample_token(logits, a, p) for p in range(40)]
    assert same != [sample_token(logits, b, p) for p in range(40)]


def _sorted_reference(logits: np.ndarray, top_k: int) -> np.ndarray:
    order = np.argsort(-logits.astype(np.float64), kind="stable")
    return order[:top_k] if top_k > 0 else order


def test_top_candidates_are_a_stable_sorts_first_k():
    rng = np.random.default_rng(5)
    for trial in range(300):
        n = int(rng.integers(1, 400)) if trial % 2 else int(rng.integers(256 * 40, 256 * 70))  # bounds from chunks too
        # few distinct values (ties at the k-th place), signed zeros, infinities, or plain floats
        kind = trial % 4
        row = (rng.integers(-3, 4, n).astype(np.float32) if kind == 0 else
               rng.choice(np.array([0.0, -0.0, 1.0], np.float32), n) if kind == 1 else
               rng.choice(np.array([-np.inf, 2.0, np.inf, 2.0], np.float32), n) if kind == 2 else
               rng.standard_normal(n).astype(np.float32))
        if trial % 7 == 0:
            row[rng.integers(0, n)] = np.nan
        for top_k in (0, 1, int(rng.integers(1, n + 1)), n, n + 3):
            assert np.array_equal(top_candidates(row, top_k), _sorted_reference(row, top_k)), (trial, top_k)


def _sample_from_the_sorted_row(logits: np.ndarray, params: SamplingParams, position: int) -> int:
    """The earlier sampler: the whole row sorted, then the same filters."""
    logits = logits.astype(np.float64)
    order = _sorted_reference(logits, params.top_k)
    probs = _softmax(logits[order])
    if params.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probs), params.top_p) + 1)
        order, probs = order[:keep], probs[:keep]
    if params.min_p > 0.0:
        order = order[probs >= params.min_p * probs[0]]
    probs = _softmax(logits[order] / params.temp)
    return int(order[np.random.default_rng([params.seed & 0xFFFFFFFF, position]).choice(len(order), p=probs)])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_sampled_tokens_equal_those_of_the_sorted_row():
    rng = np.random.default_rng(9)
    for trial in range(300):
        row = (rng.standard_normal(500) * 2).astype(np.float32)
        if trial % 2:
            row = np.round(row)  # ties
        params = SamplingParams(temp=float(rng.choice([0.3, 0.8, 1.5])), top_k=int(rng.integers(0, 60)),
                                top_p=float(rng.uniform(0.5, 1.0)), min_p=float(rng.choice([0.0, 0.05])), seed=trial)
        assert sample_token(row, params, trial) == _sample_from_the_sorted_row(row, params, trial), trial
