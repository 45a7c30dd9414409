"""The demo model shipped in the package (runner/data/tinycoder-q4_k_m.gguf)."""

from __future__ import annotations

import hashlib
import json

from gguf import GGUFReader

import mtprun
from fixtures import FIXTURES, needs_fixtures
from mtprun.runner.demo import demo_model_path

# The fixtures' "class" prompt, on which 87% of depth-2 drafts are accepted.
PROMPT = 'class Stack:\n    """A simple stack."""\n\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n'


@needs_fixtures
def test_shipped_file_is_llama_cpp_q4_k_m() -> None:
    """Still what the converter makes: llama.cpp's Q4_K_M tensors, byte for byte (only
    general.name differs, see test_convert_manifests.DELIBERATE_DIFFERENCES)."""
    manifest = json.loads((FIXTURES / "tinycoder" / "manifest" / "llamacpp-q4_k_m.json").read_text())
    reader = GGUFReader(str(demo_model_path()))
    ours = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(n) for n in t.shape],
             "sha256": hashlib.sha256(t.data.tobytes()).hexdigest()} for t in reader.tensors]
    assert ours == [{k: t[k] for k in ("name", "type", "shape", "sha256")} for t in manifest["tensors"]]


def test_demo_model_drafts_are_really_accepted() -> None:
    m = mtprun.load(demo_model_path(), backend="numpy", n_ctx=256)
    assert m.has_mtp
    gen = m.generate(PROMPT, n_predict=32, spec_draft_n_max=2)
    assert len(gen.tokens) == 32
    assert gen.stats.acceptance_rate > 0.5, gen.stats.acceptance_rate
