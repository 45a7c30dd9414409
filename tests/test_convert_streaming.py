"""Streaming in row blocks: the fixtures' tensors are smaller than one default block, so these
tests shrink the block size until every large tensor is split into many uneven blocks, and check
that the files stay byte-identical to llama.cpp's (or to the whole-tensor path)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader
from safetensors.numpy import save_file

from fixtures import FIXTURES, MODELS
from mtprun.convert import convert_checkpoint, quantize_gguf, stream
from mtprun.convert.checkpoint import Checkpoint
from test_convert_manifests import DELIBERATE_DIFFERENCES, summarize

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="fixtures not present")

# 64 rows of 256 values per block (a 2025-row embedding leaves a partial last block), one expert.
SMALL_BLOCK = 1 << 14


def _assert_matches(path: Path, model: str, stem: str) -> None:
    manifest = json.loads((FIXTURES / model / "manifest" / f"{stem}.json").read_text())
    meta, tensors = summarize(path)
    assert tensors == manifest["tensors"]
    assert {k: v for k, v in meta.items() if k not in DELIBERATE_DIFFERENCES} == manifest["metadata"]


@pytest.mark.parametrize("model", MODELS)
def test_small_blocks_match_llamacpp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str) -> None:
    monkeypatch.setattr(stream, "BLOCK_ELEMENTS", SMALL_BLOCK)
    hf = FIXTURES / model / "hf"
    f32 = convert_checkpoint(hf, tmp_path / "f32.gguf", outtype="f32", progress=False)
    _assert_matches(f32, model, "llamacpp-f32")
    _assert_matches(quantize_gguf(f32, tmp_path / "rq.gguf", "q4_k_m"), model, "llamacpp-q4_k_m")
    _assert_matches(convert_checkpoint(hf, tmp_path / "q.gguf", outtype="q4_k_m", progress=False),
                    model, "llamacpp-q4_k_m")
    _assert_matches(convert_checkpoint(hf, tmp_path / "m.gguf", outtype="q8_0", mtp="only", progress=False),
                    model, "mtp-llamacpp-q8_0")


def test_bf16_file_requantizes_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A BF16 input (read by gguf-py as raw bytes) gives the same file in small blocks as in one."""
    bf16 = convert_checkpoint(FIXTURES / "tiny-qwen35" / "hf", tmp_path / "bf16.gguf", outtype="bf16", progress=False)
    whole = quantize_gguf(bf16, tmp_path / "whole.gguf", "q5_k_m")
    monkeypatch.setattr(stream, "BLOCK_ELEMENTS", SMALL_BLOCK)
    blocks = quantize_gguf(bf16, tmp_path / "blocks.gguf", "q5_k_m")
    assert hashlib.sha256(whole.read_bytes()).digest() == hashlib.sha256(blocks.read_bytes()).digest()


def test_per_expert_checkpoint_equals_fused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Experts stored one tensor each are stacked block by block into the fused tensors' bytes."""
    monkeypatch.setattr(stream, "BLOCK_ELEMENTS", SMALL_BLOCK)
    fused_dir = FIXTURES / "tiny-qwen35moe" / "hf"
    ckpt = Checkpoint(fused_dir)
    tensors: dict[str, np.ndarray] = {}
    for name in ckpt.names():
        data = ckpt.load(name)
        prefix, _, rest = name.partition("mlp.experts.")
        if rest == "gate_up_proj":
            half = data.shape[1] // 2
            for e in range(data.shape[0]):
                tensors[f"{prefix}mlp.experts.{e}.gate_proj.weight"] = np.ascontiguousarray(data[e, :half])
                tensors[f"{prefix}mlp.experts.{e}.up_proj.weight"] = np.ascontiguousarray(data[e, half:])
        elif rest == "down_proj":
            for e in range(data.shape[0]):
                tensors[f"{prefix}mlp.experts.{e}.down_proj.weight"] = np.ascontiguousarray(data[e])
        else:
            tensors[name] = np.ascontiguousarray(data)
    split_dir = tmp_path / "tiny-qwen35moe"
    split_dir.mkdir()
    for f in fused_dir.iterdir():
        if not f.name.endswith(".safetensors"):
            (split_dir / f.name).write_bytes(f.read_bytes())
    save_file(tensors, str(split_dir / "model.safetensors"))

    def tensor_bytes(path: Path) -> dict[str, bytes]:
        return {t.name: t.data.tobytes() for t in GGUFReader(str(path)).tensors}

    fused = tensor_bytes(convert_checkpoint(fused_dir, tmp_path / "fused.gguf", progress=False))
    split = tensor_bytes(convert_checkpoint(split_dir, tmp_path / "split.gguf", progress=False))
    assert any("exps" in name for name in split) and split == fused
