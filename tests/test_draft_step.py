"""A drafting step as one graph (`Context.draft_step`): its drafts, verify logits, hidden states and
caches equal those of the MTP head's and the trunk's passes run one graph at a time, bit for bit."""

from __future__ import annotations

import random

import numpy as np
import pytest

import mtprun
from fixtures import MODELS, backend_params, model_file, needs_fixtures, prompts
from mtprun.runner.context import Context

pytestmark = needs_fixtures


def _start(ctx: Context, ids: list[int]) -> np.ndarray:
    """A fresh context after the prompt pass of ids[:-1] (the MTP head's cache included); returns the
    trunk state before the last token."""
    ctx.reset()
    return ctx.prompt_pass(ids[:-1], 512, ids[-1])[1]


def _one_pass_at_a_time(ctx: Context, tokens, h, start, slot, depth, ids):
    """What `draft_step` computes, each pass its own graph run (the draft loop before the one graph)."""
    out, h_mtp = ctx.mtp(tokens, h, start, [len(tokens) - 1], slot)
    p, shift = start + len(tokens) - 1, start - slot
    drafts = []
    while True:
        drafts.append(int(np.argmax(out[-1])))  # the first of equal logits, as the graph's argmax
        if len(drafts) == depth:
            break
        at = p + len(drafts)
        out, h_mtp = ctx.mtp(drafts[-1:], h_mtp[-1:], at, [0], at - shift)
        h_mtp = h_mtp[-1:]
    out, h = ctx.trunk([tokens[-1]] + drafts, p, list(range(depth + 1)), ids)
    return drafts, out, h


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("name", MODELS)
def test_draft_step_equals_its_passes_run_apart(name, backend):
    m = mtprun.load(model_file(name, "q8_0"), backend=backend, n_ctx=256, max_draft=4)
    ctx, rng = m._ctx, random.Random(name)
    ids = list(prompts(name).values())[0]
    d = m.hparams.n_embd
    for trial in range(4):
        rows, depth, gap = rng.randint(1, 3), rng.randint(1, 4), rng.choice([0, 2])
        ids_out = ctx.greedy_ids and trial % 2 == 0  # token ids where the backend takes the argmax, else logits
        h_last = _start(ctx, ids)
        # the pairs of the rows the step before accepted (their hidden states made up), then the last token's
        h = np.concatenate([rng.choice([-1, 1]) * np.ones((rows - 1, d), np.float32) / (1 + trial), h_last[None]])
        start = len(ids) - rows
        tokens = ids[start:]
        keep = rng.randint(1, depth + 1)  # the verify's snapshots: an accepted prefix commits the same state
        got = ctx.draft_step(tokens, h, start, start - gap, depth, ids_out)
        ctx.commit(keep)
        got_caches = _caches(ctx)
        _start(ctx, ids)
        want = _one_pass_at_a_time(ctx, tokens, h, start, start - gap, depth, ids_out)
        ctx.commit(keep)
        assert got[0] == want[0], (rows, depth, gap)
        assert np.array_equal(got[1], want[1]) and np.array_equal(got[2], want[2]), (rows, depth, gap)
        for state, theirs in _caches(ctx).items():
            for a, b in zip(got_caches[state], theirs):
                assert np.array_equal(a, b), (state, rows, depth, gap)


def _caches(ctx: Context) -> dict[str, tuple[np.ndarray, ...]]:
    return {s.name: ctx.backend.read_state(s.name) for s in ctx._trunk_specs + ctx._mtp_specs}
