"""Logits and greedy continuations against llama.cpp's exact (f32 arithmetic) references."""

from __future__ import annotations

import numpy as np
import pytest

import mtprun
from fixtures import EXACT_TOLERANCE, FIXTURES, MODELS, SHIPPED_TYPES, backend_params, model_file, needs_fixtures, prompts, ref_json, row_relative_error

pytestmark = needs_fixtures

CASES = [(m, t) for m in MODELS for t in SHIPPED_TYPES[m]]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(model: str, qtype: str, backend: str) -> mtprun.Model:
        if (model, qtype, backend) not in cache:
            cache[(model, qtype, backend)] = mtprun.load(model_file(model, qtype), backend=backend, n_ctx=256)
        return cache[(model, qtype, backend)]

    return get


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("model,qtype", CASES)
def test_logits_match_exact_reference(models, model, qtype, backend, capsys):
    m = models(model, qtype, backend)
    exact = np.load(FIXTURES / model / "ref" / f"logits-exact-{qtype}.npz")
    llama = np.load(FIXTURES / model / "ref" / f"logits-llamacpp-{qtype}.npz")
    for name, ids in prompts(model).items():
        ours = m.logits(ids)
        err = row_relative_error(ours, exact[name])
        with capsys.disabled():  # reported, not enforced: distance to llama.cpp's quantized arithmetic
            print(f"\n{backend} {model} {qtype} {name}: rel err vs exact {err:.1e}, vs llama.cpp {row_relative_error(ours, llama[name]):.1e}")
        assert err <= EXACT_TOLERANCE, f"{name}: {err}"


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("model,qtype", CASES)
def test_greedy_continuation_matches_exact_reference(models, model, qtype, backend):
    m = models(model, qtype, backend)
    refs = ref_json(model, "greedy32.json")[f"exact-{qtype}"]
    for name, ids in prompts(model).items():
        expected = refs[name]
        got = m.generate(ids, n_predict=len(expected)).tokens
        assert got == expected[: len(got)], name
        assert len(got) == len(expected) or got[-1] in m.tokenizer.eog_ids

