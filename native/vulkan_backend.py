"""The Vulkan backend: native/gpu.py's GpuBackend on a Vulkan 1.2 device (native/vulkan/): the same
kernels as the CUDA backend, as GLSL compute shaders shipped compiled to SPIR-V, each step one
recorded command buffer resubmitted. Runs on any GPU with a Vulkan driver, and on the CPU through
Mesa's lavapipe (which is how CI tests it)."""

from __future__ import annotations

from mtprun.native.gpu import GpuBackend
from mtprun.native.vulkan.device import open_device


class VulkanBackend(GpuBackend):
    name = "vulkan"

    def __init__(self, gpu_only: bool = False) -> None:
        """gpu_only: refuse a CPU driver (what `--backend auto` asks: the CPU backend is faster there)."""
        super().__init__(open_device(gpu_only))
        self.on_cpu_driver = self._dev.on_cpu_driver
