"""The Metal backend: native/gpu.py's GpuBackend on an Apple GPU (native/metal/): the same kernels
as the CUDA backend, ported to Metal Shading Language and compiled at run time, reaching buffers
in unified memory by GPU address; each step one command buffer encoded from a prepared list.

Written to the same contract as the CUDA and Vulkan backends but not yet run on hardware: no Mac
was at hand. Off macOS it refuses to start, in one line."""

from __future__ import annotations

from mtprun.native.gpu import GpuBackend
from mtprun.native.metal.device import MetalDevice


class MetalBackend(GpuBackend):
    name = "metal"

    def __init__(self) -> None:
        super().__init__(MetalDevice())
