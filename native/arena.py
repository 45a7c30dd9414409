"""Activation arena plan for one graph: a byte offset for every node that owns a buffer. A buffer
is reused once its last reader has run; graph inputs and outputs are never reused; reshapes and
weights own none.

The arena starts with two fixed regions, so that a step moves through two copies only: the inputs
(then `in_extra` bytes the caller fills per run, e.g. which recurrent snapshot is committed) in
[0, in_bytes), one host-to-device copy; and the outputs (then `out_extra` bytes, e.g. an error flag)
in [out_start, out_start + out_bytes), one device-to-host copy. The fusion pass's nodes (native/fusion.py):
"view" aliases its input like a reshape, "absorbed" owns no buffer. A launch list prepared once over
the arena (a CUDA graph, a recorded Vulkan command buffer) stays valid: every per-step value lives
in these fixed bytes."""

from __future__ import annotations

from typing import NamedTuple

from mtprun.runner.graph import ALIASING_OPS, Graph, Node

VIEWS = (*ALIASING_OPS, "view")  # a node whose result is its first input's buffer
ALIGN = 256  # bytes: every buffer starts 16-byte vector aligned and on its own cache lines


class Layout(NamedTuple):
    offsets: dict[int, int]  # node -> byte offset (reshapes and weights: none)
    size: int  # arena bytes
    in_bytes: int  # inputs + in_extra, from offset 0
    in_extra: int  # offset of the in_extra bytes
    out_start: int
    out_bytes: int  # outputs + out_extra
    out_extra: int  # offset of the out_extra bytes


def node_bytes(shape: tuple[int, ...]) -> int:
    n = 4
    for s in shape:
        n *= s
    return -(-max(n, 4) // ALIGN) * ALIGN


def _round(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def plan_arena(graph: Graph, in_extra: int = 0, out_extra: int = 0, nodes: list[Node] | None = None) -> Layout:
    """The plan for graph's nodes, or for `nodes` in their place (fusion.py's rewrite of them)."""
    nodes = graph.nodes if nodes is None else nodes
    root = list(range(len(nodes)))
    for i, nd in enumerate(nodes):
        if nd.op in VIEWS:
            root[i] = root[nd.inputs[0]]
    last_use: dict[int, int] = {}
    for i, nd in enumerate(nodes):
        for src in nd.inputs:
            last_use[root[src]] = i
    inputs = [i for i, nd in enumerate(nodes) if nd.op == "input"]
    outputs = sorted({root[i] for i in graph.outputs.values()} - set(inputs))
    outputs = [r for r in outputs if nodes[r].op != "weight" and nodes[r].op not in VIEWS]
    pinned = set(outputs) | set(inputs)
    offsets: dict[int, int] = {}
    size = 0
    for i in inputs:
        offsets[i] = size
        size += node_bytes(nodes[i].shape)
    extra_in = size
    size += _round(in_extra) if in_extra else 0
    in_bytes = size
    out_start = size
    for r in outputs:
        offsets[r] = size
        size += node_bytes(nodes[r].shape)
    extra_out = size
    size += _round(out_extra) if out_extra else 0
    out_bytes = size - out_start
    free: dict[int, list[int]] = {}

    def alloc(nbytes: int) -> int:
        nonlocal size
        if free.get(nbytes):
            return free[nbytes].pop()
        size += nbytes
        return size - nbytes

    for i, nd in enumerate(nodes):
        if nd.op in ("weight", "input", "absorbed", *VIEWS):
            continue
        for j in (i, *nd.attrs.get("with", ())):  # and the products this launch computes too (fusion.py)
            if j not in offsets:
                offsets[j] = alloc(node_bytes(nodes[j].shape))
        # Freed after this node is planned: an op never writes over its own inputs.
        dead = {root[s] for s in nd.inputs if last_use.get(root[s]) == i} | ({i} if i not in last_use else set())
        for r in dead:
            if r in offsets and r not in pinned:
                free.setdefault(node_bytes(nodes[r].shape), []).append(offsets[r])
    return Layout(offsets, max(size, ALIGN), in_bytes, extra_in, out_start, out_bytes, extra_out)
