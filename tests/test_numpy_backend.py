"""The NumPy reference backend's own forms: the chunked gated delta rule equals the recurrent one."""

from __future__ import annotations

import numpy as np

from mtprun.native.numpy_backend import DELTA_NET_CHUNK, NumpyBackend
from mtprun.runner.graph import Graph, StateSpec


def _delta_net(snapshots: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    hk, hv, dim = 2, 4, 32
    backend = NumpyBackend()
    backend.alloc_states([StateSpec("s", "recurrent", (hv, dim, dim), snapshots)])
    g = Graph("delta")
    ins = {name: g.input(name, shape) for name, shape in
           [("q", (n, hk, dim)), ("k", (n, hk, dim)), ("v", (n, hv, dim)), ("g", (n, hv)), ("b", (n, hv))]}
    g.output("o", g.delta_net(ins["q"], ins["k"], ins["v"], ins["g"], ins["b"], "s"))
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731 - q, k are l2-normed
    inputs = {
        "q": unit(rng.standard_normal((n, hk, dim))).astype(np.float32),
        "k": unit(rng.standard_normal((n, hk, dim))).astype(np.float32),
        "v": rng.standard_normal((n, hv, dim)).astype(np.float32),
        "g": (-0.3 * np.abs(rng.standard_normal((n, hv)))).astype(np.float32),
        "b": rng.uniform(0, 1, (n, hv)).astype(np.float32),
    }
    out = backend.run(g, inputs)["o"]
    backend.commit(["s"], n)
    return out, backend.read_state("s")[0]


def test_chunked_prefill_matches_token_by_token():
    n = 3 * DELTA_NET_CHUNK + 11
    recurrent_out, recurrent_state = _delta_net(snapshots=n, n=n, seed=5)  # all snapshots: no chunking
    chunked_out, chunked_state = _delta_net(snapshots=4, n=n, seed=5)
    assert not np.array_equal(recurrent_out, chunked_out)  # the chunked form did run
    assert np.abs(chunked_out - recurrent_out).max() <= 1e-5 * np.abs(recurrent_out).max()
    assert np.abs(chunked_state - recurrent_state).max() <= 1e-5 * np.abs(recurrent_state).max()
