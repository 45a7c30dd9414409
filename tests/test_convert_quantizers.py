"""Block quantizers: round trips through gguf-py's dequantizers, llama.cpp's bytes for real tensors
(from the manifests), ggml's edge cases, and llama-quantize's type choices."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGUFReader, GGMLQuantizationType as T
from gguf import quants as gguf_quants

from mtprun.convert import convert_checkpoint, kquants, native_quant, presets
from mtprun.convert.quantize import quantize

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
BLOCK_TYPES = (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K)
# Worst-case round-trip error relative to the row's max |x| (loose: a sanity bound, not a spec).
TOLERANCE = {T.Q8_0: 0.01, T.Q4_0: 0.15, T.Q4_1: 0.1, T.Q5_0: 0.07, T.Q5_1: 0.05,
             T.Q4_K: 0.15, T.Q5_K: 0.07, T.Q6_K: 0.035, T.BF16: 0.004, T.F16: 0.001}


@pytest.mark.parametrize("qtype", (*BLOCK_TYPES, T.BF16, T.F16))
def test_round_trip(qtype: T) -> None:
    x = np.random.default_rng(int(qtype)).standard_normal((24, 512)).astype(np.float32)
    q = quantize(x, qtype)
    block, type_size = GGML_QUANT_SIZES[qtype]
    assert q.nbytes == x.size // block * type_size
    back = gguf_quants.dequantize(q, qtype).reshape(x.shape)
    assert np.max(np.abs(back - x)) <= TOLERANCE[qtype] * np.max(np.abs(x))


@pytest.mark.parametrize("qtype", (T.Q4_K, T.Q5_K, T.Q6_K))
def test_kquants_constant_and_zero_blocks(qtype: T) -> None:
    x = np.zeros((3, 256), np.float32)
    x[1] = 0.25
    x[2, :32] = -1.5
    back = gguf_quants.dequantize(quantize(x, qtype), qtype).reshape(x.shape)
    assert np.array_equal(back[0], x[0])
    assert np.allclose(back, x, atol=0.02)


def test_legacy_all_zero_blocks_follow_ggml() -> None:
    """ggml's scans give an all-zero block d = -0 (Q4_0/Q5_0) and keep the first zero as Q4_1's min."""
    x = np.zeros((1, 64), np.float32)
    x[0, 32] = -0.0  # second block starts with a negative zero
    for qtype in (T.Q4_0, T.Q5_0):
        d = quantize(x, qtype).reshape(2, -1)[:, :2]
        assert d.tolist() == [[0x00, 0x80], [0x00, 0x80]]
    for qtype in (T.Q4_1, T.Q5_1):
        dm = quantize(x, qtype).reshape(2, -1)[:, :4]
        assert dm.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0x80]]


@pytest.mark.parametrize("n", [1, 2, 9])
def test_seq_sum_is_sequential(n: int) -> None:
    terms = (np.random.default_rng(n).standard_normal((32, n)) * 10.0 ** np.arange(-16, 16)[:, None]).astype(np.float32)
    expected = np.zeros(n, np.float32)
    for t in terms:
        expected = expected + t
    assert np.array_equal(kquants._seq_sum(terms), expected)


@pytest.fixture(scope="module")
def tinycoder_f32(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    if not FIXTURES.is_dir():
        pytest.skip("fixtures not present")
    path = convert_checkpoint(FIXTURES / "tinycoder" / "hf", tmp_path_factory.mktemp("q") / "f32.gguf",
                              progress=False)
    return {t.name: np.array(t.data) for t in GGUFReader(str(path)).tensors}


@pytest.mark.parametrize("path", ["default", "numpy"])
@pytest.mark.parametrize("qtype", BLOCK_TYPES)
def test_block_quantizer_matches_llamacpp(tinycoder_f32: dict[str, np.ndarray], qtype: T, path: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Each quantizer reproduces llama.cpp's bytes for every tinycoder tensor llama.cpp stored in it,
    on the default path (C when built) and on the NumPy reference."""
    if path == "numpy":
        monkeypatch.setenv(native_quant.ENV_NUMPY, "1")
    checked = 0
    for manifest in sorted((FIXTURES / "tinycoder" / "manifest").glob("llamacpp-*.json")):
        for t in json.loads(manifest.read_text())["tensors"]:
            if t["type"] == qtype.name and t["name"] in tinycoder_f32:
                data = tinycoder_f32[t["name"]].reshape(tuple(reversed(t["shape"])))
                assert hashlib.sha256(quantize(data, qtype).tobytes()).hexdigest() == t["sha256"], t["name"]
                checked += 1
    assert checked > 0


def test_quantize_mix_fallbacks() -> None:
    # Rows that are not whole 256-blocks fall back to a 32-block type, else F16.
    assert presets.QuantizeMix._fallback(96, T.Q4_K) == T.Q5_0
    assert presets.QuantizeMix._fallback(96, T.Q5_K) == T.Q5_1
    assert presets.QuantizeMix._fallback(96, T.Q6_K) == T.Q8_0
    assert presets.QuantizeMix._fallback(100, T.Q4_K) == T.F16
    assert presets.QuantizeMix._fallback(256, T.Q4_K) == T.Q4_K
    assert presets.converter_type("blk.0.attn_q.weight", (8, 100), presets.FT.MOSTLY_Q8_0) == T.F16


def test_quantize_mix_q4_k_m() -> None:
    """llama.cpp's Q4_K_M: output Q6_K, every third attention-V/ffn_down from the first eighth on Q6_K."""
    names = ["output.weight", "token_embd.weight"] + [f"blk.{i}.{n}" for i in range(8)
                                                      for n in ("attn_v.weight", "ffn_down.weight", "attn_q.weight")]
    names.sort(key=presets.sort_key)
    mix = presets.QuantizeMix.create("q4_k_m", names, n_layer=8, n_expert=0)
    types = {n: mix.target(n, (256, 256), T.F32) for n in names}
    assert types["output.weight"] == T.Q6_K and types["token_embd.weight"] == T.Q4_K
    assert [i for i in range(8) if types[f"blk.{i}.ffn_down.weight"] == T.Q6_K] == [0, 3, 6, 7]
    assert [i for i in range(8) if types[f"blk.{i}.attn_v.weight"] == T.Q6_K] == [0, 3, 6, 7]
    assert all(types[f"blk.{i}.attn_q.weight"] == T.Q4_K for i in range(8))
    assert mix.target("blk.0.attn_norm.weight", (256,), T.F32) == T.F32


# ---- the C quantizers (native/cpu/quantize.c) against the NumPy path, their reference

C_TYPES = (T.BF16, *BLOCK_TYPES)


def _c_or_skip() -> None:
    reason = native_quant.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the C quantizers are unavailable ({reason})")


def _numpy(x: np.ndarray, qtype: T, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setenv(native_quant.ENV_NUMPY, "1")
        with np.errstate(all="ignore"):
            return np.asarray(quantize(x, qtype)).view(np.uint8)


def _hard_rows(seed: int, k: int = 768) -> dict[str, np.ndarray]:
    """Rows that reach the quantizers' corners: zeros of both signs, one nonzero, constant blocks,
    one-signed blocks, tiny / subnormal / huge (overflowing x^2) values, sub-blocks of very
    different scales (6-bit scales that round to 0), random bit patterns and infinities."""
    rng = np.random.default_rng(seed)
    normal = rng.standard_normal((9, k)).astype(np.float32)
    cases = {"normal": normal * 0.02, "wide": normal * 10.0 ** rng.integers(-38, 38, normal.shape)}
    zeros = np.zeros((4, k), np.float32)
    zeros[1:3, ::3] = -0.0
    zeros[2, 7] = zeros[3, 300] = rng.standard_normal()
    cases["zeros"] = zeros
    const = np.ones((4, k), np.float32) * np.array([[1.0], [-3.0], [1e-20], [0.25]], np.float32)
    cases["constant"] = const
    cases["negative"] = -np.abs(normal)
    cases["positive"] = np.abs(normal)
    for name, scale in (("tiny", 1e-30), ("subnormal", 1e-40), ("huge", 1e30), ("large", 1e18)):
        cases[name] = (normal * np.float32(scale)).astype(np.float32)
    cases["extreme"] = (np.sign(normal) * np.float32(3.4e38)).astype(np.float32)
    cases["integers"] = rng.integers(-3, 4, (9, k)).astype(np.float32)
    for sub in (16, 32):
        f = 10.0 ** rng.uniform(-12, 12, (9, k // sub, 1)) * (rng.random((9, k // sub, 1)) < 0.8)
        cases[f"scales{sub}"] = (rng.standard_normal((9, k // sub, sub)) * f).reshape(9, k).astype(np.float32)
    bits = rng.integers(0, 2**32, (9, k), dtype=np.uint64).astype(np.uint32).view(np.float32)
    cases["bits"] = np.where(np.isfinite(bits), bits, np.float32(1))
    cases["inf"] = np.where(rng.random((9, k)) < 0.01, np.float32(np.inf), normal)
    return cases


@pytest.mark.parametrize("qtype", C_TYPES)
def test_c_quantizers_match_numpy(qtype: T, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C path gives the NumPy path's bytes, with the portable and the AVX2 search, on 1 or 3
    threads (rows are split into chunks, and a tail of K-quant super-blocks is padded)."""
    _c_or_skip()
    try:
        for seed in range(2):
            for name, x in _hard_rows(seed).items():
                ref = _numpy(x, qtype, monkeypatch)
                for simd in (0, 1):
                    if native_quant.set_simd(simd) != simd:
                        continue  # no AVX2 on this CPU
                    for threads in (1, 3):
                        got = native_quant.quantize_rows(qtype, x, threads)
                        assert got.shape == ref.shape, name
                        assert np.array_equal(got, ref), f"{name} seed={seed} simd={simd} threads={threads}"
    finally:
        native_quant.set_simd(99)


@pytest.mark.parametrize("qtype", (T.Q8_0, T.Q4_K, T.Q6_K))
def test_c_quantizers_threads_and_chunks(qtype: T, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor of many chunks: the same bytes as NumPy for any thread count, through quantize()."""
    _c_or_skip()
    x = (np.random.default_rng(3).standard_normal((257, 1280)) * 0.02).astype(np.float32)
    x[::7] *= 50
    ref = _numpy(x, qtype, monkeypatch)
    assert native_quant.available(qtype)
    for threads in (1, 2, 5):
        assert np.array_equal(quantize(x, qtype, threads=threads), ref)
    # leading axes and non-float32 input are handled as the NumPy path handles them
    x3 = x[:256].reshape(4, 64, 1280).astype(np.float16)
    assert np.array_equal(quantize(x3, qtype), _numpy(x3, qtype, monkeypatch).reshape(4, 64, -1))


def test_c_quantizers_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """MTPRUN_QUANT_NUMPY=1, or no built library, falls back to the NumPy path."""
    x = np.random.default_rng(4).standard_normal((8, 512)).astype(np.float32)
    expected = _numpy(x, T.Q4_K, monkeypatch)
    monkeypatch.setenv(native_quant.ENV_NUMPY, "1")
    assert not native_quant.available(T.Q4_K) and native_quant.quantize_rows(T.Q4_K, x) is None
    monkeypatch.delenv(native_quant.ENV_NUMPY)
    monkeypatch.setattr(native_quant, "_library", lambda: None)
    assert native_quant.quantize_rows(T.Q4_K, x) is None
    assert np.array_equal(quantize(x, T.Q4_K), expected)
