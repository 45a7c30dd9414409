"""Where the shared llama.cpp fixtures live, and small readers for them."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
MODELS = ("tinycoder", "tiny-qwen35", "tiny-qwen35moe")
SHIPPED_TYPES = {"tinycoder": ("q8_0", "q4_k_m"), "tiny-qwen35": ("q8_0", "q4_k_m", "q6_k"), "tiny-qwen35moe": ("q8_0", "q4_k_m")}
EXACT_TOLERANCE = 1e-4  # max |ours - ref| / max |ref| per logits row

needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures is not present")


def model_file(model: str, qtype: str) -> Path:
    return FIXTURES / model / f"llamacpp-{qtype}.gguf"


@lru_cache(maxsize=None)
def ref_json(model: str, name: str) -> dict:
    return json.loads((FIXTURES / model / "ref" / name).read_text())


def prompts(model: str) -> dict[str, list[int]]:
    return {name: p["ids"] for name, p in ref_json(model, "tokens.json")["prompts"].items()}


def row_relative_error(ours, ref) -> float:
    import numpy as np

    return float((np.abs(ours - ref).max(axis=1) / np.abs(ref).max(axis=1)).max())


def backend_param(name: str):
    """A pytest param for backend `name`, skipped with the reason where it cannot start here."""
    from mtprun.native import create_backend
    from mtprun.runner.errors import MtprunError

    try:
        create_backend(name, threads=1)
    except MtprunError as exc:
        return pytest.param(name, marks=pytest.mark.skip(reason=f"no {name} backend here: {exc}"))
    return pytest.param(name)


def backend_params():
    """The backends every model test runs on: the NumPy reference, the native CPU backend and the
    GPU backends (Vulkan too on a CPU driver, Mesa's lavapipe, as on CI)."""
    return [backend_param(name) for name in ("numpy", "cpu", "cuda", "vulkan")]


def rows_in_batches(m, prefix: list[int], cont: list[int], sizes: list[int]):
    """Logits and hidden rows of `cont` after `prefix`, fed to m's context in batches of the given sizes."""
    import numpy as np

    ctx = m._ctx
    ctx.reset()
    ctx.prefill(prefix, 0, 512, logits_last=False)
    logits, hidden, pos = [], [], len(prefix)
    for size in sizes:
        chunk = cont[pos - len(prefix) : pos - len(prefix) + size]
        lg, h = ctx.trunk(chunk, pos, list(range(len(chunk))))
        ctx.commit(len(chunk))
        logits.append(lg)
        hidden.append(h)
        pos += len(chunk)
    return np.concatenate(logits), np.concatenate(hidden)
