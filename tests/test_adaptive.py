"""The adaptive draft depth: choices under a simulated cost model, and output never changes."""

from __future__ import annotations

import random

from mtprun.runner.adaptive import AdaptiveDepth
from mtprun.runner.stats import StepRecord


def _simulate(policy: AdaptiveDepth, acceptance, steps: int, rng: random.Random, chosen: list[int]) -> None:
    """Each draft position is accepted with probability acceptance(step); verify costs grow slowly
    with the batch, a draft call costs a tenth of a one-token verify."""
    for i in range(steps):
        depth = policy.choose(8)
        chosen.append(depth)
        accepted = 0
        while accepted < depth and rng.random() < acceptance(i):
            accepted += 1
        policy.observe(StepRecord([0] * depth, accepted, [0] * (accepted + 1),
                                  draft_seconds=0.1 * depth, verify_seconds=1.0 + 0.05 * depth))


def test_no_acceptance_means_plain_decoding():
    chosen: list[int] = []
    _simulate(AdaptiveDepth(), lambda i: 0.0, 200, random.Random(0), chosen)
    tail = chosen[50:]
    assert tail.count(0) / len(tail) > 0.95  # only rare probes draft
    assert max(tail) <= 1


def test_full_acceptance_means_the_deepest_depth():
    chosen: list[int] = []
    _simulate(AdaptiveDepth(n_max=4), lambda i: 1.0, 50, random.Random(0), chosen)
    assert chosen[5:] == [4] * 45


def test_adapts_within_a_few_steps_when_acceptance_changes():
    chosen: list[int] = []
    policy = AdaptiveDepth(n_max=4)
    _simulate(policy, lambda i: 1.0 if i < 60 else 0.0, 90, random.Random(1), chosen)
    assert chosen[50:60] == [4] * 10
    assert chosen[60 + 8 : 90].count(0) >= 18  # drops to plain decoding within ~8 steps
    chosen.clear()
    _simulate(policy, lambda i: 1.0, 80, random.Random(2), chosen)
    assert chosen[-20:] == [4] * 20  # and climbs back once probes succeed


def test_prediction_uses_measured_costs():
    policy = AdaptiveDepth(n_max=2)
    _simulate(policy, lambda i: 1.0, 40, random.Random(3), [])
    for _ in range(2):  # plain steps measure verify(1) (the first one at a new size is a warm-up)
        policy.observe(StepRecord([], 0, [0], 0.0, 1.0))
    est = policy.estimates()
    assert est["acceptance"][0] > 0.9 and est["verify_seconds"][1] > 0
    # E(2) = 3 tokens for 2 draft calls + verify(3): (3 / (0.2 + 1.1)) / (1 / 1.0) = 2.3
    assert abs(est["predicted_speedup"] - 3 / 1.3) < 0.15


def test_accepted_drafts_that_cost_more_than_they_gain_make_probes_rare():
    """Drafts always accepted, but a draft call costs three one-token verifies: plain decoding is
    faster, and probes that confirm it back off instead of resetting the pace."""
    policy, chosen = AdaptiveDepth(n_max=4), []
    for _ in range(400):
        depth = policy.choose(8)
        chosen.append(depth)
        policy.observe(StepRecord([0] * depth, depth, [0] * (depth + 1), draft_seconds=3.0 * depth, verify_seconds=1.0 + 0.05 * depth))
    assert chosen[100:].count(0) / 300 > 0.98
    assert policy.probe_intervals[0] == policy.max_probe_interval


def test_one_policy_carries_over_between_generations():
    import mtprun
    from mtprun.runner.demo import demo_model_path

    m = mtprun.load(demo_model_path(), backend="numpy", n_ctx=64)
    first = m._depth_policy("auto")
    assert m._depth_policy("auto") is first and m._depth_policy(2) is not first


def test_first_steps_at_a_new_size_are_not_cost_samples():
    """A backend compiles a graph the first time it meets a batch size: those steps are slow once,
    and must not decide the depth for the rest of the generation."""
    policy, seen = AdaptiveDepth(n_max=4), set()
    rng = random.Random(2)
    for _ in range(60):
        depth = policy.choose(8)
        accepted = 0
        while accepted < depth and rng.random() < 0.5:
            accepted += 1
        compile_cost = 30.0 if depth not in seen else 0.0
        seen.add(depth)
        policy.observe(StepRecord([0] * depth, accepted, [0] * (accepted + 1),
                                  draft_seconds=0.5 * depth, verify_seconds=1.0 + 0.05 * depth + compile_cost))
    assert max(policy.verify_cost.values()) < 1.5 and policy.draft_cost < 1.0


def test_catch_up_is_charged_to_the_plain_steps_it_follows():
    """The first drafting step after a plain stretch writes the head's cache for every plain step:
    that time is a per-row cost of plain steps, not the draft's (it made rare probes look dear)."""
    policy = AdaptiveDepth(n_max=1)
    for rows in (64, 64, 32):
        policy.observe(StepRecord([0], 1, [0, 0], draft_seconds=0.1 + 0.01 * rows, verify_seconds=1.1,
                                  catch_up_seconds=0.01 * rows, catch_up_rows=rows))
    assert abs(policy.draft_cost - 0.1) < 1e-9
    assert abs(policy.row_cost - 0.01) < 1e-9  # the first catch-up (its graphs compiling) is no sample
    for _ in range(2):
        policy.observe(StepRecord([], 0, [0], 0.0, 1.0))
    assert abs(policy.tokens_per_second(0) - 1 / 1.01) < 1e-9


def test_costs_are_medians_of_recent_samples():
    """A stall lifts one sample, not the estimate; slow early samples leave it within a window; and a
    cost sampled every step is not estimated below one sampled seldom for its lucky samples."""
    policy = AdaptiveDepth(n_max=1, cost_window=5)
    rng = random.Random(7)
    for i in range(200):  # plain steps: every one a sample
        policy.observe(StepRecord([], 0, [0], 0.0, 1.0 + 0.2 * rng.random()))
    for verify in (9.0, 3.0, 3.0):  # drafting steps: a warm-up, then two slow early samples
        policy.observe(StepRecord([0], 1, [0, 0], draft_seconds=0.1, verify_seconds=verify))
    assert policy.verify_cost[2] == 3.0
    for verify in (1.3, 1.3, 1.3, 50.0):  # normal samples push them out; a stall does not count
        policy.observe(StepRecord([0], 1, [0, 0], draft_seconds=0.1, verify_seconds=verify))
    assert policy.verify_cost[2] == 1.3
    assert policy.verify_cost[1] > 1.02  # the plain cost: a median of recent samples, not the luckiest of 200 (~1.0)



def test_failed_deeper_probes_do_not_slow_the_probes_out_of_plain_decoding():
    """Depth 1 pays and depth 2 never does (its probes fail and back off); a stretch of rejected
    drafts then makes the choice plain; when drafts are good again, the probes out of plain decoding
    come at their own pace: depth 1 is back within a few tens of steps, not the hundreds that the
    deeper probes' back-off had grown to."""
    policy, chosen = AdaptiveDepth(n_max=4), []
    for i in range(400):
        depth = policy.choose(8)
        chosen.append(depth)
        good = not 300 <= i < 320
        accepted = min(depth, 1) if good else 0
        policy.observe(StepRecord([0] * depth, accepted, [0] * (accepted + 1),
                                  draft_seconds=0.1 * depth, verify_seconds=1.0 + 0.05 * depth))
    assert max(policy.probe_intervals[1:]) > 32  # the deeper probes backed off
    assert chosen[315:320].count(0) == 5  # plain while drafts were rejected
    assert 1 in chosen[320:350]
