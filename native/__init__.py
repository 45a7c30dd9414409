"""Backends that execute step graphs (runner.graph's contract): NumPy reference, then native ones."""

from __future__ import annotations

from mtprun.runner.errors import MtprunError
from mtprun.runner.graph import Backend

BACKENDS = ("auto", "cpu", "cuda", "vulkan", "metal", "numpy")
# What `auto` tries, fastest first; a backend that cannot start here is skipped, and so is Vulkan
# on a CPU driver (lavapipe), which the CPU backend beats. Metal is not tried until it has run on
# an Apple GPU (it is written, not yet tested on hardware).
AUTO_ORDER = ("cuda", "vulkan", "cpu", "numpy")


def create_backend(name: str, threads: int | None = None, *, for_auto: bool = False) -> Backend:
    """A fresh backend instance by name; unknown names are a user error. `threads` sizes the
    native backends' thread pool (default: the CPUs this process may use)."""
    if name == "auto":
        for candidate in AUTO_ORDER:
            try:
                return create_backend(candidate, threads, for_auto=True)
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
    if name == "vulkan":
        from mtprun.native.vulkan_backend import VulkanBackend

        return VulkanBackend(gpu_only=for_auto)
    if name == "metal":
        from mtprun.native.metal_backend import MetalBackend

        return MetalBackend()
    raise MtprunError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}.")


def describe_backends() -> list[tuple[str, bool, str]]:
    """Every backend with whether it starts here and its device, or why not (`mtprun info --backends`)."""
    rows = []
    for name in BACKENDS[1:]:
        try:
            backend = create_backend(name)
        except MtprunError as exc:
            rows.append((name, False, str(exc)))
            continue
        rows.append((name, True, getattr(backend, "device_name", "this CPU")))
    return rows
