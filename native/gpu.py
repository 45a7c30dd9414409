"""What the GPU backends (CUDA, Vulkan, Metal) share: runner.graph's contract executed as a list of
named kernel launches over device memory reached by address.

A Graph is compiled once into one activation arena (native/arena.py) and a launch list; every GPU
backend implements the same kernels under the same names, with the same arguments in the same
order, and launches them the same way: a grid of (x, y) workgroups of `block` threads. A backend
brings a `GpuDevice` (memory by address, staging host memory, and how to prepare and execute a
launch list); this module does the rest: weights kept in their GGUF block formats (float32 copies
only of small tensors that element-wise ops read), KV caches and recurrent states with per-token
snapshots on the device, and the per-step values (inputs, which snapshot is committed) in the
arena's input region so a prepared launch list replays unchanged. `commit` only changes which
snapshot buffer is the committed one (a host-side index, uploaded with the next run's inputs).
A device whose kernel set has the fused kernels (its `fuse`, CUDA's) gets the graph's nodes through
native/fusion.py's pass first: fewer, larger launches with the same bits.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from ctypes import Structure, c_float, c_int32, c_int64, c_uint64
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Protocol, Sequence

import numpy as np
from mtprun.native.arena import VIEWS, Layout, plan_arena
from mtprun.native.fusion import CHAIN_STEPS, NORM_VALUES, fuse
from mtprun.native.numpy_backend import imrope_uses_text_position
from mtprun.native.strides import broadcast_strides
from mtprun.runner.errors import MtprunError
from mtprun.runner.graph import Graph, Node, StateSpec, WeightTensor, holds_ints

F32 = np.float32
# ggml type -> (kernel suffix, values per block, bytes per block)
TYPES: dict[int, tuple[str, int, int]] = {
    0: ("f32", 1, 4), 1: ("f16", 1, 2), 30: ("bf16", 1, 2),
    2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20), 6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34),
    12: ("q4_k", 256, 144), 13: ("q5_k", 256, 176), 14: ("q6_k", 256, 210),
}
# Which inputs of an op read a weight in its blocks; elsewhere weights are read as float32.
_BLOCK_INPUTS = {"matmul": (1,), "get_rows": (0,), "moe": (1, 2, 3, 4)}
_ERRORS = {1: "a position is outside the context (n_ctx)", 3: "a token id is outside the vocabulary"}
_UNARY = {"sigmoid": 0, "silu": 1, "softplus": 2, "scale": 3}
_BINARY = {"add": 0, "mul": 1}
_CHAIN_BINARY = 4  # a chain step's code for add / mul: this plus _BINARY's (kernels/elementwise.cu)
_MM_WARPS, _ATT_WARPS, _ATT_MAX_D = 4, 4, 256  # as in every backend's matmul and attention kernels
# The kernel instantiations every backend builds: matmul rows per weight read, conv widths, DeltaNet state sizes.
MM_BATCHES, CONV_WIDTHS, DELTA_DIMS = (1, 2, 4, 8), (2, 3, 4, 5), (32, 64, 128)
MAX_GRID = 65535  # workgroups per grid axis every Vulkan device allows; grid-stride kernels stay within it
# Attention of batches up to ATT_SPLIT_ROWS rows (decode, verify) on a device with `attention_parts`:
# a warp per part of a row's keys, up to ATT_PARTS parts (kernels/attention.cu), then a fold; the
# parts' terms in one scratch area that every graph shares (they run one at a time). Larger batches
# fold the same parts in one block a row. These kernels come in instances by a lane's channel slots
# (ATT_SLOTS: head sizes up to 32 of each) and the query heads of one KV head a warp takes together
# (ATT_GROUPS, at most ATT_GROUP_SLOTS slots in all: registers).
ATT_SPLIT_ROWS, ATT_PARTS = 8, 128
ATT_SLOTS, ATT_GROUPS, ATT_GROUP_SLOTS = (2, 4, 8), (1, 2, 3, 4, 6, 8), 32
SPLIT_ATTENTION_KERNELS = ("attention_part", "attention_merge", "attention_rows")  # CUDA's own
# The argmax op's split of a row: at most this many chunks, each of at least this many values a thread.
ARGMAX_SPLITS, ARGMAX_PER_THREAD = 64, 8
# The int8-activation modes (a device's `activations`, CUDA's only): int8 planes per token, and the
# weight types whose products take them, with their activation block (native/cpu/mtp.h's rule).
ACTIVATION_PLANES = {"f32": 0, "q8": 1, "q8x2": 2}
Q8_BLOCKS = {"q8_0": 32, "q4_k": 256, "q5_k": 256, "q6_k": 256}
# The q8_mmt kernels (matmul_q8_mma.cu's MMT_* constants): tokens a block covers with one x plane
# (half with two), its weight rows and warps, the bytes a staged x row takes, the blocks an SM holds,
# the shared memory under which a block keeps three stages, and per type the bytes a staged weight row of one 256-value chunk takes.
MMT_TOKENS, MMT_ROWS, MMT_WARPS, MMT_STRIDE, MMT_BLOCKS_PER_SM = 64, 64, 8, 288, 2
MMT_SHARED_MAX = 220 * 1024 // MMT_BLOCKS_PER_SM
MMT_SLOTS = {"q8_0": 288, "q4_k": 160, "q5_k": 224, "q6_k": 240}


def mmt_shared(suffix: str, planes: int) -> int:
    """Dynamic shared memory of a q8_mmt block: its stages of weight rows, x rows and x scales, three
    where they fit in MMT_SHARED_MAX bytes, else two (MmtStage)."""
    tokens = MMT_TOKENS // planes
    stage = MMT_ROWS * MMT_SLOTS[suffix] + planes * tokens * MMT_STRIDE + 4 * planes * (256 // Q8_BLOCKS[suffix]) * tokens
    return (3 if 3 * stage <= MMT_SHARED_MAX else 2) * stage


# The q8_mmv kernels (matmul_q8_mma.cu's MMV_* constants): verify-sized batches of Q4_K and Q5_K
# products on tensor cores, 16 weight rows a block, each of its warps staging MMV_STAGES of its
# super-blocks. Their cost hardly grows with the batch, the dp4a kernels' does. H100, 27B shapes (4
# layers, q8): the Q4_K products of a 4-token pass 686 -> 573 us; but its Q6_K ones 488 -> 646 us,
# and 2-token passes 1086 -> 1243 us a step. So they take Q4_K and Q5_K batches of MMV_MIN_TOKENS and
# more, and of 2 tokens where rows are shorter than MMV_SHORT_ROW values: a dp4a warp step covers 8
# super-blocks of a row, so rows of 1 or 2 (tinycoder) leave most of its lanes idle. Either kernel gives
# every row bit for bit as the one-token kernel does.
MMV_WARPS, MMV_STAGES = 8, 3
MMV_TYPES, MMV_MIN_TOKENS, MMV_SHORT_ROW = ("q4_k", "q5_k"), 3, 2048


def takes_mmv(suffix: str, n: int, k: int) -> bool:
    """Whether a batch of n tokens (2 .. 8) of a product with rows of k values runs on q8_mmv."""
    return suffix in MMV_TYPES and (n >= MMV_MIN_TOKENS or (n >= 2 and k < MMV_SHORT_ROW))


def mmv_shared(suffix: str) -> int:
    """Dynamic shared memory of a q8_mmv block: each warp's stages of its 16 rows' super-blocks."""
    return MMV_WARPS * MMV_STAGES * 16 * MMT_SLOTS[suffix]


# Weight rows and dynamic shared memory (its warps' staged weights) of a q8_mm block, by weight type:
# (one token, batches), as matmul_q8.cu's Q8_KERNELS instantiates them.
Q8_MM_BLOCKS = {"q8_0": ((16, 55296), (16, 55296)), "q4_k": ((8, 18432), (16, 55296)),
                "q5_k": ((16, 55296), (16, 55296)), "q6_k": ((8, 27648), (16, 55296))}
# Compiled graphs' device memory kept (GpuBackend._evict_compiled): this many times the largest graph's,
# plus COMPILED_FLOOR bytes, which hold every graph of a decode step beside them.
COMPILED_HOLD, COMPILED_FLOOR = 2, 256 << 20
# Weight matrices one int8 product launch may cover (kernels/matmul_q8.cu's PRODUCTS): products of
# one input that launch the same kernel (fusion.py's merge) share a launch.
PRODUCTS = 4


def _source(t: WeightTensor) -> tuple[int, int]:
    """Where a weight's bytes are: the same memory-mapped bytes under two graph names are one tensor
    of the file."""
    return t.data.__array_interface__["data"][0], t.data.nbytes


def _p(x: int) -> c_uint64:
    return c_uint64(x)


def _i(x: int) -> c_int32:
    return c_int32(int(x))


def _l(x: int) -> c_int64:
    return c_int64(int(x))


@dataclass
class _Weight:
    tensor: WeightTensor
    buf: DeviceBuffer
    suffix: str
    row_bytes: int


@dataclass
class _Recurrent:
    spec: StateSpec
    buf: DeviceBuffer  # m + 1 buffers of `size` floats
    size: int
    m: int
    committed: int = 0
    last_n: int = 0
    transposed: bool = False  # a DeltaNet state the device keeps column after column (read_state turns it back)


@dataclass
class _Kv:
    spec: StateSpec
    k: DeviceBuffer
    v: DeviceBuffer


class _Chain(Structure):
    """kernels/elementwise.cu's Chain: each step's operand, its strides, op and factor; whether all are flat."""

    _fields_ = [("inp", c_uint64 * CHAIN_STEPS), ("st", (c_int64 * 4) * CHAIN_STEPS), ("op", c_int32 * CHAIN_STEPS),
                ("factor", c_float * CHAIN_STEPS), ("flat", c_int32)]


def _chain(steps, args: Sequence[int], shapes: Sequence[tuple[int, ...]], shape4: tuple[int, ...]) -> _Chain:
    """The Chain of fusion.py's `steps` over operands `args` (device addresses) of `shapes`, for an
    output of 4-D shape `shape4`."""
    ch = _Chain()
    ch.op[:] = [-1] * CHAIN_STEPS
    for j, (op, slot, factor) in enumerate(steps):
        if j:
            ch.op[j] = _UNARY[op] if op in _UNARY else _CHAIN_BINARY + _BINARY[op]
            ch.factor[j] = factor
        if slot >= 0:
            ch.inp[j] = args[slot]
            ch.st[j][:] = broadcast_strides(shapes[slot], shape4)
    ch.flat = all(math.prod(shapes[slot]) == math.prod(shape4) for _, slot, _ in steps if slot >= 0)
    return ch


class _Product(Structure):
    """kernels/matmul_q8.cu's Product: one weight matrix of a merged launch, from block `start` on."""

    _fields_ = [("W", c_uint64), ("row_bytes", c_int64), ("y", c_uint64), ("m", c_int32), ("start", c_int32)]


class _Products(Structure):
    _fields_ = [("p", _Product * PRODUCTS)]


class Launch(NamedTuple):
    kernel: str  # the same name in every backend's kernel set
    grid: tuple[int, int]  # workgroups
    block: int  # threads per workgroup
    shared: int  # bytes of dynamic shared memory
    values: list  # the arguments as ctypes values, in the kernel's parameter order


class DeviceBuffer(Protocol):
    ptr: int  # device address
    nbytes: int


class HostBuffer(Protocol):
    array: np.ndarray  # uint8 view of the whole buffer

    def view(self, offset: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray: ...


class GpuDevice(Protocol):
    """What a GPU backend brings: memory by address, and how a compiled graph runs."""

    name: str
    device_seconds: float | None  # GPU busy time of every step run so far, where the device measures it

    def alloc(self, nbytes: int) -> DeviceBuffer: ...

    def wrap(self, data: np.ndarray) -> DeviceBuffer:
        """Read-only device memory holding data's bytes: a copy, or data itself where the device
        can map host memory (Metal's unified memory)."""

    def host(self, nbytes: int) -> HostBuffer: ...
    def upload(self, ptr: int, arr: np.ndarray) -> None: ...
    def download(self, out: np.ndarray, ptr: int) -> np.ndarray: ...
    def zero(self, ptr: int, nbytes: int) -> None: ...

    def prepare(self, c: "Compiled") -> Any:
        """Turn c.launches into what `execute` replays (a CUDA graph, a recorded command buffer)."""

    def execute(self, c: "Compiled") -> None:
        """Copy c.stage_in to the arena's input region, run the launches, copy the output region to
        c.stage_out, and wait."""


@dataclass
class Compiled:
    graph: Graph
    nodes: list[Node]  # graph.nodes as launched: fusion.py's rewrite where the device fuses
    arena: DeviceBuffer
    layout: Layout
    stage_in: HostBuffer  # host images of the arena's input and output regions
    stage_out: HostBuffer
    err: int  # device address of this graph's error flag (in the output region)
    launches: list[Launch] = field(default_factory=list)
    inputs: list[tuple[str, np.ndarray, tuple[int, ...], type]] = field(default_factory=list)  # name, staging view
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # name -> staging view
    extra_outputs: list[tuple[str, int, tuple[int, ...]]] = field(default_factory=list)  # outside the output region
    committed: list[_Recurrent] = field(default_factory=list)  # committed-index slot j -> state
    committed_view: np.ndarray | None = None  # int32 staging view of those slots
    err_view: np.ndarray | None = None  # int32 staging view of the error flag
    touched: list[tuple[_Recurrent, int]] = field(default_factory=list)  # recurrent states a run writes, tokens
    keep: list = field(default_factory=list)  # scratch and index buffers the launches point into
    q8_rows: tuple[int, int] | None = None  # int8 activation rows and their scales (scratch), if used
    q8_holds: tuple | None = None  # which (x node, block) those rows hold now
    program: Any = None  # what the device prepared from `launches`
    device_bytes: int = 0  # its arena and the scratch and index buffers it keeps


class GpuBackend:
    """runner.graph's Backend on a GpuDevice; CUDA, Vulkan and Metal are this with their device."""

    name = "gpu"

    def __init__(self, device: GpuDevice) -> None:
        self._dev = device
        self.device_name = device.name
        self._weights: dict[str, _Weight] = {}
        self._f32: dict[str, DeviceBuffer] = {}
        self._kv: dict[str, _Kv] = {}
        self._rec: dict[str, _Recurrent] = {}
        self._compiled: OrderedDict[int, Compiled] = OrderedDict()  # least recently run first
        self._att_terms: list[DeviceBuffer] = []  # the split attention's scratch; the last is the largest

    @property
    def device_seconds(self) -> float | None:
        """GPU busy time of every step run so far (Vulkan: timestamp queries), or None if unmeasured."""
        return self._dev.device_seconds

    # -- contract: weights and states
    @property
    def device_argmax(self) -> bool:
        """Whether the runner gives graphs the argmax op here: where the device sets `argmax_threads`
        (CUDA, Vulkan), greedy choices copy back token ids, not rows of logits (a 248k vocabulary's row
        took ~90 us to copy on an H100's host; the split argmax ~15 us)."""
        return bool(getattr(self._dev, "argmax_threads", 0))

    def device_memory_bytes(self) -> int | None:
        """Device memory this backend's buffers hold now (weights, caches, graph arenas), where the
        device keeps the count (CUDA, Vulkan; not Metal, whose memory is the host's)."""
        return getattr(self._dev, "buffer_bytes", None)

    def load_weights(self, weights: Mapping[str, WeightTensor]) -> None:
        """Uploads each weight once: names that reach the same tensor of the file (the MTP head's
        embedding and output head, where the file has no copies of its own) share one buffer, where
        they took two (a 27B-shaped model: ~1.9 GB more device memory with MTP on)."""
        uploaded = {_source(w.tensor): w.buf for w in self._weights.values()}
        for name, t in weights.items():
            info = TYPES.get(t.ggml_type)
            if info is None:
                raise MtprunError(f"weight {name}: ggml type {t.ggml_type} is not supported by the {self.name} backend.")
            suffix, block_values, block_bytes = info
            k = t.shape[-1]
            rows = int(np.prod(t.shape[:-1], dtype=np.int64))
            raw = np.ascontiguousarray(t.data)
            if k % block_values or raw.nbytes != rows * (k // block_values) * block_bytes:
                raise MtprunError(f"weight {name}: {raw.nbytes} bytes do not hold shape {t.shape} in its type.")
            source = _source(t)
            buf = uploaded.get(source)
            if buf is None:
                buf = uploaded[source] = self._dev.wrap(raw)
            self._weights[name] = _Weight(t, buf, suffix, (k // block_values) * block_bytes)
            self._f32.pop(name, None)
        self._compiled.clear()  # compiled graphs hold weight pointers

    def alloc_states(self, specs: Sequence[StateSpec]) -> None:
        for s in specs:
            size = int(np.prod(s.shape, dtype=np.int64))
            if s.kind == "kv":
                self._kv[s.name] = _Kv(s, self._dev.alloc(4 * size), self._dev.alloc(4 * size))
            else:
                m = max(s.snapshots, 1)
                self._rec[s.name] = _Recurrent(s, self._dev.alloc(4 * size * (m + 1)), size, m)
            self.reset_states([s.name])
        self._compiled.clear()  # compiled graphs hold state pointers

    def reset_states(self, names: Sequence[str]) -> None:
        for name in names:
            if name in self._kv:
                kv = self._kv[name]
                self._dev.zero(kv.k.ptr, kv.k.nbytes)
                self._dev.zero(kv.v.ptr, kv.v.nbytes)
            else:
                rec = self._rec[name]
                self._dev.zero(rec.buf.ptr, rec.buf.nbytes)
                rec.committed = rec.last_n = 0

    def commit(self, names: Sequence[str], n_keep: int) -> None:
        t, recs = n_keep - 1, self._rec
        for name in names:
            rec = recs[name]
            n = rec.last_n
            first = n - rec.m if n > rec.m else 0
            if not first <= t < n:
                raise ValueError(f"state {name}: no snapshot after token {n_keep} of the last run")
            r = t - first  # snapshot slot r lives in buffer slot_buffer(r) of recurrent.cu
            rec.committed = r if r < rec.committed else r + 1
            rec.last_n = 0

    def read_state(self, name: str) -> tuple[np.ndarray, ...]:
        if name in self._kv:
            kv = self._kv[name]
            return tuple(self._dev.download(np.empty(kv.spec.shape, F32), b.ptr) for b in (kv.k, kv.v))
        rec = self._rec[name]
        shape = (*rec.spec.shape[:-2], rec.spec.shape[-1], rec.spec.shape[-2]) if rec.transposed else rec.spec.shape
        state = self._dev.download(np.empty(shape, F32), rec.buf.ptr + 4 * rec.size * rec.committed)
        return (np.ascontiguousarray(state.swapaxes(-1, -2)) if rec.transposed else state,)

    # -- contract: execution
    def run(self, graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        c = self._compiled.get(id(graph))
        if c is None or c.graph is not graph:
            self._compiled.pop(id(graph), None)
            c = self._compiled[id(graph)] = self._compile(graph)
            self._evict_compiled()
        else:
            self._compiled.move_to_end(id(graph))
        for name, view, shape, dtype in c.inputs:
            view[...] = np.asarray(inputs[name], dtype).reshape(shape)
        if c.committed:
            c.committed_view[:] = [rec.committed for rec in c.committed]
        self._dev.execute(c)
        err = int(c.err_view[0])
        if err:
            self._dev.zero(c.err, 4)
            raise MtprunError(f"graph {graph.name}: {_ERRORS.get(err, f'device error {err}')}.")
        out = {name: view.copy() for name, view in c.outputs.items()}
        for name, ptr, shape in c.extra_outputs:
            out[name] = self._dev.download(np.empty(shape, F32), ptr)
        for rec, n in c.touched:
            rec.last_n = n
        return out

    def _evict_compiled(self) -> None:
        """Keeps the device memory of compiled graphs (arenas, scratch) within COMPILED_HOLD times the
        largest one's plus COMPILED_FLOOR, dropping the least recently run first: prompt graphs are
        compiled for each chunk length, so a chat whose every turn had a new length grew without end (a
        27B shape's 512-token chunk takes 267 MiB), while the graphs of decode steps, run every step,
        stay. The floor keeps those of every draft depth: without it, a short prompt's graphs (all
        small) were dropped and compiled again as the depth changed (31 compiles in 64 tokens); and it
        is added to the large graphs' share, not an alternative to it: with twice the largest alone, a
        27B shape's prompt graphs with and without MTP (267 MiB each) and the decode graphs overflowed
        it by 1 MiB, so each prompt pass dropped the decode graphs (compiled again on the next token)
        and runs alternating MTP on and off compiled their prompt graphs again each time."""
        sizes = {key: c.device_bytes for key, c in self._compiled.items()}
        total, budget = sum(sizes.values()), COMPILED_HOLD * max(sizes.values()) + COMPILED_FLOOR
        for key in list(sizes)[:-1]:  # never the graph just compiled
            if total <= budget:
                break
            total -= sizes.pop(key)
            del self._compiled[key]

    # -- compilation
    def _compile(self, graph: Graph) -> Compiled:
        n_rec = sum(nd.op in ("ssm_conv", "delta_net") for nd in graph.nodes)
        nodes = fuse(graph, self.product_kind) if getattr(self._dev, "fuse", False) else graph.nodes
        lay = plan_arena(graph, in_extra=4 * n_rec, out_extra=4, nodes=nodes)
        offsets = lay.offsets
        arena = self._dev.alloc(lay.size)
        c = Compiled(graph, nodes, arena, lay, self._dev.host(lay.in_bytes), self._dev.host(lay.out_bytes),
                      arena.ptr + lay.out_extra)
        c.committed_view = c.stage_in.view(lay.in_extra, (n_rec,), np.int32)
        c.err_view = c.stage_out.view(lay.out_extra - lay.out_start, (1,), np.int32)
        c.stage_in.array[:] = 0
        self._dev.zero(c.err, 4)
        ptrs: dict[int, int] = {}
        for i, nd in enumerate(nodes):
            if nd.op == "weight":
                self._weight(nd)  # checks it was loaded with this shape
                continue
            if nd.op == "absorbed":
                continue
            if nd.op in VIEWS:
                src = nd.inputs[0]
                ptrs[i] = (ptrs[src] if src in ptrs else self._f32_ptr(nodes[src])) + 4 * nd.attrs.get("offset", 0)
                if nd.op in ("reshape", "view"):
                    continue
            else:
                ptrs[i] = c.arena.ptr + offsets[i]
            if nd.op == "input":
                dtype = np.int32 if nd.attrs["dtype"] == "i32" else F32
                c.inputs.append((nd.attrs["name"], c.stage_in.view(offsets[i], nd.shape, dtype), nd.shape, dtype))
                continue
            if nd.op == "side":  # written by a later fused launch
                continue
            args = []
            for slot, src in enumerate(nd.inputs):
                snd = nodes[src]
                if snd.op == "weight":
                    args.append(self._weight(snd) if slot in _BLOCK_INPUTS.get(nd.op, ()) else self._f32_ptr(snd))
                else:
                    args.append(ptrs[src])
            shapes = [nodes[s].shape for s in nd.inputs]
            getattr(self, f"_emit_{nd.op}")(c, nd, ptrs[i], args, shapes)
        for name, i in graph.outputs.items():
            off = ptrs[i] - arena.ptr if i in ptrs else -1
            if lay.out_start <= off < lay.out_extra:
                c.outputs[name] = c.stage_out.view(off - lay.out_start, graph.nodes[i].shape, F32)
            else:  # an input or a weight named as an output: read back on its own
                c.extra_outputs.append((name, ptrs[i] if i in ptrs else self._f32_ptr(graph.nodes[i]), graph.nodes[i].shape))
        assert len(c.committed) == n_rec
        c.program = self._dev.prepare(c)
        c.device_bytes = lay.size + sum(getattr(b, "nbytes", 0) for b in c.keep)
        return c

    def _weight(self, nd: Node) -> _Weight:
        name = nd.attrs["name"]
        w = self._weights.get(name)
        if w is None:
            raise MtprunError(f"weight {name} was not loaded.")
        t = w.tensor
        if int(np.prod(t.shape)) != int(np.prod(nd.shape)) or t.shape[-1] != nd.shape[-1]:
            raise MtprunError(f"weight {name}: shape {t.shape} does not match the graph's {nd.shape}.")
        return w

    def _f32_ptr(self, nd: Node) -> int:
        """A weight as float32 on the device: itself if stored so, else a decoded copy (small tensors)."""
        w = self._weight(nd)
        if w.tensor.ggml_type == 0:
            return w.buf.ptr
        buf = self._f32.get(w.tensor.name)
        if buf is None:
            from gguf import GGMLQuantizationType
            from gguf.quants import dequantize

            data = dequantize(np.ascontiguousarray(w.tensor.data), GGMLQuantizationType(w.tensor.ggml_type)).astype(F32)
            buf = self._f32[w.tensor.name] = self._dev.alloc(data.nbytes)
            self._dev.upload(buf.ptr, data)
        return buf.ptr

    def _launch(self, c: Compiled, kernel: str, grid: tuple[int, int], block: int, values: list, shared: int = 0) -> None:
        c.launches.append(Launch(kernel, grid, block, shared, values))

    def _state(self, graph: Graph, table: dict, name: str, shape: tuple[int, ...]):
        st = table.get(name)
        if st is None:
            raise MtprunError(f"graph {graph.name}: state {name} of this kind was not allocated.")
        got = tuple(st.spec.shape[1:]) if st.spec.kind == "kv" else tuple(st.spec.shape)
        if got != tuple(shape):
            raise MtprunError(f"graph {graph.name}: state {name} is {st.spec.shape}, the graph needs {shape}.")
        return st

    def _committed_arg(self, c: Compiled, rec: _Recurrent, n: int) -> c_uint64:
        """Device address of the int that tells this launch which buffer of `rec` is committed."""
        c.committed.append(rec)
        c.touched.append((rec, n))
        return _p(c.arena.ptr + c.layout.in_extra + 4 * (len(c.committed) - 1))

    # -- ops (one _emit_ per runner.graph op that launches kernels)
    def _rows_per_workgroup(self, kernel: str) -> int:
        """Weight rows per workgroup of an mm / mmid kernel: one per warp, unless the device's
        build of the kernel says otherwise (its `mm_rows` / `mmid_rows`, unset or None: one per warp)."""
        return getattr(self._dev, f"{kernel}_rows", None) or _MM_WARPS

    def _q8_kernel(self, suffix: str, n: int, k: int) -> tuple[str, int, int, int] | None:
        """The int8 product kernel of n tokens of rows of k values: (name, weight rows a block, threads a
        block, dynamic shared memory), or None where products of this type are not on int8 rows."""
        planes = ACTIVATION_PLANES[getattr(self._dev, "activations", "f32")]
        if not planes or suffix not in Q8_BLOCKS:
            return None
        tensor_cores = getattr(self._dev, "int8_mma", False)
        if n > MM_BATCHES[-1] and tensor_cores:  # a prompt pass
            return f"q8_mmt_{suffix}_{planes}", MMT_ROWS, 32 * MMT_WARPS, mmt_shared(suffix, planes)
        if tensor_cores and takes_mmv(suffix, n, k):  # a verify batch
            return f"q8_mmv_{suffix}_{planes}", 16, 32 * MMV_WARPS, mmv_shared(suffix)
        nb = next((b for b in MM_BATCHES if b >= n), MM_BATCHES[-1])
        rows, shared = Q8_MM_BLOCKS[suffix][nb > 1]
        return f"q8_mm_{suffix}_{nb}_{planes}", rows, 32 * _MM_WARPS, shared

    def product_kind(self, nd: Node, w: Node) -> str | None:
        """fusion.py's key for merging products of one input: the kernel of product node `nd` of weight
        node `w` where it takes several weight matrices a launch (the int8 ones but prompt passes'),
        else None."""
        t = self._weight(w).tensor
        kernel = self._q8_kernel(TYPES[t.ggml_type][0], nd.shape[0], t.shape[-1]) if t.ggml_type in TYPES else None
        return kernel[0] if kernel and not kernel[0].startswith("q8_mmt") else None

    def _matmul(self, c: Compiled, x: int, products: Sequence[tuple[_Weight, int]], n: int, x_node: int) -> None:
        """y = x W^T for each (W, y) of `products`: weight matrices of one type and width read by one
        launch (more than one only where `product_kind` merged them)."""
        w = products[0][0]
        m, k = w.tensor.shape[0], w.tensor.shape[-1]
        nb = next((b for b in MM_BATCHES if b >= n), MM_BATCHES[-1])
        kernel = self._q8_kernel(w.suffix, n, k)
        if kernel is not None:
            name, rows, threads, shared = kernel
            planes = ACTIVATION_PLANES[self._dev.activations]
            xq, xd = self._q8_rows(c, x, x_node, n, k, Q8_BLOCKS[w.suffix], planes)
            if name.startswith("q8_mmt"):
                y = products[0][1]
                self._launch(c, name, (-(-n // (MMT_TOKENS // planes)), -(-m // rows)), threads,
                             [_p(w.buf.ptr), _l(w.row_bytes), _p(xq), _p(xd), _p(y), _i(n), _i(m), _i(k)], shared)
                return
            table, start = _Products(), 0
            for i in range(PRODUCTS):
                entry = table.p[i]
                if i < len(products):
                    pw, y = products[i]
                    entry.W, entry.row_bytes, entry.y, entry.m, entry.start = pw.buf.ptr, pw.row_bytes, y, pw.tensor.shape[0], start
                    start += -(-pw.tensor.shape[0] // rows)
                else:
                    entry.start = 2**31 - 1
            self._launch(c, name, (start, -(-n // nb) if name.startswith("q8_mm_") else 1), threads,
                         [table, _p(xq), _p(xd), _i(n), _i(k)], shared)
            return
        assert len(products) == 1, "only int8 products are merged"
        y = products[0][1]
        grid = (-(-m // self._rows_per_workgroup("mm")), -(-n // nb))
        self._launch(c, f"mm_{w.suffix}_{nb}", grid, 32 * _MM_WARPS, [_p(w.buf.ptr), _l(w.row_bytes), _p(x), _p(y), _i(n), _i(m), _i(k)])

    def _q8_rows(self, c: Compiled, x: int, x_node: int, n: int, k: int, block: int, planes: int) -> tuple[int, int]:
        """x's int8 rows for the products that follow: quantized into one scratch area per graph,
        once for consecutive products of the same input (q, k, v; gate, up)."""
        if c.q8_holds != (x_node, block):
            xq, xd = self._q8_scratch(c, planes)
            blocks = n * (k // block)
            self._launch(c, f"q8_rows_{block}", (max(1, min(-(-blocks // 4), MAX_GRID)), 1), 128,
                         [_p(x), _p(xq), _p(xd), _i(n), _i(k), _i(planes)])
            c.q8_holds = (x_node, block)
        return c.q8_rows

    def _q8_scratch(self, c: Compiled, planes: int) -> tuple[int, int]:
        """The graph's int8 activation rows and their scales, sized for its largest product input."""
        if c.q8_rows is None:
            values = max(int(np.prod(c.graph.nodes[nd.inputs[0]].shape, dtype=np.int64))
                         for nd in c.graph.nodes if nd.op in ("matmul", "moe"))
            c.q8_rows = (self._scratch(c, planes * values), self._scratch(c, 4 * planes * (values // 32)))
        return c.q8_rows

    def _fused_q8(self, c: Compiled, nd: Node, row: int) -> tuple[int, int, int, int]:
        """(block, int8 rows, scales, planes) where a fused norm also quantizes its result, rows of
        `row` values, for the product launched next (fusion.py's attrs.feeds); else (256, 0, 0, 0)."""
        planes = ACTIVATION_PLANES[getattr(self._dev, "activations", "f32")]
        mm = c.nodes[nd.attrs["feeds"]] if "feeds" in nd.attrs else None
        w = self._weight(c.nodes[mm.inputs[1]]) if mm is not None and planes else None
        if w is None or w.suffix not in Q8_BLOCKS or w.tensor.shape[-1] != row:
            return 256, 0, 0, 0
        block = Q8_BLOCKS[w.suffix]
        xq, xd = self._q8_scratch(c, planes)
        c.q8_holds = (mm.inputs[0], block)  # the product's _q8_rows finds its rows made
        return block, xq, xd, planes

    def _emit_matmul(self, c, nd, out, args, shapes) -> None:
        merged = [(self._weight(c.graph.nodes[c.graph.nodes[j].inputs[1]]), c.arena.ptr + c.layout.offsets[j])
                  for j in nd.attrs.get("with", ())]  # fusion.py's products of the same input
        self._matmul(c, args[0], [(args[1], out), *merged], nd.shape[0], nd.inputs[0])

    def _emit_get_rows(self, c, nd, out, args, shapes) -> None:
        w: _Weight = args[0]
        float_ids = not holds_ints(c.nodes[nd.inputs[1]])
        self._launch(c, f"get_rows_{w.suffix}", (nd.shape[0], 1), 128,
                     [_p(w.buf.ptr), _l(w.row_bytes), _p(args[1]), _p(out), _i(nd.shape[1]), _i(w.tensor.shape[0]), _p(c.err), _i(float_ids)])

    def _norm(self, c, nd, out, args, shapes, l2: int) -> None:
        d = nd.shape[-1]
        if len(args) > 1 and int(np.prod(shapes[1])) != d:
            raise MtprunError(f"graph {c.graph.name}: norm weight {shapes[1]} does not match {nd.shape}.")
        rows = int(np.prod(nd.shape, dtype=np.int64)) // d
        w = args[1] if len(args) > 1 else 0
        self._launch(c, "norm_rows", (rows, 1), self._norm_threads(d), [_p(args[0]), _p(w), _p(out), _i(d), c_float(nd.attrs["eps"]), _i(l2)])

    def _norm_threads(self, d: int) -> int:
        """Threads per row of a norm launch: 256, or for rows past 1024 values the device's
        `norm_wide` (CUDA's 1024). Its kernels' sum order depends on it, so fused and separate
        launches of a row length take the same."""
        return getattr(self._dev, "norm_wide", 256) if d > 1024 else 256

    def _emit_norm(self, c, nd, out, args, shapes) -> None:
        """fusion.py's norm: rms_norm / l2_norm with the launches it took over, one row a workgroup."""
        a = dict(zip(nd.attrs["roles"], args))
        d, k = nd.shape[-1], math.prod(nd.shape[1:])  # a row's values, a token's
        # int8 rows of a token's values: of its one row, or of its heads' rows where a workgroup (256
        # threads) holds whole int8 blocks of them (norm_fused's `packed`)
        block, xq, xd, planes = self._fused_q8(c, nd, k if k == d or (d % 32 == 0 and 256 % d == 0) else 0)
        packed = max(1, block // d) if planes else 1
        threads = self._norm_threads(d)
        values = next(v for v in NORM_VALUES if threads * v >= d)  # per thread: the fewest registers that hold a row
        self._launch(c, f"norm_fused_{block}_{values}", (math.prod(nd.shape) // d // packed, 1), threads,
                     [_p(a["x"] + 4 * nd.attrs["offset"]), _l(nd.attrs["per"]), _l(nd.attrs["stride"]), *(_p(a.get(r, 0)) for r in ("b", "sum", "w", "gate")),
                      _p(out), _p(xq), _p(xd), _i(planes), _i(d), c_float(nd.attrs["eps"]), _i(nd.attrs["l2"]),
                      _i("w" in a and c.nodes[nd.inputs[nd.attrs["roles"].index("w")]].op == "weight"),  # w read before the wait
                      _i(packed), _i(k)])

    def _emit_rms_norm(self, c, nd, out, args, shapes) -> None:
        self._norm(c, nd, out, args, shapes, 0)

    def _emit_l2_norm(self, c, nd, out, args, shapes) -> None:
        self._norm(c, nd, out, args, shapes, 1)

    @staticmethod
    def _grid(total: int) -> tuple[int, int]:
        return (max(1, min(-(-total // 256), MAX_GRID)), 1)

    def _binary(self, c, nd, out, args, shapes, op: int) -> None:
        shape4 = (1,) * (4 - len(nd.shape)) + tuple(nd.shape)
        total = int(np.prod(shape4, dtype=np.int64))
        strides = [_l(s) for shp in shapes for s in broadcast_strides(shp, shape4)]
        self._launch(c, "binary", self._grid(total), 256,
                     [_p(args[0]), _p(args[1]), _p(out), _l(total), _i(op), _l(shape4[1]), _l(shape4[2]), _l(shape4[3]), *strides])

    def _emit_add(self, c, nd, out, args, shapes) -> None:
        self._binary(c, nd, out, args, shapes, _BINARY["add"])

    def _emit_mul(self, c, nd, out, args, shapes) -> None:
        self._binary(c, nd, out, args, shapes, _BINARY["mul"])

    def _emit_chain(self, c, nd, out, args, shapes) -> None:
        """fusion.py's chain of element-wise ops, one thread per output element."""
        shape4 = (1,) * (4 - len(nd.shape)) + tuple(nd.shape)
        total = math.prod(shape4)
        self._launch(c, "chain", self._grid(total), 256, [_chain(nd.attrs["steps"], args, shapes, shape4), _p(out), _l(total),
                                                           _l(shape4[1]), _l(shape4[2]), _l(shape4[3])])

    def _unary(self, c, nd, out, args, op: str) -> None:
        total = int(np.prod(nd.shape, dtype=np.int64))
        factor = c_float(nd.attrs.get("factor", 1.0))
        self._launch(c, "unary", self._grid(total), 256, [_p(args[0]), _p(out), _l(total), _i(_UNARY[op]), factor])

    def _emit_scale(self, c, nd, out, args, shapes) -> None:
        self._unary(c, nd, out, args, "scale")

    def _emit_sigmoid(self, c, nd, out, args, shapes) -> None:
        self._unary(c, nd, out, args, "sigmoid")

    def _emit_silu(self, c, nd, out, args, shapes) -> None:
        self._unary(c, nd, out, args, "silu")

    def _emit_softplus(self, c, nd, out, args, shapes) -> None:
        self._unary(c, nd, out, args, "softplus")

    def _copy_rows(self, c, src: int, dst: int, rows: int, width: int, in_stride: int, in_off: int, out_stride: int, out_off: int,
                   index: int = 0) -> None:
        self._launch(c, "copy_rows", self._grid(rows * width), 256,
                     [_p(src), _p(dst), _p(index), _l(rows), _l(width), _l(in_stride), _l(in_off), _l(out_stride), _l(out_off)])

    def _emit_slice(self, c, nd, out, args, shapes) -> None:
        last = shapes[0][-1]
        rows = int(np.prod(shapes[0], dtype=np.int64)) // last
        width = nd.attrs["stop"] - nd.attrs["start"]
        self._copy_rows(c, args[0], out, rows, width, last, nd.attrs["start"], width, 0)

    def _emit_concat(self, c, nd, out, args, shapes) -> None:
        wa, wb, wo = shapes[0][-1], shapes[1][-1], nd.shape[-1]
        rows = int(np.prod(nd.shape, dtype=np.int64)) // wo
        self._copy_rows(c, args[0], out, rows, wa, wa, 0, wo, 0)
        self._copy_rows(c, args[1], out, rows, wb, wb, 0, wo, wa)

    def _emit_cat_rows(self, c, nd, out, args, shapes) -> None:
        width = math.prod(nd.shape[1:])
        self._copy_rows(c, args[0], out, shapes[0][0], width, width, 0, width, 0)
        self._copy_rows(c, args[1], out + 4 * shapes[0][0] * width, shapes[1][0], width, width, 0, width, 0)

    def _emit_take_rows(self, c, nd, out, args, shapes) -> None:
        rows = np.asarray(nd.attrs["rows"], np.int32)
        if rows.size and (rows.min() < 0 or rows.max() >= shapes[0][0]):
            raise MtprunError(f"graph {c.graph.name}: take_rows indices outside 0..{shapes[0][0] - 1}.")
        index = self._upload(c, rows)
        width = int(np.prod(shapes[0][1:], dtype=np.int64))
        self._copy_rows(c, args[0], out, len(rows), width, width, 0, width, 0, index)

    def _emit_argmax(self, c, nd, out, args, shapes) -> None:
        """Each row split into up to ARGMAX_SPLITS chunks of at least ARGMAX_PER_THREAD values a thread
        (argmax_part), then the chunks' winners reduced (argmax_rows, one 32-wide workgroup a row)."""
        n, v = shapes[0]
        threads = getattr(self._dev, "argmax_threads", 0) or 256
        splits = max(1, min(ARGMAX_SPLITS, -(-v // (threads * ARGMAX_PER_THREAD))))
        part = self._scratch(c, 8 * n * splits)
        self._launch(c, "argmax_part", (splits, n), threads, [_p(args[0]), _p(part), _i(v), _i(-(-v // splits))])
        self._launch(c, "argmax_rows", (n, 1), 32, [_p(part), _p(out), _i(splits)])

    def _upload(self, c: Compiled, arr: np.ndarray) -> int:
        buf = self._dev.alloc(arr.nbytes)
        self._dev.upload(buf.ptr, np.ascontiguousarray(arr))
        c.keep.append(buf)
        return buf.ptr

    def _emit_rope(self, c, nd, out, args, shapes) -> None:
        n_rot, sections, base = nd.attrs["n_rot"], nd.attrs["sections"], nd.attrs["freq_base"]
        half = n_rot // 2
        # The reference's float32 angle steps (repeated float32 products), 0 where no text position.
        theta_scale = F32(base ** (-2.0 / n_rot))
        powers = np.cumprod(np.concatenate([[F32(1)], np.full(half - 1, theta_scale, F32)]), dtype=F32)
        uses = np.array([imrope_uses_text_position(i, sections) for i in range(half)])
        freq = np.where(uses, powers, F32(0)).astype(F32)
        n, heads, d = nd.shape
        self._launch(c, "rope", (n * heads, 1), 128, [_p(args[0]), _p(args[1]), _p(self._upload(c, freq)), _p(out), _i(heads), _i(d), _i(half)])

    def _emit_kv_write(self, c, nd, out, args, shapes) -> _Kv:
        n, n_kv, d = shapes[0]
        kv: _Kv = self._state(c.graph, self._kv, nd.attrs["state"], shapes[0][1:])
        k, v, pos = args
        self._launch(c, "kv_write", (n * n_kv, 1), 128,
                     [_p(k), _p(v), _p(pos), _p(kv.k.ptr), _p(kv.v.ptr), _i(n_kv), _i(d), _i(kv.spec.shape[0]), _p(c.err)])
        return kv

    def _emit_attention(self, c, nd, out, args, shapes) -> None:
        n, n_head, d = nd.shape
        n_kv = shapes[1][1]
        if d > _ATT_MAX_D or n_head % n_kv:
            raise MtprunError(f"graph {c.graph.name}: attention with head size {d} and {n_head}/{n_kv} heads is not supported.")
        kv = self._emit_kv_write(c, nd, None, args[1:], shapes[1:])
        n_ctx = kv.spec.shape[0]
        q, pos, scale = args[0], args[3], c_float(nd.attrs["scale"])
        values = [_p(q), _p(kv.k.ptr), _p(kv.v.ptr), _p(pos), _p(out), _i(n_head), _i(n_kv), _i(d), scale, _i(n_ctx)]
        if not getattr(self._dev, "attention_parts", False):
            self._launch(c, "attention", (n * n_head, 1), 32 * _ATT_WARPS, values)
            return
        slots = next(s for s in ATT_SLOTS if 32 * s >= d)
        # A KV head's query heads share a warp (its K and V read once), but for one row, whose parts then
        # spread over fewer warps (H100, 27B shape, 16 layers: grouped, a 1-token step took 10-25 us more;
        # a 4-token one at 3000 positions 60-80 us less).
        group = 1 if n == 1 else max(g for g in ATT_GROUPS if (n_head // n_kv) % g == 0 and g * slots <= ATT_GROUP_SLOTS)
        part, merge, rows = SPLIT_ATTENTION_KERNELS
        if n > ATT_SPLIT_ROWS:
            self._launch(c, f"{rows}_{slots}_{group}", (n * n_head // group, 1), 32 * _ATT_WARPS, values)
            return
        need = 4 * ATT_SPLIT_ROWS * n_head * ATT_PARTS * (_ATT_MAX_D + 2)
        if not self._att_terms or self._att_terms[-1].nbytes < need:  # earlier graphs keep the smaller
            self._att_terms.append(self._dev.alloc(need))
        terms = self._att_terms[-1].ptr
        values[4] = _p(terms)
        self._launch(c, f"{part}_{slots}_{group}", (n * n_head // group, ATT_PARTS // _ATT_WARPS), 32 * _ATT_WARPS, values)
        self._launch(c, f"{merge}_{slots}", (n * n_head, 1), 32 * _ATT_WARPS, [_p(terms), _p(pos), _p(out), _i(n_head), _i(d), _i(n_ctx)])

    def _emit_ssm_conv(self, c, nd, out, args, shapes) -> None:
        n, channels = nd.shape
        width = shapes[1][1]
        if width not in CONV_WIDTHS:
            raise MtprunError(f"graph {c.graph.name}: ssm_conv of width {width} is not supported.")
        rec: _Recurrent = self._state(c.graph, self._rec, nd.attrs["state"], (width - 1, channels))
        # one thread per channel walking the tokens, or (a device's `conv_per_token`) per channel and token
        self._launch(c, f"ssm_conv{'_silu' if nd.attrs.get('silu') else ''}_{width}", (-(-channels // 128), n if getattr(self._dev, "conv_per_token", False) else 1), 128,
                     [_p(args[0]), _p(args[1]), _p(out), _p(rec.buf.ptr), _l(rec.size), self._committed_arg(c, rec, n),
                      _i(rec.m), _i(n), _i(channels)])

    def _emit_delta_net(self, c, nd, out, args, shapes) -> None:
        n, n_v, dim = nd.shape
        # fusion.py's: q, k and v slices of rows of one input, q and k l2-normed in the kernel; g and beta
        # chains of element-wise ops over the inputs after (each, where not fused, a load of its own)
        gates = nd.attrs.get("gates", (((("load", len(args) - 2, 0.0),), (("load", len(args) - 1, 0.0),))))
        if "offsets" in nd.attrs:
            q, k, v = (args[0] + 4 * o for o in nd.attrs["offsets"])
            n_k, qk_stride, v_stride, l2 = nd.attrs["n_k"], nd.attrs["stride"], nd.attrs["stride"], 1
        else:
            q, k, v = args[:3]
            n_k, qk_stride, v_stride, l2 = shapes[0][1], shapes[0][1] * dim, n_v * dim, 0
        if dim not in DELTA_DIMS or (not l2 and shapes[0][2] != dim):
            raise MtprunError(f"graph {c.graph.name}: delta_net with state size {dim} is not supported.")
        rec: _Recurrent = self._state(c.graph, self._rec, nd.attrs["state"], (n_v, dim, dim))
        lanes = getattr(self._dev, "delta_net_lanes", 1)  # threads sharing a state column (one, unless the device says)
        # CUDA's kernel (the only one fusion.py rewrites for): states column after column, row strides, l2, chains
        strided = rec.transposed = getattr(self._dev, "delta_net_strided", False)
        block = min(128, dim * lanes)
        if strided:
            head = [_chain(steps, args, shapes, (1, 1, n, n_v)) for steps in gates] + [_p(a) for a in (q, k, v)]
            tail = [_l(qk_stride), _l(v_stride), _i(l2), c_float(nd.attrs.get("eps", 0.0))]
        else:
            assert not {"offsets", "gates"} & nd.attrs.keys(), "fused delta_net on a kernel without strides"
            head, tail = [_p(a) for a in args], []
        self._launch(c, f"delta_net_{dim}", (n_v, dim * lanes // block), block,
                     [*head, _p(out), _p(rec.buf.ptr), _l(rec.size), self._committed_arg(c, rec, n), _i(rec.m), _i(n), _i(n_k), _i(n_v), *tail])

    def _emit_moe(self, c, nd, out, args, shapes) -> None:
        x, router, up, gate, down = args
        n, d = nd.shape
        n_expert, n_ff, n_used = up.tensor.shape[0], up.tensor.shape[1], nd.attrs["n_used"]
        pairs = n * n_used
        logits, ids, wts = (self._scratch(c, 4 * k) for k in (n * n_expert, pairs, pairs))
        hidden, up_out, down_out = (self._scratch(c, 4 * pairs * k) for k in (n_ff, n_ff, d))
        self._matmul(c, x, [(router, logits)], n, nd.inputs[0])
        self._launch(c, "moe_route", (n, 1), 32, [_p(logits), _p(ids), _p(wts), _i(n_expert), _i(n_used)], shared=4 * n_expert)
        for w, dst, src, xdiv, m, k in ((gate, hidden, x, n_used, n_ff, d), (up, up_out, x, n_used, n_ff, d)):
            self._mmid(c, w, dst, src, ids, xdiv, pairs, m, k)
        self._launch(c, "swiglu", self._grid(pairs * n_ff), 256, [_p(hidden), _p(up_out), _p(hidden), _l(pairs * n_ff)])
        self._mmid(c, down, down_out, hidden, ids, 1, pairs, d, n_ff)
        self._launch(c, "moe_combine", self._grid(n * d), 256, [_p(down_out), _p(wts), _p(out), _i(n), _i(d), _i(n_used)])

    def _mmid(self, c, w: _Weight, y: int, x: int, ids: int, xdiv: int, pairs: int, m: int, k: int) -> None:
        self._launch(c, f"mmid_{w.suffix}", (-(-m // self._rows_per_workgroup("mmid")), pairs), 32 * _MM_WARPS,
                     [_p(w.buf.ptr), _l(w.row_bytes), _l(m * w.row_bytes), _p(ids), _i(xdiv), _p(x), _p(y), _i(m), _i(k)])

    def _scratch(self, c: Compiled, nbytes: int) -> int:
        buf = self._dev.alloc(nbytes)
        c.keep.append(buf)
        return buf.ptr
