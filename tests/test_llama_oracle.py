"""llama.cpp itself (llama-cpp-python) on our converted files: it loads them and computes the same
logits as on its own files, in its default arithmetic (f16 KV cache, flash attention, its quantized
dot products). The bytes are identical, so the logits must be too, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixtures import EXACT_TOLERANCE, FIXTURES, needs_fixtures, prompts, row_relative_error

llama_cpp = pytest.importorskip("llama_cpp")

pytestmark = needs_fixtures


def _logits(path: Path, ids: list[int]) -> np.ndarray:
    # The llama.cpp CLI's defaults, as the fixtures' logits-llamacpp-* were made: the binding's own
    # default turns flash attention off, llama.cpp's "auto" turns it on for the CPU.
    llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=64, n_threads=2, flash_attn=True,
                          verbose=False)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


@pytest.mark.parametrize("stem", ["llamacpp-q8_0", "llamacpp-q4_k_m", "nomtp-llamacpp-q4_k_m"])
def test_llama_cpp_computes_the_same_logits_on_our_file(built, stem: str) -> None:
    ids = prompts("tinycoder")["code"]
    ours = _logits(built("tinycoder", stem), ids)
    theirs = _logits(FIXTURES / "tinycoder" / f"{stem}.gguf", ids)
    np.testing.assert_array_equal(ours, theirs)
    if not stem.startswith("nomtp-"):  # the shipped reference, made on another machine: close, maybe not equal
        ref = np.load(FIXTURES / "tinycoder" / "ref" / f"logits-{stem}.npz")["code"]
        assert row_relative_error(ours, ref) <= EXACT_TOLERANCE


def _describe(path: Path) -> dict[str, object]:
    """What llama.cpp's model loader reports; it checks every tensor's name, type and shape."""
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
    assert model, f"llama.cpp refused {path}"
    try:
        return {"n_params": llama_cpp.llama_model_n_params(model), "size": llama_cpp.llama_model_size(model),
                "n_layer": llama_cpp.llama_model_n_layer(model), "n_layer_nextn": llama_cpp.llama_model_n_layer_nextn(model),
                "n_embd": llama_cpp.llama_model_n_embd(model)}
    finally:
        llama_cpp.llama_model_free(model)


def test_llama_cpp_loads_our_sidecar_as_its_own(built) -> None:
    """The binding cannot pair a draft-mtp sidecar with a base (its `draft_model` is a Python
    prompt-lookup hook), and llama.cpp cannot run an MTP-only file by itself (with no trunk it
    crashes while reserving the compute graph), so the sidecar is loaded as a model only."""
    ours = _describe(built("tinycoder", "mtp-llamacpp-q8_0"))
    assert ours == _describe(FIXTURES / "tinycoder" / "mtp-llamacpp-q8_0.gguf")
    assert ours["n_layer_nextn"] == 1
