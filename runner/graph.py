"""The backend contract: a model step described as a graph of ops on backend-owned buffers.

Model code (runner/models/) builds a `Graph` once per step shape; a backend (native/) executes the
whole graph in one call, so Python costs once per step, never once per op. A backend knows these
ops and its buffers, never a model.

Conventions every backend implements:
- Activations are float32, row-major; axis 0 is the token (row) axis, so a graph for n tokens
  has n rows everywhere until `take_rows`.
- Weights are named by their GGUF tensor name and shaped in NumPy order (rows first: a matrix that
  maps k inputs to m outputs is [m, k]; expert stacks are [n_expert, m, k]). Their storage type
  (F32, F16, BF16, Q8_0, Q4_K, ...) is the backend's business.
- Batch invariance: a row's result never depends on the other rows of the batch, bit for bit.
  This is what makes a (k+1)-row MTP verify identical to k+1 one-row decodes. One exception, for
  prefill speed: `delta_net` may run the tokens of a batch before its last `snapshots` ones in the
  chunked (parallel) form, whose rounding differs; decode and verify batches never reach it.
- State: attention KV caches are indexed by position (a write at position p overwrites what was
  there), so trimming a sequence needs no work. Recurrent states (conv, DeltaNet) are read from
  their committed value; a run stores the state after each of its last `snapshots` tokens, and
  `Backend.commit` makes one of them the committed value. An uncommitted run leaves no trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

# Ops whose result is their first input's buffer (a backend allocates nothing for them).
ALIASING_OPS = ("reshape", "kv_write")

# op name -> one-line meaning; the complete list a backend must execute.
OPS: dict[str, str] = {
    "input": "named graph input: attrs name, dtype ('f32' | 'i32')",
    "weight": "named model weight (GGUF tensor name), NumPy-order shape",
    "get_rows": "rows of a weight matrix [V, d] picked by ids [n] -> [n, d]: an i32 input's ints, or float32 "
    "token ids (exact: V <= 2^24) from any other node (argmax, cat_rows of them, an f32 input)",
    "matmul": "x [n, k] times weight [m, k] transposed -> [n, m]",
    "rms_norm": "x / sqrt(mean(x^2, last axis) + eps) * weight (weight optional, broadcast on last axis)",
    "l2_norm": "x / sqrt(sum(x^2, last axis) + eps)",
    "add": "a + b with NumPy broadcasting",
    "mul": "a * b with NumPy broadcasting",
    "scale": "x * attrs.factor",
    "sigmoid": "1 / (1 + exp(-x))",
    "silu": "x * sigmoid(x)",
    "softplus": "log(1 + exp(x)) (x itself above 20, as ggml)",
    "reshape": "same data, new shape (row axis kept)",
    "slice": "x[..., start:stop] on the last axis",
    "concat": "concatenation on the last axis",
    "take_rows": "x[rows] for static row indices attrs.rows",
    "cat_rows": "a [n_a, ...] then b [n_b, ...] (equal trailing shapes) -> [n_a + n_b, ...]: a step's drafts, "
    "made one pass after another, as the batch that verifies them",
    "argmax": "index of the largest value of each row of x [n, V] (the first of equal ones; a NaN above every "
    "number, the first NaN), as NumPy's argmax, as float32 (exact: V <= 2^24) -> [n]; the runner builds it where "
    "a backend's `device_argmax` is true (logits on a device: greedy decoding copies back ids, not rows of V)",
    "rope": "rotary embedding of [n, H, d] at positions [n]; Qwen3.5 interleaved M-RoPE for text "
    "(attrs n_rot, sections, freq_base): pair i < n_rot/2 rotates (x[i], x[i + n_rot/2]) by "
    "p * base^(-2i/n_rot) if its section uses a text position, else stays (the 4th section's position is 0)",
    "attention": "causal softmax attention of q [n, Hq, d] over the KV cache attrs.state after writing "
    "k, v [n, Hkv, d] at positions pos [n]; query head h reads KV head h // (Hq/Hkv); attrs scale -> [n, Hq, d]",
    "kv_write": "writes k, v [n, Hkv, d] at positions pos [n] into the KV cache attrs.state (attention's "
    "write alone: the MTP head's prompt pass needs its cache, not its output) -> k itself",
    "ssm_conv": "depthwise causal conv of x [n, C] with weight [C, K] over (conv state ++ x) -> [n, C]; "
    "the state (last K-1 inputs) is attrs.state",
    "delta_net": "gated delta rule over q, k [n, Hk, S], v [n, Hv, S], g, beta [n, Hv] with state "
    "attrs.state [Hv, S(k), S(v)]: S *= exp(g); d = (v - S^T k) * beta; S += k d^T; o = S^T q / sqrt(S); "
    "value head h uses key head h % Hk -> [n, Hv, S]",
    "moe": "routed experts: softmax(x @ gate_inp^T), top attrs.n_used experts (ties to the lower index), "
    "weights renormalised to sum 1, sum_e w_e * down_e(silu(gate_e x) * up_e x) -> [n, d]",
}


@dataclass(frozen=True)
class Node:
    op: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)


def holds_ints(node: Node) -> bool:
    """Whether a node's values are int32 (an i32 input); every other node's are float32."""
    return node.op == "input" and node.attrs["dtype"] == "i32"


@dataclass(frozen=True)
class Ref:
    """A value in a graph under construction: the index of the node that produces it."""

    graph: "Graph"
    id: int
    shape: tuple[int, ...]

    def __add__(self, other: "Ref") -> "Ref":
        return self.graph.binary("add", self, other)

    def __mul__(self, other: "Ref") -> "Ref":
        return self.graph.binary("mul", self, other)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(np.broadcast_shapes(a, b))


class Graph:
    """A list of nodes in execution order, with named outputs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[Node] = []
        self.outputs: dict[str, int] = {}

    def _add(self, op: str, inputs: Sequence[Ref], shape: Sequence[int], **attrs: Any) -> Ref:
        assert op in OPS, op
        self.nodes.append(Node(op, tuple(r.id for r in inputs), tuple(int(s) for s in shape), attrs))
        return Ref(self, len(self.nodes) - 1, tuple(int(s) for s in shape))

    # -- leaves
    def input(self, name: str, shape: Sequence[int], dtype: str = "f32") -> Ref:
        return self._add("input", (), shape, name=name, dtype=dtype)

    def weight(self, name: str, shape: Sequence[int]) -> Ref:
        return self._add("weight", (), shape, name=name)

    # -- ops
    def get_rows(self, w: Ref, ids: Ref) -> Ref:
        return self._add("get_rows", (w, ids), (ids.shape[0], w.shape[1]))

    def matmul(self, x: Ref, w: Ref) -> Ref:
        assert x.shape[-1] == w.shape[-1], (x.shape, w.shape)
        return self._add("matmul", (x, w), (x.shape[0], w.shape[0]))

    def rms_norm(self, x: Ref, w: Ref | None, eps: float) -> Ref:
        return self._add("rms_norm", (x,) if w is None else (x, w), x.shape, eps=float(eps))

    def l2_norm(self, x: Ref, eps: float) -> Ref:
        return self._add("l2_norm", (x,), x.shape, eps=float(eps))

    def binary(self, op: str, a: Ref, b: Ref) -> Ref:
        return self._add(op, (a, b), _broadcast(a.shape, b.shape))

    def scale(self, x: Ref, factor: float) -> Ref:
        return self._add("scale", (x,), x.shape, factor=float(factor))

    def unary(self, op: str, x: Ref) -> Ref:
        assert op in ("sigmoid", "silu", "softplus")
        return self._add(op, (x,), x.shape)

    def reshape(self, x: Ref, shape: Sequence[int]) -> Ref:
        assert int(np.prod(shape)) == int(np.prod(x.shape)) and shape[0] == x.shape[0], (x.shape, shape)
        return self._add("reshape", (x,), shape)

    def slice(self, x: Ref, start: int, stop: int) -> Ref:
        return self._add("slice", (x,), x.shape[:-1] + (stop - start,), start=start, stop=stop)

    def concat(self, a: Ref, b: Ref) -> Ref:
        assert a.shape[:-1] == b.shape[:-1]
        return self._add("concat", (a, b), a.shape[:-1] + (a.shape[-1] + b.shape[-1],))

    def take_rows(self, x: Ref, rows: Sequence[int]) -> Ref:
        return self._add("take_rows", (x,), (len(rows),) + x.shape[1:], rows=tuple(rows))

    def cat_rows(self, a: Ref, b: Ref) -> Ref:
        assert a.shape[1:] == b.shape[1:], (a.shape, b.shape)
        return self._add("cat_rows", (a, b), (a.shape[0] + b.shape[0],) + a.shape[1:])

    def argmax(self, x: Ref) -> Ref:
        assert len(x.shape) == 2 and x.shape[1] <= 1 << 24, x.shape
        return self._add("argmax", (x,), (x.shape[0],))

    def rope(self, x: Ref, pos: Ref, n_rot: int, sections: Sequence[int], freq_base: float) -> Ref:
        return self._add("rope", (x, pos), x.shape, n_rot=n_rot, sections=tuple(sections), freq_base=freq_base)

    def attention(self, q: Ref, k: Ref, v: Ref, pos: Ref, state: str, scale: float) -> Ref:
        return self._add("attention", (q, k, v, pos), q.shape, state=state, scale=float(scale))

    def kv_write(self, k: Ref, v: Ref, pos: Ref, state: str) -> Ref:
        return self._add("kv_write", (k, v, pos), k.shape, state=state)

    def ssm_conv(self, x: Ref, w: Ref, state: str) -> Ref:
        return self._add("ssm_conv", (x, w), x.shape, state=state)

    def delta_net(self, q: Ref, k: Ref, v: Ref, g: Ref, beta: Ref, state: str) -> Ref:
        return self._add("delta_net", (q, k, v, g, beta), v.shape, state=state)

    def moe(self, x: Ref, gate_inp: Ref, up: Ref, gate: Ref, down: Ref, n_used: int) -> Ref:
        return self._add("moe", (x, gate_inp, up, gate, down), x.shape, n_used=int(n_used))

    def output(self, name: str, x: Ref) -> None:
        self.outputs[name] = x.id


@dataclass(frozen=True)
class StateSpec:
    """A backend-owned cache buffer. kind 'kv': K and V caches, shape [n_ctx, n_kv_heads, head_dim] each;
    kind 'recurrent': one state of `shape`, with room for `snapshots` per-token copies for rollback."""

    name: str
    kind: str
    shape: tuple[int, ...]
    snapshots: int = 0


@dataclass(frozen=True)
class WeightTensor:
    """A weight as stored in the GGUF file: raw (memory-mapped) bytes, ggml type, NumPy-order shape."""

    name: str
    ggml_type: int
    shape: tuple[int, ...]
    data: np.ndarray


class Backend(Protocol):
    """What every backend implements (NumPy reference, C for CPU, CUDA, Vulkan, Metal).

    Optional: `memory_bandwidth() -> (bytes per second, what was measured) | None` (None: the test's
    buffer did not fit), the ceiling that `mtprun bench` sets a bandwidth-bound decode against (CPU:
    threads reading; CUDA: copies); `device_memory_bytes() -> int | None`, the device memory its
    buffers hold (GPU backends that count it)."""

    name: str

    def load_weights(self, weights: Mapping[str, WeightTensor]) -> None:
        """Take the model's weights (memory-mapped; upload or keep as the backend likes)."""

    def alloc_states(self, specs: Sequence[StateSpec]) -> None:
        """Allocate (zeroed) cache buffers; replaces any earlier set with the same names."""

    def reset_states(self, names: Sequence[str]) -> None:
        """Zero these states (a fresh context)."""

    def run(self, graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute the whole graph; return its named outputs as float32 host arrays."""

    def commit(self, names: Sequence[str], n_keep: int) -> None:
        """Make the state after the n_keep-th token of the last run of each recurrent state committed."""

    def read_state(self, name: str) -> tuple[np.ndarray, ...]:
        """Host copy of a state: (K, V) for 'kv', (committed state,) for 'recurrent'. For tests."""
