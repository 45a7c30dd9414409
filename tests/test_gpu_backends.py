"""The GPU backends (CUDA, Vulkan): every op against the NumPy reference on random inputs, batch
invariance bit for bit, errors raised from the device. Each backend's cases are skipped, with the
reason, where it cannot start (no NVIDIA GPU; no Vulkan driver). Whole models run on them in the
model suite (fixtures.backend_params)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from fixtures import backend_param
from mtprun.native import create_backend
from mtprun.native.gpu import ATT_SPLIT_ROWS
from mtprun.native.numpy_backend import NumpyBackend
from mtprun.runner.errors import MtprunError
from mtprun.runner.graph import Graph, StateSpec, WeightTensor

F32 = np.float32
T = gguf.GGMLQuantizationType
FORMATS = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]
# Byte offsets of each block's float16 scale fields: set to sane values in random blocks.
_HALF_FIELDS = {T.Q8_0: (0,), T.Q4_0: (0,), T.Q4_1: (0, 2), T.Q5_0: (0,), T.Q5_1: (0, 2), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}


gpus = pytest.mark.parametrize("gpu", [backend_param("cuda"), backend_param("vulkan")])


# -- per-op checks against the NumPy reference
def random_weight(name: str, qtype: T, shape: tuple[int, ...], rng: np.random.Generator) -> WeightTensor:
    """Random bytes in `qtype`'s blocks (scales kept finite and small), or random floats."""
    rows, k = int(np.prod(shape[:-1])), shape[-1]
    values = rng.standard_normal((rows, k)).astype(F32)
    if qtype == T.F32:
        data = values.reshape(shape)
    elif qtype == T.F16:
        data = values.astype(np.float16).view(np.uint8)
    elif qtype == T.BF16:
        data = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    else:
        block_values, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        n_blocks = rows * k // block_values
        blocks = rng.integers(0, 256, (n_blocks, block_bytes), dtype=np.uint8)
        for off in _HALF_FIELDS[qtype]:
            blocks[:, off : off + 2] = rng.uniform(0.005, 0.05, n_blocks).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
        data = blocks.reshape(rows, -1)
    return WeightTensor(name, int(qtype), tuple(shape), data)


def _backends(gpu: str, weights: list[WeightTensor], states: list[StateSpec] = ()):
    ref, ours = NumpyBackend(), create_backend(gpu)
    for b in (ref, ours):
        b.load_weights({w.name: w for w in weights})
        b.alloc_states(list(states))
    return ref, ours


def _rel(ours: np.ndarray, ref: np.ndarray) -> float:
    assert ours.shape == ref.shape and np.isfinite(ours).all()
    return float(np.abs(ours - ref).max() / max(float(np.abs(ref).max()), 1e-30))


def _same(ref, ours, graph: Graph, inputs: dict, rtol: float) -> dict[str, np.ndarray]:
    want, got = ref.run(graph, inputs), ours.run(graph, inputs)
    for name in want:
        assert _rel(got[name], want[name]) <= rtol, (name, _rel(got[name], want[name]))
    return got


@gpus
@pytest.mark.parametrize("qtype", FORMATS, ids=lambda t: t.name)
@pytest.mark.parametrize("m, k", [(37, 512), (21, 2304)])  # k = 2304: several steps of CUDA's matmul, a partial last one
def test_matmul_and_get_rows_every_format(gpu, qtype, m, k):
    rng = np.random.default_rng(int(qtype))
    w = random_weight("w", qtype, (m, k), rng)
    ref, ours = _backends(gpu, [w])
    for n in (1, 3, 9):
        g = Graph("mm")
        x, ids = g.input("x", (n, k)), g.input("ids", (n,), "i32")
        g.output("y", g.matmul(x, g.weight("w", (m, k))))
        g.output("rows", g.get_rows(g.weight("w", (m, k)), ids))
        inputs = {"x": rng.standard_normal((n, k)).astype(F32), "ids": rng.integers(0, m, n).astype(np.int32)}
        got = _same(ref, ours, g, inputs, 2e-6 * (k / 512) ** 0.5)  # float32 rounding grows with the sum's length
        for i in range(n):  # batch invariance: each row alone gives the same bits
            g1 = Graph("mm1")
            g1.output("y", g1.matmul(g1.input("x", (1, k)), g1.weight("w", (m, k))))
            assert np.array_equal(ours.run(g1, {"x": inputs["x"][i : i + 1]})["y"][0], got["y"][i]), (n, i)


@gpus
def test_one_tensor_under_two_names_is_uploaded_once(gpu):
    """The MTP head's embedding and output head are the trunk's where the file has no copies of their
    own: the same bytes under two graph names take one device buffer (not one each), and products with
    either name give the same result; equal bytes elsewhere in memory are a tensor of their own."""
    rng = np.random.default_rng(5)
    w = random_weight("token_embd.weight", T.Q4_K, (64, 256), rng)
    alias = WeightTensor("mtp/embed", w.ggml_type, w.shape, w.data)
    copy = WeightTensor("copy", w.ggml_type, w.shape, w.data.copy())
    be = create_backend(gpu)
    before = be.device_memory_bytes()
    be.load_weights({w.name: w})
    one = be.device_memory_bytes() - before
    be.load_weights({alias.name: alias})
    assert be.device_memory_bytes() - before == one and be._weights["mtp/embed"].buf is be._weights[w.name].buf
    be.load_weights({copy.name: copy})
    assert be.device_memory_bytes() - before == 2 * one and be._weights["copy"].buf is not be._weights[w.name].buf
    g = Graph("aliases")
    x = g.input("x", (2, 256))
    for name in (w.name, alias.name, copy.name):
        g.output(name, g.matmul(x, g.weight(name, w.shape)))
    out = be.run(g, {"x": rng.standard_normal((2, 256)).astype(F32)})
    assert np.array_equal(out[w.name], out[alias.name]) and np.array_equal(out[w.name], out[copy.name])


@gpus
def test_compiled_graphs_device_memory_stays_bounded(gpu, monkeypatch):
    """Graphs of ever new sizes (prompt chunks of new lengths, a turn of a chat each) do not each keep
    their buffers for good: past gpu.COMPILED_FLOOR (0 here), compiled graphs hold at most
    gpu.COMPILED_HOLD times the largest one's device memory, the least recently run dropped first, and
    a dropped graph compiled again gives the same result. Under the floor nothing is dropped."""
    from mtprun.native import gpu as gpu_module

    rng = np.random.default_rng(9)
    w = random_weight("w", T.Q8_0, (64, 256), rng)
    be = create_backend(gpu)
    be.load_weights({"w": w})
    before = be.device_memory_bytes()

    def product(n: int) -> tuple[Graph, dict]:
        g = Graph(f"rows{n}")
        g.output("y", g.matmul(g.input("x", (n, 256)), g.weight("w", w.shape)))
        return g, {"x": np.arange(n * 256, dtype=F32).reshape(n, 256) / 1000}

    small = product(1)
    first = be.run(*small)["y"]
    graphs = [product(n) for n in range(8, 400, 8)]
    for g, inputs in graphs[:10]:
        be.run(g, inputs)
    assert len(be._compiled) == 11  # all within the floor
    monkeypatch.setattr(gpu_module, "COMPILED_FLOOR", 0)
    for g, inputs in graphs[10:]:
        be.run(g, inputs)
        be.run(*small)  # run every step, as a decode graph is
    largest = max(c.device_bytes for c in be._compiled.values())
    assert len(be._compiled) < 20 and be.device_memory_bytes() - before <= (gpu_module.COMPILED_HOLD + 1) * largest
    assert any(c.graph is small[0] for c in be._compiled.values())  # the graph run every step stays
    g, inputs = graphs[0]  # dropped long ago: compiled again
    assert all(c.graph is not g for c in be._compiled.values())
    assert np.array_equal(be.run(g, inputs)["y"][:1], first)


@gpus
def test_two_large_graphs_and_the_decode_graphs_stay_compiled(gpu, monkeypatch):
    """Two equally large graphs run in turn (a prompt pass with MTP and without, as the benchmark runs
    them) beside a small one run every step keep their compiled graphs: the floor (here twice the
    small graph's memory) is held beside COMPILED_HOLD times the largest, not instead of it."""
    from mtprun.native import gpu as gpu_module

    rng = np.random.default_rng(10)
    w = random_weight("w", T.Q8_0, (64, 256), rng)
    be = create_backend(gpu)
    be.load_weights({"w": w})

    def product(name: str, n: int) -> tuple[Graph, dict]:
        g = Graph(name)
        g.output("y", g.matmul(g.input("x", (n, 256)), g.weight("w", w.shape)))
        return g, {"x": np.ones((n, 256), F32)}

    small, big_a, big_b = product("step", 1), product("prompt", 256), product("prompt+mtp", 256)
    be.run(*small)
    monkeypatch.setattr(gpu_module, "COMPILED_FLOOR", 2 * be._compiled[id(small[0])].device_bytes)
    compiles = []
    compile_graph = be._compile
    monkeypatch.setattr(be, "_compile", lambda graph: compiles.append(graph.name) or compile_graph(graph))
    for _ in range(3):
        for graph in (big_a, big_b, small):
            be.run(*graph)
    assert compiles == ["prompt", "prompt+mtp"]


@gpus
def test_norms_elementwise_and_copies(gpu):
    rng = np.random.default_rng(1)
    n, h, d = 5, 4, 64
    ws = [random_weight("nw", T.F32, (d,), rng), random_weight("bias", T.F16, (h * d,), rng)]
    ref, ours = _backends(gpu, ws)
    g = Graph("elementwise")
    x, y = g.input("x", (n, h, d)), g.input("y", (n, h, 1))
    flat = g.reshape(x, (n, h * d))
    g.output("rms", g.rms_norm(x, g.weight("nw", (d,)), 1e-6))
    g.output("rms_plain", g.rms_norm(flat, None, 1e-6))
    g.output("l2", g.l2_norm(x, 1e-6))
    g.output("add", x + g.weight("nw", (d,)))
    g.output("mul", x * y)
    g.output("bias", flat + g.weight("bias", (h * d,)))
    g.output("scale", g.scale(x, 0.37))
    for op in ("sigmoid", "silu", "softplus"):
        g.output(op, g.unary(op, g.scale(flat, 12.0)))  # reaches softplus' x > 20 branch
    g.output("slice", g.slice(flat, 40, 200))
    g.output("concat", g.concat(g.slice(flat, 0, 7), flat))
    g.output("take", g.take_rows(x, [4, 0, 2]))
    inputs = {"x": rng.standard_normal((n, h, d)).astype(F32), "y": rng.standard_normal((n, h, 1)).astype(F32)}
    _same(ref, ours, g, inputs, 1e-6)


@pytest.mark.parametrize("backend", [backend_param("cuda"), backend_param("vulkan"), backend_param("cpu")])
def test_argmax_rows_as_numpy(backend):
    """The argmax op (greedy decoding's token ids on the device) against np.argmax, ids exact: ties
    (the first wins), -inf rows, NaNs (above every number, the first), a row of Qwen3.5's vocabulary
    width (248320: many values a thread), and a row shorter than a workgroup. (The CPU backend has the
    op too, though its logits are host memory already: `device_argmax` is false there.)"""
    ref, ours = _backends(backend, [])
    rng = np.random.default_rng(11)
    for v in (248320, 1000, 7):
        x = rng.standard_normal((8, v)).astype(F32)
        x[1, :] = 0.0  # all equal: index 0
        x[2, [5, v - 1]] = 50.0  # a tie for the largest: the first
        x[3, :] = -np.inf
        x[4, [3, v // 2]] = np.nan  # the first NaN, above every number
        x[5, v - 1] = np.inf
        x[6, 0] = np.nan
        g = Graph(f"argmax{v}")
        g.output("ids", g.argmax(g.input("x", (8, v))))
        want, got = ref.run(g, {"x": x})["ids"], ours.run(g, {"x": x})["ids"]
        assert got.dtype == F32 and np.array_equal(got, want), (v, got, want)
        assert np.array_equal(want, np.argmax(x, axis=1)), v


@gpus
def test_rope(gpu):
    rng = np.random.default_rng(2)
    ref, ours = _backends(gpu, [])
    n, h, d = 6, 3, 64
    g = Graph("rope")
    g.output("r", g.rope(g.input("x", (n, h, d)), g.input("pos", (n,), "i32"), 32, (5, 5, 6, 0), 10000000.0))
    inputs = {"x": rng.standard_normal((n, h, d)).astype(F32), "pos": rng.integers(0, 5000, n).astype(np.int32)}
    _same(ref, ours, g, inputs, 1e-6)


@gpus
@pytest.mark.parametrize("n_head,n_kv,d", [(4, 2, 64), (2, 1, 256), (8, 8, 128)])
def test_attention_over_several_runs(gpu, n_head, n_kv, d):
    rng = np.random.default_rng(d)
    ref, ours = _backends(gpu, [], [StateSpec("kv", "kv", (64, n_kv, d))])
    start = 0
    for n in (7, 1, 3, 1):
        g = Graph(f"att{n}")
        q, k, v = g.input("q", (n, n_head, d)), g.input("k", (n, n_kv, d)), g.input("v", (n, n_kv, d))
        g.output("o", g.attention(q, k, v, g.input("pos", (n,), "i32"), "kv", d**-0.5))
        inputs = {name: rng.standard_normal((n, hh, d)).astype(F32) for name, hh in (("q", n_head), ("k", n_kv), ("v", n_kv))}
        inputs["pos"] = np.arange(start, start + n, dtype=np.int32)
        _same(ref, ours, g, inputs, 1e-5)
        start += n
    for a, b in zip(ref.read_state("kv"), ours.read_state("kv")):
        assert np.array_equal(a, b)


@gpus
def test_attention_position_outside_the_context_is_an_error(gpu):
    ref, ours = _backends(gpu, [], [StateSpec("kv", "kv", (8, 1, 64))])
    g = Graph("att")
    q = g.input("q", (1, 1, 64))
    g.output("o", g.attention(q, q, q, g.input("pos", (1,), "i32"), "kv", 0.125))
    with pytest.raises(MtprunError, match="outside the context"):
        ours.run(g, {"q": np.ones((1, 1, 64), F32), "pos": np.array([8], np.int32)})
    # The flag is cleared: the same (replayed) graph runs again at a valid position.
    assert np.isfinite(ours.run(g, {"q": np.ones((1, 1, 64), F32), "pos": np.array([7], np.int32)})["o"]).all()


@gpus
@pytest.mark.parametrize("n_head, n_kv, d", [(6, 2, 128), (12, 2, 64), (6, 2, 256), (4, 4, 80)])
def test_attention_of_a_long_row_is_the_same_in_every_batch(gpu, n_head, n_kv, d):
    """Rows of up to 4500 keys, in many parts (CUDA splits a few rows' keys over warps, ATT_PARTS at
    most; its kernels come by head size and take a KV head's query heads together): as the
    reference, and a row's result bit for bit the same in a decode step, a verify-sized batch and a
    prompt-sized one."""
    rng = np.random.default_rng(5)
    n_ctx = 4608
    ref, ours = _backends(gpu, [], [StateSpec("kv", "kv", (n_ctx, n_kv, d))])
    data = {name: rng.standard_normal((n_ctx, hh, d)).astype(F32) for name, hh in (("q", n_head), ("k", n_kv), ("v", n_kv))}

    def inputs(start: int, n: int, names: tuple[str, ...]) -> dict:
        return {name: data[name][start:start + n] for name in names} | {"pos": np.arange(start, start + n, dtype=np.int32)}

    fill = Graph("fill")  # the cache's keys and values alone, 512 positions a run
    k, v = fill.input("k", (512, n_kv, d)), fill.input("v", (512, n_kv, d))
    fill.output("k", fill.kv_write(k, v, fill.input("pos", (512,), "i32"), "kv"))
    for start in range(0, n_ctx, 512):
        for backend in (ref, ours):
            backend.run(fill, inputs(start, 512, ("k", "v")))

    def attend(backend, start: int, n: int) -> np.ndarray:
        g = Graph(f"att{n}")
        q, k, v = g.input("q", (n, n_head, d)), g.input("k", (n, n_kv, d)), g.input("v", (n, n_kv, d))
        g.output("o", g.attention(q, k, v, g.input("pos", (n,), "i32"), "kv", d**-0.5))
        return backend.run(g, inputs(start, n, ("q", "k", "v")))["o"]

    assert _rel(attend(ours, 0, 300), attend(ref, 0, 300)) <= 1e-5
    for last in (40, 1099, 4499):  # 2 parts; 35; 128 (the most)
        one = attend(ours, last, 1)[0]
        assert _rel(one, attend(ref, last, 1)[0]) <= 1e-5
        for n in (5, ATT_SPLIT_ROWS + 4):  # its K and V written again, the same
            assert np.array_equal(attend(ours, last - n + 1, n)[-1], one), n


HK, HV, WIDTH, CHANNELS = 2, 4, 4, 96  # the recurrent tests' heads and conv shape


def recurrent_states(dim: int) -> list[StateSpec]:
    return [StateSpec("conv", "recurrent", (WIDTH - 1, CHANNELS), 4), StateSpec("ssm", "recurrent", (HV, dim, dim), 4)]


def recurrent_graph(n: int, dim: int) -> Graph:
    """ssm_conv and delta_net over n tokens, on the states of recurrent_states(dim)."""
    g = Graph(f"rec{n}")
    g.output("conv", g.ssm_conv(g.input("x", (n, CHANNELS)), g.weight("cw", (CHANNELS, WIDTH)), "conv"))
    q, k = g.l2_norm(g.input("q", (n, HK, dim)), 1e-6), g.l2_norm(g.input("k", (n, HK, dim)), 1e-6)
    g.output("o", g.delta_net(q, k, g.input("v", (n, HV, dim)), g.input("g", (n, HV)), g.input("beta", (n, HV)), "ssm"))
    return g


def recurrent_inputs(rng: np.random.Generator, n: int, dim: int) -> dict[str, np.ndarray]:
    return {
        "x": rng.standard_normal((n, CHANNELS)).astype(F32),
        "q": rng.standard_normal((n, HK, dim)).astype(F32),
        "k": rng.standard_normal((n, HK, dim)).astype(F32),
        "v": rng.standard_normal((n, HV, dim)).astype(F32),
        "g": -rng.uniform(0.0, 1.0, (n, HV)).astype(F32),
        "beta": rng.uniform(0.0, 1.0, (n, HV)).astype(F32),
    }


@gpus
@pytest.mark.parametrize("dim", [64, 128])
def test_ssm_conv_and_delta_net_with_snapshots_and_commits(gpu, dim):
    rng = np.random.default_rng(dim)
    ref, ours = _backends(gpu, [random_weight("cw", T.F32, (CHANNELS, WIDTH), rng)], recurrent_states(dim))
    for n, keep in ((6, 6), (3, 2), (1, 1), (4, 1), (2, 2)):
        g, inputs = recurrent_graph(n, dim), recurrent_inputs(rng, n, dim)
        _same(ref, ours, g, inputs, 1e-5)
        for b in (ref, ours):
            b.commit(["conv", "ssm"], keep)
        for name in ("conv", "ssm"):
            assert _rel(ours.read_state(name)[0], ref.read_state(name)[0]) <= 1e-5, name
    with pytest.raises(ValueError):
        ours.commit(["ssm"], 1)  # no run since the last commit


@gpus
@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_K], ids=lambda t: t.name)
def test_moe(gpu, qtype):
    rng = np.random.default_rng(int(qtype))
    n_expert, n_used, d, ff = 8, 3, 256, 256
    ws = [random_weight("router", T.F32, (n_expert, d), rng)] + [
        random_weight(name, qtype, shape, rng) for name, shape in (("up", (n_expert, ff, d)), ("gate", (n_expert, ff, d)), ("down", (n_expert, d, ff)))
    ]
    ref, ours = _backends(gpu, ws)
    for n in (1, 5):
        g = Graph(f"moe{n}")
        w = {t.name: g.weight(t.name, t.shape) for t in ws}
        g.output("y", g.moe(g.input("x", (n, d)), w["router"], w["up"], w["gate"], w["down"], n_used))
        _same(ref, ours, g, {"x": rng.standard_normal((n, d)).astype(F32)}, 1e-5)
