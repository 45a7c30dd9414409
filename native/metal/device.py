"""The system's Metal device as native/gpu.py's GpuDevice, for Apple GPUs (unified memory).

Memory: every buffer is shared storage, so the CPU reaches device memory directly (uploads,
downloads and fills are NumPy copies; the GPU is idle whenever the CPU touches it, since every
step waits for its command buffer). Kernels reach buffers by gpuAddress (Metal 3), so nothing is
bound per dispatch: each step makes the buffers its launches point into resident with one
useResources call (a heap with useHeap would need sizes known up front, and the no-copy weight
buffers cannot live in a heap). Weights (`wrap`) are mapped in place, memory-mapped GGUF pages
and all, with newBufferWithBytesNoCopy where Metal accepts the pages, else copied.

Steps: Metal command buffers are one-shot, so a compiled graph is prepared once into a list of
(pipeline, packed argument bytes, grid, threadgroup, threadgroup memory) and each step encodes that
list into one command buffer: inputs memcpy'd into the arena, one serial compute encoder, commit,
wait, outputs memcpy'd out (with shared storage a blit pass would only add an encoder). An indirect
command buffer could replace the per-step encoding (its arguments in a buffer instead of setBytes,
pipelines built for indirect use); worth it only if encoding shows up in measurements, which
needs a Mac.
"""

from __future__ import annotations

import ctypes
import mmap
from ctypes import byref, c_void_p
from typing import Any, NamedTuple

import numpy as np
from mtprun.native.device_memory import AddressMap, byte_view
from mtprun.native.gpu import Compiled
from mtprun.native.metal import api, library, objc
from mtprun.native.metal.arguments import addresses, pack_arguments, threadgroup_bytes
from mtprun.runner.errors import MtprunError

SIMD_WIDTH = 32  # the kernels' butterflies and per-lane splits are CUDA's 32-lane warps

_LIBRARIES: dict[int, int] = {}  # device -> compiled kernel library, once per process


class HostBuffer:
    """Host memory with a uint8 NumPy view: the staging images of a graph's input and output regions."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def view(self, offset: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return byte_view(self.array, offset, shape, dtype)


class MetalBuffer(HostBuffer):
    """`nbytes` bytes at `offset` in a shared-storage MTLBuffer: the GPU reaches them at `ptr`, the
    CPU through `array`. `owner`: the host memory a no-copy buffer maps, kept alive with it."""

    def __init__(self, dev: MetalDevice, handle: int, offset: int, nbytes: int, owner: Any = None) -> None:
        self.dev, self.handle, self.nbytes, self.owner = dev, handle, int(nbytes), owner
        self.ptr = api.gpu_address(handle) + offset
        cpu = api.contents(handle) + offset
        super().__init__(np.frombuffer((ctypes.c_ubyte * max(self.nbytes, 1)).from_address(cpu), np.uint8)[: self.nbytes])
        dev.buffers.add(self)

    def __del__(self) -> None:
        handle, self.handle = getattr(self, "handle", None), None
        if handle:
            try:
                self.dev.buffers.remove(self)
                objc.release(handle)
            except Exception:  # interpreter shutdown: the process is going away anyway
                pass


class Step(NamedTuple):
    pipeline: int
    args: bytes  # the kernel's argument struct, for setBytes at index 0
    grid: api.MTLSize  # threadgroups
    threads: api.MTLSize  # per threadgroup
    shared: int  # dynamic threadgroup memory at index 0 (bytes; 0: none)


class Program:
    """A compiled graph's steps and the buffers they reach (made resident each step; kept alive here)."""

    def __init__(self, steps: list[Step], buffers: list[MetalBuffer]) -> None:
        self.steps, self.buffers = steps, buffers
        self.resources = (c_void_p * len(buffers))(*[b.handle for b in buffers])


def compile_library(device: int) -> int:
    """The kernels compiled for `device` from their MSL source, once per process: fast math off
    (results as the reference rounds them), the newest language version the system has (Metal 3
    at least, which the GPU family check guarantees: device pointers in argument structs; from 3.2
    the kernels also turn fp contraction off, see common.h)."""
    lib = _LIBRARIES.get(device)
    if lib is None:
        with objc.autorelease_pool():
            options = objc.create("MTLCompileOptions")
            api.set_fast_math_enabled(options, False)
            err = c_void_p()
            lib = api.new_library_with_source(device, objc.nsstring(library.source()), options, byref(err))
            objc.release(options)
            if not lib:
                first = objc.error_text(err.value).strip().splitlines()[:1] or ["no log"]
                raise MtprunError(f"the Metal kernels did not compile ({first[0]}; `python -m mtprun.native.metal.library` "
                                  "prints the source for xcrun metal).")
        _LIBRARIES[device] = lib
    return lib


class MetalDevice:
    """GpuDevice on the system's default Metal device (a process-wide object: never released here):
    one command queue, the kernel library, a pipeline per kernel name."""

    device_seconds = None  # steps are not timed on the device

    def __init__(self) -> None:
        handle = api.create_system_default_device()  # off macOS: the one-line error
        if not handle:
            raise MtprunError(f"{objc.NEEDS}; Metal found no GPU here.")
        self.handle = handle
        with objc.autorelease_pool():
            self.name = objc.text(api.name(handle))
        if not (api.supports_family(handle, api.GPU_FAMILY_APPLE7) and api.supports_family(handle, api.GPU_FAMILY_METAL3)):
            raise MtprunError(f"{objc.NEEDS} (M1 or later) with Metal 3 (macOS 13 or later); this is {self.name}.")
        self.queue = api.new_command_queue(handle)
        self.library = compile_library(handle)
        self.buffers = AddressMap()
        self._pipelines: dict[str, int] = {}

    def __del__(self) -> None:
        try:
            for obj in (*getattr(self, "_pipelines", {}).values(), getattr(self, "queue", None)):
                if obj:
                    objc.release(obj)
        except Exception:  # interpreter shutdown: the process is going away anyway
            pass

    # -- memory
    def alloc(self, nbytes: int) -> MetalBuffer:
        handle = api.new_buffer(self.handle, max(int(nbytes), 1), api.STORAGE_SHARED)
        if not handle:
            raise MtprunError(f"the Metal device could not allocate {nbytes / 2**20:.1f} MiB.")
        return MetalBuffer(self, handle, 0, nbytes)

    def wrap(self, data: np.ndarray) -> MetalBuffer:
        """Device memory holding `data`'s bytes: `data` itself where Metal maps its pages (the whole
        pages around it: a memory-mapped GGUF tensor is read in place), else a copy."""
        data = np.ascontiguousarray(data)
        addr, page = data.ctypes.data, mmap.PAGESIZE
        start = addr - addr % page
        length = -(-(addr + data.nbytes - start) // page) * page
        handle = api.new_buffer_no_copy(self.handle, start, length, api.STORAGE_SHARED, None)
        if handle:
            return MetalBuffer(self, handle, addr - start, data.nbytes, owner=data)
        buf = self.alloc(data.nbytes)
        buf.array[:] = data.reshape(-1).view(np.uint8)
        return buf

    def host(self, nbytes: int) -> HostBuffer:
        return HostBuffer(np.zeros(nbytes, np.uint8))

    def upload(self, ptr: int, arr: np.ndarray) -> None:
        data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        buf, off = self.buffers.find(ptr, data.nbytes)
        buf.array[off : off + data.nbytes] = data

    def download(self, out: np.ndarray, ptr: int) -> np.ndarray:
        assert out.flags.c_contiguous
        flat = out.reshape(-1).view(np.uint8)
        buf, off = self.buffers.find(ptr, flat.nbytes)
        flat[:] = buf.array[off : off + flat.nbytes]
        return out

    def zero(self, ptr: int, nbytes: int) -> None:
        buf, off = self.buffers.find(ptr, nbytes)
        buf.array[off : off + nbytes] = 0

    # -- pipelines
    def pipeline(self, kernel: str) -> int:
        pipe = self._pipelines.get(kernel)
        if pipe is None:
            with objc.autorelease_pool():
                fn = api.new_function(self.library, objc.nsstring(kernel))
                if not fn:
                    raise MtprunError(f"the Metal kernel {kernel} is missing from the library.")
                err = c_void_p()
                pipe = api.new_compute_pipeline(self.handle, fn, byref(err))
                objc.release(fn)
                if not pipe:
                    raise MtprunError(f"the Metal kernel {kernel} could not be built ({objc.error_text(err.value)}).")
            width = api.thread_execution_width(pipe)
            if width != SIMD_WIDTH:
                raise MtprunError(f"the Metal kernels need {SIMD_WIDTH}-wide SIMD groups; {self.name} runs {kernel} {width} wide.")
            self._pipelines[kernel] = pipe
        return pipe

    # -- GpuDevice: compiled graphs
    def prepare(self, c: Compiled) -> Program:
        steps, used = [], {}
        for launch in c.launches:
            pipe = self.pipeline(launch.kernel)
            if launch.block > api.max_total_threads(pipe):
                raise MtprunError(f"the Metal kernel {launch.kernel} cannot run {launch.block} threads per threadgroup "
                                  f"on {self.name}.")
            for ptr in addresses(launch.values):
                buf, _ = self.buffers.find(ptr, 1)
                used[buf.ptr] = buf
            gx, gy = launch.grid
            steps.append(Step(pipe, pack_arguments(launch.values), api.MTLSize(gx, gy, 1), api.MTLSize(launch.block, 1, 1),
                              threadgroup_bytes(launch.shared)))
        return Program(steps, list(used.values()))

    def execute(self, c: Compiled) -> None:
        lay, prog, arena = c.layout, c.program, c.arena.array
        arena[: lay.in_bytes] = c.stage_in.array
        with objc.autorelease_pool():
            cb = api.command_buffer(self.queue)
            enc = api.compute_command_encoder(cb)
            if prog.buffers:
                api.use_resources(enc, prog.resources, len(prog.buffers), api.USAGE_READ_WRITE)
            current = None
            for pipe, args, grid, threads, shared in prog.steps:
                if pipe != current:
                    api.set_compute_pipeline_state(enc, pipe)
                    current = pipe
                api.set_bytes(enc, args, len(args), 0)
                if shared:
                    api.set_threadgroup_memory_length(enc, shared, 0)
                api.dispatch_threadgroups(enc, grid, threads)
            api.end_encoding(enc)
            api.commit(cb)
            api.wait_until_completed(cb)
            if api.status(cb) != api.STATUS_COMPLETED:
                raise MtprunError(f"a Metal command buffer failed ({objc.error_text(api.error(cb))}).")
        c.stage_out.array[:] = arena[lay.out_start : lay.out_start + lay.out_bytes]
