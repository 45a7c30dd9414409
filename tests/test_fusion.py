"""native/fusion.py's rewrite of a graph, checked without a GPU: the fused node list, run by a NumPy
interpreter of its fused ops (what the CUDA kernels compute, in NumPy's arithmetic) over the arena
native/arena.py plans for it, gives the unfused graph's outputs bit for bit on every model graph,
with and without merged products, and launches fewer kernels. The CUDA suite
checks the kernels themselves against the unfused ones (test_cuda_backend.py)."""

from __future__ import annotations

import numpy as np
import pytest

import mtprun
from fixtures import MODELS, model_file, needs_fixtures
from mtprun.native.arena import plan_arena
from mtprun.native.fusion import DELTA_NET_FUSED_ROWS, NO_LAUNCH, fuse
from mtprun.native.numpy_backend import NumpyBackend
from mtprun.runner.graph import Graph, Node

pytestmark = needs_fixtures


class FusedNumpy(NumpyBackend):
    """The NumPy backend running a fused node list (fusion.py's ops) in place of graph.nodes."""

    def run_nodes(self, graph: Graph, nodes: list[Node], inputs) -> dict[str, np.ndarray]:
        """Every value that owns a buffer lives in one arena at plan_arena's offsets, so a buffer
        reused while a later launch still needs it (a plan that does not fit the launch order) shows."""
        self._inputs = inputs
        lay = plan_arena(graph, nodes=nodes)
        arena = np.zeros(lay.size, np.uint8)
        values: dict[int, np.ndarray] = {}  # values that own no arena bytes (weights)
        dtypes: dict[int, np.dtype] = {}

        def put(i: int, v: np.ndarray) -> None:
            if i not in lay.offsets:
                values[i] = v
                return
            v = np.ascontiguousarray(v)
            dtypes[i] = v.dtype
            arena[lay.offsets[i] : lay.offsets[i] + v.nbytes] = v.reshape(-1).view(np.uint8)

        def get(i: int) -> np.ndarray:
            nd = nodes[i]
            if nd.op == "reshape":
                return get(nd.inputs[0]).reshape(nd.shape)
            if nd.op == "view":
                return get(nd.inputs[0]).reshape(-1)[nd.attrs["offset"] : nd.attrs["offset"] + int(np.prod(nd.shape))].reshape(nd.shape)
            if i not in lay.offsets:
                return values[i]
            dtype = dtypes.get(i)
            if dtype is None:  # a side value its launch is yet to write (a fused norm's sum)
                return None
            n = int(np.prod(nd.shape))
            return arena[lay.offsets[i] : lay.offsets[i] + n * dtype.itemsize].view(dtype).reshape(nd.shape).copy()

        for i, nd in enumerate(nodes):
            if nd.op in ("reshape", "view", "absorbed", "side"):
                continue  # views are read through `get`; the others are computed by another launch
            args = [get(s) for s in nd.inputs]
            if nd.op == "norm":
                put(i, self._norm(nd, dict(zip(nd.attrs["roles"], args)), nd.inputs, put))
            elif nd.op == "chain":
                put(i, self._chain(nd, args))
            elif nd.op == "delta_net" and ("offsets" in nd.attrs or "gates" in nd.attrs):
                put(i, self._fused_delta_net(nd, args))
            else:
                put(i, self._ops[nd.op](nd, *args))
                if nd.op == "ssm_conv" and nd.attrs.get("silu"):
                    put(i, self._op_silu(nd, get(i)))
                for j in nd.attrs.get("with", ()):  # merged products of the same input
                    w = graph.nodes[j].inputs[1]
                    put(j, self._ops["matmul"](graph.nodes[j], args[0], self._ops["weight"](graph.nodes[w])))
        return {name: np.ascontiguousarray(get(i), dtype=np.float32) for name, i in graph.outputs.items()}

    def _norm(self, nd: Node, args: dict, inputs: tuple[int, ...], put) -> np.ndarray:
        a = nd.attrs
        d = nd.shape[-1]
        x = args["x"]
        if (a["per"], a["stride"], a["offset"]) != (1, d, 0):  # rows read through a slice
            x = x.reshape(-1, a["stride"])[:, a["offset"] : a["offset"] + a["per"] * d]
        x = x.reshape(nd.shape)
        if "b" in args:
            x = self._op_add(nd, x, args["b"].reshape(nd.shape))
            if "sum" in args:
                put(inputs[list(a["roles"]).index("sum")], x)
        y = self._op_l2_norm(nd, x) if a["l2"] else self._op_rms_norm(nd, x, args.get("w"))
        return y * self._op_silu(nd, args["gate"]) if "gate" in args else y

    def _fused_delta_net(self, nd: Node, args: list[np.ndarray]) -> np.ndarray:
        """fusion.py's delta_net: of slices of one input's rows, q and k l2-normed (attrs.offsets), and g
        and beta chains over the inputs after (attrs.gates)."""
        n, n_v, dim = nd.shape
        if "offsets" in nd.attrs:
            x = args[0].reshape(n, nd.attrs["stride"])
            heads = (nd.attrs["n_k"], nd.attrs["n_k"], n_v)
            q, k, v = (x[:, o : o + h * dim].reshape(n, h, dim) for o, h in zip(nd.attrs["offsets"], heads))
            q, k = (self._op_l2_norm(nd, a) for a in (q, k))
        else:
            q, k, v = args[:3]
        if "gates" in nd.attrs:
            g, beta = (self._chain(Node("chain", (), (n, n_v), {"steps": steps}), args) for steps in nd.attrs["gates"])
        else:
            g, beta = args[-2:]
        return self._op_delta_net(nd, q, k, v, g, beta)

    def _chain(self, nd: Node, args: list[np.ndarray]) -> np.ndarray:
        v = args[nd.attrs["steps"][0][1]]
        for op, slot, factor in nd.attrs["steps"][1:]:
            if slot >= 0:
                v = self._ops[op](nd, v, args[slot])
            else:
                v = self._ops[op](Node(op, (), nd.shape, {"factor": factor}), v)
        return v


def _graphs(graphs, n_embd: int) -> list[tuple[Graph, dict]]:
    rng = np.random.default_rng(0)

    def ids(n):
        return rng.integers(1, 200, n).astype(np.int32)

    out = []
    for n in (1, 4):
        pos = np.arange(3, 3 + n, dtype=np.int32)
        out.append((graphs.trunk(n, list(range(n))), {"tokens": ids(n), "pos": pos}))
        mtp_in = {"tokens": ids(n), "pos": pos, "slot": pos, "h": rng.standard_normal((n, n_embd)).astype(np.float32)}
        out.append((graphs.mtp(n, [n - 1]), mtp_in))
    step_in = {"tokens": ids(2), "pos": np.arange(3, 5, dtype=np.int32), "slot": np.arange(2, 4, dtype=np.int32),
               "h": rng.standard_normal((2, n_embd)).astype(np.float32), "last": np.array([7], np.float32),
               "verify_pos": np.arange(4, 8, dtype=np.int32)}
    for i in (1, 2):
        step_in[f"draft_pos{i}"], step_in[f"draft_slot{i}"] = np.array([4 + i], np.int32), np.array([3 + i], np.int32)
    out.append((graphs.draft_step(2, 3, False), step_in))
    pos = np.arange(0, 24, dtype=np.int32)  # longer than a fused delta_net takes
    out.append((graphs.prompt(24, True, False), {"tokens": ids(24), "pos": pos, "mtp_tokens": ids(24), "mtp_pos": pos + 1}))
    pos = np.arange(0, 6, dtype=np.int32)
    out.append((graphs.prompt(6, True, True), {"tokens": ids(6), "pos": pos, "mtp_tokens": ids(6), "mtp_pos": pos + 1}))
    keep = (np.arange(7) > 0).astype(np.float32)[:, None]  # a first chunk's MTP rows: position 0's zeros, then 6
    out.append((graphs.prompt(6, True, True, True), {"tokens": ids(6), "pos": pos, "mtp_tokens": ids(7), "mtp_pos": np.arange(7, dtype=np.int32),
                                                     "mtp_h_keep": keep}))
    return out


def _same_kind(product: Node, weight: Node) -> str:
    """Every product of one input shares a launch (on CUDA, those of one int8 kernel do)."""
    return "any"


@pytest.mark.parametrize("merge", [None, _same_kind], ids=["fused", "products merged"])
@pytest.mark.parametrize("name", MODELS)
def test_fused_nodes_compute_the_unfused_graph(name, merge):
    m = mtprun.load(model_file(name, "q8_0"), backend="numpy", n_ctx=64)
    plain, fused = NumpyBackend(), FusedNumpy()
    for be in (plain, fused):
        be.load_weights(m.loaded.weights)
        be.alloc_states(m._ctx._trunk_specs + m._ctx._mtp_specs)
    for graph, inputs in _graphs(m.loaded.graphs, m.hparams.n_embd):
        nodes = fuse(graph, merge)
        assert len(nodes) == len(graph.nodes)
        launches = sum(nd.op not in NO_LAUNCH for nd in nodes)
        assert launches < sum(nd.op not in NO_LAUNCH for nd in graph.nodes), graph.name
        assert {"norm", "chain"} <= {nd.op for nd in nodes}, graph.name
        assert not {"add", "mul"} & {nd.op for nd in nodes}, graph.name  # binary ops run as chains
        # DeltaNet reads q, k and v from the conv's rows and l2-norms q and k itself
        # and computes its g and beta from the products' rows
        # (up to DELTA_NET_FUSED_ROWS tokens: a prompt pass's scan takes them from separate launches)
        short = all(nd.shape[0] <= DELTA_NET_FUSED_ROWS for nd in graph.nodes if nd.op == "delta_net")
        assert all(({"offsets", "gates"} <= nodes[i].attrs.keys()) == short for i, nd in enumerate(graph.nodes) if nd.op == "delta_net"), graph.name
        assert ("l2_norm" not in {nd.op for nd in nodes} and all(nd.attrs.get("l2") is not True for nd in nodes)) == short, graph.name
        merged = [j for nd in nodes for j in nd.attrs.get("with", ())]
        assert bool(merged) == (merge is not None), graph.name
        assert all(nodes[j].op == "side" for j in merged)
        for be in (plain, fused):
            be.reset_states([s.name for s in m._ctx._trunk_specs + m._ctx._mtp_specs])
        want = plain.run(graph, inputs)
        got = fused.run_nodes(graph, nodes, inputs)
        assert want.keys() == got.keys()
        for key in want:
            assert np.array_equal(want[key], got[key]), (graph.name, key)
