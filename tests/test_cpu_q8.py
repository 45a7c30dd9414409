"""The CPU backend's quantized-activation modes ("q8": one int8 plane, as llama.cpp; "q8x2": a second
plane for the first one's rounding error): the kernels against a NumPy model of the same arithmetic
(bit for bit, so every SIMD level gives the same bits), batch and thread invariance, MTP on/off
tokens, and each fixture model's distance to the exact logits beside llama.cpp's own, position by
position."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

import mtprun
import q8_model
from q8_cases import MODES, activations, run_matmul
from fixtures import FIXTURES, MODELS, SHIPPED_TYPES, backend_param, model_file, needs_fixtures, prompts
from mtprun.native import create_backend
from mtprun.runner.errors import MtprunError
from test_cpu_backend import CpuBackend, random_weight, simd  # noqa: F401 (simd: a fixture)

F32 = np.float32
Q8_TYPES = [T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]
# Whole models run on both backends with the modes (CUDA: kernels/matmul_q8.cu; skipped without a GPU).
ENGINES = [backend_param("cpu"), backend_param("cuda")]


@pytest.mark.parametrize("qtype", Q8_TYPES, ids=lambda t: t.name)
def test_integer_decoding_of_the_model_matches_gguf_py(qtype):
    w = random_weight(qtype, (5, 512), np.random.default_rng(int(qtype)))
    ints = q8_model.decode_ints(qtype, w.data)
    ref = gguf_dequantize(w.data, qtype).reshape(w.shape)
    assert np.array_equal(q8_model.dequantize(qtype, ints), ref)


@pytest.mark.parametrize("n", [11, 37])  # 37: a long batch (tokens in the lanes, where the CPU has the kernel)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("qtype", Q8_TYPES, ids=lambda t: t.name)
def test_q8_matmul_is_the_numpy_model_bit_for_bit(simd, qtype, mode, n):
    """Every SIMD level computes the model's bits, so scalar, AVX2 and AVX-512 VNNI agree bit for bit."""
    rng = np.random.default_rng(400 + int(qtype))
    m, k = 37, 800 if qtype == T.Q8_0 else 768  # 800: 25 blocks, a partial group of 8
    w = random_weight(qtype, (m, k), rng)
    x = activations(rng, n, k)
    be = CpuBackend(2, mode)
    be.load_weights({"w": w})
    ours = run_matmul(be, x, m)
    assert ours.view(np.uint32).tolist() == q8_model.matmul(qtype, w.data, x, MODES[mode]).view(np.uint32).tolist()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("qtype", Q8_TYPES, ids=lambda t: t.name)
def test_q8_rows_are_bit_equal_in_every_batch(simd, qtype, mode):
    """One path for every batch: rows 1..9 and 40 at any offset, on 1 or 2 threads, the same bits."""
    rng = np.random.default_rng(500 + int(qtype))
    m, k, big = 37, 768, 40
    w = random_weight(qtype, (m, k), rng)
    x = rng.standard_normal((big, k)).astype(F32)
    backends = {threads: CpuBackend(threads, mode) for threads in (1, 2)}
    for be in backends.values():
        be.load_weights({"w": w})
    full = run_matmul(backends[2], x, m)
    assert np.array_equal(run_matmul(backends[1], x, m), full)
    for n in range(1, 10):
        for start in (0, 3, big - n):
            for threads in (1, 2):
                assert np.array_equal(run_matmul(backends[threads], x[start : start + n], m), full[start : start + n]), (n, start, threads)


@pytest.mark.parametrize("qtype", [T.F32, T.F16, T.Q4_0, T.Q5_1], ids=lambda t: t.name)
def test_other_types_keep_f32activations(qtype):
    rng = np.random.default_rng(600 + int(qtype))
    w = random_weight(qtype, (19, 256), rng)
    x = rng.standard_normal((6, 256)).astype(F32)
    outs = []
    for mode in ("f32", *MODES):
        be = CpuBackend(2, mode)
        be.load_weights({"w": w})
        outs.append(run_matmul(be, x, 19))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_activation_mode_is_checked_and_reaches_the_backend():
    with pytest.raises(MtprunError, match="activations"):
        CpuBackend(1, "q4")
    assert create_backend("cpu", 1, activations="q8").activations == "q8"
    with pytest.raises(MtprunError, match="cpu and cuda backends only"):
        create_backend("numpy", activations="q8")


# ---- whole models

CASES = [(m, t) for m in MODELS for t in SHIPPED_TYPES[m]]


def _row_distance(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per position: max |ours - ref| / max |ref| (the fixtures README's relative max-abs per row)."""
    return np.abs(ours - ref).max(axis=1) / np.abs(ref).max(axis=1)


@needs_fixtures
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model,qtype", CASES)
def test_q8_distance_to_exact_beside_llama_cpp(model, qtype, mode, engine, capsys):
    """Per position, our distance to `exact-*` beside llama.cpp's (`llamacpp-*` vs `exact-*`); the
    issue's rule: ours <= llama.cpp's at every position.

    q8x2 meets it everywhere. q8 does NOT: its rounding is llama.cpp's own kind (int8 per block;
    ours keeps f32 scales and an f32 KV cache), so the two distances are alike (the means per file
    within a few % of each other) and ours is the larger at about half of the positions (by up to
    ~1.6x): for q8 the rule is an expected failure, reported with its numbers (and a failure the
    day it holds, to drop the mark)."""
    m = mtprun.load(model_file(model, qtype), n_ctx=256, backend=engine, activations=mode)
    exact = np.load(FIXTURES / model / "ref" / f"logits-exact-{qtype}.npz")
    llama = np.load(FIXTURES / model / "ref" / f"logits-llamacpp-{qtype}.npz")
    worse, n_total = [], 0
    with capsys.disabled():
        print(f"\n{engine} {mode} {model} {qtype}: per position, distance to exact: ours | llama.cpp")
        for name, ids in prompts(model).items():
            ours, theirs = _row_distance(m.logits(ids), exact[name]), _row_distance(llama[name], exact[name])
            print(f"  {name}: " + " ".join(f"{a:.1e}|{b:.1e}{'*' if a > b else ''}" for a, b in zip(ours, theirs)))
            print(f"  {name}: mean {ours.mean():.2e} | {theirs.mean():.2e}, max {ours.max():.2e} | {theirs.max():.2e}")
            worse += [(name, i, a / b) for i, (a, b) in enumerate(zip(ours, theirs)) if a > b]
            n_total += len(ours)
        if worse:
            print(f"  * ours larger at {len(worse)} of {n_total} positions, by up to {max(r for *_, r in worse):.2f}x")
    if mode == "q8x2":
        assert not worse, f"{len(worse)} of {n_total} positions farther from exact than llama.cpp"
    elif worse:
        pytest.xfail(f"q8 farther from exact than llama.cpp at {len(worse)} of {n_total} positions, "
                     f"by up to {max(r for *_, r in worse):.2f}x")
    else:
        pytest.fail("the per-position rule now holds for q8: drop the expected failure", pytrace=False)


@needs_fixtures
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model,qtype", [("tinycoder", "q4_k_m"), ("tiny-qwen35", "q6_k"), ("tiny-qwen35moe", "q4_k_m")])
def test_q8_mtp_on_off_tokens_identical(model, qtype, mode, engine):
    """The K-quant kernels' twin of test_lossless's cpu:q8 runs (q8_0 files)."""
    m = mtprun.load(model_file(model, qtype), n_ctx=256, backend=engine, activations=mode)
    for ids in prompts(model).values():
        plain = m.generate(ids, n_predict=24).tokens
        for depth in (1, 3):
            assert m.generate(ids, n_predict=24, spec_draft_n_max=depth).tokens == plain, depth
