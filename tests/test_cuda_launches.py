"""The CUDA backend's launches checked against its kernels without a GPU (CI has none): the kernels
built to PTX by NVRTC, the launches made by gpu.py for the fixtures' graphs on a device that runs
nothing. Every launch must name a kernel of the sources and pass parameters of the sizes the kernel
declares, in its order: a kernel whose signature changed without its launch, or the reverse, fails
here rather than first on a GPU."""

from __future__ import annotations

import ctypes
import re
from ctypes import byref, c_char_p, c_size_t, c_void_p
from functools import lru_cache

import numpy as np
import pytest

import mtprun
from fixtures import model_file, needs_fixtures
from mtprun.runner.errors import MtprunError

pytestmark = needs_fixtures

_PARAM = re.compile(r"\.param (?:\.align \d+ )?\.(\w+) \w+(?:\[(\d+)\])?")
_BYTES = {"u64": 8, "s64": 8, "b64": 8, "f64": 8, "u32": 4, "s32": 4, "b32": 4, "f32": 4, "u16": 2, "b16": 2, "u8": 1, "b8": 1}


@lru_cache(maxsize=None)
def _declared() -> dict[str, list[int]]:
    """Each kernel's parameter sizes in bytes, from the PTX NVRTC builds of the sources."""
    from mtprun.native.cuda.module import OPTIONS, source
    from mtprun.native.cuda.nvrtc import Nvrtc

    try:
        nvrtc = Nvrtc((9, 0))
    except MtprunError as e:
        pytest.skip(str(e))
    if (9, 0) not in nvrtc.architectures:  # the PTX below is compute_90's
        pytest.skip(f"this NVRTC ({nvrtc.version[0]}.{nvrtc.version[1]}) does not build for sm_90")
    lib = nvrtc._lib
    lib.nvrtcGetPTXSize.argtypes, lib.nvrtcGetPTXSize.restype = [c_void_p, ctypes.POINTER(c_size_t)], ctypes.c_int
    lib.nvrtcGetPTX.argtypes, lib.nvrtcGetPTX.restype = [c_void_p, c_char_p], ctypes.c_int
    prog = c_void_p()
    assert lib.nvrtcCreateProgram(byref(prog), source().encode(), b"mtprun_kernels.cu", 0, None, None) == 0
    try:
        options = [b"--gpu-architecture=compute_90", *(o.encode() for o in OPTIONS)]
        assert lib.nvrtcCompileProgram(prog, len(options), (c_char_p * len(options))(*options)) == 0
        size = c_size_t()
        assert lib.nvrtcGetPTXSize(prog, byref(size)) == 0
        ptx = ctypes.create_string_buffer(size.value)
        assert lib.nvrtcGetPTX(prog, ptx) == 0
    finally:
        lib.nvrtcDestroyProgram(byref(prog))
    return {name: [_BYTES[kind] * int(count or 1) for kind, count in _PARAM.findall(params)]
            for name, params in re.findall(r"\.entry (\w+)\(([^)]*)\)", ptx.value.decode())}


class _Buffer:
    """Device memory that is host memory: addresses for the launches, nothing run on it."""

    def __init__(self, nbytes: int) -> None:
        self.mem = np.zeros(nbytes + 64, np.uint8)
        self.array, self.nbytes, self.ptr = self.mem[:nbytes], nbytes, self.mem.ctypes.data

    def view(self, offset: int, shape, dtype) -> np.ndarray:
        return self.mem[offset : offset + int(np.prod(shape)) * np.dtype(dtype).itemsize].view(dtype).reshape(shape)


def _device_without_gpu(activations: str, int8_mma: bool):
    """A CudaDevice's kernel choices (its class attributes) with memory that is host memory."""
    from mtprun.native.cuda_backend import CudaDevice

    attrs = {k: v for k, v in vars(CudaDevice).items() if not k.startswith("__") and not callable(v) and not isinstance(v, property)}
    attrs.update(activations=activations, int8_mma=int8_mma, early_launches=True, graphs=True, name="no GPU", buffer_bytes=0,
                 alloc=lambda self, n: _Buffer(n), wrap=lambda self, data: _Buffer(data.nbytes), host=lambda self, n: _Buffer(n),
                 upload=lambda self, *a: None, zero=lambda self, *a: None, download=lambda self, out, ptr: out,
                 prepare=lambda self, c: (c.launches, None), execute=lambda self, c: None)
    return type("NoGpu", (), attrs)()


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "separate"])
@pytest.mark.parametrize("activations, int8_mma", [("f32", True), ("q8", True), ("q8x2", True), ("q8", False)])
@pytest.mark.parametrize("model, qtype", [("tinycoder", "q4_k_m"), ("tinycoder", "q8_0"), ("tiny-qwen35moe", "q4_k_m")])
def test_every_launch_matches_its_kernel(model, qtype, activations, int8_mma, fuse):
    from mtprun.native.gpu import GpuBackend

    declared = _declared()
    m = mtprun.load(model_file(model, qtype), backend="numpy", n_ctx=64)
    device = _device_without_gpu(activations, int8_mma)
    device.fuse = fuse
    be = GpuBackend(device)
    be.load_weights(m.loaded.weights)
    be.alloc_states(m._ctx._trunk_specs + m._ctx._mtp_specs)
    graphs = m.loaded.graphs
    launched = set()
    for graph in (graphs.trunk(1, [0]), graphs.trunk(4, [0, 1, 2, 3], True), graphs.mtp(1, [0]), graphs.mtp(3, [2]),
                  graphs.draft_step(2, 3, True), graphs.draft_step(1, 1, False), graphs.prompt(6, True, True), graphs.prompt(6, True, True, True), graphs.prompt(80, True, False)):
        for launch in be._compile(graph).launches:
            assert launch.kernel in declared, (graph.name, launch.kernel)
            passed = [ctypes.sizeof(v) for v in launch.values]
            assert passed == declared[launch.kernel], (graph.name, launch.kernel, passed)
            launched.add(launch.kernel)
    assert any(k.startswith("delta_net") for k in launched) and (not fuse or any(k.startswith("norm_fused") for k in launched))
