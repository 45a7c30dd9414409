"""Kernel fusion for the GPU backends whose device asks for it (`fuse`): a Graph's nodes rewritten so
that one launch does the work of several. Decode runs hundreds of small launches a step; each costs
far more than its arithmetic. Every value gets the same float operations in the same order as the
separate launches, so fusing changes no bit and depends only on the graph's shape of ops, never on
its batch size (batch invariance holds as before).

The rewritten list keeps every node's index; ops of this pass (native/arena.py plans them):
- "absorbed": a value a later fused launch computes in registers alone: no buffer, no launch.
- "side": a value another fused launch writes as well (the graph reads it elsewhere): no launch.
- "view": a slice of a one-row tensor, which is its source's memory from attrs.offset values on.
- "norm": rms_norm / l2_norm (attrs.l2), its inputs named by attrs.roles: x (through a slice:
  attrs per, stride, offset), the residual add before it (x + b, its sum "sum" a side node), the
  weight "w", a silu gate multiplied after ("gate"). attrs.feeds: the matmul launched next on it.
- "chain": element-wise ops in a row, attrs.steps ((op, input slot or -1, factor), ...) from
  ("load", 0, 0); a binary op (add, mul) with none to join is a chain of its own.
- ssm_conv with attrs.silu: the silu that followed it, whose node becomes a view of it.
- delta_net with attrs.offsets: its q, k and v slices of one tensor's rows (inputs: that tensor, g,
  beta; attrs stride, n_k), q and k l2-normed in its kernel (attrs.eps): the norms, and the copies
  of multi-row slices, are not launched. attrs.gates: its g and beta as chains' steps over its inputs
  after the first one or three (the element-wise ops that only it reads, absorbed).
- matmul with attrs.with: the later products of the same input whose launch it is as well (the
  backend's `product_kind` the same, e.g. q, k and v, gate and up): those become "side" nodes, and
  the arena places their buffers when it places this one.
"""

from __future__ import annotations

import math

from typing import Callable

from mtprun.runner.graph import Graph, Node

NORM_VALUES = (1, 2, 4, 6, 8)  # values per thread of the fused norm kernels (kernels/norm.cu: norm_fused_{B}_{NV})
NORM_MAX = 1024 * NORM_VALUES[-1]  # longest fused norm row: 1024 threads (gpu.py's _norm_threads) of the most values
CHAIN_STEPS = 6  # kernels/elementwise.cu
ELEMENTWISE = ("add", "mul", "scale", "sigmoid", "silu", "softplus")
NO_LAUNCH = ("input", "weight", "reshape", "absorbed", "side", "view")
# The kernels only a fusing device brings (CUDA's own): what their names start with.
FUSED_KERNELS = ("norm_fused_", "chain", "ssm_conv_silu_")
MERGED_PRODUCTS = 4  # weight matrices a merged product launch takes at most (gpu.py's PRODUCTS)
# A delta_net of at most this many tokens (decode and verify steps) reads q, k and v from the conv's
# rows, l2-norms them and computes its gates itself; a prompt pass's scans them token after token, and
# there that work, done a chunk at a time inside the scan, waits on its loads and reductions (tinycoder's
# 512-token prefill on the H100: 261-269k tok/s before it came in, 159-165k after; not bisected):
# separate launches, all tokens at once, do it there.
DELTA_NET_FUSED_ROWS = 16


def fuse(graph: Graph, product_kind: Callable[[Node, Node], str | None] | None = None) -> list[Node]:
    """graph.nodes with fusable runs of nodes rewritten (see the module's text); `product_kind(product,
    weight)`: the key under which products of one input share a launch (None: never)."""
    nodes = list(graph.nodes)
    src = list(range(len(nodes)))  # a node's value, seen through reshapes
    readers: list[list[int]] = [[] for _ in nodes]
    for i, nd in enumerate(nodes):
        if nd.op == "reshape":
            src[i] = src[nd.inputs[0]]
        else:
            for s in nd.inputs:
                readers[src[s]].append(i)
    kept = {src[i] for i in graph.outputs.values()}

    def only_reader(i: int) -> int | None:
        return readers[i][0] if len(readers[i]) == 1 and i not in kept else None

    _conv_silu(nodes, only_reader)
    if product_kind is not None:
        _merge_products(nodes, src, product_kind)
    for i, nd in enumerate(graph.nodes):
        if nd.op == "delta_net" and nd.shape[0] <= DELTA_NET_FUSED_ROWS:
            _delta_net_reads(nodes, i, src, only_reader)
    for i, nd in enumerate(graph.nodes):
        if nd.op in ("rms_norm", "l2_norm") and nodes[i].op == nd.op and nd.shape[-1] <= NORM_MAX:
            _norm(nodes, i, src, readers, kept, only_reader)
    for i in range(len(nodes)):
        if nodes[i].op in ELEMENTWISE:
            _chain(nodes, i, only_reader)
        elif nodes[i].op == "slice" and math.prod(nodes[i].shape[:-1]) == 1 and i not in kept:
            nodes[i] = Node("view", nodes[i].inputs, nodes[i].shape, {"offset": nodes[i].attrs["start"]})
    for i, nd in enumerate(graph.nodes):
        if nd.op == "delta_net" and nd.shape[0] <= DELTA_NET_FUSED_ROWS:
            _delta_net_gates(nodes, i, only_reader)
    for i, nd in enumerate(nodes):
        if nd.op == "reshape" and nodes[nd.inputs[0]].op == "absorbed":  # read only by the absorber
            nodes[i] = Node("absorbed", (), nd.shape)
        elif nd.op == "norm":  # the product launched next on its result
            j = next((j for j in range(i + 1, len(nodes)) if nodes[j].op not in NO_LAUNCH), None)
            if j is not None and nodes[j].op == "matmul" and src[nodes[j].inputs[0]] == i:
                nodes[i] = Node(nd.op, nd.inputs, nd.shape, {**nd.attrs, "feeds": j})
    return nodes


def _merge_products(nodes: list[Node], src: list[int], product_kind: Callable[[Node, Node], str | None]) -> None:
    """Products of one input with the same kind, in graph order, MERGED_PRODUCTS at most a launch:
    the first takes attrs.with, the rest become side nodes. Their inputs (the shared input, weights)
    are ready at the first, so computing them there changes nothing but when."""
    groups: dict[tuple[int, str], list[int]] = {}
    for i, nd in enumerate(nodes):
        if nd.op == "matmul" and nodes[nd.inputs[1]].op == "weight":
            kind = product_kind(nd, nodes[nd.inputs[1]])
            if kind is not None:
                groups.setdefault((src[nd.inputs[0]], kind), []).append(i)
    for members in groups.values():
        for at in range(0, len(members), MERGED_PRODUCTS):
            first, *rest = members[at : at + MERGED_PRODUCTS]
            if rest:
                nodes[first] = Node("matmul", nodes[first].inputs, nodes[first].shape, {**nodes[first].attrs, "with": tuple(rest)})
                for j in rest:
                    nodes[j] = Node("side", (), nodes[j].shape)


def _conv_silu(nodes: list[Node], only_reader) -> None:
    for i, nd in enumerate(nodes):
        u = only_reader(i) if nd.op == "ssm_conv" else None
        if u is not None and nodes[u].op == "silu" and nodes[u].inputs == (i,):
            nodes[i] = Node(nd.op, nd.inputs, nd.shape, {**nd.attrs, "silu": True})
            nodes[u] = Node("view", (i,), nodes[u].shape, {"offset": 0})


def _delta_net_reads(nodes: list[Node], i: int, src: list[int], only_reader) -> None:
    """delta_net node i reading q = l2_norm(slice), k = l2_norm(slice), v = slice, slices of one
    tensor's rows that nothing else reads, takes that tensor in their place (see the module's text)."""
    nd = nodes[i]
    q, k, v = (src[s] for s in nd.inputs[:3])
    norms = (nodes[q], nodes[k])
    if any(m.op != "l2_norm" or len(m.inputs) != 1 or m.shape[-1] != nd.shape[-1] for m in norms) or \
            norms[0].attrs["eps"] != norms[1].attrs["eps"]:
        return
    slices = [src[m.inputs[0]] for m in norms] + [v]
    if not all(nodes[s].op == "slice" and only_reader(s) == r for s, r in zip(slices, (q, k, i))) or \
            only_reader(q) != i or only_reader(k) != i or len({src[nodes[s].inputs[0]] for s in slices}) != 1:
        return
    x = nodes[slices[0]].inputs[0]
    attrs = {**nd.attrs, "offsets": tuple(nodes[s].attrs["start"] for s in slices), "stride": nodes[x].shape[-1],
             "n_k": norms[0].shape[1], "eps": norms[0].attrs["eps"]}
    nodes[i] = Node("delta_net", (x, *nd.inputs[3:]), nd.shape, attrs)
    for a in (q, k, *slices):
        nodes[a] = Node("absorbed", (), nodes[a].shape)


def _delta_net_gates(nodes: list[Node], i: int, only_reader) -> None:
    """delta_net node i's g and beta: the chains (or lone element-wise ops) that only it reads become
    steps of its attrs.gates, their operands its inputs; others a load of their own."""
    nd = nodes[i]
    head, gates, inputs = list(nd.inputs[:-2]), [], []
    for p in nd.inputs[-2:]:
        pn = nodes[p]
        if (pn.op == "chain" or pn.op in ELEMENTWISE) and only_reader(p) == i and pn.shape == nd.shape[:2]:
            operands, steps = (list(pn.inputs), list(pn.attrs["steps"])) if pn.op == "chain" else _as_chain(pn)
            nodes[p] = Node("absorbed", (), pn.shape)
        else:
            operands, steps = [p], [("load", 0, 0.0)]
        first = len(head) + len(inputs)
        gates.append(tuple((op, first + slot if slot >= 0 else slot, factor) for op, slot, factor in steps))
        inputs += operands
    if any(len(steps) > 1 for steps in gates):
        nodes[i] = Node("delta_net", (*head, *inputs), nd.shape, {**nd.attrs, "gates": tuple(gates)})


def _norm(nodes: list[Node], i: int, src: list[int], readers: list[list[int]], kept: set[int], only_reader) -> None:
    nd = nodes[i]
    d = nd.shape[-1]
    roles: dict[str, int] = {}
    attrs = {"eps": nd.attrs["eps"], "l2": nd.op == "l2_norm", "per": 1, "stride": d, "offset": 0}
    absorbed, side = [i], None
    x = src[nd.inputs[0]]
    xn = nodes[x]
    if xn.op == "slice" and only_reader(x) == i and (xn.attrs["stop"] - xn.attrs["start"]) % d == 0:
        # a slice's rows of width w hold w / d rows of the norm each, one source row apart
        roles["x"] = xn.inputs[0]
        attrs.update(per=xn.shape[-1] // d, stride=nodes[xn.inputs[0]].shape[-1], offset=xn.attrs["start"])
        absorbed.append(x)
    elif xn.op == "add" and x == nd.inputs[0] and all(nodes[s].shape == nd.shape for s in xn.inputs):
        roles["x"], roles["b"] = xn.inputs
        if only_reader(x) == i:
            absorbed.append(x)
        else:
            side = x
    else:
        roles["x"] = nd.inputs[0]
    if len(nd.inputs) > 1:
        roles["w"] = nd.inputs[1]
    emit = i
    m = only_reader(i)
    if m is not None and nodes[m].op == "mul" and nodes[m].shape == nd.shape and i in nodes[m].inputs:
        u = nodes[m].inputs[1 - nodes[m].inputs.index(i)]
        if nodes[u].op == "silu" and only_reader(u) == m and nodes[u].shape == nd.shape:
            roles["gate"] = nodes[u].inputs[0]
            absorbed.append(u)
            emit = m
    if side is not None:
        if any(r < emit for r in readers[side] if r != i):
            return  # the sum is read before the fused launch would write it
        roles["sum"] = side
        nodes[side] = Node("side", (), nodes[side].shape)
    for a in absorbed:
        nodes[a] = Node("absorbed", (), nodes[a].shape)
    nodes[emit] = Node("norm", tuple(roles.values()), nd.shape, {**attrs, "roles": tuple(roles)})


def _chain(nodes: list[Node], i: int, only_reader) -> None:
    """Joins element-wise node i to the chain (or element-wise node) that only it reads."""
    nd = nodes[i]
    for slot, p in enumerate(nd.inputs):
        pn = nodes[p]
        if (pn.op in ELEMENTWISE or pn.op == "chain") and only_reader(p) == i and pn.shape == nd.shape and nd.inputs.count(p) == 1:
            break
    else:
        if len(nd.inputs) == 2:  # a binary op alone is a chain of one step: `binary` never launches where chains do
            inputs, steps = _as_chain(nd)
            nodes[i] = Node("chain", tuple(inputs), nd.shape, {"steps": tuple(steps)})
        return
    inputs, steps = (list(pn.inputs), list(pn.attrs["steps"])) if pn.op == "chain" else _as_chain(pn)
    if len(steps) == CHAIN_STEPS:
        return
    if len(nd.inputs) == 2:
        other = nd.inputs[1 - slot]
        if other not in inputs:
            inputs.append(other)
        steps.append((nd.op, inputs.index(other), 0.0))
    else:
        steps.append((nd.op, -1, nd.attrs.get("factor", 1.0)))
    nodes[p] = Node("absorbed", (), pn.shape)
    nodes[i] = Node("chain", tuple(inputs), nd.shape, {"steps": tuple(steps)})


def _as_chain(nd: Node) -> tuple[list[int], list[tuple[str, int, float]]]:
    steps = [("load", 0, 0.0)]
    if len(nd.inputs) == 2:
        steps.append((nd.op, 1, 0.0))
    else:
        steps.append((nd.op, -1, nd.attrs.get("factor", 1.0)))
    return list(nd.inputs), steps
