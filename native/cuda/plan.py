"""Activation arena plan for one graph: a byte offset for every node that owns a buffer. A buffer
is reused once its last reader has run; graph inputs and outputs are never reused; reshapes and
weights own none."""

from __future__ import annotations

from mtprun.runner.graph import Graph

ALIGN = 256  # bytes: every buffer starts 16-byte vector aligned and on its own cache lines


def node_bytes(shape: tuple[int, ...]) -> int:
    n = 4
    for s in shape:
        n *= s
    return -(-max(n, 4) // ALIGN) * ALIGN


def plan_arena(graph: Graph) -> tuple[dict[int, int], int]:
    nodes = graph.nodes
    root = list(range(len(nodes)))
    for i, nd in enumerate(nodes):
        if nd.op == "reshape":
            root[i] = root[nd.inputs[0]]
    last_use: dict[int, int] = {}
    for i, nd in enumerate(nodes):
        for src in nd.inputs:
            last_use[root[src]] = i
    pinned = {root[i] for i in graph.outputs.values()} | {i for i, nd in enumerate(nodes) if nd.op == "input"}
    free: dict[int, list[int]] = {}
    offsets: dict[int, int] = {}
    size = 0

    def alloc(nbytes: int) -> int:
        nonlocal size
        if free.get(nbytes):
            return free[nbytes].pop()
        size += nbytes
        return size - nbytes

    for i, nd in enumerate(nodes):
        if nd.op == "input":
            offsets[i] = alloc(node_bytes(nd.shape))
    for i, nd in enumerate(nodes):
        if nd.op in ("weight", "reshape", "input"):
            continue
        offsets[i] = alloc(node_bytes(nd.shape))
        # Freed after this node is planned: an op never writes over its own inputs.
        dead = {root[s] for s in nd.inputs if last_use.get(root[s]) == i} | ({i} if i not in last_use else set())
        for r in dead:
            if r in offsets and r not in pinned:
                free.setdefault(node_bytes(nodes[r].shape), []).append(offsets[r])
    return offsets, max(size, ALIGN)
