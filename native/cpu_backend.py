"""The native CPU backend: runner.graph's contract executed by C kernels (native/cpu/) via ctypes.

A Graph is compiled once into a flat array of C node records (op, inputs, shape, attributes, buffer
pointers); `run` then copies the inputs in, makes ONE native call that executes every node on the
backend's thread pool, and copies the outputs out. Weights stay in the GGUF memory map and are read
in their ggml blocks; activations live in one arena per compiled graph, buffers reused once dead.
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from dataclasses import dataclass, field
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mtprun.native import ACTIVATIONS, BANDWIDTH_TEST_BYTES, check_activations
from mtprun.native.strides import broadcast_strides
from mtprun.runner.errors import MtprunError
from mtprun.runner.graph import ALIASING_OPS, OPS, Graph, Node, StateSpec, WeightTensor, holds_ints

F32 = np.float32
_ALIGN = 16  # arena offsets in floats: 64-byte aligned buffers
_GGML_F32 = 0
# Which inputs of an op may be a weight in its ggml blocks; elsewhere weights are float32 arrays.
_BLOCK_INPUTS = {"matmul": (1,), "get_rows": (0,), "moe": (1, 2, 3, 4)}


class _Node(ctypes.Structure):
    _fields_ = [
        ("op", ctypes.c_int32), ("type", ctypes.c_int32), ("n_in", ctypes.c_int32), ("ndim", ctypes.c_int32),
        ("inp", ctypes.c_int32 * 5), ("state", ctypes.c_int32),
        ("ne", ctypes.c_int64 * 4), ("nelem", ctypes.c_int64),
        ("data", ctypes.c_void_p), ("aux", ctypes.c_void_p),
        ("ia", ctypes.c_int64 * 8), ("fa", ctypes.c_double * 2),
        ("sa", ctypes.c_int64 * 4), ("sb", ctypes.c_int64 * 4),
    ]


class _State(ctypes.Structure):
    _fields_ = [
        ("k", ctypes.c_void_p), ("v", ctypes.c_void_p), ("n_ctx", ctypes.c_int64),
        ("bufs", ctypes.c_void_p), ("work", ctypes.c_void_p), ("size", ctypes.c_int64),
        ("m", ctypes.c_int32), ("committed", ctypes.c_int32), ("last_n", ctypes.c_int32), ("pad", ctypes.c_int32),
    ]


_ERRORS = {1: "a position is outside the context (n_ctx)", 2: "unsupported weight type", 3: "a token id is outside the vocabulary", 4: "out of memory"}
_LIB: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """The compiled kernels (mtprun/native/_mtprun_cpu*.so), loaded once with typed signatures."""
    global _LIB
    if _LIB is not None:
        return _LIB
    here = Path(__file__).resolve().parent
    found = [p for suffix in EXTENSION_SUFFIXES for p in here.glob(f"_mtprun_cpu{suffix}")]
    if not found:
        raise MtprunError("the native CPU backend is not built (reinstall mtprun with a C compiler, or use --backend numpy).")
    lib = ctypes.CDLL(str(found[0]))
    sig = {
        "mtp_create": ([ctypes.c_int], ctypes.c_void_p),
        "mtp_free": ([ctypes.c_void_p], None),
        "mtp_threads": ([ctypes.c_void_p], ctypes.c_int),
        "mtp_run": ([ctypes.c_void_p, ctypes.POINTER(_Node), ctypes.c_int32, ctypes.POINTER(_State)], ctypes.c_int),
        "mtp_op_name": ([ctypes.c_int], ctypes.c_char_p),
        "mtp_node_size": ([], ctypes.c_int),
        "mtp_state_size": ([], ctypes.c_int),
        "mtp_type_row_bytes": ([ctypes.c_int, ctypes.c_int64], ctypes.c_int64),
        "mtp_dequant": ([ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64], ctypes.c_int),
        "mtp_set_simd": ([ctypes.c_int], ctypes.c_int),
        "mtp_simd_name": ([], ctypes.c_char_p),
        "mtp_set_activations": ([ctypes.c_void_p, ctypes.c_int], None),
        "mtp_read_sum": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64], ctypes.c_uint64),
    }
    for name, (args, res) in sig.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    if lib.mtp_node_size() != ctypes.sizeof(_Node) or lib.mtp_state_size() != ctypes.sizeof(_State):
        raise MtprunError("the native CPU backend library does not match this mtprun version (reinstall mtprun).")
    _LIB = lib
    return lib


def _op_codes(lib: ctypes.CDLL) -> dict[str, int]:
    codes = {}
    for i in range(len(OPS)):
        name = lib.mtp_op_name(i)
        if name is not None:
            codes[name.decode()] = i
    missing = set(OPS) - set(codes)
    if missing:
        raise MtprunError(f"the native CPU backend lacks ops {sorted(missing)} (reinstall mtprun).")
    return codes


def dequantize(t: WeightTensor) -> np.ndarray:
    """A weight decoded to float32 by the C decoders (bit-identical to gguf-py's dequantize)."""
    lib = library()
    k = t.shape[-1]
    rows = math.prod(t.shape[:-1])
    out = np.empty(t.shape, F32)
    raw = np.ascontiguousarray(t.data)
    if lib.mtp_dequant(t.ggml_type, raw.ctypes.data, out.ctypes.data, rows, k) != 0:
        raise MtprunError(f"weight {t.name}: ggml type {t.ggml_type} is not supported by the CPU backend.")
    return out


@dataclass
class _Compiled:
    graph: Graph
    nodes: ctypes.Array
    arena: np.ndarray
    inputs: list[tuple[str, np.ndarray]]
    outputs: dict[str, np.ndarray]
    keep: list = field(default_factory=list)  # aux buffers and index arrays the C nodes point into


@dataclass
class _StateBuffers:
    spec: StateSpec
    arrays: tuple[np.ndarray, ...]  # kv: (K, V); recurrent: (m + 1 buffers, work)


class CpuBackend:
    """`activations`: "f32" keeps the matrix products' activations in float32 (exact); "q8" quantizes
    each token row to int8 blocks for the Q8_0 / K-quant products, as llama.cpp does (faster; about
    llama.cpp's distance from exact); "q8x2" adds a second int8 plane for the first one's rounding
    error (two integer products; ~250x closer to exact than q8). native/cpu/mtp.h states the arithmetic."""

    name = "cpu"

    def __init__(self, threads: int | None = None, activations: str = "f32") -> None:
        check_activations(activations)
        self._lib = library()
        self._codes = _op_codes(self._lib)
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if threads < 1:
            raise MtprunError(f"threads must be at least 1, not {threads}.")
        self._pool = self._lib.mtp_create(int(threads))
        if not self._pool:
            raise MtprunError(f"the CPU backend could not start {threads} threads.")
        self.threads = int(self._lib.mtp_threads(self._pool))
        self.activations = activations
        self._lib.mtp_set_activations(self._pool, ACTIVATIONS.index(activations))
        self.simd = self._lib.mtp_simd_name().decode()
        self._raw: dict[str, WeightTensor] = {}
        self._f32: dict[str, np.ndarray] = {}
        self._state_index: dict[str, int] = {}
        self._state_bufs: list[_StateBuffers] = []
        self._states = (_State * 1)()
        self._compiled: dict[int, _Compiled] = {}

    def __del__(self) -> None:
        pool, self._pool = getattr(self, "_pool", None), None
        if pool and _LIB is not None:
            _LIB.mtp_free(pool)

    def memory_bandwidth(self) -> tuple[float, str] | None:
        """Bytes a second that this backend's threads read from main memory: the best of a few passes
        over a buffer far larger than any cache: what a bandwidth-bound decode step can reach. None
        where the buffer does not fit beside the model."""
        try:
            words = np.arange(BANDWIDTH_TEST_BYTES // 8, dtype=np.uint64)  # written: real pages, not the zero page
        except MemoryError:
            return None
        expected = int(words.sum(dtype=np.uint64))
        seconds = []
        for _ in range(5):
            t0 = time.perf_counter()
            got = self._lib.mtp_read_sum(self._pool, words.ctypes.data, words.nbytes)
            seconds.append(time.perf_counter() - t0)
            if got != expected:
                raise MtprunError("the CPU backend's memory read test summed its buffer wrongly.")
        return words.nbytes / min(seconds), f"read by {self.threads} threads"

    # -- contract: weights and states
    def load_weights(self, weights: Mapping[str, WeightTensor]) -> None:
        for name, t in weights.items():
            if self._lib.mtp_type_row_bytes(t.ggml_type, t.shape[-1]) < 0:
                raise MtprunError(f"weight {name}: ggml type {t.ggml_type} is not supported by the CPU backend.")
            self._raw[name] = t
            self._f32.pop(name, None)
        self._compiled.clear()  # compiled graphs hold weight pointers

    def alloc_states(self, specs: Sequence[StateSpec]) -> None:
        for s in specs:
            if s.kind == "kv":
                arrays = (np.zeros(s.shape, F32), np.zeros(s.shape, F32))
            else:
                m = max(s.snapshots, 1)
                arrays = (np.zeros((m + 1,) + tuple(s.shape), F32), np.zeros(s.shape, F32))
            buf = _StateBuffers(s, arrays)
            if s.name in self._state_index:
                self._state_bufs[self._state_index[s.name]] = buf
            else:
                self._state_index[s.name] = len(self._state_bufs)
                self._state_bufs.append(buf)
        self._states = (_State * max(len(self._state_bufs), 1))()
        for i, b in enumerate(self._state_bufs):
            st = self._states[i]
            if b.spec.kind == "kv":
                st.k, st.v, st.n_ctx = b.arrays[0].ctypes.data, b.arrays[1].ctypes.data, b.spec.shape[0]
            else:
                st.bufs, st.work = b.arrays[0].ctypes.data, b.arrays[1].ctypes.data
                st.size, st.m = math.prod(b.spec.shape), b.arrays[0].shape[0] - 1
        self._compiled.clear()  # compiled graphs check state shapes

    def reset_states(self, names: Sequence[str]) -> None:
        for name in names:
            i = self._state_index[name]
            for a in self._state_bufs[i].arrays:
                a.fill(0)
            self._states[i].committed = 0
            self._states[i].last_n = 0

    def commit(self, names: Sequence[str], n_keep: int) -> None:
        for name in names:
            st = self._states[self._state_index[name]]
            n, m, t = st.last_n, st.m, n_keep - 1
            if not (max(n - m, 0) <= t < n):
                raise ValueError(f"state {name}: no snapshot after token {n_keep} of the last run")
            r = t - max(n - m, 0)  # the snapshot slot numbering of recurrent.c
            st.committed = r if r < st.committed else r + 1
            st.last_n = 0

    def read_state(self, name: str) -> tuple[np.ndarray, ...]:
        i = self._state_index[name]
        b = self._state_bufs[i]
        if b.spec.kind == "kv":
            return tuple(a.copy() for a in b.arrays)
        return (b.arrays[0][self._states[i].committed].copy(),)

    # -- contract: execution
    def run(self, graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        c = self._compiled.get(id(graph))
        if c is None or c.graph is not graph:
            c = self._compiled[id(graph)] = self._compile(graph)
        for name, view in c.inputs:
            view[...] = np.asarray(inputs[name]).reshape(view.shape)
        err = self._lib.mtp_run(self._pool, c.nodes, len(graph.nodes), self._states)
        if err:
            raise MtprunError(f"graph {graph.name}: {_ERRORS.get(err, f'native error {err}')}.")
        return {name: view.copy() for name, view in c.outputs.items()}

    # -- compilation
    def _weight_f32(self, name: str) -> np.ndarray:
        w = self._f32.get(name)
        if w is None:
            t = self._raw[name]
            w = self._f32[name] = np.ascontiguousarray(t.data, F32).reshape(t.shape) if t.ggml_type == _GGML_F32 else dequantize(t)
        return w

    def _compile(self, graph: Graph) -> _Compiled:
        nodes = graph.nodes
        block_ok = [True] * len(nodes)  # weight node may stay in ggml blocks
        for nd in nodes:
            for slot, src in enumerate(nd.inputs):
                if slot not in _BLOCK_INPUTS.get(nd.op, ()):
                    block_ok[src] = False
        offsets, size = _plan_arena(graph)
        arena = np.empty(size + _ALIGN, F32)
        base = (-arena.ctypes.data // 4) % _ALIGN  # first 64-byte aligned float
        arena = arena[base : base + size]
        out = (_Node * len(nodes))()
        keep: list = []
        views: list[np.ndarray | None] = [None] * len(nodes)
        ins: list[tuple[str, np.ndarray]] = []
        for i, nd in enumerate(nodes):
            c = out[i]
            if len(nd.shape) > 4 or len(nd.inputs) > 5:
                raise MtprunError(f"graph {graph.name}: node {i} ({nd.op}) has more dims or inputs than the CPU backend takes.")
            c.op, c.n_in, c.ndim, c.state = self._codes[nd.op], len(nd.inputs), len(nd.shape), -1
            c.nelem = math.prod(nd.shape)
            for j, s in enumerate(nd.shape):
                c.ne[j] = s
            for j, src in enumerate(nd.inputs):
                c.inp[j] = src
            if nd.op == "weight":
                data = self._weight_node(nd, block_ok[i])
                keep.append(data)
                c.type = _GGML_F32 if data.dtype == F32 else self._raw[nd.attrs["name"]].ggml_type
                c.data = data.ctypes.data
                continue
            if nd.op in ALIASING_OPS:
                views[i] = views[nd.inputs[0]].reshape(nd.shape)
                c.data = out[nd.inputs[0]].data
                if nd.op == "kv_write":
                    self._set_attrs(graph, i, nd, c, keep)
                continue
            view = arena[offsets[i] : offsets[i] + c.nelem]
            if nd.op == "input":
                view = view.view(np.int32) if nd.attrs["dtype"] == "i32" else view
                ins.append((nd.attrs["name"], view.reshape(nd.shape)))
            views[i] = view.reshape(nd.shape)
            c.data = view.ctypes.data
            self._set_attrs(graph, i, nd, c, keep)
        outs = {name: views[i] for name, i in graph.outputs.items()}
        return _Compiled(graph, out, arena, ins, outs, keep)

    def _weight_node(self, nd: Node, blocks: bool) -> np.ndarray:
        name = nd.attrs["name"]
        t = self._raw.get(name)
        if t is None:
            raise MtprunError(f"weight {name} was not loaded.")
        if math.prod(t.shape) != math.prod(nd.shape) or t.shape[-1] != nd.shape[-1]:
            raise MtprunError(f"weight {name}: shape {t.shape} does not match the graph's {nd.shape}.")
        if blocks and t.ggml_type != _GGML_F32:
            raw = np.ascontiguousarray(t.data)
            rows = math.prod(t.shape[:-1])
            if raw.nbytes != rows * self._lib.mtp_type_row_bytes(t.ggml_type, t.shape[-1]):
                raise MtprunError(f"weight {name}: {raw.nbytes} bytes do not hold shape {t.shape} in its type.")
            return raw
        return self._weight_f32(name)

    def _set_attrs(self, graph: Graph, i: int, nd: Node, c: _Node, keep: list) -> None:
        a, shapes = nd.attrs, [graph.nodes[s].shape for s in nd.inputs]
        if nd.op in ("rms_norm", "l2_norm"):
            c.fa[0] = a["eps"]
            if len(shapes) > 1 and math.prod(shapes[1]) != nd.shape[-1]:
                raise MtprunError(f"graph {graph.name}: node {i} norm weight {shapes[1]} does not match {nd.shape}.")
        elif nd.op in ("add", "mul"):
            shape4 = (1,) * (4 - len(nd.shape)) + nd.shape
            for j, s in enumerate(shape4):
                c.ia[j] = s
            for field_, shp in (("sa", shapes[0]), ("sb", shapes[1])):
                strides = getattr(c, field_)
                for j, s in enumerate(broadcast_strides(shp, shape4)):
                    strides[j] = s
        elif nd.op == "scale":
            c.fa[0] = a["factor"]
        elif nd.op == "slice":
            c.ia[0], c.ia[1] = a["start"], a["stop"]
        elif nd.op == "get_rows":
            c.ia[0] = int(not holds_ints(graph.nodes[nd.inputs[1]]))
        elif nd.op == "take_rows":
            rows = np.asarray(a["rows"], np.int64)
            if rows.size and (rows.min() < 0 or rows.max() >= shapes[0][0]):
                raise MtprunError(f"graph {graph.name}: take_rows indices outside 0..{shapes[0][0] - 1}.")
            keep.append(rows)
            c.aux = rows.ctypes.data
        elif nd.op == "rope":
            sections = tuple(a["sections"]) + (0,) * (4 - len(a["sections"]))
            c.ia[0] = a["n_rot"]
            for j, s in enumerate(sections[:4]):
                c.ia[1 + j] = s
            c.fa[0] = a["freq_base"]
        elif nd.op == "attention":
            c.fa[0] = a["scale"]
            c.state = self._state_for(graph, a["state"], "kv", shapes[1][1:])
        elif nd.op == "kv_write":
            c.state = self._state_for(graph, a["state"], "kv", shapes[0][1:])
        elif nd.op == "ssm_conv":
            c.state = self._state_for(graph, a["state"], "recurrent", (shapes[1][1] - 1, nd.shape[1]))
        elif nd.op == "delta_net":
            c.state = self._state_for(graph, a["state"], "recurrent", (nd.shape[1], nd.shape[2], nd.shape[2]))
        elif nd.op == "moe":
            n, d = nd.shape
            e, u, f = shapes[1][0], a["n_used"], shapes[2][1]
            aux = np.zeros(n * e + 3 * n * u + e + 1 + 2 * n * d + 2 * n * f + n * u * d, F32)
            keep.append(aux)
            c.ia[0], c.aux = u, aux.ctypes.data

    def _state_for(self, graph: Graph, name: str, kind: str, shape: tuple[int, ...]) -> int:
        i = self._state_index.get(name)
        if i is None:
            raise MtprunError(f"graph {graph.name}: state {name} was not allocated.")
        spec = self._state_bufs[i].spec
        got = tuple(spec.shape[1:]) if kind == "kv" else tuple(spec.shape)
        if spec.kind != kind or got != tuple(shape):
            raise MtprunError(f"graph {graph.name}: state {name} is {spec.kind} {spec.shape}, the graph needs {kind} {shape}.")
        return i


def _plan_arena(graph: Graph) -> tuple[dict[int, int], int]:
    """Arena offsets (floats) for every node that owns a buffer. A buffer is reused once its last
    reader has run; graph inputs and outputs are never reused. Reshapes alias their input."""
    nodes = graph.nodes
    root = list(range(len(nodes)))
    for i, nd in enumerate(nodes):
        if nd.op in ALIASING_OPS:
            root[i] = root[nd.inputs[0]]
    last_use = {}
    for i, nd in enumerate(nodes):
        for src in nd.inputs:
            last_use[root[src]] = i
    pinned = {root[i] for i in graph.outputs.values()} | {i for i, nd in enumerate(nodes) if nd.op == "input"}
    free: dict[int, list[int]] = {}
    offsets: dict[int, int] = {}
    size = 0

    def alloc(n: int) -> int:
        nonlocal size
        n = -(-n // _ALIGN) * _ALIGN
        if free.get(n):
            return free[n].pop()
        size += n
        return size - n

    def release(r: int) -> None:
        n = -(-math.prod(nodes[r].shape) // _ALIGN) * _ALIGN
        free.setdefault(n, []).append(offsets[r])

    for i, nd in enumerate(nodes):  # inputs first: they are written before anything runs
        if nd.op == "input":
            offsets[i] = alloc(math.prod(nd.shape))
    for i, nd in enumerate(nodes):
        if nd.op in ("weight", "input", *ALIASING_OPS):
            continue
        offsets[i] = alloc(math.prod(nd.shape))
        dead = {root[s] for s in nd.inputs if last_use.get(root[s]) == i} | ({i} if i not in last_use else set())
        for r in dead:
            if r in offsets and r not in pinned:
                release(r)
    return offsets, max(size, _ALIGN)
