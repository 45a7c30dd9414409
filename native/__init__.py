"""Backends that execute step graphs (runner.graph's contract): NumPy reference, then native ones."""

from __future__ import annotations

from mtprun.runner.errors import MtprunError
from mtprun.runner.graph import Backend

BACKENDS = ("auto", "cpu", "cuda", "numpy")
# What `auto` tries, fastest first; a backend that cannot start here is skipped.
AUTO_ORDER = ("cuda", "cpu", "numpy")


def create_backend(name: str, threads: int | None = None) -> Backend:
    """A fresh backend instance by name; unknown names are a user error. `threads` sizes the
    native backends' thread pool (default: the CPUs this process may use)."""
    if name == "auto":
        for candidate in AUTO_ORDER:
            try:
                return create_backend(candidate, threads)
            except MtprunError:
                continue
    if name == "numpy":
        from mtprun.native.numpy_backend import NumpyBackend

        return NumpyBackend()
    if name == "cpu":
        from mtprun.native.cpu_backend import CpuBackend

        return CpuBackend(threads)
    if name == "cuda":
        from mtprun.native.cuda_backend import CudaBackend

        return CudaBackend()
    raise MtprunError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}.")
