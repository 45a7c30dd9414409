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
    last the token after it): the cache the host-side path writes (trunk states copied out, passed
    back to mtp_kv, in the same batches), bit for bit, and the same last trunk state."""
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
