"""Token choice: greedy ties, the top-k / top-p / min-p filters, and position-keyed randomness."""

from __future__ import annotations

import numpy as np

from mtprun.runner.sampling import SamplingParams, sample_token


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
