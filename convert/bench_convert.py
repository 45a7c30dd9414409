"""Converter benchmark (not a test): `python -m mtprun.convert.bench_convert [--layers N] [--out DIR]`.

Writes a random-weight checkpoint with Qwen3.5-27B's real tensor shapes (sharded bf16 safetensors
with an index, a full-size synthetic byte-level BPE vocabulary), converts it with `mtprun convert`
in a child process, prints the child's peak RSS and the throughput, then deletes everything.

Fewer trunk layers than the real 64 keep it to one disk's worth, but the file is still dominated
by real sizes: the 248320 x 5120 embedding and the untied output head are 2.5 GB each in bf16,
and each layer is about 0.75 GB.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from math import prod
from pathlib import Path
from typing import Iterator

import numpy as np

from mtprun.convert.families import pretokenizers
from mtprun.convert.presets import OUTTYPES

# Qwen/Qwen3.5-27B's text_config (transformers' qwen3_5_text); num_hidden_layers and layer_types
# are set per run. The vision tower (model.visual.*) is left out: the converter skips it anyway.
QWEN35_27B = {
    "model_type": "qwen3_5_text", "hidden_size": 5120, "intermediate_size": 17408, "num_hidden_layers": 64,
    "num_attention_heads": 24, "num_key_value_heads": 4, "head_dim": 256, "full_attention_interval": 4,
    "linear_num_key_heads": 16, "linear_num_value_heads": 48, "linear_key_head_dim": 128,
    "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "vocab_size": 248320,
    "max_position_embeddings": 262144, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
    "hidden_act": "silu", "attention_bias": False, "attn_output_gate": True, "mtp_num_hidden_layers": 1,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000000, "partial_rotary_factor": 0.25,
                        "mrope_section": [11, 11, 10], "mrope_interleaved": True},
}
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
SHARD_BYTES = 5 * 10**9  # transformers' default max_shard_size ("5GB")
CHUNK = 1 << 24  # elements of random data generated at a time


def text_config(n_layers: int) -> dict:
    interval = QWEN35_27B["full_attention_interval"]
    layer_types = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n_layers)]
    return {**QWEN35_27B, "num_hidden_layers": n_layers, "layer_types": layer_types}


def _block(prefix: str, kind: str, c: dict) -> list[tuple[str, tuple[int, ...]]]:
    """One decoder layer's tensors (HF names and [out, in] shapes)."""
    h, f = c["hidden_size"], c["intermediate_size"]
    out = [(f"{prefix}input_layernorm.weight", (h,)), (f"{prefix}post_attention_layernorm.weight", (h,))]
    if kind == "linear_attention":
        nv, v = c["linear_num_value_heads"], c["linear_num_value_heads"] * c["linear_value_head_dim"]
        qkv = 2 * c["linear_num_key_heads"] * c["linear_key_head_dim"] + v
        a = f"{prefix}linear_attn."
        out += [(f"{a}A_log", (nv,)), (f"{a}dt_bias", (nv,)), (f"{a}conv1d.weight", (qkv, 1, c["linear_conv_kernel_dim"])),
                (f"{a}in_proj_qkv.weight", (qkv, h)), (f"{a}in_proj_z.weight", (v, h)),
                (f"{a}in_proj_a.weight", (nv, h)), (f"{a}in_proj_b.weight", (nv, h)),
                (f"{a}norm.weight", (c["linear_value_head_dim"],)), (f"{a}out_proj.weight", (h, v))]
    else:  # gated full attention: q_proj carries the query and its output gate
        d, nq, nkv = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
        a = f"{prefix}self_attn."
        out += [(f"{a}q_proj.weight", (2 * nq * d, h)), (f"{a}k_proj.weight", (nkv * d, h)),
                (f"{a}v_proj.weight", (nkv * d, h)), (f"{a}o_proj.weight", (h, nq * d)),
                (f"{a}q_norm.weight", (d,)), (f"{a}k_norm.weight", (d,))]
    return out + [(f"{prefix}mlp.gate_proj.weight", (f, h)), (f"{prefix}mlp.up_proj.weight", (f, h)),
                  (f"{prefix}mlp.down_proj.weight", (h, f))]


def tensor_shapes(c: dict) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of the checkpoint, named as Qwen3_5ForConditionalGeneration checkpoints are."""
    h, lm = c["hidden_size"], "model.language_model."
    out = [(f"{lm}embed_tokens.weight", (c["vocab_size"], h))]
    for i, kind in enumerate(c["layer_types"]):
        out += _block(f"{lm}layers.{i}.", kind, c)
    out += [(f"{lm}norm.weight", (h,)), ("lm_head.weight", (c["vocab_size"], h))]
    out += [("mtp.fc.weight", (h, 2 * h)), ("mtp.pre_fc_norm_embedding.weight", (h,)),
            ("mtp.pre_fc_norm_hidden.weight", (h,)), ("mtp.norm.weight", (h,))]
    for i in range(c["mtp_num_hidden_layers"]):
        out += _block(f"mtp.layers.{i}.", "full_attention", c)
    return out


def _random_bf16(rng: np.random.Generator, n: int) -> Iterator[bytes]:
    """n bf16 values ~ N(0, 0.02), as little-endian bytes (the top half of float32's bits)."""
    for start in range(0, n, CHUNK):
        x = rng.standard_normal(min(CHUNK, n - start), dtype=np.float32)
        x *= 0.02
        yield (x.view(np.uint32) >> 16).astype("<u2").tobytes()


def write_shards(directory: Path, tensors: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> int:
    """Sharded bf16 safetensors plus model.safetensors.index.json; returns the bytes of tensor data."""
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in tensors:
        if shards[-1] and size + 2 * prod(shape) > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += 2 * prod(shape)
    rng = np.random.default_rng(seed)
    weight_map = {}
    for k, shard in enumerate(shards, start=1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape in shard:
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + 2 * prod(shape)]}
            offset += 2 * prod(shape)
            weight_map[name] = file
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
        with open(directory / file, "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            for _, shape in shard:
                for chunk in _random_bf16(rng, prod(shape)):
                    f.write(chunk)
    total = sum(2 * prod(s) for _, s in tensors)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return total


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode map: the 256 one-character tokens of a byte-level BPE."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def write_tokenizer(directory: Path, n_regular: int) -> None:
    """A synthetic byte-level BPE with `n_regular` tokens (bytes, then pairs and triples of them,
    each with its merge) and Qwen's specials, under Qwen3.5's pre-tokenizer."""
    alphabet = _byte_alphabet()
    vocab = {t: i for i, t in enumerate(alphabet)}
    merges: list[str] = []
    pairs = [(a, b) for a in alphabet for b in alphabet]
    triples = ((a + b, c) for a, b in pairs for c in alphabet)
    for left, right in itertools.chain(pairs, triples):
        if len(vocab) >= n_regular:
            break
        vocab[left + right] = len(vocab)
        merges.append(f"{left} {right}")
    added = [{"id": n_regular + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(SPECIALS)]
    byte_level = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    split = {"type": "Split", "pattern": {"Regex": pretokenizers()["qwen35"][0]}, "behavior": "Isolated", "invert": False}
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split, {"type": "ByteLevel", **byte_level}]},
        "post_processor": {"type": "ByteLevel", **byte_level}, "decoder": {"type": "ByteLevel", **byte_level},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    config = {"tokenizer_class": "Qwen2Tokenizer", "add_bos_token": False, "bos_token": None,
              "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def make_checkpoint(directory: Path, n_layers: int) -> int:
    """The whole checkpoint directory; returns the bytes of tensor data."""
    c = text_config(n_layers)
    config = {"architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": "qwen3_5",
              "tie_word_embeddings": False, "text_config": c}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(directory, c["vocab_size"] - 256 - len(SPECIALS))  # real-sized, with padding rows
    return write_shards(directory, tensor_shapes(c))


def run_convert(checkpoint: Path, out: Path, outtype: str) -> tuple[float, int]:
    """`mtprun convert` in a child process: (wall seconds, the child's peak RSS in bytes).

    Linux counts the forking parent's peak RSS into the child's (exec records the old memory
    map's high-water mark), so the parent must stay small: see main()."""
    cmd = [sys.executable, "-m", "mtprun.runner.cli", "convert", str(checkpoint), "--outtype", outtype, "-o", str(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"mtprun convert failed (exit status {os.waitstatus_to_exitcode(status)}).")
    return seconds, usage.ru_maxrss * 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mtprun.convert.bench_convert",
                                description="Time `mtprun convert` on a random-weight checkpoint shaped like Qwen3.5-27B.")
    p.add_argument("--layers", type=int, default=4, help="trunk layers (the real model has 64; default 4: "
                   "three DeltaNet layers and one full-attention layer)")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()), help="where to make the work directory")
    p.add_argument("--outtype", choices=OUTTYPES, default="q4_k_m")
    p.add_argument("--keep", action="store_true", help="keep the checkpoint and the GGUF file")
    args = p.parse_args(argv)

    tensors = tensor_shapes(text_config(args.layers))
    data_bytes = sum(2 * prod(s) for _, s in tensors)
    need = data_bytes * (3 if args.outtype == "f32" else 2)  # the checkpoint, then at most the GGUF file
    free = shutil.disk_usage(args.out).free
    if free < need:
        print(f"Not enough space in {args.out}: {need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free.", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="mtprun-bench-", dir=args.out))
    try:
        checkpoint, out = work / "Qwen3.5-27B-random", work / f"out-{args.outtype}.gguf"
        checkpoint.mkdir()
        print(f"Writing {data_bytes / 2 / 1e9:.2f} B parameters ({data_bytes / 1e9:.2f} GB bf16, {args.layers} layers "
              f"+ MTP) to {checkpoint} ...", flush=True)
        start = time.perf_counter()
        # In a fresh interpreter, so that this process stays small (see run_convert).
        maker = multiprocessing.get_context("spawn").Process(target=make_checkpoint, args=(checkpoint, args.layers))
        maker.start()
        maker.join()
        if maker.exitcode != 0:
            raise SystemExit("writing the checkpoint failed.")
        print(f"  written in {time.perf_counter() - start:.0f} s; converting to {args.outtype} ...", flush=True)
        seconds, peak_rss = run_convert(checkpoint, out, args.outtype)
        out_bytes = out.stat().st_size
        print(f"mtprun convert --outtype {args.outtype}: {seconds:.1f} s, {data_bytes / seconds / 1e6:.1f} MB/s of bf16 "
              f"read, {out_bytes / seconds / 1e6:.1f} MB/s written ({out_bytes / 1e9:.2f} GB), "
              f"peak RSS {peak_rss / 2**30:.2f} GiB (of which at most "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB is this process's, counted in by the fork)")
    finally:
        if args.keep:
            print(f"Kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
