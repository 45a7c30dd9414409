"""The decode loop, with MTP drafting (llama.cpp's draft-mtp semantics) or without.

Step structure (as `llama-speculative-simple`): the prompt minus its last token is prefilled; each
step then drafts up to n tokens by chaining the MTP head from (last token, trunk state before it),
verifies [last token, drafts...] in one trunk batch, keeps the longest prefix of drafts that equal
the target's own choices, emits the target's next token, and rolls the caches back to it. Drafting
and verifying are one graph run (`Context.draft_step`): nothing crosses to the host between the
passes, where a GPU would otherwise wait on the host's round trip after each draft.

The MTP head's KV cache must hold, for every position p, the pair (token p, trunk state at p-1).
Chained drafts write MTP-made states at their positions; those entries are rewritten from the
trunk's states for the positions that were accepted, batched into the next step's first MTP call
(one MTP batch per step instead of llama.cpp's extra full-batch pass). Positions decoded by plain
steps (depth 0) are caught up the same way before the next draft; past a few, only their cache
entries are written (kv_write), as for the prompt, and past CATCH_UP_WINDOW only the latest: the
head's cache then skips positions, so its entries sit at slots (position minus the positions skipped
so far) while rotary embeddings keep the true positions.
"""

from __future__ import annotations

import time
from typing import Iterator, Sequence

import numpy as np

from mtprun.runner.adaptive import AdaptiveDepth, DepthPolicy, FixedDepth
from mtprun.runner.context import Context
from mtprun.runner.sampling import SamplingParams, sample_token
from mtprun.runner.stats import GenerationStats, StepRecord

# Rows the first MTP call of a drafting step runs whole; more (after plain steps) first have their
# cache entries written alone, which costs about a quarter of a whole pass.
FULL_CATCH_UP = 4
# Rows of a plain stretch the catch-up writes, the latest: older ones are left out of the head's
# cache. A model whose drafts fail probes rarely (up to 1024 steps apart), and writing every row of
# such stretches cost 4% of plain decoding on 2 CPU threads (tiny-qwen35moe: 8.5 us a row, 199 us a
# step). The trunk's state in each row carries the context the left-out rows held.
CATCH_UP_WINDOW = 64
# The catch-up is one batch, of a multiple of this many rows: in power-of-two batches (15 rows: 8, 4,
# 2 and 1), the small ones cost 2-4x a row of a large one, and a real catch-up's rows cost 9-27 us
# against 5-6 us in one batch (tinycoder, 2 CPU threads).
CATCH_UP_BATCH = 8


def decode(
    ctx: Context,
    prompt: Sequence[int],
    n_predict: int,
    sampling: SamplingParams,
    draft_depth: int | DepthPolicy,
    eog_ids: frozenset[int],
    stats: GenerationStats,
    n_batch: int = 512,
) -> Iterator[int]:
    """Yield generated token ids as they are accepted (an end-of-generation token is yielded, then stops)."""
    if not prompt:
        raise ValueError("the prompt is empty")
    if n_predict <= 0:
        return
    policy = FixedDepth(draft_depth) if isinstance(draft_depth, int) else draft_depth
    use_mtp = ctx.model.has_mtp and policy.max_depth > 0
    # Greedy target tokens read token ids where the backend takes the argmax: a few bytes cross to the
    # host, not rows of the vocabulary (drafts are argmaxes inside the step's graph on every backend).
    verify_ids = ctx.greedy_ids and sampling.greedy
    d_model = ctx.model.hp.n_embd
    stats.prompt_tokens = len(prompt)
    stats.policy = policy if isinstance(policy, AdaptiveDepth) else None
    policy.begin()
    # wall time per phase, kept up to date as the steps run
    seconds = stats.seconds = {"prefill": 0.0, "draft": 0.0, "verify": 0.0, "rollback": 0.0}
    ctx.reset()

    t0 = time.perf_counter()
    pending_h = np.zeros(d_model, np.float32)  # trunk state before the position of `last`
    mtp_rows: list[tuple[int, np.ndarray]] = []  # MTP KV rows still to write, at positions mtp_next..
    mtp_next = 0
    mtp_gap = 0  # positions left out of the MTP head's cache: position p's row is at slot p - mtp_gap
    if len(prompt) > 1:
        head = list(prompt[:-1])
        # with MTP, its KV for the prompt too: (token p, trunk state p-1) at every position, up to the
        # last token's (rewritten, the same, by the first drafting step, which needs its logits)
        _, pending_h = ctx.prompt_pass(head, n_batch, int(prompt[-1]) if use_mtp else None)
        if use_mtp:
            mtp_next = len(head)
    seconds["prefill"] += time.perf_counter() - t0
    device_start = ctx.device_seconds()

    last, n_past, produced = int(prompt[-1]), len(prompt) - 1, 0
    max_snap = ctx.max_snapshots
    learned = 0.0  # the policy's learning from the step before, a cost of every step: charged to the next one's verify
    while True:
        t_step = time.perf_counter()
        cap = min(ctx.n_ctx - n_past - 2, n_predict - produced - 1, max_snap - 1)
        depth = policy.choose(max(cap, 0)) if use_mtp else 0
        drafts: list[int] = []
        catch_up_seconds, catch_up_rows = 0.0, 0
        if depth > 0:
            rows = mtp_rows + [(last, pending_h)]
            if len(rows) > FULL_CATCH_UP:  # after plain steps: their cache entries only (_catch_up)
                t_catch_up, catch_up_rows = time.perf_counter(), len(rows) - 1
                mtp_next, mtp_gap = _catch_up(ctx, rows[:-1], mtp_next, mtp_gap)
                rows = rows[-1:]
                catch_up_seconds = time.perf_counter() - t_catch_up
        elif use_mtp:
            mtp_rows.append((last, pending_h))
        # the step's graph: drafting and verifying in one run where it drafts (its time is the verify's)
        t_verify_start = time.perf_counter()
        seconds["draft"] += t_verify_start - t_step
        if n_past + depth + 1 > ctx.n_ctx:
            return
        if depth > 0:
            drafts, out, h = ctx.draft_step([r[0] for r in rows], np.stack([r[1] for r in rows]), mtp_next,
                                            mtp_next - mtp_gap, depth, verify_ids)
            mtp_rows, mtp_next = [], n_past + 1
        else:
            out, h = ctx.trunk([last], n_past, [0], verify_ids)
        batch = [last] + drafts
        emitted: list[int] = []
        for i in range(len(batch)):
            tok = int(out[i]) if verify_ids else sample_token(out[i], sampling, n_past + i + 1)
            emitted.append(tok)
            # stop at the first disagreement; a draft equal to an end-of-generation token is kept only
            # as the last draft (as llama.cpp), since nothing after it is ever emitted
            if i == len(drafts) or tok != drafts[i] or (tok in eog_ids and i + 1 < len(drafts)):
                break
        accepted = len(emitted) - 1
        t_rollback = time.perf_counter()
        seconds["verify"] += t_rollback - t_verify_start

        ctx.commit(accepted + 1)
        if accepted:
            mtp_rows.extend(zip(drafts[:accepted], h[:accepted]))
        pending_h = h[accepted]
        t_step_end = time.perf_counter()
        seconds["rollback"] += t_step_end - t_rollback

        n_past += accepted + 1
        last = emitted[-1]
        # the policy weighs whole steps: choosing, drafting (with catch-up) / verifying, sampling, rollback
        step = StepRecord(drafts, accepted, emitted, t_verify_start - t_step, t_step_end - t_verify_start + learned,
                          catch_up_seconds, catch_up_rows)
        stats.steps.append(step)
        policy.observe(step)
        learned = time.perf_counter() - t_step_end  # with the step's record
        seconds["draft"] += learned  # learning is part of choosing the depth
        for tok in emitted:
            produced += 1
            stats.generated = produced
            if device_start is not None:
                stats.device_seconds = ctx.device_seconds() - device_start
            yield tok
            if tok in eog_ids:
                return
        if produced >= n_predict or n_past + 1 >= ctx.n_ctx:
            return


def warm_up_draft_steps(ctx: Context, max_depth: int, ids: bool) -> None:
    """Build the drafting steps' graphs ahead of time, as a benchmark's warm-up does for the plain
    step's: a drafting step's graph is built for its depth and for the rows its MTP head's first pass
    takes (those the step before accepted plus one, or after plain steps theirs: up to FULL_CATCH_UP),
    and a backend pays once for each. A short warm-up generation meets only some of them: the first
    repetition of the first prompts ran 3-9% slower at depths 1-3 (tinycoder on the H100). `ids`: the
    greedy steps' graphs (`Context.greedy_ids`). Writes scratch rows into the caches, which every
    generation resets."""
    d = ctx.model.hp.n_embd
    for depth in range(1, max_depth + 1):
        for rows in range(1, FULL_CATCH_UP + 1):
            ctx.draft_step([0] * rows, np.zeros((rows, d), np.float32), 0, 0, depth, ids)


def warm_up_catch_up(ctx: Context, max_rows: int) -> None:
    """Build the catch-up's graphs (each batch size up to `max_rows`) ahead of time, as a benchmark's
    warm-up does for the step graphs: a backend pays once for each new batch size, and the first
    plain stretches of a run would otherwise pay it. Writes scratch rows into the MTP cache, which
    every generation resets."""
    scratch = (0, np.zeros(ctx.model.hp.n_embd, np.float32))
    for size in range(CATCH_UP_BATCH, min(max_rows, CATCH_UP_WINDOW) + CATCH_UP_BATCH, CATCH_UP_BATCH):
        _catch_up(ctx, [scratch] * size, 0, 0)


def _catch_up(ctx: Context, rows: list[tuple[int, np.ndarray]], start: int, gap: int) -> tuple[int, int]:
    """The MTP head's cache entries for (token, trunk state) rows at positions start.. (slots
    start - gap..), the last CATCH_UP_WINDOW of them, in one batch; returns the next position and the
    gap grown by the rows left out. The batch is padded to a multiple of CATCH_UP_BATCH rows (few graphs
    to build): the padding lands on the slots after the rows, which the next MTP call and drafts write
    before anything reads them, as after any rollback."""
    skip = max(len(rows) - CATCH_UP_WINDOW, 0)
    start, gap, rows = start + skip, gap + skip, rows[skip:]
    size = min(-(-len(rows) // CATCH_UP_BATCH) * CATCH_UP_BATCH, ctx.n_ctx - start)
    batch = rows + rows[-1:] * (size - len(rows))
    ctx.mtp_kv([r[0] for r in batch], np.stack([r[1] for r in batch]), start, start - gap)
    return start + len(rows), gap
