"""The adaptive draft depth: choices under a simulated cost model, and output never changes."""

from __future__ import annotations

import random
import statistics

import pytest

from mtprun.runner.adaptive import AdaptiveDepth
from fixtures import model_file, needs_fixtures
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
    policy = AdaptiveDepth()
    _simulate(policy, lambda i: 0.0, 200, random.Random(0), chosen)
    tail = chosen[50:]
    assert tail.count(0) / len(tail) > 0.95  # only rare probes draft
    assert max(tail) <= 1
    est = policy.estimates()  # trials go deeper only from a drafting choice: none here
    assert (est["trials_won"], est["trials_lost"], est["holding_depth"]) == (0, 0, None)


def test_full_acceptance_means_the_deepest_depth():
    chosen: list[int] = []
    _simulate(AdaptiveDepth(n_max=4), lambda i: 1.0, 50, random.Random(0), chosen)
    # the first steps measure the costs of depth 1 and of plain decoding (their first step at each
    # batch size is a warm-up), then probes climb
    assert chosen[6:] == [4] * 44


def test_adapts_within_a_few_steps_when_acceptance_changes():
    chosen: list[int] = []
    policy = AdaptiveDepth(n_max=4)
    _simulate(policy, lambda i: 1.0 if i < 60 else 0.0, 90, random.Random(1), chosen)
    assert chosen[50:60] == [4] * 10
    assert max(chosen[60 + 5 : 90]) < 4  # shallower within 5 steps
    assert chosen[60 + 12 : 90].count(0) >= 16  # plain decoding within 12, but for rare probes
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
    for _ in range(1500):
        depth = policy.choose(8)
        chosen.append(depth)
        policy.observe(StepRecord([0] * depth, depth, [0] * (depth + 1), draft_seconds=3.0 * depth, verify_seconds=1.0 + 0.05 * depth))
    assert chosen[100:].count(0) / 1400 > 0.99
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


def test_a_catch_ups_fixed_part_is_spread_over_the_plain_stretch():
    """A catch-up costs a fixed part plus its rows: a plain step is charged its row and the fixed part
    shared by the steps to the next probe (a per-row average charged a small catch-up's fixed part
    to its few rows), also when one catch-up stalled."""
    policy = AdaptiveDepth(n_max=1)
    for rows, stall in ((8, 1), (8, 1), (16, 1), (24, 1), (8, 5), (32, 1)):
        policy.observe(StepRecord([0], 1, [0, 0], draft_seconds=1.0, verify_seconds=1.1,
                                  catch_up_seconds=stall * (0.05 + 0.01 * rows), catch_up_rows=rows))
    for pace in (8, 64):
        policy.probe_intervals[0] = pace
        assert abs(policy.row_cost - (0.01 + 0.05 / pace)) < 1e-9


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



def test_a_verify_cost_above_a_larger_batchs_is_pooled_with_it():
    """A larger verify batch costs no less: plain decoding measured once, in a stall, while drafts were
    chosen, takes the median of its sample and the next size's pooled, instead of its stall for good
    (the policy, deterred by it, would not sample it again)."""
    policy = AdaptiveDepth(n_max=1)
    for _ in range(10):  # depth 1: verify(2) measured 9 times (the first is a warm-up)
        policy.observe(StepRecord([0], 1, [0, 0], draft_seconds=0.3, verify_seconds=1.1))
    for verify in (1.0, 6.0):  # plain: a warm-up, then a sample in a stall
        policy.observe(StepRecord([], 0, [0], 0.0, verify))
    assert policy.verify_cost == {1: 1.1, 2: 1.1}


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


def test_a_new_generation_probes_deeper_again():
    """Prose where depth 1 pays and depth 2 never does backs the probes from depth 1 off; the next
    generation is code whose every draft holds: it must climb to depth 4 within tens of steps, not
    stay at depth 1 until the backed-off probes come (65 steps on an H100 before this)."""
    policy, chosen = AdaptiveDepth(n_max=4), []
    for _ in range(300):
        depth = policy.choose(8)
        accepted = min(depth, 1)
        policy.observe(StepRecord([0] * depth, accepted, [0] * (accepted + 1),
                                  draft_seconds=0.1 * depth, verify_seconds=1.0 + 0.05 * depth))
    assert policy.probe_intervals[1] > 32
    policy.begin()
    _simulate(policy, lambda i: 1.0, 40, random.Random(4), chosen)
    assert chosen[-15:] == [4] * 15


def test_a_new_generation_in_plain_decoding_probes_on_its_first_step():
    """Drafts failed through one generation (plain decoding, probes backed off to the cap); the next
    generation's first step probes depth 1 all the same: when its drafts hold, it drafts within a few
    steps (bench prompts opened with 32 plain steps). A failed opening probe keeps the backed-off pace
    and doubles the generations to the next one (a model whose drafts never hold pays a few, not one
    a generation)."""
    policy, chosen = AdaptiveDepth(n_max=4), []
    _simulate(policy, lambda i: 0.0, 3000, random.Random(5), chosen)
    assert policy.probe_intervals[0] == policy.max_probe_interval and policy.best_depth(8) == 0
    openings = []
    for g in range(40):  # drafts keep failing: opening probes at generations 1, 3, 7, 15, 31
        policy.begin()
        since, chosen = policy.steps_since_probe, []
        _simulate(policy, lambda i: 0.0, 1, random.Random(g), chosen)
        if chosen == [1]:
            openings.append(g)
            assert policy.steps_since_probe == since + 1  # the pace stands
    assert openings == [0, 2, 6, 14, 30]
    assert policy.probe_intervals[0] == policy.max_probe_interval
    for g in range(40, 100):  # drafts hold again: a probe finds it by the next opening one, then drafting goes on
        policy.begin()
        chosen = []
        _simulate(policy, lambda i: 1.0, 12, random.Random(g), chosen)
        if any(chosen):
            break
    assert g <= 62 and chosen[-4:].count(0) == 0


def test_probes_that_fail_before_their_new_position_do_not_back_off():
    """At depth 1 with half its drafts rejected, a probe to depth 2 whose first draft fails says
    nothing of position 2: only probes that reach it count."""
    policy = AdaptiveDepth(n_max=4)
    for _ in range(20):  # depth 1 pays (a1 = 1, every cost measured)
        depth = policy.choose(8)
        accepted = min(depth, 1)
        policy.observe(StepRecord([0] * depth, accepted, [0] * (accepted + 1),
                                  draft_seconds=0.1 * depth, verify_seconds=1.0 + 0.05 * depth))
    pace, probes = policy.probe_intervals[1], 0
    for _ in range(200):
        depth = policy.choose(8)
        probes += depth == 2
        policy.observe(StepRecord([0] * depth, 0, [0], draft_seconds=0.1 * depth, verify_seconds=1.0 + 0.05 * depth)
                       if depth == 2 else StepRecord([0] * depth, depth, [0] * (depth + 1),
                                                     draft_seconds=0.1 * depth, verify_seconds=1.0 + 0.05 * depth))
    assert probes >= 200 // pace - 1 and policy.probe_intervals[1] == pace


def test_plain_stretches_choose_as_deciding_every_step():
    """Plain steps that nothing can turn into a probe or a new choice run as a stretch, chosen
    without deciding (a cost of every step at 0% acceptance): the depths are those of
    a policy deciding every step, through generations, limits shrinking at their ends, acceptance
    moving and jittered costs."""

    class EveryStep(AdaptiveDepth):
        def _own_choice(self, limit: int) -> int:
            best = super()._own_choice(limit)
            self._end_plain_stretch()
            return best

    runs, stretched = [], 0
    for policy in (AdaptiveDepth(n_max=4), EveryStep(n_max=4)):
        rng, chosen = random.Random(11), []
        for g in range(12):
            policy.begin()
            acceptance = (0.0, 0.6, 0.05, 0.9)[g % 4]
            for left in range(150, 0, -1):
                ahead = policy._plain_left
                depth = policy.choose(min(7, left - 1))
                chosen.append(depth)
                stretched += 0 < ahead == policy._plain_left + 1  # a step of a stretch, not decided
                accepted = 0
                while accepted < depth and rng.random() < acceptance:
                    accepted += 1
                policy.observe(StepRecord([0] * depth, accepted, [0] * (accepted + 1), draft_seconds=0.1 * depth * rng.uniform(0.9, 1.2),
                                          verify_seconds=(1.0 + 0.05 * depth) * rng.uniform(0.9, 1.3)))
        runs.append(chosen)
    assert runs[0] == runs[1]
    assert stretched > 500 and 0 < runs[0].count(0) < len(runs[0])


def test_a_near_tie_keeps_probing_at_the_base_pace():
    """Depth 1 at half its drafts accepted rates ~0.97x plain decoding (a draft call costs half a
    verify): plain is chosen, but probes out of it keep the base pace however far an earlier
    stretch backed them off, so that acceptance drifting up is seen within tens of steps (H100
    prose-story: a probe every 64 steps kept plain for 100 steps where depth 1 was 1.12x plain)."""
    policy, outcome = AdaptiveDepth(n_max=1), [0]

    def step() -> int:
        depth = policy.choose(8)
        accepted = 0
        if depth:
            outcome[0] ^= 1  # drafts held every other time: a_1 = 0.5
            accepted = outcome[0]
        policy.observe(StepRecord([0] * depth, accepted, [0] * (accepted + 1),
                                  draft_seconds=0.5 * depth, verify_seconds=1.0 + 0.05 * depth))
        return depth

    for _ in range(200):
        step()
    policy.probe_intervals[0] = policy.max_probe_interval  # as after a stretch of failed probes
    chosen = [step() for _ in range(100)]
    assert chosen.count(0) >= 80  # plain is the choice
    assert chosen.count(1) >= 100 // policy.base_probe_interval - 1


# ---- replaying real drafts: tinycoder's acceptance on the bench prompts under a measured cost shape

# An H100 running tinycoder (bench, 2026-12-06), in decode steps: verify of 1..5 tokens, one MTP
# draft call, a catch-up's fixed part and its part per row.
GPU_SHAPE = (1.0, 1.08, 1.14, 1.21, 1.28), 0.28, 0.28, 0.01
# The same H100 on tinycoder q4_k_m with q8 activations (bench, 2026-12-07: verify/decode 1.13-1.20,
# a draft call ~0.31 of a decode step; catch-up as above).
H100_Q8_SHAPE = (1.0, 1.13, 1.15, 1.17, 1.20), 0.31, 0.28, 0.01


def _draft_matches(model, ids: list[int], n: int) -> list[int]:
    """For each position of the greedy continuation: how many of the MTP head's 4 chained drafts
    there match it (a step there at depth d accepts min(that, d), the same tokens on any backend)."""
    greedy = model.generate(ids, n_predict=n).tokens
    return [model.generate(ids + greedy[:i], n_predict=5, spec_draft_n_max=4).stats.steps[0].accepted
            for i in range(len(greedy) - 1)]


def _replay(matches: list[int], choose, observe=None, shape=GPU_SHAPE) -> float:
    """Tokens per decode-step time over one generation, under a cost shape (verify, draft, catch-up
    fixed part, catch-up row)."""
    verify_costs, draft_cost, catch_up_cost, row_cost = shape
    p = tokens = plain_rows = 0
    seconds = 0.0
    while p < len(matches):
        depth = choose(min(4, len(matches) - p))
        accepted = min(matches[p], depth)
        rows = plain_rows if depth else 0
        catch_up = catch_up_cost + row_cost * rows if rows else 0.0
        draft, verify = draft_cost * depth + catch_up, verify_costs[depth]
        seconds += draft + verify
        plain_rows = 0 if depth else plain_rows + 1
        if observe:
            observe(StepRecord([0] * depth, accepted, [0] * (accepted + 1), draft_seconds=draft, verify_seconds=verify,
                               catch_up_seconds=catch_up, catch_up_rows=rows))
        p += accepted + 1
        tokens += accepted + 1
    return tokens / seconds


def test_a_depth_in_phase_with_the_text_is_found():
    """Text repeating a 5-token pattern whose every fifth draft fails (as tinycoder's py-module
    continuation does): each depth-4 step, once in phase, takes all 4 drafts and the failing token
    as its own, while shallower steps drift through the failing draft, so per-position estimates
    rate depth 4 low (they alone kept depth 2-3: 0.69x depth 4). Trials of the deepest depth find it."""
    matches = [0, 1, 0, 2, 1] * 2 + [4, 4, 3, 2, 1] * 100
    best = max(_replay(matches, lambda limit, d=d: min(d, limit), shape=H100_Q8_SHAPE) for d in range(5))
    assert best == _replay(matches, lambda limit: min(4, limit), shape=H100_Q8_SHAPE)
    policy = AdaptiveDepth(n_max=4)
    for _ in range(3):
        policy.begin()
        assert _replay(matches, policy.choose, policy.observe, shape=H100_Q8_SHAPE) >= 0.9 * best
    assert policy.estimates()["trials_won"] >= 1


@needs_fixtures
def test_auto_on_real_drafts_near_the_best_fixed_depth_of_each_prompt():
    """#15's criterion, replayed: auto within 5% of the best fixed depth on every bench prompt, and
    faster than plain decoding, with one policy over the prompts in turn (twice, the better kept, as
    `mtprun bench -r 2`, 128 tokens a prompt)."""
    import mtprun
    from mtprun.runner.bench import load_prompts

    model = mtprun.load(model_file("tinycoder", "q8_0"), backend="cpu", n_ctx=1024, max_draft=4)
    traces = {p.name: _draft_matches(model, model.tokenize(p.text), 128) for p in load_prompts(None)}
    policy, auto = AdaptiveDepth(n_max=4), {}
    for _ in range(2):
        for name, matches in traces.items():
            policy.begin()
            auto[name] = max(auto.get(name, 0.0), _replay(matches, policy.choose, policy.observe))
    for name, matches in traces.items():
        fixed = [_replay(matches, lambda limit, d=d: min(d, limit)) for d in range(5)]
        assert auto[name] >= 0.95 * max(fixed) and auto[name] > fixed[0], (name, auto[name], fixed)


@needs_fixtures
@pytest.mark.xfail(strict=True, reason="#15, open: replayed, auto is 0.92x the best fixed depth on py-algorithm (a "
                   "33-token continuation), 0.93x on py-class and chat-prose, 0.95x on py-module (0.85x before trials "
                   "of the deepest depth; 0.84x measured on the H100, 2026-12-07)")
def test_auto_near_the_best_fixed_depth_with_int8_q4_k_m_drafts():
    """As `mtprun bench --activations q8 -r 3` runs it on the H100: three runs of each prompt in a row,
    the median of auto over the best fixed depth."""
    import mtprun
    from mtprun.runner.bench import load_prompts

    model = mtprun.load(model_file("tinycoder", "q4_k_m"), backend="cpu", n_ctx=1024, max_draft=4, activations="q8")
    policy, worst = AdaptiveDepth(n_max=4), {}
    for prompt in load_prompts(None):
        matches = _draft_matches(model, model.tokenize(prompt.text), 128)
        best = max(_replay(matches, lambda limit, d=d: min(d, limit), shape=H100_Q8_SHAPE) for d in range(5))
        runs = []
        for _ in range(3):
            policy.begin()
            runs.append(_replay(matches, policy.choose, policy.observe, shape=H100_Q8_SHAPE) / best)
        worst[prompt.name] = statistics.median(runs)
    assert min(worst.values()) >= 0.95, sorted((round(r, 3), name) for name, r in worst.items())
