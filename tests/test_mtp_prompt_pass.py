"""The MTP head's prompt pass (`Context.mtp_kv`, the kv_write op) fills the head's KV cache bit for
bit as a full MTP pass does, on every backend, while computing only keys and values."""

from __future__ import annotations

import numpy as np
import pytest

import mtprun
from fixtures import MODELS, backend_params, model_file, needs_fixtures, prompts

pytestmark = needs_fixtures


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("name", MODELS)
def test_prompt_pass_writes_the_cache_a_full_mtp_pass_writes(name, backend):
    m = mtprun.load(model_file(name, "q8_0"), backend=backend, n_ctx=128)
    ctx = m._ctx
    ids = list(next(iter(prompts(name).values())))[:24]
    caches = []
    for fill in ("mtp", "mtp_kv"):
        ctx.reset()
        _, h = ctx.trunk(ids, 0, [])
        shifted = np.concatenate([np.zeros_like(h[:1]), h[:-1]])  # MTP at p pairs token p with h_{p-1}
        if fill == "mtp":
            ctx.mtp(ids, shifted, 0, [])
        else:
            ctx.mtp_kv(ids, shifted, 0)
        caches.append([a[: len(ids)].copy() for a in ctx.backend.read_state("mtp_kv")])
    assert all(np.abs(a).sum() > 0 for a in caches[1])
    assert all(np.array_equal(a, b) for a, b in zip(*caches))


def test_prompt_graph_leaves_out_the_rest_of_the_layer():
    m = mtprun.load(model_file("tinycoder", "q8_0"), backend="numpy", n_ctx=64)
    ops = [nd.op for nd in m.loaded.graphs.mtp_kv(8).nodes]
    assert ops.count("kv_write") == 1 and "attention" not in ops
    full = sum(nd.op == "matmul" for nd in m.loaded.graphs.mtp(8, []).nodes)
    assert sum(op == "matmul" for op in ops) == 3 < full  # eh_proj, K, V


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("name", MODELS)
def test_prompt_pass_inside_the_trunk_graphs_writes_the_same_cache(name, backend):
    """`Context.prompt_pass` writes the MTP head's cache inside the trunk's own graphs, from the states
    on the device (batches of 7: a batch's last pair takes the next batch's first token, the prompt's
    last the token after it; the first batch's graph also writes position 0's pair, with zeros): the
    cache the host-side path writes (trunk states copied out, passed back to mtp_kv, in the same
    batches), bit for bit, and the same last trunk state."""
    m = mtprun.load(model_file(name, "q8_0"), backend=backend, n_ctx=128)
    ctx = m._ctx
    ids = list(next(iter(prompts(name).values())))[:24]
    head, batch = ids[:-1], 7
    ctx.reset()
    _, h = ctx.prefill(head, 0, batch, logits_last=False)
    ctx.mtp_kv(ids[:1], np.zeros_like(h[:1]), 0)
    for b in range(0, len(head), batch):
        ctx.mtp_kv(ids[b + 1 : b + batch + 1], h[b : b + batch], b + 1)
    want = [a[: len(ids)].copy() for a in ctx.backend.read_state("mtp_kv")]
    ctx.reset()
    _, h_last = ctx.prompt_pass(head, batch, ids[-1])
    got = [a[: len(ids)].copy() for a in ctx.backend.read_state("mtp_kv")]
    assert all(np.abs(a).sum() > 0 for a in got)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert np.array_equal(h_last, h[-1])


class _PlainThenDraft:
    """Plain steps, then depth 2; at the step after the first drafting step, a copy of the MTP cache."""

    max_depth = 2

    def __init__(self, ctx, plain: int) -> None:
        self.ctx, self.plain, self.steps, self.cache, self.drafts = ctx, plain, 0, None, []

    def begin(self) -> None:
        pass

    def choose(self, limit: int) -> int:
        self.steps += 1
        if self.steps == self.plain + 2:
            self.cache = [a.copy() for a in self.ctx.backend.read_state("mtp_kv")]
        return 0 if self.steps <= self.plain else min(2, limit)

    def observe(self, step) -> None:
        self.drafts.append(step.draft)


@pytest.mark.parametrize("backend", backend_params())
def test_a_catch_up_past_its_window_leaves_out_the_oldest_rows(backend, monkeypatch):
    """After more plain steps than the catch-up's window, the MTP head's cache holds the prompt's
    rows, then the window's latest rows and the drafting step's own row at the next slots (their
    true positions in the rotary embeddings): bit for bit the cache built by hand from the trunk's
    states, and the same first draft (the catch-up's padding rows, past them, are never read). The
    tokens are plain decoding's."""
    from mtprun.runner import speculative
    from mtprun.runner.sampling import SamplingParams
    from mtprun.runner.stats import GenerationStats

    window, plain = 12, 20  # the catch-up: 12 of 20 rows, in a batch of 16
    monkeypatch.setattr(speculative, "CATCH_UP_WINDOW", window)
    m = mtprun.load(model_file("tinycoder", "q8_0"), backend=backend, n_ctx=128)
    ctx = m._ctx
    ids = list(next(iter(prompts("tinycoder").values())))[:16]
    policy = _PlainThenDraft(ctx, plain)
    tokens = list(speculative.decode(ctx, ids, 30, SamplingParams(temp=0.0), policy, frozenset(), GenerationStats()))
    assert tokens == m.generate(ids, n_predict=30).tokens and policy.cache is not None

    full, n = ids + tokens, len(ids)
    ctx.reset()
    _, h = ctx.prefill(full[: n + plain], 0, 512, logits_last=False)  # h[p]: the trunk's state at p
    ctx.reset()
    ctx.prompt_pass(ids[:-1], 512, ids[-1])  # slots 0 .. n-1, at their positions
    first = n - 1 + plain - window  # the first row the catch-up keeps (rows from n-1 on are the plain steps')
    rows = list(range(first, n + plain))  # the window, then the drafting step's own row
    ctx.mtp_kv([full[q] for q in rows[:-1]], h[[q - 1 for q in rows[:-1]]], first, n - 1)
    logits, _ = ctx.mtp(full[rows[-1] : rows[-1] + 1], h[rows[-1] - 1][None], rows[-1], [0], n - 1 + window)
    assert policy.drafts[plain][0] == int(np.argmax(logits[0]))
    want = [a[: n + window].copy() for a in ctx.backend.read_state("mtp_kv")]
    got = [a[: n + window] for a in policy.cache]
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("backend", backend_params())
def test_a_catch_up_at_the_end_of_the_context_stays_inside_it(backend):
    """A plain stretch up to the last position a draft fits at, caught up there: its batch's padding
    would run past the context's last slot, and is cut to fit. The tokens are plain decoding's."""
    from mtprun.runner import speculative
    from mtprun.runner.adaptive import FixedDepth
    from mtprun.runner.sampling import SamplingParams
    from mtprun.runner.stats import GenerationStats

    n_ctx = 40
    m = mtprun.load(model_file("tinycoder", "q8_0"), backend=backend, n_ctx=n_ctx)
    def run(ids, policy):  # to the context's end: no end-of-generation token stops it
        return list(speculative.decode(m._ctx, ids, 100, SamplingParams(temp=0.0), policy, frozenset(), GenerationStats()))

    for n in range(4, 12):  # catch-ups of n_ctx - 2 - n rows: every remainder of the batch size
        ids = list(next(iter(prompts("tinycoder").values())))[:n]
        policy = _PlainThenDraft(m._ctx, n_ctx - 3 - (n - 1))  # the draft at position n_ctx - 3
        assert run(ids, policy) == run(ids, FixedDepth(0)) and any(policy.drafts), n
