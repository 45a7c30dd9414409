"""Backends that execute step graphs (runner.graph's contract): NumPy reference, then native ones."""

from __future__ import annotations

from mtprun.runner.errors import MtprunError
from mtprun.runner.graph import Backend

BACKENDS = ("auto", "cpu", "cuda", "vulkan", "metal", "numpy")
# What `auto` tries, fastest first; a backend that cannot start here is skipped, and so is Vulkan
# on a CPU driver (lavapipe), which the CPU backend beats. Metal is not tried until it has run on
# an Apple GPU (it is written, not yet tested on hardware).
AUTO_ORDER = ("cuda", "vulkan", "cpu", "numpy")
# The matrix products' activations on the CPU and CUDA backends (index = native/cpu/mtp.h's
# MTP_ACT_*): "f32" exact, "q8" int8 blocks as llama.cpp's, "q8x2" a second int8 plane for q8's
# rounding error.
ACTIVATIONS = ("f32", "q8", "q8x2")
ACTIVATION_BACKENDS = ("cpu", "cuda")
# The buffer of the backends' memory bandwidth tests (`memory_bandwidth`, optional in the contract):
# far past any cache, so the figure is main memory's (or VRAM's).
BANDWIDTH_TEST_BYTES = 1 << 30


def check_activations(activations: str) -> str:
    """`activations` if it is a mode of ACTIVATIONS, else the one-line user error."""
    if activations not in ACTIVATIONS:
        raise MtprunError(f"activations must be one of {', '.join(ACTIVATIONS)}, not {activations!r}.")
    return activations


def create_backend(name: str, threads: int | None = None, *, for_auto: bool = False, activations: str = "f32") -> Backend:
    """A fresh backend instance by name; unknown names are a user error. `threads` sizes the
    native backends' thread pool (default: the CPUs this process may use); `activations` is the
    CPU and CUDA backends' activation mode (ACTIVATIONS; other backends take f32)."""
    if name == "auto":
        for candidate in AUTO_ORDER:
            try:
                return create_backend(candidate, threads, for_auto=True, activations=activations)
            except MtprunError:
                continue
    if activations != "f32" and name not in ACTIVATION_BACKENDS:
        if for_auto:  # auto: a backend without the mode is skipped, not an error
            raise MtprunError(f"the {name} backend keeps f32 activations.")
        raise MtprunError(f"--activations {activations} applies to the cpu and cuda backends only, not {name}.")
    if name == "numpy":
        from mtprun.native.numpy_backend import NumpyBackend

        return NumpyBackend()
    if name == "cpu":
        from mtprun.native.cpu_backend import CpuBackend

        return CpuBackend(threads, activations)
    if name == "cuda":
        from mtprun.native.cuda_backend import CudaBackend

        return CudaBackend(activations=activations)
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
