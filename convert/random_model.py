"""A random-weight Qwen3.5 GGUF at a real model's shape, for speed measurements where weight
bandwidth dominates (the fixtures are too small for that).

    python -m mtprun.convert.random_model OUT.gguf [--preset 4b|27b] [--layers N] [--vocab N]

The file is laid out as llama.cpp's `llama-quantize Q4_K_M` lays out a `qwen35` model: the same
metadata keys as the fixtures' llamacpp-q4_k_m.gguf (scaled to the new shape), the same tensor
names, and Q4_K everywhere except Q6_K where Q4_K_M gives more bits (attn_v, ffn_down and the
linear-attention attn_qkv of the layers picked by the "more bits" rule, and the output / tied
embedding). One MTP block (nextn) follows the trunk layers. Quant blocks are random bytes with
scales chosen so every weight decodes to a finite value of standard deviation ~1/sqrt(fan-in).
The tokenizer is the full Qwen3.5 BPE vocabulary of the fixtures (151,936 tokens), padded with
unused tokens up to the preset's vocabulary size so that token_embd has the real row count.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q, GGUFReader, GGUFValueType, GGUFWriter

from mtprun.convert.writer import add_tensor_info, check_target, write_gguf

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
TEMPLATE = FIXTURES / "tinycoder" / "llamacpp-q4_k_m.gguf"  # metadata layout and chat template
VOCAB = FIXTURES / "qwen35-vocab" / "ggml-vocab-qwen35.gguf"
ARCH = "qwen35"
_UNUSED = 5  # llama.cpp's LLAMA_TOKEN_TYPE_UNUSED


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int  # trunk layers; the MTP block is one more
    heads: int
    kv_heads: int
    head_dim: int
    lin_k_heads: int
    lin_v_heads: int
    lin_dim: int  # key and value head size of the linear (Gated DeltaNet) attention
    ffn: int
    vocab: int
    tied: bool
    rope_sections: tuple[int, int, int, int]
    size_label: str


# Qwen3.5-4B: hidden 2560, 32 layers (every 4th full attention), 16 x 256 heads (4 KV), linear
# attention 16 K-heads / 32 V-heads x 128, FFN 9216, vocab 248320, tied embeddings.
# Qwen3.5-27B: hidden 5120, 64 layers, 24 x 256 heads (4 KV), linear 16 / 48 x 128, FFN 17408.
PRESETS = {
    "4b": Shape(2560, 32, 16, 4, 256, 16, 32, 128, 9216, 248320, True, (11, 11, 10, 0), "4B"),
    "27b": Shape(5120, 64, 24, 4, 256, 16, 48, 128, 17408, 248320, False, (11, 11, 10, 0), "27B"),
}
INTERVAL = 4  # full_attention_interval


def more_bits(i: int, n: int) -> bool:
    """Q4_K_M's layer rule for its Q6_K tensors: the first and last eighth, and every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_plan(s: Shape) -> list[tuple[str, tuple[int, ...], Q]]:
    """(name, numpy-order shape, type) of every tensor, in the order llama.cpp writes them."""
    n_blocks = s.layers + 1
    lin_qkv = 2 * s.lin_k_heads * s.lin_dim + s.lin_v_heads * s.lin_dim
    lin_inner = s.lin_v_heads * s.lin_dim
    out: list[tuple[str, tuple[int, ...], Q]] = []
    if not s.tied:
        out.append(("output.weight", (s.vocab, s.hidden), Q.Q6_K))
    out.append(("output_norm.weight", (s.hidden,), Q.F32))
    out.append(("token_embd.weight", (s.vocab, s.hidden), Q.Q6_K if s.tied else Q.Q4_K))
    for i in range(n_blocks):
        p, big = f"blk.{i}.", Q.Q6_K if more_bits(i, n_blocks) else Q.Q4_K
        recurrent = i < s.layers and (i + 1) % INTERVAL != 0
        t = [(p + "attn_norm.weight", (s.hidden,), Q.F32), (p + "post_attention_norm.weight", (s.hidden,), Q.F32),
             (p + "ffn_gate.weight", (s.ffn, s.hidden), Q.Q4_K), (p + "ffn_up.weight", (s.ffn, s.hidden), Q.Q4_K),
             (p + "ffn_down.weight", (s.hidden, s.ffn), big)]
        if recurrent:
            t += [(p + "attn_qkv.weight", (lin_qkv, s.hidden), big),
                  (p + "attn_gate.weight", (lin_inner, s.hidden), Q.Q4_K),
                  (p + "ssm_a", (s.lin_v_heads,), Q.F32),
                  (p + "ssm_alpha.weight", (s.lin_v_heads, s.hidden), Q.Q4_K),
                  (p + "ssm_beta.weight", (s.lin_v_heads, s.hidden), Q.Q4_K),
                  (p + "ssm_conv1d.weight", (lin_qkv, 4), Q.F32),
                  (p + "ssm_dt.bias", (s.lin_v_heads,), Q.F32),
                  (p + "ssm_norm.weight", (s.lin_dim,), Q.F32),
                  (p + "ssm_out.weight", (s.hidden, lin_inner), Q.Q4_K)]
        else:
            t += [(p + "attn_q.weight", (2 * s.heads * s.head_dim, s.hidden), Q.Q4_K),
                  (p + "attn_k.weight", (s.kv_heads * s.head_dim, s.hidden), Q.Q4_K),
                  (p + "attn_v.weight", (s.kv_heads * s.head_dim, s.hidden), big),
                  (p + "attn_q_norm.weight", (s.head_dim,), Q.F32),
                  (p + "attn_k_norm.weight", (s.head_dim,), Q.F32),
                  (p + "attn_output.weight", (s.hidden, s.heads * s.head_dim), Q.Q4_K)]
        if i == s.layers:
            t += [(p + "nextn.eh_proj.weight", (s.hidden, 2 * s.hidden), Q.Q4_K),
                  (p + "nextn.enorm.weight", (s.hidden,), Q.F32),
                  (p + "nextn.hnorm.weight", (s.hidden,), Q.F32),
                  (p + "nextn.shared_head_norm.weight", (s.hidden,), Q.F32)]
        out += sorted(t)
    return out


def _f16(rng: np.random.Generator, n: int, std: float, per_value: float) -> np.ndarray:
    """n block scales (f16 bytes): random sign, log-normal jitter, so a block's values have ~std."""
    d = std / per_value * np.exp(rng.normal(0.0, 0.25, n)) * rng.choice([-1.0, 1.0], n)
    return d.astype(np.float16).view(np.uint8).reshape(n, 2)


def random_blocks(qtype: Q, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random weight bytes of one tensor; quantized values decode to std ~1/sqrt(fan-in)."""
    rows, k = int(np.prod(shape[:-1])), shape[-1]
    std = 1.0 / np.sqrt(k)
    if qtype == Q.F32:
        return np.zeros(shape, np.float32)  # filled by the caller (norms, ssm parameters)
    nb = rows * k // 256
    if qtype == Q.Q4_K:  # d, dmin, 12 scale bytes, 128 nibble bytes; every sub-block scale = min = 32
        b = np.frombuffer(rng.bytes(nb * 144), np.uint8).reshape(nb, 144).copy()
        d = _f16(rng, nb, std, 32 * 4.61)  # 32 * (q - 7.5), q uniform on 0..15
        b[:, 0:2] = d
        b[:, 2:4] = (d.view(np.float16).astype(np.float32) * 7.5).astype(np.float16).view(np.uint8).reshape(nb, 2)
        b[:, 4:12] = 0xA0  # 6-bit scale/min 32 for sub-blocks 0-3, and the high bits of 4-7's
        b[:, 12:16] = 0x00
        return b
    if qtype == Q.Q6_K:  # 128 ql, 64 qh, 16 int8 scales, d
        b = np.frombuffer(rng.bytes(nb * 210), np.uint8).reshape(nb, 210).copy()
        sc = rng.integers(16, 49, (nb, 16)) * rng.choice([-1, 1], (nb, 16))
        b[:, 192:208] = sc.astype(np.int8).view(np.uint8)
        b[:, 208:210] = _f16(rng, nb, std, 33 * 18.5)  # |sc| ~ 33, q - 32 with q uniform on 0..63
        return b
    raise ValueError(f"no random blocks for {qtype.name}")


def f32_values(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if name.endswith("ssm_a"):  # -exp(A_log)
        return -np.exp(rng.uniform(0.0, 2.0, shape)).astype(np.float32)
    if name.endswith("ssm_dt.bias"):
        return rng.uniform(0.5, 1.0, shape).astype(np.float32)
    if name.endswith("ssm_conv1d.weight"):
        return rng.normal(0.0, 0.2, shape).astype(np.float32)
    return rng.uniform(0.8, 1.2, shape).astype(np.float32)  # norm weights


def _copy_field(w: GGUFWriter, r: GGUFReader, key: str, value=None) -> None:
    f = r.fields[key]
    if value is None:
        value = f.contents()
    w.add_key_value(key, value, f.types[0], f.types[1] if len(f.types) > 1 else None)


def add_metadata(w: GGUFWriter, s: Shape) -> None:
    t = GGUFReader(TEMPLATE)
    v = GGUFReader(VOCAB)
    n_blocks = s.layers + 1
    scaled = {
        "general.size_label": s.size_label,
        f"{ARCH}.block_count": n_blocks,
        f"{ARCH}.context_length": 262144,
        f"{ARCH}.embedding_length": s.hidden,
        f"{ARCH}.feed_forward_length": s.ffn,
        f"{ARCH}.attention.head_count": s.heads,
        f"{ARCH}.attention.head_count_kv": s.kv_heads,
        f"{ARCH}.rope.dimension_sections": list(s.rope_sections),
        f"{ARCH}.attention.key_length": s.head_dim,
        f"{ARCH}.attention.value_length": s.head_dim,
        f"{ARCH}.ssm.state_size": s.lin_dim,
        f"{ARCH}.ssm.group_count": s.lin_k_heads,
        f"{ARCH}.ssm.time_step_rank": s.lin_v_heads,
        f"{ARCH}.ssm.inner_size": s.lin_v_heads * s.lin_dim,
        f"{ARCH}.attention.recurrent_layers": [i < s.layers and (i + 1) % INTERVAL != 0 for i in range(n_blocks)],
        f"{ARCH}.rope.dimension_count": s.head_dim // 4,
    }
    tokens = list(v.fields["tokenizer.ggml.tokens"].contents())
    types = list(v.fields["tokenizer.ggml.token_type"].contents())
    if s.vocab < len(tokens):
        raise SystemExit(f"--vocab {s.vocab} is below the vocabulary's {len(tokens)} tokens")
    pad = s.vocab - len(tokens)
    ids = {tok: i for i, tok in enumerate(tokens)}
    vocab = {
        "tokenizer.ggml.tokens": tokens + [f"<|unused_{i}|>" for i in range(len(tokens), s.vocab)],
        "tokenizer.ggml.token_type": types + [_UNUSED] * pad,
        "tokenizer.ggml.merges": list(v.fields["tokenizer.ggml.merges"].contents()),
        "tokenizer.ggml.eos_token_id": ids["<|im_end|>"],
        "tokenizer.ggml.padding_token_id": ids["<|endoftext|>"],
    }
    for key in t.fields:
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key in vocab:
            _copy_field(w, t, key, vocab[key])
        else:
            _copy_field(w, t, key, scaled.get(key))


def generate(out: Path, s: Shape, seed: int = 0, progress: bool = True, force: bool = False) -> Path:
    check_target(out, force)
    w = GGUFWriter(None, ARCH)
    add_metadata(w, s)
    plan = tensor_plan(s)
    for name, shape, qtype in plan:
        add_tensor_info(w, name, shape, qtype)
    rng = np.random.default_rng(seed)

    def data():
        for name, shape, qtype in plan:
            a = f32_values(name, shape, rng) if qtype == Q.F32 else random_blocks(qtype, shape, rng)
            yield name, [a]

    return write_gguf(w, out, data(), progress)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mtprun.convert.random_model", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="4b")
    ap.add_argument("--layers", type=int, default=None, help="trunk layers (default: the preset's)")
    ap.add_argument("--vocab", type=int, default=None, help="token_embd rows (default: the preset's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    s = PRESETS[a.preset]
    s = replace(s, layers=a.layers or s.layers, vocab=a.vocab or s.vocab)
    generate(a.out, s, a.seed, progress=sys.stderr.isatty(), force=a.force)
    print(f"{a.out}: {a.out.stat().st_size / 2**30:.2f} GiB, {s.layers} layers + MTP, vocab {s.vocab}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
