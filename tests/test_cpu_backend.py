"""The native CPU backend against the NumPy reference: every op on fresh random inputs, every weight
format's decoder bit for bit, whole models against llama.cpp's exact logits, batch and thread-count
invariance bit for bit, MTP on/off token equality, and commit / rollback semantics."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

import mtprun
from fixtures import EXACT_TOLERANCE, FIXTURES, MODELS, SHIPPED_TYPES, model_file, needs_fixtures, prompts, ref_json, row_relative_error
from mtprun.native import create_backend
from mtprun.native.numpy_backend import NumpyBackend
from mtprun.runner.context import Context
from mtprun.runner.errors import MtprunError
from mtprun.runner.graph import Graph, StateSpec, WeightTensor

try:
    from mtprun.native import cpu_backend
    from mtprun.native.cpu_backend import CpuBackend

    cpu_backend.library()
except MtprunError as exc:  # pragma: no cover - a build without a C compiler
    pytest.skip(f"native CPU backend not built: {exc}", allow_module_level=True)

F32 = np.float32
TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]
HALF_FIELDS = {T.Q4_0: (0,), T.Q4_1: (0, 2), T.Q5_0: (0,), T.Q5_1: (0, 2), T.Q8_0: (0,),
               T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}  # byte offsets of each block's f16 scales


SIMD_LEVELS = {"simd": 99, "avx2": 1, "scalar": 0}  # the best the machine has, AVX2 alone, the fallback


@pytest.fixture(params=list(SIMD_LEVELS))
def simd(request):
    """Run a test on the best SIMD kernels, on AVX2 alone (where the best is more), on the scalar fallback."""
    lib = cpu_backend.library()
    lib.mtp_set_simd(SIMD_LEVELS[request.param])
    yield request.param
    lib.mtp_set_simd(99)


def random_weight(qtype: T, shape: tuple[int, ...], rng: np.random.Generator, name: str = "w",
                  max_scale: float = 0.1) -> WeightTensor:
    """Random blocks of any format: random quant bits, scales log-uniform from f16 subnormals up to
    max_scale."""
    rows, k = int(np.prod(shape[:-1])), shape[-1]
    if qtype == T.F32:
        data = rng.standard_normal((rows, k)).astype(F32)
    elif qtype == T.F16:
        data = rng.standard_normal((rows, k)).astype(np.float16).view(np.uint8)
    elif qtype == T.BF16:
        data = (rng.standard_normal((rows, k)).astype(F32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    else:
        block, size = GGML_QUANT_SIZES[qtype]
        data = rng.integers(0, 256, (rows, k // block, size), dtype=np.uint8)
        for off in HALF_FIELDS[qtype]:
            scale = np.exp(rng.uniform(np.log(1e-7), np.log(max_scale), (rows, k // block))) * rng.choice([-1, 1], (rows, k // block))
            data[:, :, off : off + 2] = scale.astype(np.float16).view(np.uint8).reshape(rows, k // block, 2)
        data = data.reshape(rows, -1)
    return WeightTensor(name, int(qtype), tuple(shape), data)


def both(graph: Graph, inputs: dict, weights: dict | None = None, states: list | None = None, threads: int = 2):
    """Outputs of the CPU and the NumPy backends, and the backends themselves."""
    outs = []
    for be in (CpuBackend(threads), NumpyBackend()):
        be.load_weights(weights or {})
        be.alloc_states(states or [])
        outs.append((be.run(graph, inputs), be))
    return outs


def assert_close(ours: np.ndarray, ref: np.ndarray, rtol: float = 1e-5) -> None:
    """Within rtol of the reference's largest magnitude, row by row."""
    ours, ref = ours.reshape(ref.shape[0], -1), ref.reshape(ref.shape[0], -1)
    scale = np.maximum(np.abs(ref).max(axis=1), 1e-30)
    assert (np.abs(ours - ref).max(axis=1) / scale).max() <= rtol


# ---- weight formats


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_decoders_are_bit_identical_to_gguf_py(simd, qtype):
    w = random_weight(qtype, (7, 512), np.random.default_rng(int(qtype)))
    ours = cpu_backend.dequantize(w)
    ref = np.asarray(w.data, F32) if qtype == T.F32 else gguf_dequantize(w.data, qtype).reshape(w.shape)
    assert ours.view(np.uint32).tolist() == ref.astype(F32).view(np.uint32).tolist()


@needs_fixtures
def test_real_k_quant_tensors_decode_bit_identical():
    from mtprun.runner.gguf_file import GGUFFile

    f = GGUFFile(model_file("tiny-qwen35", "q4_k_m"))
    for name in ("blk.0.ffn_gate.weight", "token_embd.weight", "blk.0.ffn_down.weight"):
        t = f.tensors[name]
        ref = gguf_dequantize(t.data, T(t.ggml_type)).reshape(t.shape)
        assert np.array_equal(cpu_backend.dequantize(t), ref), name


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_matmul_matches_reference_and_is_batch_invariant(simd, qtype):
    rng = np.random.default_rng(100 + int(qtype))
    n, m, k = 11, 37, 512  # 11: past the fused kernels (up to 4 or 8 tokens) into the tiled path
    w = random_weight(qtype, (m, k), rng)
    x = rng.standard_normal((n, k)).astype(F32)
    results = {}
    for rows in (n, 1, 2):
        g = Graph(f"mm{rows}")
        g.output("y", g.matmul(g.input("x", (rows, k)), g.weight("w", (m, k))))
        (cpu, be), (ref, _) = both(g, {"x": x[:rows]}, {"w": w})
        assert_close(cpu["y"], ref["y"])
        results[rows] = cpu["y"]
        single = CpuBackend(1)
        single.load_weights({"w": w})
        assert np.array_equal(single.run(g, {"x": x[:rows]})["y"], cpu["y"])  # thread count changes no bit
    assert np.array_equal(results[1], results[n][:1]) and np.array_equal(results[2], results[n][:2])
    for i in range(n):  # each row alone, at every position of the batch
        g = Graph("mm1")
        g.output("y", g.matmul(g.input("x", (1, k)), g.weight("w", (m, k))))
        be.load_weights({"w": w})
        assert np.array_equal(be.run(g, {"x": x[i : i + 1]})["y"][0], results[n][i])


@pytest.mark.parametrize("qtype", [T.F32, T.Q4_0, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K], ids=lambda t: t.name)
def test_matmul_rows_are_bit_equal_in_every_batch(simd, qtype):
    """Fused kernels (1..8 tokens, taken 4 at a time) and the tiled path (more) give every row the
    same bits, at any offset in the batch and on 1 or 2 threads."""
    rng = np.random.default_rng(200 + int(qtype))
    m, k, big = 37, 768, 40
    w = random_weight(qtype, (m, k), rng)
    x = rng.standard_normal((big, k)).astype(F32)
    backends = {threads: CpuBackend(threads) for threads in (1, 2)}
    for be in backends.values():
        be.load_weights({"w": w})

    def run(rows: np.ndarray, threads: int) -> np.ndarray:
        g = Graph(f"mm{len(rows)}")
        g.output("y", g.matmul(g.input("x", (len(rows), k)), g.weight("w", (m, k))))
        return backends[threads].run(g, {"x": rows})["y"]

    full = run(x, 2)
    assert np.array_equal(run(x, 1), full)
    for n in range(1, 10):
        for start in (0, 3, big - n):
            for threads in (1, 2):
                assert np.array_equal(run(x[start : start + n], threads), full[start : start + n]), (n, start, threads)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_avx512_kernels_are_bit_identical_to_avx2(qtype):
    """The AVX-512 twins change no bit of any product, fused or tiled."""
    lib = cpu_backend.library()
    if lib.mtp_set_simd(2) != 2:
        pytest.skip("no AVX-512 here")
    rng = np.random.default_rng(300 + int(qtype))
    m, k = 29, 812 if qtype in (T.F32, T.F16, T.BF16) else 768  # 812: an 8-lane step and a scalar tail
    w = random_weight(qtype, (m, k), rng)
    x = rng.standard_normal((12, k)).astype(F32)
    try:
        outs = []
        for level in (2, 1):
            lib.mtp_set_simd(level)
            be = CpuBackend(2)
            be.load_weights({"w": w})
            for n in (1, 2, 3, 4, 5, 8, 12):
                g = Graph(f"mm{n}")
                g.output("y", g.matmul(g.input("x", (n, k)), g.weight("w", (m, k))))
                outs.append(be.run(g, {"x": x[:n]})["y"])
        half = len(outs) // 2
        for a, b in zip(outs[:half], outs[half:]):
            assert np.array_equal(a, b)
    finally:
        lib.mtp_set_simd(99)


@pytest.mark.parametrize("qtype", [T.F32, T.Q8_0, T.Q4_K, T.Q6_K], ids=lambda t: t.name)
def test_get_rows_decodes_exactly(qtype):
    rng = np.random.default_rng(7)
    w = random_weight(qtype, (50, 256), rng)
    ids = np.array([3, 0, 49, 3, 17], np.int32)
    g = Graph("rows")
    g.output("y", g.get_rows(g.weight("w", (50, 256)), g.input("ids", (5,), "i32")))
    (cpu, _), (ref, _) = both(g, {"ids": ids}, {"w": w})
    assert np.array_equal(cpu["y"], ref["y"])


def test_bad_token_id_is_an_error():
    g = Graph("rows")
    g.output("y", g.get_rows(g.weight("w", (50, 32)), g.input("ids", (2,), "i32")))
    be = CpuBackend(1)
    be.load_weights({"w": random_weight(T.F32, (50, 32), np.random.default_rng(0))})
    with pytest.raises(MtprunError, match="vocabulary"):
        be.run(g, {"ids": np.array([1, 50], np.int32)})


# ---- element-wise, normalisation, data movement


def test_elementwise_norm_and_copy_ops():
    rng = np.random.default_rng(1)
    n, h, d = 4, 3, 64
    g = Graph("ops")
    x = g.input("x", (n, h * d))
    y = g.input("y", (n, h * d))
    col = g.input("col", (n, 1))
    w = g.weight("nw", (d,))
    x3 = g.reshape(x, (n, h, d))
    outs = {
        "rms": g.rms_norm(x, g.weight("w", (h * d,)), 1e-6),
        "rms3": g.rms_norm(x3, w, 1e-6),
        "rms_plain": g.rms_norm(x, None, 1e-5),
        "l2": g.l2_norm(x3, 1e-6),
        "add": x + y,
        "mul_col": x * col,
        "add_bias": g.binary("add", x3, w),
        "scale": g.scale(x, 0.125),
        "sigmoid": g.unary("sigmoid", x),
        "silu": g.unary("silu", x),
        "softplus": g.unary("softplus", g.scale(x, 15.0)),
        "slice": g.slice(x3, 10, 40),
        "concat": g.concat(x, y),
        "take": g.take_rows(x3, [3, 1]),
    }
    for name, ref in outs.items():
        g.output(name, ref)
    weights = {"w": random_weight(T.F32, (h * d,), rng, "w"), "nw": random_weight(T.Q8_0, (d,), rng, "nw")}
    inputs = {"x": rng.standard_normal((n, h * d)).astype(F32), "y": rng.standard_normal((n, h * d)).astype(F32),
              "col": rng.standard_normal((n, 1)).astype(F32)}
    (cpu, _), (ref, _) = both(g, inputs, weights)
    for name in outs:
        assert cpu[name].shape == ref[name].shape, name
        if name in ("add", "mul_col", "add_bias", "scale", "slice", "concat", "take"):
            assert np.array_equal(cpu[name], ref[name]), name
        else:
            assert_close(cpu[name], ref[name], 1e-6)


def test_rope_matches_reference():
    rng = np.random.default_rng(2)
    n, h, d = 6, 4, 64
    g = Graph("rope")
    g.output("y", g.rope(g.input("x", (n, h, d)), g.input("pos", (n,), "i32"), 16, (11, 11, 10, 0), 1e7))
    g.output("full", g.rope(g.input("x2", (n, h, d)), g.input("pos", (n,), "i32"), 64, (11, 11, 10, 0), 1e4))
    inputs = {"x": rng.standard_normal((n, h, d)).astype(F32), "x2": rng.standard_normal((n, h, d)).astype(F32),
              "pos": np.array([0, 1, 7, 100, 999, 4095], np.int32)}
    (cpu, _), (ref, _) = both(g, inputs)
    assert_close(cpu["y"], ref["y"], 1e-6)
    assert_close(cpu["full"], ref["full"], 1e-6)


# ---- stateful ops


def _attention_graph(n: int, hq: int, hkv: int, d: int) -> Graph:
    g = Graph(f"attn{n}")
    q, k, v = (g.input(s, (n, hh, d)) for s, hh in (("q", hq), ("k", hkv), ("v", hkv)))
    g.output("o", g.attention(q, k, v, g.input("pos", (n,), "i32"), "kv", 0.125))
    return g


def test_attention_over_the_kv_cache():
    rng = np.random.default_rng(3)
    hq, hkv, d, n_ctx = 4, 2, 32, 16
    backends = (CpuBackend(2), NumpyBackend())
    for be in backends:
        be.alloc_states([StateSpec("kv", "kv", (n_ctx, hkv, d))])
    start = 0
    for n in (5, 1, 3):
        g = _attention_graph(n, hq, hkv, d)
        inputs = {"q": rng.standard_normal((n, hq, d)).astype(F32), "k": rng.standard_normal((n, hkv, d)).astype(F32),
                  "v": rng.standard_normal((n, hkv, d)).astype(F32), "pos": np.arange(start, start + n, dtype=np.int32)}
        cpu, ref = (be.run(g, inputs)["o"] for be in backends)
        assert_close(cpu, ref, 1e-5)
        start += n
    for a, b in zip(backends[0].read_state("kv"), backends[1].read_state("kv")):
        assert np.array_equal(a, b)
    with pytest.raises(MtprunError, match="context"):
        backends[0].run(_attention_graph(1, hq, hkv, d), {**{s: np.zeros((1, hh, d), F32) for s, hh in (("q", hq), ("k", hkv), ("v", hkv))},
                                                          "pos": np.array([n_ctx], np.int32)})


@pytest.mark.parametrize("d, hq, hkv", [(64, 4, 2), (128, 4, 2), (40, 4, 2), (36, 4, 2), (64, 12, 1), (32, 20, 2)])
def test_attention_rows_are_batch_invariant_over_long_caches(simd, d, hq, hkv):
    """A query's output is the same bits whatever batch, thread count or position block it is computed in
    (the SIMD kernel takes eight positions at a time), and within rounding of NumPy's. d 40: the SIMD
    kernel's general case; 36: key by key; 12 and 10 query heads a KV head: more than a unit takes."""
    rng = np.random.default_rng(5 + d + hq)
    n_ctx, n = 300, 293
    inputs = {"q": rng.standard_normal((n, hq, d)).astype(F32), "k": rng.standard_normal((n, hkv, d)).astype(F32),
              "v": rng.standard_normal((n, hkv, d)).astype(F32), "pos": np.arange(n, dtype=np.int32)}
    backends = (CpuBackend(2), CpuBackend(1), NumpyBackend())
    for be in backends:
        be.alloc_states([StateSpec("kv", "kv", (n_ctx, hkv, d))])
    whole = [be.run(_attention_graph(n, hq, hkv, d), inputs)["o"] for be in backends]
    assert np.array_equal(whole[0], whole[1])
    assert_close(whole[0], whole[2], 1e-5)
    for start, size in ((283, 1), (284, 3), (290, 2), (292, 1)):  # again, in other batches (the cache holds the same rows)
        part = {name: value[start : start + size] for name, value in inputs.items()}
        for be in backends[:2]:
            assert np.array_equal(be.run(_attention_graph(size, hq, hkv, d), part)["o"], whole[0][start : start + size]), (start, size)


def _recurrent_graph(n: int, hk: int, hv: int, dim: int, width: int) -> Graph:
    g = Graph(f"rec{n}")
    c = g.ssm_conv(g.input("x", (n, 2 * hk * dim + hv * dim)), g.weight("conv", (2 * hk * dim + hv * dim, width)), "conv")
    q = g.l2_norm(g.reshape(g.slice(c, 0, hk * dim), (n, hk, dim)), 1e-6)
    k = g.l2_norm(g.reshape(g.slice(c, hk * dim, 2 * hk * dim), (n, hk, dim)), 1e-6)
    v = g.reshape(g.slice(c, 2 * hk * dim, 2 * hk * dim + hv * dim), (n, hv, dim))
    g.output("o", g.delta_net(q, k, v, g.input("g", (n, hv)), g.input("b", (n, hv)), "ssm"))
    g.output("c", c)
    return g


def test_recurrent_ops_commit_and_rollback():
    rng = np.random.default_rng(4)
    hk, hv, dim, width, snaps = 2, 4, 32, 4, 3
    channels = 2 * hk * dim + hv * dim
    weights = {"conv": random_weight(T.F32, (channels, width), rng, "conv")}
    specs = [StateSpec("conv", "recurrent", (width - 1, channels), snaps), StateSpec("ssm", "recurrent", (hv, dim, dim), snaps)]
    backends = (CpuBackend(2), NumpyBackend())
    for be in backends:
        be.load_weights(weights)
        be.alloc_states(specs)

    def step(n: int) -> None:
        inputs = {"x": rng.standard_normal((n, channels)).astype(F32), "g": -np.abs(rng.standard_normal((n, hv))).astype(F32),
                  "b": rng.uniform(0, 1, (n, hv)).astype(F32)}
        cpu, ref = (be.run(_recurrent_graph(n, hk, hv, dim, width), inputs) for be in backends)
        for name in ("o", "c"):
            assert_close(cpu[name], ref[name], 1e-5)

    def same_states() -> None:
        for name in ("conv", "ssm"):
            a, b = backends[0].read_state(name)[0], backends[1].read_state(name)[0]
            assert np.abs(a - b).max() <= 1e-5 * max(np.abs(b).max(), 1e-30), name

    for n, keep in ((6, 6), (4, 2), (3, 3), (1, 1), (5, 3)):
        before = backends[0].read_state("ssm")[0]
        step(n)
        assert np.array_equal(backends[0].read_state("ssm")[0], before)  # a run alone leaves no trace
        for be in backends:
            be.commit(["conv", "ssm"], keep)
        same_states()
    step(5)
    for be in backends:  # only the last `snaps` tokens keep a snapshot; a commit is taken once
        with pytest.raises(ValueError):
            be.commit(["ssm"], 2)
    for be in backends:
        be.commit(["ssm", "conv"], 4)
        with pytest.raises(ValueError):
            be.commit(["ssm"], 4)
    same_states()
    for be in backends:
        be.reset_states(["conv", "ssm"])
        assert not be.read_state("ssm")[0].any()


@pytest.mark.parametrize("qtype", [T.F32, T.Q8_0, T.Q4_K], ids=lambda t: t.name)
def test_moe_matches_reference_and_is_batch_invariant(qtype):
    rng = np.random.default_rng(5)
    n, d, e, f, used = 6, 256, 6, 256, 2
    weights = {"gi": random_weight(T.F32, (e, d), rng, "gi"), "up": random_weight(qtype, (e, f, d), rng, "up", 1e-3),
               "gate": random_weight(qtype, (e, f, d), rng, "gate", 1e-3), "down": random_weight(qtype, (e, d, f), rng, "down", 1e-3)}

    def graph(rows: int) -> Graph:
        g = Graph(f"moe{rows}")
        w = {name: g.weight(name, weights[name].shape) for name in weights}
        g.output("y", g.moe(g.input("x", (rows, d)), w["gi"], w["up"], w["gate"], w["down"], used))
        return g

    x = rng.standard_normal((n, d)).astype(F32)
    (cpu, be), (ref, _) = both(graph(n), {"x": x}, weights)
    assert_close(cpu["y"], ref["y"], 1e-5)
    for i in range(n):
        assert np.array_equal(be.run(graph(1), {"x": x[i : i + 1]})["y"][0], cpu["y"][i])


# ---- whole models

CASES = [(m, t) for m in MODELS for t in SHIPPED_TYPES[m]]


@needs_fixtures
@pytest.mark.parametrize("model,qtype", CASES)
def test_logits_match_exact_reference(model, qtype, capsys):
    m = mtprun.load(model_file(model, qtype), n_ctx=256, backend="cpu")
    exact = np.load(FIXTURES / model / "ref" / f"logits-exact-{qtype}.npz")
    llama = np.load(FIXTURES / model / "ref" / f"logits-llamacpp-{qtype}.npz")
    for name, ids in prompts(model).items():
        ours = m.logits(ids)
        err = row_relative_error(ours, exact[name])
        with capsys.disabled():
            print(f"\ncpu {model} {qtype} {name}: rel err vs exact {err:.1e}, vs llama.cpp {row_relative_error(ours, llama[name]):.1e}")
        assert err <= EXACT_TOLERANCE, f"{name}: {err}"


@needs_fixtures
@pytest.mark.parametrize("activations", ["f32", "q8", "q8x2"])
@pytest.mark.parametrize("model,qtype", [("tinycoder", "q4_k_m"), ("tiny-qwen35", "q6_k"), ("tiny-qwen35moe", "q8_0")])
def test_model_rows_are_batch_and_thread_invariant(model, qtype, activations):
    loaded = mtprun.load(model_file(model, qtype), n_ctx=128).loaded
    seq = list(next(iter(prompts(model).values())))[:20]
    results = []
    for chunk, threads in ((1, 2), (2, 2), (4, 1), (5, 2), (20, 2)):
        ctx = Context(loaded, CpuBackend(threads, activations), 128, 20)
        rows = []
        for b in range(0, len(seq), chunk):
            logits, _ = ctx.trunk(seq[b : b + chunk], b, list(range(len(seq[b : b + chunk]))))
            ctx.commit(len(seq[b : b + chunk]))
            rows.append(logits)
        results.append(np.concatenate(rows))
    for r in results[1:]:
        assert np.array_equal(r, results[0])


@needs_fixtures
@pytest.mark.parametrize("model,qtype", [("tinycoder", "q8_0"), ("tinycoder", "q4_k_m"), ("tiny-qwen35", "q8_0"), ("tiny-qwen35moe", "q4_k_m")])
def test_mtp_on_off_tokens_identical_and_exact(model, qtype):
    m = mtprun.load(model_file(model, qtype), n_ctx=256, backend="cpu")
    refs = ref_json(model, "greedy32.json")[f"exact-{qtype}"]
    for name, ids in prompts(model).items():
        plain = m.generate(ids, n_predict=32).tokens
        assert plain == refs[name][: len(plain)], name
        for depth in (1, 3):
            assert m.generate(ids, n_predict=32, spec_draft_n_max=depth).tokens == plain, (name, depth)


@needs_fixtures
def test_commit_after_verify_matches_numpy_backend():
    loaded = mtprun.load(model_file("tiny-qwen35", "q8_0"), n_ctx=64).loaded
    seq = list(next(iter(prompts("tiny-qwen35").values())))[:10]
    ctxs = [Context(loaded, be, 64, 6) for be in (CpuBackend(2), NumpyBackend())]
    for ctx in ctxs:
        ctx.prefill(seq, 0, 512, logits_last=False)
        ctx.trunk([5, 6, 7, 8], len(seq), [0, 1, 2, 3])
        ctx.commit(2)
    for spec in ctxs[0]._trunk_specs:
        for a, b in zip(ctxs[0].backend.read_state(spec.name), ctxs[1].backend.read_state(spec.name)):
            if spec.kind == "kv":
                a, b = a[: len(seq) + 2], b[: len(seq) + 2]  # positions past the sequence are never read
            assert np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1e-30), spec.name


_ALTERNATING_RUNS = """
import numpy as np
from mtprun.native.cpu_backend import CpuBackend
from mtprun.runner.graph import Graph, WeightTensor
rng = np.random.default_rng(0)
w = WeightTensor("w", 0, (64, 64), rng.standard_normal((64, 64)).astype(np.float32) * 0.1)
graphs = []
for depth in (5, 40, 200):
    g = Graph(f"g{depth}")
    x = g.input("x", (1, 64))
    for _ in range(depth):
        x = g.matmul(x, g.weight("w", (64, 64)))
    g.output("y", x)
    graphs.append(g)
be = CpuBackend(2)
be.load_weights({"w": w})
x = rng.standard_normal((1, 64)).astype(np.float32)
refs = [be.run(g, {"x": x})["y"] for g in graphs]
for i in range(20000):
    j = i % 3 if i % 7 else (i // 7) % 3
    assert np.array_equal(be.run(graphs[j], {"x": x})["y"], refs[j])
"""


def test_many_runs_of_graphs_of_different_sizes_never_hang():
    """A worker that wakes late for a finished run must not enter the next run's steps while they are
    being planned (it once claimed a part of a half-reset step and both threads waited forever)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _ALTERNATING_RUNS], timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_missing_library_is_one_sentence(monkeypatch):
    monkeypatch.setattr(cpu_backend, "_LIB", None)
    monkeypatch.setattr(cpu_backend, "EXTENSION_SUFFIXES", [".missing"])
    with pytest.raises(MtprunError, match="not built"):
        create_backend("cpu")
