"""The NumPy float32 reference backend: interprets a step graph op by op.

Exact first: weights are dequantized to float32 with gguf-py and every op is written so that a row's
result never depends on the rest of its batch (matrix products one row at a time, attention and
recurrences one token at a time), which is what makes MTP verification lossless bit for bit.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from mtprun.runner.graph import Graph, Node, StateSpec, WeightTensor

F32 = np.float32
DELTA_NET_CHUNK = 64  # tokens per chunk of the chunked (prefill) form of the gated delta rule


class _Recurrent:
    """A committed recurrent state plus the per-token snapshots of the last run."""

    def __init__(self, spec: StateSpec) -> None:
        self.state = np.zeros(spec.shape, F32)
        self.max_snapshots = max(spec.snapshots, 1)
        self.snapshots: dict[int, np.ndarray] = {}  # token index in the last run -> state after it

    def record(self, t: int, n: int, value: np.ndarray) -> None:
        if t >= n - self.max_snapshots:
            self.snapshots[t] = value.copy()


class NumpyBackend:
    name = "numpy"

    def __init__(self) -> None:
        self._raw: dict[str, WeightTensor] = {}
        self._f32: dict[str, np.ndarray] = {}
        self._kv: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._rec: dict[str, _Recurrent] = {}
        self._ops: dict[str, Callable[..., np.ndarray]] = {
            name[4:]: getattr(self, name) for name in dir(self) if name.startswith("_op_")
        }

    # -- contract: weights and states
    def load_weights(self, weights: Mapping[str, WeightTensor]) -> None:
        self._raw.update(weights)
        for name in weights:
            self._f32.pop(name, None)

    def _weight(self, name: str) -> np.ndarray:
        w = self._f32.get(name)
        if w is None:
            t = self._raw[name]
            if t.ggml_type == GGMLQuantizationType.F32:
                w = np.asarray(t.data, F32).reshape(t.shape)  # already float32: keep the memory map
            else:
                w = dequantize(t.data, GGMLQuantizationType(t.ggml_type)).astype(F32).reshape(t.shape)
            w = np.ascontiguousarray(w)
            self._f32[name] = w
        return w

    def alloc_states(self, specs: Sequence[StateSpec]) -> None:
        for s in specs:
            if s.kind == "kv":
                self._kv[s.name] = (np.zeros(s.shape, F32), np.zeros(s.shape, F32))
            else:
                self._rec[s.name] = _Recurrent(s)

    def reset_states(self, names: Sequence[str]) -> None:
        for name in names:
            if name in self._kv:
                for buf in self._kv[name]:
                    buf.fill(0)
            else:
                rec = self._rec[name]
                rec.state.fill(0)
                rec.snapshots.clear()

    def commit(self, names: Sequence[str], n_keep: int) -> None:
        for name in names:
            rec = self._rec[name]
            snap = rec.snapshots.get(n_keep - 1)
            if snap is None:
                raise ValueError(f"state {name}: no snapshot after token {n_keep} of the last run")
            rec.state = snap
            rec.snapshots.clear()

    def read_state(self, name: str) -> tuple[np.ndarray, ...]:
        if name in self._kv:
            return tuple(b.copy() for b in self._kv[name])
        return (self._rec[name].state.copy(),)

    # -- contract: execution
    def run(self, graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._inputs = inputs
        values: list[np.ndarray] = []
        for node in graph.nodes:
            args = [values[i] for i in node.inputs]
            out = self._ops[node.op](node, *args)
            values.append(out)
        return {name: np.ascontiguousarray(values[i], dtype=F32) for name, i in graph.outputs.items()}

    # -- ops (names match runner.graph.OPS)
    def _op_input(self, node: Node) -> np.ndarray:
        dtype = np.int32 if node.attrs["dtype"] == "i32" else F32
        return np.asarray(self._inputs[node.attrs["name"]], dtype).reshape(node.shape)

    def _op_weight(self, node: Node) -> np.ndarray:
        return self._weight(node.attrs["name"])

    def _op_get_rows(self, node: Node, w: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return w[ids.astype(np.int64)]  # int32, or float token ids

    def _op_matmul(self, node: Node, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        # One matrix-vector product per row: BLAS picks different kernels for different batch
        # sizes, so a batched product would make a row's bits depend on its batch.
        out = np.empty((x.shape[0], w.shape[0]), F32)
        for i in range(x.shape[0]):
            out[i] = w @ x[i]
        return out

    def _op_rms_norm(self, node: Node, x: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        mean = np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True)
        y = x * (1.0 / np.sqrt(mean + node.attrs["eps"])).astype(F32)
        return y if w is None else y * w

    def _op_l2_norm(self, node: Node, x: np.ndarray) -> np.ndarray:
        ssq = np.sum(np.square(x, dtype=np.float64), axis=-1, keepdims=True)
        return x * (1.0 / np.sqrt(ssq + node.attrs["eps"])).astype(F32)

    def _op_add(self, node: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def _op_mul(self, node: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a * b

    def _op_scale(self, node: Node, x: np.ndarray) -> np.ndarray:
        return x * F32(node.attrs["factor"])

    def _op_sigmoid(self, node: Node, x: np.ndarray) -> np.ndarray:
        return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(F32)

    def _op_silu(self, node: Node, x: np.ndarray) -> np.ndarray:
        return x * self._op_sigmoid(node, x)

    def _op_softplus(self, node: Node, x: np.ndarray) -> np.ndarray:
        soft = np.log1p(np.exp(np.minimum(x, 20.0).astype(np.float64))).astype(F32)
        return np.where(x > 20.0, x, soft)

    def _op_reshape(self, node: Node, x: np.ndarray) -> np.ndarray:
        return x.reshape(node.shape)

    def _op_slice(self, node: Node, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[..., node.attrs["start"] : node.attrs["stop"]])

    def _op_concat(self, node: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a, b], axis=-1)

    def _op_take_rows(self, node: Node, x: np.ndarray) -> np.ndarray:
        return x[list(node.attrs["rows"])]

    def _op_cat_rows(self, node: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a, b], axis=0)

    def _op_argmax(self, node: Node, x: np.ndarray) -> np.ndarray:
        return np.argmax(x, axis=1).astype(F32)

    def _op_rope(self, node: Node, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        n_rot, sections, base = node.attrs["n_rot"], node.attrs["sections"], node.attrs["freq_base"]
        half = n_rot // 2
        # ggml builds theta by repeated float32 multiplication; do the same to land on its angles.
        theta_scale = F32(base ** (-2.0 / n_rot))
        powers = np.cumprod(np.concatenate([[F32(1)], np.full(half - 1, theta_scale, F32)]), dtype=F32)
        uses_pos = np.array([imrope_uses_text_position(i, sections) for i in range(half)])
        theta = (pos.astype(F32)[:, None] * powers[None, :]) * uses_pos[None, :]
        cos = np.cos(theta.astype(np.float64)).astype(F32)[:, None, :]
        sin = np.sin(theta.astype(np.float64)).astype(F32)[:, None, :]
        x0, x1 = x[..., :half], x[..., half:n_rot]
        out = x.copy()
        out[..., :half] = x0 * cos - x1 * sin
        out[..., half:n_rot] = x0 * sin + x1 * cos
        return out

    def _op_kv_write(self, node: Node, k: np.ndarray, v: np.ndarray, pos: np.ndarray) -> np.ndarray:
        kc, vc = self._kv[node.attrs["state"]]
        kc[pos] = k
        vc[pos] = v
        return k

    def _op_attention(self, node: Node, q: np.ndarray, k: np.ndarray, v: np.ndarray, pos: np.ndarray) -> np.ndarray:
        kc, vc = self._kv[node.attrs["state"]]
        self._op_kv_write(node, k, v, pos)
        n, n_head, d = q.shape
        group = n_head // k.shape[1]
        out = np.empty_like(q)
        for i in range(n):
            p = int(pos[i]) + 1
            keys = np.repeat(kc[:p], group, axis=1).transpose(1, 0, 2)  # [H, p, d]
            vals = np.repeat(vc[:p], group, axis=1).transpose(1, 0, 2)
            scores = np.matmul(keys, q[i][:, :, None])[:, :, 0] * F32(node.attrs["scale"])  # [H, p]
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            probs = scores / scores.sum(axis=1, keepdims=True)
            out[i] = np.matmul(probs[:, None, :], vals)[:, 0, :]
        return out

    def _op_ssm_conv(self, node: Node, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        rec = self._rec[node.attrs["state"]]
        n, width = x.shape[0], w.shape[1]
        seq = np.concatenate([rec.state, x], axis=0)  # [K-1+n, C]
        out = seq[0:n] * w[:, 0]
        for j in range(1, width):
            out = out + seq[j : j + n] * w[:, j]
        for t in range(n):
            rec.record(t, n, seq[t + 1 : t + width])
        return out

    def _op_delta_net(
        self, node: Node, q: np.ndarray, k: np.ndarray, v: np.ndarray, g: np.ndarray, beta: np.ndarray
    ) -> np.ndarray:
        rec = self._rec[node.attrs["state"]]
        n, n_v, dim = v.shape
        heads = np.arange(n_v) % q.shape[1]  # value head h reads key head h % Hk (tiled order)
        q = q[:, heads] * F32(1.0 / np.sqrt(dim))
        k = k[:, heads]
        out = np.empty_like(v)
        # Long prefills take the chunked form up to the tokens whose states may be kept as
        # snapshots; those, and every decode or verify batch, take the token-by-token form.
        n_chunked = max(0, n - rec.max_snapshots) // DELTA_NET_CHUNK * DELTA_NET_CHUNK
        s = rec.state
        for c in range(0, n_chunked, DELTA_NET_CHUNK):
            part = slice(c, c + DELTA_NET_CHUNK)
            out[part], s = _delta_net_chunk(q[part], k[part], v[part], g[part], beta[part], s)
        decay = np.exp(g.astype(np.float64)).astype(F32)
        for t in range(n_chunked, n):
            s = s * decay[t][:, None, None]
            sk = np.matmul(k[t][:, None, :], s)[:, 0, :]  # S^T k
            delta = (v[t] - sk) * beta[t][:, None]
            s = s + k[t][:, :, None] * delta[:, None, :]
            out[t] = np.matmul(q[t][:, None, :], s)[:, 0, :]
            rec.record(t, n, s)
        return out

    def _op_moe(
        self, node: Node, x: np.ndarray, gate_inp: np.ndarray, up: np.ndarray, gate: np.ndarray, down: np.ndarray
    ) -> np.ndarray:
        n_used = node.attrs["n_used"]
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            logits = gate_inp @ x[i]
            probs = np.exp(logits - logits.max())
            probs = probs / probs.sum()
            chosen = np.argsort(-probs, kind="stable")[:n_used]
            weights = probs[chosen] / max(F32(probs[chosen].sum()), F32(6.103515625e-5))
            acc = np.zeros(x.shape[1], F32)
            for e, wt in zip(chosen, weights):
                hidden = gate[e] @ x[i]
                hidden = hidden * (1.0 / (1.0 + np.exp(-hidden.astype(np.float64)))).astype(F32) * (up[e] @ x[i])
                acc = acc + (down[e] @ hidden) * F32(wt)
            out[i] = acc
        return out


def _delta_net_chunk(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, g: np.ndarray, beta: np.ndarray, s0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The gated delta rule over one chunk of L tokens at once (heads batched), from state s0.

    With G the in-chunk cumulative log decay and u_t = beta_t (v_t - S'^T k_t) the update each token
    writes, the u's solve a unit lower-triangular system (I + M) U = beta V - (beta e^G K) s0 with
    M[t, s] = beta_t e^(G_t - G_s) k_t.k_s (s < t); outputs and the final state follow in closed form.
    """
    qh, kh, vh = (x.transpose(1, 0, 2).astype(np.float64) for x in (q, k, v))  # [H, L, S]
    cum = np.cumsum(g.T.astype(np.float64), axis=1)  # [H, L]
    b = beta.T.astype(np.float64)[:, :, None]
    length = q.shape[0]
    lower = np.tril(np.ones((length, length), bool), -1)
    decay = np.exp(np.where(np.tril(np.ones((length, length), bool)), cum[:, :, None] - cum[:, None, :], -np.inf))
    m = np.where(lower, b * decay * (kh @ kh.transpose(0, 2, 1)), 0.0)
    rhs = np.concatenate([b * vh, b * np.exp(cum)[:, :, None] * kh], axis=2)
    solved = np.linalg.solve(np.eye(length) + m, rhs)
    u = solved[:, :, : vh.shape[2]] - solved[:, :, vh.shape[2]:] @ s0.astype(np.float64)
    out = (decay * (qh @ kh.transpose(0, 2, 1))) @ u + np.exp(cum)[:, :, None] * (qh @ s0)
    last = cum[:, -1:]
    s1 = np.exp(last)[:, :, None] * s0 + (kh * np.exp(last - cum)[:, :, None]).transpose(0, 2, 1) @ u
    return out.transpose(1, 0, 2).astype(F32), s1.astype(F32)


def imrope_uses_text_position(pair: int, sections: Sequence[int]) -> bool:
    """Whether rotary pair `pair` takes the token position (sections t, h, w) or the 4th, zero one."""
    sector = pair % sum(sections)
    for axis in range(3):
        if sector % 3 == axis and sector < 3 * sections[axis]:
            return True
    return False
