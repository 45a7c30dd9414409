"""Converter failures are one clear MtprunError; interrupted runs leave no file; the CLI wiring."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from mtprun.convert import cli, convert_checkpoint, quantize_gguf
from mtprun.convert import converter as converter_module
from mtprun.convert.checkpoint import Checkpoint
from mtprun.runner.errors import MtprunError

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
MOE = FIXTURES / "tiny-qwen35moe" / "hf"

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="fixtures not present")


def _checkpoint_copy(tmp_path: Path, config: dict | None = None,
                     tensors: dict[str, np.ndarray] | None = None) -> Path:
    """The MoE fixture's config and tokenizer, with its weights or the given float32 tensors."""
    d = tmp_path / "ckpt"
    d.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(MOE / name, d / name)
    cfg = json.loads((MOE / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **(config or {})}))
    if tensors is None:
        shutil.copy(MOE / "model.safetensors", d / "model.safetensors")
    else:
        save_file(tensors, str(d / "model.safetensors"))
    return d


def _moe_tensors(keep) -> dict[str, np.ndarray]:
    ckpt = Checkpoint(MOE)
    return {n: np.ascontiguousarray(ckpt.load(n)) for n in ckpt.names() if keep(n)}


def test_unknown_architecture_lists_supported(tmp_path: Path) -> None:
    d = _checkpoint_copy(tmp_path, {"architectures": ["LlamaForCausalLM"]})
    with pytest.raises(MtprunError, match="LlamaForCausalLM.*Qwen3_5ForCausalLM"):
        convert_checkpoint(d, tmp_path / "o.gguf", progress=False)


def test_mtp_only_without_mtp_tensors(tmp_path: Path) -> None:
    d = _checkpoint_copy(tmp_path, tensors=_moe_tensors(lambda n: not n.startswith("mtp.")))
    with pytest.raises(MtprunError, match="no MTP tensors"):
        convert_checkpoint(d, tmp_path / "o.gguf", mtp="only", progress=False)
    # The whole model still converts, as a file without the MTP head.
    out = convert_checkpoint(d, tmp_path / "o.gguf", progress=False)
    assert out.is_file()


def test_missing_shard(tmp_path: Path) -> None:
    d = _checkpoint_copy(tmp_path)
    (d / "model.safetensors").rename(d / "model-00001-of-00002.safetensors")
    weight_map = {n: "model-00001-of-00002.safetensors" for n in Checkpoint(MOE).names()}
    weight_map["lm_extra.weight"] = "model-00002-of-00002.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(MtprunError, match="missing shard.*00002"):
        convert_checkpoint(d, tmp_path / "o.gguf", progress=False)


def test_corrupt_shard(tmp_path: Path) -> None:
    d = _checkpoint_copy(tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(MtprunError, match="corrupt or truncated"):
        convert_checkpoint(d, tmp_path / "o.gguf", progress=False)


def test_unknown_dtype(tmp_path: Path) -> None:
    tensors = _moe_tensors(lambda n: True)
    tensors["model.layers.0.mlp.gate.weight"] = tensors["model.layers.0.mlp.gate.weight"].astype(np.int8)
    d = _checkpoint_copy(tmp_path, tensors=tensors)
    with pytest.raises(MtprunError, match="dtype I8"):
        convert_checkpoint(d, tmp_path / "o.gguf", progress=False)


def test_existing_output_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "o.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(MtprunError, match="--force"):
        convert_checkpoint(MOE, out, progress=False)
    assert out.read_bytes() == b"keep me"
    convert_checkpoint(MOE, out, force=True, progress=False)
    with pytest.raises(MtprunError, match="--force"):
        quantize_gguf(out, out, "q8_0")


def test_unknown_types(tmp_path: Path) -> None:
    with pytest.raises(MtprunError, match="q4_k_m"):
        convert_checkpoint(MOE, tmp_path / "o.gguf", outtype="q3_k", progress=False)
    with pytest.raises(MtprunError, match="q4_k_m"):
        quantize_gguf(tmp_path / "missing.gguf", tmp_path / "o.gguf", "iq2_xxs")


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    def failing_quantize(data, qtype):
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        return real(data, qtype)

    real = converter_module.quantize
    monkeypatch.setattr(converter_module, "quantize", failing_quantize)
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(MOE, tmp_path / "o.gguf", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_progress_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    convert_checkpoint(MOE, tmp_path / "o.gguf", mtp="only", progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "token_embd.weight" in captured.err and "MB/s" in captured.err


def test_default_output_name(tmp_path: Path) -> None:
    d = _checkpoint_copy(tmp_path)
    assert convert_checkpoint(d, outtype="q8_0", progress=False) == d / "ckpt-4x2.6M-Q8_0.gguf"
    assert convert_checkpoint(d, mtp="only", progress=False) == d / "mtp-ckpt-F32.gguf"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    cli.add_subcommands(parser.add_subparsers())
    args = parser.parse_args(["convert", str(MOE), "-o", str(tmp_path / "a.gguf"), "--outtype", "bf16", "--no-mtp"])
    assert args.handler(args) == 0
    args = parser.parse_args(["quantize", str(tmp_path / "a.gguf"), str(tmp_path / "b.gguf"), "Q4_K_M"])
    assert args.handler(args) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "a.gguf"), str(tmp_path / "b.gguf")]
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", str(MOE), "--mtp-only", "--no-mtp"])
