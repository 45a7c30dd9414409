"""The CUDA backend: native/gpu.py's GpuBackend on one NVIDIA GPU, through the driver API
(native/cuda/driver.py) with kernels compiled by NVRTC (native/cuda/kernels/).

A compiled graph's launch list is captured once into a CUDA graph. `run` writes the inputs and the
committed-snapshot indices into page-locked memory, then on one stream: one copy in, one graph
launch, one copy of the outputs (and the error flag) back, one synchronize. MTPRUN_CUDA_GRAPHS=0
launches the kernels one by one instead. With `activations` "q8" or "q8x2" the Q8_0 and K-quant
products take int8 activation rows (kernels/matmul_q8.cu; prompt-sized batches on tensor cores,
kernels/matmul_q8_mma.cu); "f32" (the default) keeps them exact.
"""

from __future__ import annotations

import os
import time

import numpy as np
from mtprun.native import BANDWIDTH_TEST_BYTES, check_activations
from mtprun.native.cuda.driver import Buffer, CudaError, CudaGraph, Driver, HostBuffer, kernel_args
from mtprun.native.cuda.module import Kernels
from mtprun.native.gpu import Compiled, GpuBackend
from mtprun.runner.errors import MtprunError

# The oldest GPUs the kernels build for: the int8 products' integer dot products (dp4a) came with
# sm_61 (Pascal). Newer features (L1 hints sm_70, cp.async and int8 mma sm_80, early launches sm_90)
# have fallbacks or are only launched where present.
MIN_COMPUTE_CAPABILITY = (6, 1)


class CudaDevice:
    """GpuDevice for one NVIDIA GPU: its primary context, one stream, the NVRTC-built kernels."""

    device_seconds = None  # steps are not timed on the device
    mm_rows = 16  # weight rows per matmul block: MM_ROWS in kernels/matmul.cu
    delta_net_lanes = 8  # threads per DeltaNet state column: DN_LANES in kernels/recurrent.cu
    # kernels/recurrent.cu's delta_net: states stored column after column; q, k, v read through row
    # strides, l2-normed there where fusion.py asks, g and beta as chains
    delta_net_strided = True
    conv_per_token = True  # ssm_conv: a thread per channel and token
    fuse = True  # the graph's nodes through native/fusion.py (kernels: norm_fused_*, chain_*, ssm_conv_silu_*)
    norm_wide = 1024  # threads per row of the norm kernels for rows past 1024 values (kernels/norm.cu)
    argmax_threads = 256  # threads of an argmax_part block (kernels/argmax.cu)
    attention_parts = True  # few-row attention split over its keys (kernels/attention.cu's attention_part)

    def __init__(self, ordinal: int = 0, graphs: bool | None = None, activations: str = "f32") -> None:
        self.activations = check_activations(activations)  # read by gpu.py's matmul emission
        self._drv = Driver(ordinal)
        cc = self._drv.compute_capability
        if cc < MIN_COMPUTE_CAPABILITY:
            least = ".".join(map(str, MIN_COMPUTE_CAPABILITY))
            raise MtprunError(f"the CUDA backend needs a GPU of compute capability {least} or later; {self._drv.name} has {cc[0]}.{cc[1]}.")
        self._k = Kernels(self._drv)
        self.name = self._drv.name
        self.int8_mma = cc >= (8, 0)  # prompt passes of q8 / q8x2 on tensor cores
        self.graphs = os.environ.get("MTPRUN_CUDA_GRAPHS", "1") != "0" if graphs is None else graphs
        self.early_launches = self._drv.early_launches  # graphs start each kernel as the one before drains
        self._stream = self._drv.create_stream()

    def alloc(self, nbytes: int) -> Buffer:
        return Buffer(self._drv, nbytes)

    @property
    def buffer_bytes(self) -> int:
        return self._drv.buffer_bytes

    def wrap(self, data: np.ndarray) -> Buffer:
        buf = self.alloc(data.nbytes + 16)  # the matmuls' aligned word loads may reach 2 bytes past a tensor
        self.upload(buf.ptr, data)
        return buf

    def host(self, nbytes: int) -> HostBuffer:
        return HostBuffer(self._drv, nbytes)

    def upload(self, ptr: int, arr: np.ndarray) -> None:
        self._drv.upload(ptr, arr)

    def download(self, out: np.ndarray, ptr: int) -> np.ndarray:
        return self._drv.download(out, ptr)

    def zero(self, ptr: int, nbytes: int) -> None:
        self._drv.zero(ptr, nbytes)

    def prepare(self, c: Compiled) -> tuple[list, CudaGraph | None]:
        # (function, grid, block, shared, parameter array, the values it points at)
        launches = [(self._k.launchable(l.kernel, l.shared), l.grid, l.block, l.shared, kernel_args(l.values), l.values) for l in c.launches]
        if not self.graphs:
            return launches, None
        self._drv.synchronize()  # the index and table uploads of compilation are done
        if self.early_launches:
            try:
                return launches, CudaGraph(self._drv, self._stream, launches, early=True)
            except CudaError:  # a driver that cannot capture them: plain launches from now on
                self.early_launches = False
        return launches, CudaGraph(self._drv, self._stream, launches)

    def execute(self, c: Compiled) -> None:
        drv, stream, lay = self._drv, self._stream, c.layout
        launches, graph = c.program
        rc = drv.htod_async(c.arena.ptr, c.stage_in.ptr, lay.in_bytes, stream)
        if rc:
            drv.check(rc, "cuMemcpyHtoDAsync")
        if graph is not None:
            rc = drv.graph_launch(graph.exe, stream)
            if rc:
                drv.check(rc, "cuGraphLaunch")
        else:
            launch = drv.launch_kernel
            for fn, (gx, gy), block, shared, params, _ in launches:
                rc = launch(fn, gx, gy, 1, block, 1, 1, shared, stream, params, None)
                if rc:
                    drv.check(rc, "cuLaunchKernel")
        rc = drv.dtoh_async(c.stage_out.ptr, c.arena.ptr + lay.out_start, lay.out_bytes, stream)
        if rc:
            drv.check(rc, "cuMemcpyDtoHAsync")
        drv.check(drv.stream_sync(stream), "cuStreamSynchronize")


class CudaBackend(GpuBackend):
    name = "cuda"

    def __init__(self, device: int = 0, graphs: bool | None = None, activations: str = "f32") -> None:
        super().__init__(CudaDevice(device, graphs, activations))

    @property
    def activations(self) -> str:
        """The matrix products' activations: "f32", "q8" or "q8x2"."""
        return self._dev.activations

    def memory_bandwidth(self) -> tuple[float, str] | None:
        """Bytes a second read plus written by device-to-device copies (best of a few timings of 20
        copies of 1 GiB): the ceiling a bandwidth-bound decode step is measured against. None where
        the two buffers do not fit beside the model in VRAM."""
        drv, n, copies = self._dev._drv, BANDWIDTH_TEST_BYTES, 20
        try:
            src = drv.alloc(n)
        except CudaError:
            return None
        try:
            dst = drv.alloc(n)
        except CudaError:
            drv.free(src)
            return None
        try:
            drv.copy(dst, src, n)
            drv.synchronize()
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(copies):
                    drv.copy(dst, src, n)
                drv.synchronize()
                best = min(best, time.perf_counter() - t0)
        finally:
            drv.free(src)
            drv.free(dst)
        return 2 * n * copies / best, "device-to-device copy, read + write"

    @property
    def graphs(self) -> bool:
        """Whether steps replay CUDA graphs (else one launch per kernel)."""
        return self._dev.graphs
