"""Backends that execute step graphs (runner.graph's contract): NumPy reference, then native ones."""

from __future__ import annotations

from mtprun.runner.errors import MtprunError
from mtprun.runner.graph import Backend

BACKENDS = ("numpy",)


def create_backend(name: str) -> Backend:
    """A fresh backend instance by name; unknown names are a user error."""
    if name == "numpy":
        from mtprun.native.numpy_backend import NumpyBackend

        return NumpyBackend()
    raise MtprunError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}.")
