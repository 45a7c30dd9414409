"""The CUDA driver API (libcuda.so.1) through ctypes: one device, its primary context, memory,
modules, kernel launches, and CUDA graphs: a launch list captured once on a stream
(cuStreamBeginCapture / cuStreamEndCapture), instantiated, then replayed with one cuGraphLaunch.
With `early`, every launch after the first is captured with programmatic stream serialization
(sm_90 and later), so that the graph lets each kernel start while the one before it drains (the
kernels' allow_next / wait_previous, kernels/common.cuh).
Work runs on one blocking stream, so the synchronous copies and memsets of the legacy default
stream (weight uploads, state resets and reads) stay ordered with it."""

from __future__ import annotations

import ctypes
from ctypes import POINTER, Structure, byref, c_char_p, c_int, c_size_t, c_uint, c_uint64, c_void_p
from typing import Sequence

import numpy as np
from mtprun.native.device_memory import byte_view
from mtprun.runner.errors import MtprunError

_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76
_FUNC_MAX_DYNAMIC_SHARED = 8  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES

_SIGNATURES: dict[str, list] = {
    "cuInit": [c_uint],
    "cuDriverGetVersion": [POINTER(c_int)],
    "cuDeviceGetCount": [POINTER(c_int)],
    "cuDeviceGet": [POINTER(c_int), c_int],
    "cuDeviceGetName": [c_char_p, c_int, c_int],
    "cuDeviceGetAttribute": [POINTER(c_int), c_int, c_int],
    "cuDevicePrimaryCtxRetain": [POINTER(c_void_p), c_int],
    "cuCtxSetCurrent": [c_void_p],
    "cuMemAlloc_v2": [POINTER(c_uint64), c_size_t],
    "cuMemFree_v2": [c_uint64],
    "cuMemcpyHtoD_v2": [c_uint64, c_void_p, c_size_t],
    "cuMemcpyDtoH_v2": [c_void_p, c_uint64, c_size_t],
    "cuMemcpyDtoD_v2": [c_uint64, c_uint64, c_size_t],
    "cuMemsetD8_v2": [c_uint64, ctypes.c_ubyte, c_size_t],
    "cuModuleLoadData": [POINTER(c_void_p), c_void_p],
    "cuModuleGetFunction": [POINTER(c_void_p), c_void_p, c_char_p],
    "cuFuncSetAttribute": [c_void_p, c_int, c_int],
    "cuLaunchKernel": [c_void_p, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_void_p, c_void_p, c_void_p],
    "cuGetErrorString": [c_int, POINTER(c_char_p)],
    "cuCtxSynchronize": [],
    "cuStreamCreate": [POINTER(c_void_p), c_uint],
    "cuStreamDestroy_v2": [c_void_p],
    "cuStreamSynchronize": [c_void_p],
    "cuStreamBeginCapture_v2": [c_void_p, c_int],
    "cuStreamEndCapture": [c_void_p, POINTER(c_void_p)],
    "cuGraphInstantiateWithFlags": [POINTER(c_void_p), c_void_p, c_uint64],
    "cuGraphLaunch": [c_void_p, c_void_p],
    "cuGraphExecDestroy": [c_void_p],
    "cuGraphDestroy": [c_void_p],
    "cuMemAllocHost_v2": [POINTER(c_void_p), c_size_t],
    "cuMemFreeHost": [c_void_p],
    "cuMemcpyHtoDAsync_v2": [c_uint64, c_void_p, c_size_t, c_void_p],
    "cuMemcpyDtoHAsync_v2": [c_void_p, c_uint64, c_size_t, c_void_p],
}
_STREAM_DEFAULT = 0  # a blocking stream: ordered with the legacy default stream
_CAPTURE_RELAXED = 2
_ATTR_PROGRAMMATIC_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
_PDL_DRIVER = 12030  # captured programmatic launches need driver 12.3


class _LaunchAttribute(Structure):  # CUlaunchAttribute: an id, then a 64-byte value union
    _fields_ = [("id", c_int), ("pad", c_int), ("value", c_int * 16)]


class _LaunchConfig(Structure):  # CUlaunchConfig
    _fields_ = [("grid", c_uint * 3), ("block", c_uint * 3), ("shared", c_uint), ("stream", c_void_p),
                ("attrs", POINTER(_LaunchAttribute)), ("num_attrs", c_uint)]


class CudaError(MtprunError):
    """A CUDA driver call failed."""


class Driver:
    """libcuda, device `ordinal`'s primary context made current; every call checked."""

    def __init__(self, ordinal: int = 0) -> None:
        try:
            lib = ctypes.CDLL("libcuda.so.1")
        except OSError:
            raise MtprunError("the CUDA backend needs an NVIDIA GPU and its driver (libcuda.so.1 was not found).") from None
        for name, args in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, c_int
        if hasattr(lib, "cuLaunchKernelEx"):  # CUDA 12 drivers
            lib.cuLaunchKernelEx.argtypes = [POINTER(_LaunchConfig), c_void_p, c_void_p, c_void_p]
            lib.cuLaunchKernelEx.restype = c_int
        self._lib = lib
        rc = lib.cuInit(0)
        if rc != 0:
            raise MtprunError(f"the CUDA driver found no usable GPU (cuInit: {self._error(rc)}).")
        count = c_int()
        self.check(lib.cuDeviceGetCount(byref(count)), "cuDeviceGetCount")
        if not 0 <= ordinal < count.value:
            raise MtprunError(f"CUDA device {ordinal} does not exist ({count.value} found).")
        dev = c_int()
        self.check(lib.cuDeviceGet(byref(dev), ordinal), "cuDeviceGet")
        self.device = dev.value
        self.compute_capability = (self._attr(_ATTR_CC_MAJOR), self._attr(_ATTR_CC_MINOR))
        name = ctypes.create_string_buffer(256)
        self.check(lib.cuDeviceGetName(name, 256, self.device), "cuDeviceGetName")
        self.name = name.value.decode()
        version = c_int()
        self.check(lib.cuDriverGetVersion(byref(version)), "cuDriverGetVersion")
        self.version = version.value
        self.buffer_bytes = 0  # device memory the live Buffer objects hold
        ctx = c_void_p()
        self.check(lib.cuDevicePrimaryCtxRetain(byref(ctx), self.device), "cuDevicePrimaryCtxRetain")
        self.check(lib.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        # Bound once: the hot path checks their codes itself.
        self.launch_kernel = lib.cuLaunchKernel
        self.graph_launch = lib.cuGraphLaunch
        self.htod_async = lib.cuMemcpyHtoDAsync_v2
        self.dtoh_async = lib.cuMemcpyDtoHAsync_v2
        self.stream_sync = lib.cuStreamSynchronize

    def _attr(self, attr: int) -> int:
        v = c_int()
        self.check(self._lib.cuDeviceGetAttribute(byref(v), attr, self.device), "cuDeviceGetAttribute")
        return v.value

    def _error(self, rc: int) -> str:
        s = c_char_p()
        self._lib.cuGetErrorString(rc, byref(s))
        return s.value.decode() if s.value else f"error {rc}"

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise CudaError(f"CUDA {what} failed: {self._error(rc)}.")

    # -- memory
    def alloc(self, nbytes: int) -> int:
        ptr = c_uint64()
        self.check(self._lib.cuMemAlloc_v2(byref(ptr), max(int(nbytes), 1)), f"cuMemAlloc ({nbytes} bytes)")
        return ptr.value

    def free(self, ptr: int) -> None:
        self.check(self._lib.cuMemFree_v2(ptr), "cuMemFree")

    def upload(self, ptr: int, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        self.check(self._lib.cuMemcpyHtoD_v2(ptr, arr.ctypes.data, arr.nbytes), "cuMemcpyHtoD")

    def download(self, out: np.ndarray, ptr: int) -> np.ndarray:
        assert out.flags.c_contiguous
        self.check(self._lib.cuMemcpyDtoH_v2(out.ctypes.data, ptr, out.nbytes), "cuMemcpyDtoH")
        return out

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        """Device to device; asynchronous to the host (synchronize to wait for it)."""
        self.check(self._lib.cuMemcpyDtoD_v2(dst, src, nbytes), "cuMemcpyDtoD")

    def zero(self, ptr: int, nbytes: int) -> None:
        self.check(self._lib.cuMemsetD8_v2(ptr, 0, nbytes), "cuMemsetD8")

    def alloc_host(self, nbytes: int) -> int:
        """Page-locked host memory (asynchronous copies from and to it need no staging)."""
        p = c_void_p()
        self.check(self._lib.cuMemAllocHost_v2(byref(p), max(int(nbytes), 1)), f"cuMemAllocHost ({nbytes} bytes)")
        return p.value

    def free_host(self, ptr: int) -> None:
        self.check(self._lib.cuMemFreeHost(c_void_p(ptr)), "cuMemFreeHost")

    def synchronize(self) -> None:
        self.check(self._lib.cuCtxSynchronize(), "cuCtxSynchronize")

    # -- streams and graphs
    def create_stream(self) -> c_void_p:
        s = c_void_p()
        self.check(self._lib.cuStreamCreate(byref(s), _STREAM_DEFAULT), "cuStreamCreate")
        return s

    def destroy_stream(self, stream: c_void_p) -> None:
        self.check(self._lib.cuStreamDestroy_v2(stream), "cuStreamDestroy")

    @property
    def early_launches(self) -> bool:
        """Whether captured launches may overlap the kernel before them (programmatic dependent launch)."""
        return self.compute_capability >= (9, 0) and self.version >= _PDL_DRIVER and hasattr(self._lib, "cuLaunchKernelEx")

    def _launch_early(self, fn: c_void_p, gx: int, gy: int, block: int, shared: int, stream: c_void_p, params) -> int:
        attr = _LaunchAttribute(_ATTR_PROGRAMMATIC_SERIALIZATION)
        attr.value[0] = 1
        config = _LaunchConfig((gx, gy, 1), (block, 1, 1), shared, stream, ctypes.pointer(attr), 1)
        return self._lib.cuLaunchKernelEx(byref(config), fn, params, None)

    def capture(self, stream: c_void_p, launches: Sequence, early: bool = False) -> tuple[c_void_p, c_void_p]:
        """Capture (fn, (gx, gy), block, shared, params, ...) launches on `stream` into a graph, with
        `early` each after the first as a programmatic dependent; returns (graph, instantiated graph)."""
        lib = self._lib
        self.check(lib.cuStreamBeginCapture_v2(stream, _CAPTURE_RELAXED), "cuStreamBeginCapture")
        rc = 0
        try:
            for i, (fn, (gx, gy), block, shared, params, *_) in enumerate(launches):
                if early and i:
                    rc = self._launch_early(fn, gx, gy, block, shared, stream, params)
                else:
                    rc = lib.cuLaunchKernel(fn, gx, gy, 1, block, 1, 1, shared, stream, params, None)
                if rc:
                    break
        finally:
            graph = c_void_p()
            end = lib.cuStreamEndCapture(stream, byref(graph))
        self.check(rc, "cuLaunchKernel (capturing)")
        self.check(end, "cuStreamEndCapture")
        exe = c_void_p()
        rc = lib.cuGraphInstantiateWithFlags(byref(exe), graph, 0)
        if rc:
            lib.cuGraphDestroy(graph)
            self.check(rc, "cuGraphInstantiate")
        return graph, exe

    def destroy_graph(self, graph: c_void_p, exe: c_void_p) -> None:
        self._lib.cuGraphExecDestroy(exe)
        self._lib.cuGraphDestroy(graph)

    # -- modules and launches
    def load_module(self, image: bytes) -> c_void_p:
        mod = c_void_p()
        self.check(self._lib.cuModuleLoadData(byref(mod), image), "cuModuleLoadData")
        return mod

    def function(self, module: c_void_p, name: str) -> c_void_p:
        fn = c_void_p()
        self.check(self._lib.cuModuleGetFunction(byref(fn), module, name.encode()), f"cuModuleGetFunction({name})")
        return fn

    def allow_shared(self, fn: c_void_p, nbytes: int) -> None:
        """Let `fn` take `nbytes` of dynamic shared memory per block (past 48 KiB a kernel must ask)."""
        self.check(self._lib.cuFuncSetAttribute(fn, _FUNC_MAX_DYNAMIC_SHARED, nbytes), "cuFuncSetAttribute")


class Buffer:
    """Device memory owned by a Python object: freed with it."""

    def __init__(self, driver: Driver, nbytes: int) -> None:
        self.driver, self.nbytes = driver, int(nbytes)
        self.ptr = driver.alloc(nbytes)
        driver.buffer_bytes += self.nbytes

    def __del__(self) -> None:
        ptr, self.ptr = getattr(self, "ptr", 0), 0
        if ptr:
            self.driver.buffer_bytes -= self.nbytes
            try:
                self.driver.free(ptr)
            except Exception:  # interpreter shutdown: the context is going away anyway
                pass


class HostBuffer:
    """Page-locked host memory owned by a Python object, with a uint8 NumPy view; freed with it."""

    def __init__(self, driver: Driver, nbytes: int) -> None:
        self.driver, self.nbytes = driver, int(nbytes)
        self.ptr = driver.alloc_host(nbytes)
        self.array = np.frombuffer((ctypes.c_ubyte * max(self.nbytes, 1)).from_address(self.ptr), np.uint8)

    def view(self, offset: int, shape: tuple[int, ...], dtype) -> np.ndarray:
        return byte_view(self.array, offset, shape, dtype)

    def __del__(self) -> None:
        ptr, self.ptr = getattr(self, "ptr", 0), 0
        if ptr:
            try:
                self.driver.free_host(ptr)
            except Exception:
                pass


class CudaGraph:
    """An instantiated CUDA graph of a launch list, replayed with `launch`; destroyed with it."""

    def __init__(self, driver: Driver, stream: c_void_p, launches: Sequence, early: bool = False) -> None:
        self.driver = driver
        self.graph, self.exe = driver.capture(stream, launches, early)

    def __del__(self) -> None:
        exe, self.exe = getattr(self, "exe", None), None
        if exe:
            try:
                self.driver.destroy_graph(self.graph, exe)
            except Exception:
                pass


def kernel_args(values: Sequence[ctypes._SimpleCData]) -> ctypes.Array:
    """cuLaunchKernel's void** parameter array; keep `values` alive as long as the array."""
    return (c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
