"""Lossless MTP: batch-invariant arithmetic, so drafting never changes a single token."""

from __future__ import annotations

import random

import numpy as np
import pytest

import mtprun
from fixtures import MODELS, backend_param, backend_params, rows_in_batches, model_file, needs_fixtures, prompts

pytestmark = needs_fixtures

_CACHE: dict[tuple[str, str], mtprun.Model] = {}


# Every backend, and the CPU and CUDA backends with int8 activations too ("cpu:q8", "cuda:q8x2"):
# their rounding is batch-invariant as well, so drafting changes no token there either.
BACKENDS = [*backend_params(), *(pytest.param(f"{engine}:{mode}", marks=backend_param(engine).marks)
                                 for engine in ("cpu", "cuda") for mode in ("q8", "q8x2"))]


def _model(name: str, backend: str) -> mtprun.Model:
    if (name, backend) not in _CACHE:
        engine, _, activations = backend.partition(":")
        _CACHE[(name, backend)] = mtprun.load(model_file(name, "q8_0"), backend=engine, n_ctx=512,
                                              activations=activations or "f32")
    return _CACHE[(name, backend)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", MODELS)
def test_rows_are_bitwise_equal_whatever_the_batch(name, backend):
    m = _model(name, backend)
    ids = next(iter(prompts(name).values()))
    prefix, cont = ids[:-5], ids[-5:]
    base_logits, base_h = rows_in_batches(m, prefix, cont, [1, 1, 1, 1, 1])
    for sizes in ([2, 2, 1], [4, 1], [1, 4], [5]):
        logits, h = rows_in_batches(m, prefix, cont, sizes)
        assert np.array_equal(logits, base_logits), sizes
        assert np.array_equal(h, base_h), sizes


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("temp", [0.0, 0.9])
def test_mtp_output_equals_plain_output_on_fixtures(name, temp, backend):
    m = _model(name, backend)
    for ids in prompts(name).values():
        plain = m.generate(ids, n_predict=16, temp=temp, seed=7).tokens
        for depth in (1, 2, 3, 4, "auto"):
            assert m.generate(ids, n_predict=16, temp=temp, seed=7, spec_draft_n_max=depth).tokens == plain, depth


@pytest.mark.parametrize("backend", [backend_param("vulkan"), backend_param("cuda"),
                                     pytest.param("cuda:q8", marks=backend_param("cuda").marks)])
@pytest.mark.parametrize("name", MODELS)
def test_token_ids_from_the_device_are_the_argmax_of_its_logits(name, backend, monkeypatch):
    """Where the backend takes the argmax (greedy drafts and verify batches come back as token ids),
    every token and every draft equals what the host's argmax of the copied logits gives."""
    m = _model(name, backend)
    if not m._ctx.greedy_ids:
        pytest.skip(f"the {backend} backend here does not take the argmax op")
    for ids in prompts(name).values():
        on = m.generate(ids, n_predict=16, spec_draft_n_max=2)
        with monkeypatch.context() as patch:
            patch.setattr(type(m._ctx), "greedy_ids", property(lambda ctx: False))
            off = m.generate(ids, n_predict=16, spec_draft_n_max=2)
        assert on.tokens == off.tokens
        assert [s.draft for s in on.stats.steps] == [s.draft for s in off.stats.steps]


def _generated_prompts(n: int, backend: str, seed: int = 1234) -> list[tuple[str, list[int]]]:
    """Random text (words and symbols, incl. special tokens) and random token ids."""
    rng = random.Random(seed)
    words = ["def", "class", "return", "import", "self", "for", "in", "range", "print", "(", ")", ":", "\n",
             "    ", "the", "a", "of", "x", "=", "+", "1", "0", "if", "else", "<|im_start|>", "<|im_end|>",
             "user", "assistant", "<think>", "é", "数据", "🙂", "\"", "#", "[", "]"]
    out = []
    for i in range(n):
        model = MODELS[i % len(MODELS)] if i % 5 else "tinycoder"
        if i % 2:
            text = "".join(rng.choice(words) + rng.choice(["", " "]) for _ in range(rng.randint(1, 24)))
            ids = _model(model, backend).tokenize(text)
        else:
            ids = [rng.randrange(_model(model, backend).hparams.n_vocab) for _ in range(rng.randint(1, 24))]
        out.append((model, ids))
    return out


@pytest.mark.parametrize("backend", BACKENDS[1:])  # the reference backend runs it on the fixtures
def test_mtp_output_equals_plain_output_on_200_generated_prompts(backend):
    closest_tie = np.inf
    for i, (name, ids) in enumerate(_generated_prompts(200, backend)):
        m = _model(name, backend)
        plain = m.generate(ids, n_predict=10)
        depth = (1, 2, 3, 4, "auto")[i % 5]
        spec = m.generate(ids, n_predict=10, spec_draft_n_max=depth)
        assert spec.tokens == plain.tokens, (name, ids, depth)
        logits = m.logits(ids)[-1]
        top2 = np.sort(logits)[-2:]
        closest_tie = min(closest_tie, float(top2[1] - top2[0]))
    # near-ties occur among 200 prompts and still resolve identically
    assert closest_tie < 1e-2, closest_tie


@pytest.mark.parametrize("backend", backend_params())
def test_a_model_loaded_without_its_mtp_head_decodes_the_same(backend):
    """`load(..., mtp=False)` leaves the head out (no drafting, less memory) and changes no token;
    where the backend counts its device memory, the model holds less of it (each model measured
    alone: the other's buffers freed first, since a device's count covers every model on it)."""
    import gc

    def loaded(mtp: bool) -> tuple[mtprun.Model, int | None]:
        gc.collect()
        m = mtprun.load(model_file("tinycoder", "q8_0"), backend=backend, n_ctx=512, mtp=mtp)
        for ids in prompts("tinycoder").values():
            m.generate(ids, n_predict=16, temp=0.0, spec_draft_n_max="auto" if mtp else 0)
        return m, m.device_memory_bytes()

    # the shared MTP model's tokens first: it then holds device memory through both counts alike
    plain = {name: _model("tinycoder", backend).generate(ids, n_predict=16, temp=0.0).tokens
             for name, ids in prompts("tinycoder").items()}
    without, off = loaded(False)
    assert not without.has_mtp
    assert not any(name.startswith(f"blk.{without.hparams.n_layer}.") for name in without.loaded.weights)
    for name, ids in prompts("tinycoder").items():
        assert without.generate(ids, n_predict=16, temp=0.0).tokens == plain[name]
        assert without.generate(ids, n_predict=16, temp=0.0, spec_draft_n_max="auto").tokens == plain[name]
    del without
    with_head, on = loaded(True)
    assert with_head.has_mtp
    assert (on is None) == (off is None) == (backend in ("numpy", "cpu", "metal")), (on, off)
    assert off is None or off < on
