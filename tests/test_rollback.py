"""Partial rollback: caches after accepting a prefix equal a fresh context fed only that prefix."""

from __future__ import annotations

import random

import numpy as np
import pytest

import mtprun
from fixtures import MODELS, backend_params, model_file, needs_fixtures, prompts
from mtprun.native import create_backend
from mtprun.runner.context import Context
from mtprun.runner.sampling import SamplingParams
from mtprun.runner.speculative import decode
from mtprun.runner.stats import GenerationStats

pytestmark = needs_fixtures


def _caches(ctx: Context, n_past: int) -> dict[str, tuple[np.ndarray, ...]]:
    """Every trunk cache, KV caches cut to the sequence (positions past it are never read)."""
    out = {}
    for spec in ctx._trunk_specs:
        state = ctx.backend.read_state(spec.name)
        out[spec.name] = tuple(s[:n_past] for s in state) if spec.kind == "kv" else state
    return out


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("name", MODELS)
def test_commit_equals_fresh_context_for_random_accept_counts(name, backend):
    loaded = mtprun.load(model_file(name, "q8_0"), backend="numpy", n_ctx=256).loaded
    ctx, fresh = Context(loaded, create_backend(backend), 256, 6), Context(loaded, create_backend(backend), 256, 6)
    rng = random.Random(name)
    seq = list(next(iter(prompts(name).values())))[:12]
    ctx.reset()
    ctx.prefill(seq, 0, 512, logits_last=False)
    for _ in range(6):
        k = rng.randint(1, 4)
        batch = [rng.randrange(loaded.hp.n_vocab) for _ in range(k + 1)]
        accepted = rng.randint(0, k)
        ctx.trunk(batch, len(seq), list(range(k + 1)))
        ctx.commit(accepted + 1)
        seq += batch[: accepted + 1]

        fresh.reset()
        fresh.prefill(seq, 0, 8, logits_last=False)  # small batches: the token-by-token DeltaNet form
        ours, ref = _caches(ctx, len(seq)), _caches(fresh, len(seq))
        for state in ref:
            for a, b in zip(ours[state], ref[state]):
                assert np.array_equal(a, b), (state, k, accepted)


@pytest.mark.parametrize("backend", backend_params())
def test_partial_acceptance_never_reruns_the_trunk(backend):
    m = mtprun.load(model_file("tinycoder", "q8_0"), backend=backend, n_ctx=256)
    backend = m._ctx.backend
    trunk_runs = []
    original = backend.run

    def counting_run(graph, inputs):
        if graph.name.startswith(("trunk", "prompt")):  # the prompt pass runs the trunk too
            trunk_runs.append(len(inputs["tokens"]))
        elif graph.name.startswith("draft_step"):  # the MTP head's passes, then the trunk's verify
            trunk_runs.append(len(inputs["verify_pos"]))
        return original(graph, inputs)

    backend.run = counting_run
    ids = prompts("tinycoder")["chat"]
    gen = m.generate(ids, n_predict=40, spec_draft_n_max=3)
    steps = gen.stats.steps
    assert any(0 < s.accepted < len(s.draft) for s in steps), "the run must include partial acceptances"
    # one prefill batch, then exactly one trunk pass per step, each of 1 + drafts tokens
    assert trunk_runs == [len(ids) - 1] + [1 + len(s.draft) for s in steps]


@pytest.mark.parametrize("backend", backend_params())
def test_mtp_cache_after_prefill_equals_fresh_mtp_pass(backend):
    """The MTP head's KV for the prompt holds (token p, trunk state p-1) for every position."""
    m = mtprun.load(model_file("tinycoder", "q8_0"), backend=backend, n_ctx=256)
    ids = prompts("tinycoder")["class"]
    m.generate(ids, n_predict=2, spec_draft_n_max=1)  # one step that drafts: writes every prompt position
    ours = m._ctx.backend.read_state("mtp_kv")
    ctx = Context(m.loaded, create_backend(backend), 256, 2)
    ctx.reset()
    _, h = ctx.trunk(ids, 0, [])
    ctx.mtp(ids, np.concatenate([np.zeros((1, h.shape[1]), np.float32), h[:-1]]), 0, [])
    ref = ctx.backend.read_state("mtp_kv")
    for a, b in zip(ours, ref):
        assert np.array_equal(a[: len(ids)], b[: len(ids)])


class _ScriptedDepth:
    """Draft depths in a fixed order, then plain decoding."""

    max_depth = 1

    def __init__(self, depths: list[int]) -> None:
        self.depths = depths

    def begin(self) -> None:
        pass

    def choose(self, limit: int) -> int:
        return min(self.depths.pop(0), limit) if self.depths else 0

    def observe(self, step) -> None:
        pass


@pytest.mark.parametrize("backend", backend_params())
def test_mtp_cache_after_plain_steps_is_caught_up_whole(backend):
    """Ten plain steps, then a draft: the head's cache holds (token p, trunk state p-1) for every
    position up to the draft's, as a fresh MTP pass over the sequence writes it."""
    m = mtprun.load(model_file("tinycoder", "q8_0"), backend=backend, n_ctx=256)
    ids = list(prompts("tinycoder")["class"])
    ctx = m._ctx
    steps = GenerationStats()
    out = list(decode(ctx, ids, 12, SamplingParams(), _ScriptedDepth([0] * 10 + [1]), frozenset(), steps))
    assert [len(s.draft) for s in steps.steps][:11] == [0] * 10 + [1]
    upto = len(ids) + 10  # the draft step's first MTP row: (its last token, the trunk state before it)
    ours = ctx.backend.read_state("mtp_kv")
    fresh = Context(m.loaded, create_backend(backend), 256, 2)
    fresh.reset()
    seq = ids + out
    _, h = fresh.trunk(seq, 0, [])
    fresh.mtp(seq[:upto], np.concatenate([np.zeros((1, h.shape[1]), np.float32), h[: upto - 1]]), 0, [])
    for a, b in zip(ours, fresh.backend.read_state("mtp_kv")):
        assert np.array_equal(a[:upto], b[:upto])
