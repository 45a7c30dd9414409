"""Inputs of the int8-activation product tests, shared by the CPU suite (test_cpu_q8.py) and the CUDA
one (test_cuda_backend.py), which must not need the native CPU backend to run."""

from __future__ import annotations

import numpy as np

from mtprun.runner.graph import Backend, Graph

F32 = np.float32
MODES = {"q8": 1, "q8x2": 2}  # mode: int8 planes


def run_matmul(backend: Backend, x: np.ndarray, m: int) -> np.ndarray:
    """x [n, k] times the backend's loaded weight "w" [m, k], as one graph of n rows."""
    n, k = x.shape
    g = Graph(f"mm{n}")
    g.output("y", g.matmul(g.input("x", (n, k)), g.weight("w", (m, k))))
    return backend.run(g, {"x": x})["y"]


def activations(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Rows of very different magnitudes, one all-zero block (scale 0), exact ties at x * 127 / amax."""
    x = (rng.standard_normal((n, k)) * np.exp(rng.uniform(-8, 4, (n, 1)))).astype(F32)
    x[1, :32] = 0
    x[2, :4] = [127, 63.5, -0.5, 1.5]  # quants 127, 63.5 -> 64 (even), -0.5 -> -0, 1.5 -> 2
    x[2, 4:256] = 0
    return x
