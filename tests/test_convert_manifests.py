"""The converter and quantizer against llama.cpp: every file llama.cpp made from the fixture
checkpoints (its manifest: metadata, tensor names, types, shapes, sha256 of the bytes) must be
reproduced exactly.

The files come from conftest.py's session fixture `built`: like llama.cpp did, each checkpoint is
converted to f32 once and the presets are quantized from that file; bf16/q8_0 and the MTP-only
and no-MTP variants come straight from the converter.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from gguf import GGUFReader

from mtprun.convert import convert_checkpoint

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
MODELS = ("tiny-qwen35", "tiny-qwen35moe", "tinycoder")

# Metadata keys where our files deliberately differ from llama.cpp's, and why.
DELIBERATE_DIFFERENCES = {
    "general.name": "we name the model after its checkpoint directory, as llama.cpp does by default; "
                    "the fixtures were converted from a directory without a usable name, so theirs has none",
}

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="fixtures not present")


def _manifests() -> list[tuple[str, str]]:
    if not FIXTURES.is_dir():
        return []
    return [(m, p.stem) for m in MODELS for p in sorted((FIXTURES / m / "manifest").glob("*.json"))]


def summarize(path: Path) -> tuple[dict, list[dict]]:
    """A GGUF file in the manifests' form: long arrays/strings as {len, sha256}, tensor hashes."""
    reader = GGUFReader(str(path))
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        if isinstance(value, list) and len(value) > 64:
            value = {"len": len(value), "sha256": hashlib.sha256(json.dumps(value, ensure_ascii=False).encode()).hexdigest()}
        elif isinstance(value, str) and len(value) > 400:
            value = {"len": len(value), "sha256": hashlib.sha256(value.encode()).hexdigest()}
        meta[key] = value
    tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(n) for n in t.shape],
                "n_bytes": int(t.n_bytes), "sha256": hashlib.sha256(t.data.tobytes()).hexdigest()}
               for t in reader.tensors]
    return meta, tensors


@pytest.mark.parametrize(("model", "stem"), _manifests())
def test_matches_llamacpp(built, model: str, stem: str) -> None:
    manifest = json.loads((FIXTURES / model / "manifest" / f"{stem}.json").read_text())
    meta, tensors = summarize(built(model, stem))
    assert tensors == manifest["tensors"]  # names and order, types, shapes, sizes, bytes
    expected = manifest["metadata"]
    ours = {k: v for k, v in meta.items() if k not in DELIBERATE_DIFFERENCES}
    assert list(ours) == list(expected)  # same keys, same order
    assert ours == expected


@pytest.mark.parametrize("model", MODELS)
def test_quantizing_while_converting_equals_llama_quantize(tmp_path: Path, model: str) -> None:
    """convert --outtype q4_k_m (no f32 file in between) gives llama-quantize's file."""
    out = convert_checkpoint(FIXTURES / model / "hf", tmp_path / "out.gguf", outtype="q4_k_m", progress=False)
    manifest = json.loads((FIXTURES / model / "manifest" / "llamacpp-q4_k_m.json").read_text())
    meta, tensors = summarize(out)
    assert tensors == manifest["tensors"]
    assert {k: v for k, v in meta.items() if k not in DELIBERATE_DIFFERENCES} == manifest["metadata"]


def test_deliberate_metadata_differences(built) -> None:
    """The only metadata keys that differ from llama.cpp's are the listed ones."""
    differing = set()
    for model in MODELS:
        for stem in ("llamacpp-f32", "mtp-llamacpp-q8_0", "nomtp-llamacpp-q4_k_m", "llamacpp-q6_k"):
            manifest = json.loads((FIXTURES / model / "manifest" / f"{stem}.json").read_text())["metadata"]
            meta, _ = summarize(built(model, stem))
            differing |= {k for k in set(meta) | set(manifest) if meta.get(k) != manifest.get(k)}
    assert differing == set(DELIBERATE_DIFFERENCES)
    assert all(DELIBERATE_DIFFERENCES.values())
