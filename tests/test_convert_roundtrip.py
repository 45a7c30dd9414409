"""Round trips: checkpoint -> our converter -> mtprun.load -> llama.cpp's exact answers.

test_convert_manifests.py shows the files are llama.cpp's bytes; this shows the runner reads what
the converter writes: logits equal the exact references, and a --no-mtp base paired with a
--mtp-only sidecar drafts exactly as the whole file does. On the NumPy reference backend, so that
these test the converter, not a backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

import mtprun
from fixtures import EXACT_TOLERANCE, FIXTURES, MODELS, needs_fixtures, prompts, row_relative_error

pytestmark = needs_fixtures

TYPES = ("f32", "q8_0", "q4_k_m", "q6_k")


def _reference(model: str, qtype: str) -> np.lib.npyio.NpzFile:
    # f32 widens the bf16 weights exactly, so llama.cpp's plain f32 run is the exact answer.
    name = "logits-llamacpp-f32.npz" if qtype == "f32" else f"logits-exact-{qtype}.npz"
    return np.load(FIXTURES / model / "ref" / name)


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("model", MODELS)
def test_logits_equal_exact_reference(built, model: str, qtype: str) -> None:
    m = mtprun.load(built(model, f"llamacpp-{qtype}"), backend="numpy", n_ctx=256)
    ref = _reference(model, qtype)
    for name, ids in prompts(model).items():
        err = row_relative_error(m.logits(ids), ref[name])
        assert err <= EXACT_TOLERANCE, f"{name}: {err}"


def _tensor_bytes(path: Path) -> dict[str, bytes]:
    return {t.name: t.data.tobytes() for t in GGUFReader(str(path)).tensors}


@pytest.mark.parametrize("model", MODELS)
def test_sidecar_pair_drafts_like_whole_file(built, model: str) -> None:
    """At one quantization (q8_0), base + sidecar hold the whole file's tensors, byte for byte,
    and give the same steps (drafts, acceptances, emitted tokens) and the same MTP head logits at
    every position (the random-weight models accept no drafts: the logits still test the head)."""
    whole, base, sidecar = (built(model, f"{p}llamacpp-q8_0") for p in ("", "nomtp-", "mtp-"))
    whole_t, base_t, sidecar_t = _tensor_bytes(whole), _tensor_bytes(base), _tensor_bytes(sidecar)
    assert {**base_t, **sidecar_t} == whole_t
    assert all(base_t[n] == b for n, b in sidecar_t.items() if n in base_t)  # shared tensors agree

    ids = next(iter(prompts(model).values()))
    runs, head_logits = [], []
    for m in (mtprun.load(whole, backend="numpy", n_ctx=256),
              mtprun.load(base, backend="numpy", n_ctx=256, mtp_model=sidecar)):
        steps = m.generate(ids, n_predict=16, spec_draft_n_max=2).stats.steps
        runs.append([(s.draft, s.accepted, s.emitted) for s in steps])
        ctx = m._ctx
        ctx.reset()
        _, h = ctx.trunk(ids, 0, [])
        head_logits.append(ctx.mtp(ids, h, 0, list(range(len(ids))))[0])
    assert runs[0] == runs[1]
    assert np.array_equal(head_logits[0], head_logits[1])
    assert all(draft for draft, _, _ in runs[0][:-1])  # every step but the last drafted
    if model == "tinycoder":  # trained: drafts are really accepted
        assert sum(accepted for _, accepted, _ in runs[0]) > 0
