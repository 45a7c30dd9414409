"""Choosing the draft depth before each step: fixed, or adaptive (`--spec-draft-n-max auto`).

The adaptive policy keeps decayed estimates of the conditional acceptance a_i at each draft
position (the chance draft i is accepted given drafts 1..i-1 were) and of the step costs measured
on this backend: t_verify(n + 1), the graph run of a step of depth n (a drafting step's drafts and
verify are one graph: `Context.draft_step`; a plain step's, the trunk over one token), and t_draft,
a drafting step's host time before its graph, per draft. It picks the depth n in 0..n_max
maximising expected tokens per second,

    E(n) / (n * t_draft + t_verify(n + 1)),   E(n) = 1 + sum_{k<=n} prod_{i<=k} a_i,

and now and then probes one position deeper than its choice so that estimates do not freeze at 0
(backing off geometrically while probes from that choice keep failing, unless the deeper depth rates
within NEAR_TIE of it, following up soon on one that succeeds: each chosen depth keeps its own pace, so that failed probes deeper than a good depth
do not slow the probes out of plain decoding). A plain step (n = 0) also costs the MTP head's cache row it leaves to write: the
drafting step after a plain stretch writes them all (the catch-up), and that time is the plain
steps', per row, not the draft's.

Per-position estimates cannot see acceptance that depends on where a step starts: text that repeats
a 5-token pattern whose every fifth draft fails accepts all 4 drafts of every depth-4 step once in
phase with it (a failed draft brings the next step in phase), while shallower steps drift through
the failing draft and rate depth 4 low. So, while it drafts, the policy now and then runs a trial: a
few steps at the deepest depth, kept (held) while their measured tokens/s beat what its own choices
measured, until the estimates, which the held steps raise, choose it themselves. The depth never
changes the output: the target's tokens are the same whatever was drafted.
"""

from __future__ import annotations

from collections import deque
from statistics import median
from typing import Protocol

from mtprun.runner.stats import StepRecord

DEFAULT_AUTO_MAX = 4
# Probes one depth deeper than the choice keep the base pace while that depth is rated this close to
# it: there a probe costs little and the estimates are least sure of the order. Backing off there kept
# plain decoding through 100 steps of H100 prose-story (tinycoder q4_k_m) where depth 1 was 1.12x
# plain: a_1, dragged to 0.34 by four misses in a row, met a probe every 64 steps, too few to recover.
NEAR_TIE = 0.9
# A trial or a hold counts as faster than the policy's own steps when its tokens/s are this much higher.
TRIAL_MARGIN = 1.02
# A trial starts only where the estimates rate the deepest depth at least this close to the choice.
# Replaying tinycoder's drafts (#15's replay test): trials whatever the rating left prose-explain at
# 0.944x its best depth (deep trials on prose); at 0.8 its worst prompt is 0.984x; at 0.9 the
# 5-token pattern (test_a_depth_in_phase_with_the_text_is_found) found depth 4 in one run of three.
TRIAL_NEAR = 0.8
_INF = float("inf")


class _Rate:
    """Tokens per second over steps, each step weighing `decay` times the one after it (1: a plain sum)."""

    __slots__ = ("decay", "tokens", "seconds")

    def __init__(self, decay: float, tokens: float = 0.0, seconds: float = 0.0) -> None:
        self.decay, self.tokens, self.seconds = decay, tokens, seconds

    def add(self, tokens: int, seconds: float) -> None:
        self.tokens = self.decay * self.tokens + tokens
        self.seconds = self.decay * self.seconds + seconds

    @property
    def value(self) -> float:
        """0 before any time was counted."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class _Stretch:
    """Steps run at one depth other than the estimates' choice (a trial, a hold), and their rate."""

    __slots__ = ("depth", "steps_left", "rate")

    def __init__(self, depth: int, steps_left: int, rate: _Rate) -> None:
        self.depth, self.steps_left, self.rate = depth, steps_left, rate


class DepthPolicy(Protocol):
    max_depth: int  # 0: never drafts (the MTP head is then not run at all)

    def begin(self) -> None:
        """A generation starts (a new prompt: new text to draft on)."""

    def choose(self, limit: int) -> int:
        """Depth for the next step, at most `limit`."""

    def observe(self, step: StepRecord) -> None:
        """Learn from a finished step (its drafts, acceptance and timings)."""


class FixedDepth:
    def __init__(self, depth: int) -> None:
        self.max_depth = depth

    def begin(self) -> None:
        pass

    def choose(self, limit: int) -> int:
        return min(self.max_depth, limit)

    def observe(self, step: StepRecord) -> None:
        pass


class CostEstimate:
    """A cost, as the median of its last `window` samples. Single steps jitter by tens of percent on
    a busy machine, and a stall or a graph compile lifts one sample, not the estimate. Two estimators
    failed here: a slowly falling average kept a depth's slow early samples (the policy then avoided
    that depth and never sampled it again: 839 of 843 tinycoder steps plain); one that fell to any
    lower sample at once put a cost sampled every step (plain decoding) at its luckiest, below the
    seldom-sampled drafting costs (513 of 654 steps plain where depth 1 was 8% faster)."""

    def __init__(self, window: int = 9) -> None:
        self._samples: deque[float] = deque(maxlen=window)
        self._value: float | None = None  # None: to be computed (a plain step only appends: ~1 us less)

    def add(self, sample: float) -> bool:
        """Returns whether the window is still filling (the median then moves with each sample)."""
        samples = self._samples
        samples.append(sample)
        self._value = None
        return len(samples) < samples.maxlen

    @property
    def samples(self) -> list[float]:
        return list(self._samples)

    @property
    def value(self) -> float | None:
        if self._value is None and self._samples:
            self._value = median(self._samples)
        return self._value


class CatchUpCost:
    """A catch-up's cost as a fixed part plus a part per row: the per-row part is the median of the
    slopes between pairs of the last `window` samples (robust to a stalled one), the fixed part the
    median of what each sample leaves beyond its rows; before two row counts were seen, all of it
    per row. Per-row averages alone put a row of a small catch-up at 3x its cost in a large one, and
    plain decoding, charged a row each step, looked 6% dearer than it was (tinycoder on 2 CPU threads
    then drafted at 61% acceptance, where plain decoding was 9% faster)."""

    def __init__(self, window: int = 9) -> None:
        self._samples: deque[tuple[int, float]] = deque(maxlen=window)
        self._value: tuple[float, float] | None = None

    def add(self, rows: int, seconds: float) -> None:
        self._samples.append((rows, seconds))
        self._value = None

    @property
    def value(self) -> tuple[float, float]:
        """(seconds per row, fixed seconds)"""
        if self._value is None:
            s = list(self._samples)
            slopes = [(b[1] - a[1]) / (b[0] - a[0]) for i, a in enumerate(s) for b in s[i + 1 :] if b[0] != a[0]]
            if slopes:
                row = max(median(slopes), 0.0)
                self._value = row, max(median(t - row * r for r, t in s), 0.0)
            else:
                self._value = (median(t / r for r, t in s) if s else 0.0), 0.0
        return self._value


class AdaptiveDepth:
    def __init__(self, n_max: int = DEFAULT_AUTO_MAX, decay: float = 0.85, cost_window: int = 9,
                 prior_acceptance: float = 0.7, prior_weight: float = 2.0, probe_interval: int = 8,
                 max_probe_interval: int = 1024, follow_up_probe: int = 2, trial_steps: int = 6,
                 trial_interval: int = 32, max_trial_interval: int = 512) -> None:
        self.n_max = self.max_depth = n_max
        # Acceptance follows the text over ~1 / (1 - decay) drafts. Replaying tinycoder's drafts
        # (both prompt orders, CPU and H100 costs), 0.85 kept every prompt within 5% of its best fixed
        # depth (but a 12-token one, 6%); at 0.7-0.8 a few rejections in a row on prose dropped to plain
        # decoding for tens of steps (0.82-0.90x the best depth).
        self.decay = decay
        # Each a_i is a decayed mean of its outcomes, the prior weighing as `prior_weight` outcomes
        # that decay like the rest: a running average started at the prior took 8 rejected drafts to
        # fall to 0.3, so the first steps of a model whose drafts all fail were drafting steps.
        self._hits = [prior_acceptance * prior_weight] * n_max  # decayed sum of outcomes, prior included
        self._weight = [float(prior_weight)] * n_max  # decayed count of outcomes, prior included
        self.acceptance = [prior_acceptance] * n_max
        self._draft = CostEstimate(cost_window)  # a drafting step's host time before its graph, per draft
        self._catch_up = CatchUpCost(cost_window)  # the MTP cache rows a drafting step writes for the plain steps before it
        self._caught_up = False  # a catch-up was seen (its graphs compiled)
        self._verify_estimates: dict[int, CostEstimate] = {}  # verify batch size -> its cost
        self._cost_window = cost_window
        # A backend compiles a graph the first time it meets a shape, so the first step at each verify
        # size (and the first drafting step) is not a cost sample: one such step measured 5x the
        # others, and a size the policy then never chose again kept that cost for good.
        self._warm: set[int] = set()  # verify sizes seen once
        self._drafted = False  # a drafting step was seen
        self.base_probe_interval = probe_interval
        self.max_probe_interval = max_probe_interval
        # Steps between probes from each chosen depth. One shared pace was doubled by the failing
        # probes from depth 1 to 2 on prose, so that when acceptance then dipped and the choice fell
        # to 0, no probe came for up to 256 steps (replaying tinycoder's drafts under an H100's costs:
        # auto at 0.77x the best fixed depth on a prompt where every depth beat plain).
        self.probe_intervals = [probe_interval] * (n_max + 1)
        self.steps_since_probe = 0
        self.follow_up_probe = follow_up_probe  # steps to the next probe after one that paid
        # (the limit, the choice) a probe was made under, and for a generation's opening probe the
        # steps_since_probe it interrupted (else None)
        self._probing: tuple[int, int, int | None] | None = None
        self._opening = False  # no step of this generation yet: plain decoding probes on the first
        # Generations between opening probes: doubled by each that fails, back to 1 on one that holds.
        self.opening_interval, self._generations = 1, 0
        self.max_opening_interval = 64
        # The choice is re-derived when a step drafted (acceptance moved), and from fresh costs every
        # `reevaluate_every` steps (costs drift slowly). Each depth's step cost is kept in a table,
        # rebuilt while a cost's window fills, after `reevaluate_every` new samples, or when the pace
        # of probes out of plain decoding (its share of a catch-up) changes: rebuilding it (medians,
        # interpolated verify sizes) at every drafting step cost ~4 us of Python on this 2-core host,
        # and every 8 plain steps ~0.7 us a step; every 32 steps replays tinycoder's drafts as well.
        self.reevaluate_every = 32
        self._limit = -1  # the limit the choice was derived under (-1: none, re-derive)
        self._best = 0  # the choice
        self._near = False  # the next depth rates within NEAR_TIE of the choice: probe it at the base pace
        self._age = 0  # steps since it was derived
        self._costs: list[float] | None = None  # None: rebuild
        self._samples_since_costs = 0
        # Trials (see the module's text). Replaying tinycoder's int8 q4_k_m drafts under the H100's costs,
        # py-module (the 5-token pattern) 0.85x the best fixed depth -> 0.95x; over 6 replay settings
        # (drafts of q8_0 and of q4_k_m with int8 activations; CPU, H100 and H100 int8 costs) the mean of
        # each setting's worst prompt 0.923 -> 0.946. Trials start only from a drafting choice, so
        # drafts that never hold (plain decoding chosen) pay for none. Their pace is the policy's: doubled
        # by each trial that loses, back to `trial_interval` on one that wins, carried over generations
        # (restarting it with each generation cost the replays 0.94 -> 0.87: deep trials on prose).
        self.trial_steps, self.trial_interval, self.max_trial_interval = trial_steps, trial_interval, max_trial_interval
        self._trial_pace, self._since_trial = trial_interval, 0
        self._trial: _Stretch | None = None  # its rate: the sum over its steps
        self._hold: _Stretch | None = None  # its rate follows its last ~5 steps
        self._own = _Rate(0.9)  # the policy's own steps (probes included), its last ~10
        self._step_kind = "own"  # what chose the step being run: "own", "trial" or "hold"
        # A plain stretch: the steps after a plain choice that nothing can turn into a probe or a new
        # choice before the next probe is due or the choice is re-derived, chosen without deciding
        # anything (its step counts taken in advance; _learn's plain path learns from them). At 0%
        # acceptance each step is plain, and choosing and learning cost ~2 us of a 110-160 us step of
        # the random-weight fixtures (auto 0.97x plain on 2 CPU threads, 0.95-0.97x on the H100).
        self._plain_left = 0  # steps of the stretch still to come
        self.trials_won = self.trials_lost = 0

    # -- model
    def _measured_verify(self) -> dict[int, float]:
        """Measured verify costs by batch size, made non-decreasing in the size (a larger batch does no
        less work): where a size's median is above a larger size's, the two take the median of their
        samples pooled (pool-adjacent-violators), so that a size sampled once, in a stall, does not
        keep its cost while the policy, deterred by it, never samples it again (plain decoding kept at
        6x its cost through a 12-token prompt of replayed tinycoder drafts)."""
        blocks: list[tuple[list[int], list[float], float]] = []  # (sizes, their samples, median)
        for size in sorted(self._verify_estimates):
            samples = self._verify_estimates[size].samples
            blocks.append(([size], samples, self._verify_estimates[size].value))
            while len(blocks) > 1 and blocks[-2][2] > blocks[-1][2]:
                sizes, pooled, _ = blocks.pop()
                sizes_before, pooled_before, _ = blocks.pop()
                blocks.append((sizes_before + sizes, pooled_before + pooled, median(pooled_before + pooled)))
        return {size: value for sizes, _, value in blocks for size in sizes}

    def _verify(self, size: int, costs: dict[int, float]) -> float:
        """Cost of a verify batch from the measured ones (`_measured_verify`): interpolated between
        measured sizes, and beyond them extrapolated by the per-row step of the nearest two, or, with
        one size measured, in proportion to the rows. Holding the nearest cost flat made unmeasured
        sizes look free: deeper depths (a 27B-shaped model jumped to depth 3 at 0% acceptance) and
        plain decoding before its first sample (drafting went on for 8 steps at 0% acceptance on 2 CPU
        threads)."""
        if size in costs:
            return costs[size]
        sizes = sorted(costs)
        if len(sizes) == 1:
            return costs[sizes[0]] * size / sizes[0]
        lower = [s for s in sizes if s < size]
        upper = [s for s in sizes if s > size]
        a, b = (lower[-1], upper[0]) if lower and upper else (upper[0], upper[1]) if upper else (lower[-2], lower[-1])
        per_row = (costs[b] - costs[a]) / (b - a)
        return max(costs[a] + per_row * (size - a), 0.0)

    def step_costs(self) -> list[float]:
        """Seconds of a step at each depth 0..n_max, from the current estimates: its graph (the verify
        size n + 1) and n drafts' host time, or, for a plain step, its share of the catch-up after it."""
        draft, verify = self.draft_cost or 0.0, self._measured_verify()
        return [self._verify(n + 1, verify) + (n * draft if n else self.row_cost) for n in range(self.n_max + 1)]

    def _step_costs(self) -> list[float]:
        """`step_costs`, as last rebuilt (see `_costs`)."""
        if self._costs is None or self._samples_since_costs >= self.reevaluate_every:
            self._costs, self._samples_since_costs = self.step_costs(), 0
        return self._costs

    def rates(self, top: int, acceptance: list[float] | None = None, costs: list[float] | None = None) -> list[float]:
        """Expected tokens/s at depths 0..top, in one pass: E(n) over the step's cost, with each a_i
        in E(n) taken as no larger than the one before it (drafts deeper in a chain are no likelier to
        hold, and the deeper estimates go stale while earlier drafts fail, untested: held at 1, they
        kept depth 4 for 12 steps of rejected drafts). `acceptance`, `costs`: other estimates to rate
        with (by default the current ones)."""
        acceptance = self.acceptance if acceptance is None else acceptance
        costs = self.step_costs() if costs is None else costs
        out = [1.0 / costs[0] if costs[0] > 0 else _INF]
        expected = reach = before = 1.0
        for a, cost in zip(acceptance[:top], costs[1 : top + 1]):
            if a < before:
                before = a
            reach *= before
            expected += reach
            out.append(expected / cost if cost > 0 else _INF)
        return out

    def tokens_per_second(self, n: int) -> float:
        return self.rates(n)[n]

    def best_depth(self, limit: int, cached: bool = False) -> int:
        """The depth of the highest expected tokens/s, at most `limit`; `cached`: with the costs as
        last rebuilt (the policy's own choices), not fresh ones."""
        return self._rated(limit, cached)[0]

    def _rated(self, limit: int, cached: bool) -> tuple[int, list[float] | None]:
        """best_depth and the rates it chose from (None before any cost was measured)."""
        top = min(self.n_max, limit)
        if not self._verify_estimates:
            # nothing measured yet: one draft, whose cost and acceptance are then measured; deeper
            # depths are predicted from there (untested positions keep the prior), so good drafts
            # go deep on the next step, while a model whose drafts fail has paid for one, not n_max
            # (on a 4B-shape model a draft call costs ~1/4 of a verify: starting at 4 cost ~2x)
            return min(top, 1), None
        rates = self.rates(top, costs=self._step_costs() if cached else None)
        return rates.index(max(rates)), rates  # the shallowest of equals

    def predicted_speedup(self) -> float:
        """Expected tokens/s at the current choice over plain decoding (needs verify(1) measured)."""
        if 1 not in self._verify_estimates:
            return float("nan")
        rates = self.rates(self.n_max)
        return max(rates) / rates[0]

    # -- policy
    def begin(self) -> None:
        """Estimates, costs and the pace of probes out of plain decoding carry over between generations
        (resetting that pace each time cost the 0%-acceptance fixtures ~10% in catch-ups); the pace of
        deeper probes restarts (new text: a prompt of code after prose kept depth 1, its probes to 2
        backed off to 128 steps by the prose, where depth 3 was 1.3x faster); a probe or a choice does
        not carry over. A generation that opens in plain decoding probes depth 1 on its first step,
        whatever that pace (a bench prompt whose drafts held opened with 32 plain steps, the pace set by
        the prompt before). A failed opening probe leaves that pace as it was and doubles the generations
        to the next opening probe (one a generation cost tiny-qwen35moe, whose drafts never hold and cost
        2x a plain step, ~3% on 2 CPU threads); one that holds brings them back to every generation."""
        self._end_plain_stretch()
        self._probing, self._limit = None, -1
        self._trial = self._hold = None
        self.probe_intervals[1:] = [self.base_probe_interval] * self.n_max
        self._generations += 1
        self._opening = self._generations >= self.opening_interval

    def choose(self, limit: int) -> int:
        if self._plain_left:
            if limit == self._limit:
                self._plain_left -= 1
                return 0
            self._end_plain_stretch()  # a new limit: the choice is re-derived
        if self._trial is not None:
            self._step_kind = "trial"
            return min(self._trial.depth, limit)
        if self._hold is not None:
            self._step_kind, depth = "hold", min(self._hold.depth, limit)
        else:
            self._step_kind, depth = "own", self._own_choice(limit)
        top = min(self.n_max, limit)
        if not 1 <= depth < top:
            return depth
        self._since_trial += 1  # the pace counts drafting steps that a trial could go deeper than
        if self._probing is None and self._since_trial >= self._trial_pace and self._own.seconds > 0 and self._worth_trying(top, depth):
            self._step_kind, self._since_trial = "trial", 0
            self._trial = _Stretch(top, self.trial_steps, _Rate(1.0))
            return top
        return depth

    def _worth_trying(self, top: int, depth: int) -> bool:
        """Do the estimates rate depth `top` within TRIAL_NEAR of `depth`?"""
        rates = self.rates(top, costs=self._step_costs())
        return rates[top] >= TRIAL_NEAR * rates[depth]

    def _own_choice(self, limit: int) -> int:
        """The estimates' choice, or now and then a probe one deeper."""
        self._age += 1
        if limit != self._limit or self._age > self.reevaluate_every:
            self._derive(limit)
        best = self._best
        self.steps_since_probe += 1
        interval = self.base_probe_interval if self._near else self.probe_intervals[best]
        opening, self._opening = self._opening and not best, False
        if (self.steps_since_probe >= interval or opening) and best < self.n_max and best < limit:
            if opening:
                self._generations = 0
            self._probing = (limit, best, self.steps_since_probe if opening else None)
            self.steps_since_probe = 0
            return best + 1
        if not best and self._probing is None and 1 in self._verify_estimates:
            # plain until the step before the next probe or re-derivation (see _derive's condition)
            stretch = min(interval - self.steps_since_probe, self.reevaluate_every - self._age + 1) - 1
            if stretch > 0:
                self._plain_left = stretch
                self.steps_since_probe += stretch
                self._age += stretch
        return best

    def _end_plain_stretch(self) -> None:
        """Give back the step counts a plain stretch took in advance for its steps not run."""
        self.steps_since_probe -= self._plain_left
        self._age -= self._plain_left
        self._plain_left = 0

    def _derive(self, limit: int) -> None:
        if self._age > self.reevaluate_every:  # costs may have drifted since the table was built
            self._costs = None
        self._limit, self._age = limit, 1
        self._best, self._near = self._choice(limit)

    def _choice(self, limit: int) -> tuple[int, bool]:
        """best_depth (with the cost table), and whether the next depth rates within NEAR_TIE of it."""
        best, rates = self._rated(limit, cached=True)
        return best, rates is not None and best + 1 < len(rates) and rates[best + 1] >= NEAR_TIE * rates[best]

    @property
    def verify_cost(self) -> dict[int, float]:
        """Verify batch size -> seconds, as the policy rates them."""
        return self._measured_verify()

    @property
    def draft_cost(self) -> float | None:
        return self._draft.value

    @property
    def row_cost(self) -> float:
        """A plain step's share of the catch-up after it: its row, and the fixed part spread over the
        steps to the next probe (a stretch lasts at least that long)."""
        row, fixed = self._catch_up.value
        return row + fixed / self.probe_intervals[0]

    def observe(self, step: StepRecord) -> None:
        self._learn(step)
        tokens, seconds = step.accepted + 1, step.draft_seconds + step.verify_seconds
        if self._step_kind == "trial":
            self._after_trial_step(tokens, seconds)
        elif self._step_kind == "hold":
            hold = self._hold
            hold.rate.add(tokens, seconds)
            # it ends when its steps fall behind the policy's own, or when the estimates choose this deep
            if hold.rate.value * TRIAL_MARGIN < self._own.value or self.best_depth(self.n_max, cached=True) >= hold.depth:
                self._hold, self._limit = None, -1
        else:
            self._own.add(tokens, seconds)

    def _after_trial_step(self, tokens: int, seconds: float) -> None:
        """A trial's step counted; after its last, a trial faster than the steps it would replace (the
        hold's, holding, else the policy's own) is held, and the pace of trials follows the outcome."""
        trial = self._trial
        trial.steps_left -= 1
        trial.rate.add(tokens, seconds)
        if trial.steps_left > 0:
            return
        self._trial, self._limit = None, -1
        before = (self._hold.rate if self._hold is not None else self._own).value
        if trial.rate.value > TRIAL_MARGIN * before:
            self._hold = _Stretch(trial.depth, 0, _Rate(0.8, trial.rate.tokens, trial.rate.seconds))
            self._trial_pace = self.trial_interval
            self.trials_won += 1
        else:
            self._trial_pace = min(2 * self._trial_pace, self.max_trial_interval)
            self.trials_lost += 1

    def _learn(self, step: StepRecord) -> None:
        """Acceptance and cost estimates, and the probes' pace, from a finished step."""
        n = len(step.draft)
        if not n and self._probing is None and 1 in self._verify_estimates:
            # a plain step, after the first: its cost is all there is to learn (the common case when
            # drafts fail, where a small model's step is ~150 us and each microsecond here shows)
            self._verify_estimates[1].add(step.verify_seconds)
            return
        accepted = step.accepted
        w, hits, weight, acceptance = self.decay, self._hits, self._weight, self.acceptance
        # Position i was tested iff drafts before it were all accepted.
        for i in range(n if accepted >= n else accepted + 1):
            hits[i] = h = w * hits[i] + (1.0 if accepted > i else 0.0)
            weight[i] = v = w * weight[i] + 1.0
            acceptance[i] = h / v
        # The cost table is rebuilt at the next choice while a cost's window fills (its median moves
        # with each sample), else after `reevaluate_every` samples.
        size = n + 1
        measured = size in self._warm
        if measured:
            estimate = self._verify_estimates.get(size)
            if estimate is None:  # a first sample: costs were guesses until now
                estimate = self._verify_estimates[size] = CostEstimate(self._cost_window)
                self._limit = -1
            if estimate.add(step.verify_seconds):
                self._costs = None
            self._samples_since_costs += 1
        else:
            self._warm.add(size)
        if n:
            # Acceptance moved: re-derive the choice, unless it was the deepest and all its drafts
            # held (every a_i it tested rose: no shallower depth gains on it).
            if accepted < n or n < self.n_max:
                self._limit = -1
            if self._drafted:
                if self._draft.add((step.draft_seconds - step.catch_up_seconds) / n):
                    self._costs = None
                self._samples_since_costs += 1
            self._drafted = True
        if step.catch_up_rows:  # the first catch-up compiles its graphs: no sample
            if self._caught_up:
                self._catch_up.add(step.catch_up_rows, step.catch_up_seconds)
                self._costs = None
            self._caught_up = True
        if self._probing is not None:
            self._after_probe(step, measured)

    def _after_probe(self, step: StepRecord, measured: bool) -> None:
        """A probe that makes its depth the choice resets the pace of the depth it left and of the new
        choice, and the next probe comes soon: good drafts climb a depth every few steps. So does one
        whose new draft was accepted while its estimate is still too low to pay, if drafts that are
        always accepted there would pay (an estimate at 0.2 needs a few such successes to rise; doubling
        the pace after each kept a prompt at plain decoding where depth 1 was faster). One whose new
        draft failed, or that cannot pay at any acceptance (drafts cost more than they gain), makes the
        next probe from that depth rarer. One whose drafts failed before the new position tested nothing
        about it: the pace stays (doubling it there kept a prompt whose every draft was accepted at
        depth 1 for 65 steps). A probe at a batch size not yet measured (its first step is a warm-up, no
        cost sample) is followed by another soon, which measures it."""
        limit, was, paced = self._probing
        self._probing = None
        best, self._near = self._choice(limit)
        self._limit, self._best, self._age = limit, best, 0
        if step.accepted < was:
            return
        if paced is not None:  # an opening probe
            self.opening_interval = 1 if step.accepted else min(2 * self.opening_interval, self.max_opening_interval)
            if not step.accepted:  # the pace of probes out of plain decoding stays as the generations before set it
                self.steps_since_probe = paced
                return
        if not measured:
            self.steps_since_probe = self.probe_intervals[was] - self.follow_up_probe
            return
        if best > was or (step.accepted > was and self._could_pay(was + 1, best)):
            self.probe_intervals[was] = self.probe_intervals[best] = self.base_probe_interval
            self.steps_since_probe = self.base_probe_interval - self.follow_up_probe
        else:
            self.probe_intervals[was] = min(2 * self.probe_intervals[was], self.max_probe_interval)
        if not was:  # a plain step's share of the catch-up follows the pace of probes out of it
            self._costs = None

    def _could_pay(self, depth: int, than: int) -> bool:
        """Would `depth` beat depth `than` if its last draft position were always accepted?"""
        sure = list(self.acceptance)
        sure[depth - 1] = 1.0
        rates = self.rates(depth, sure, self._step_costs())
        return rates[depth] > rates[than]

    def estimates(self) -> dict:
        return {
            "acceptance": [round(a, 4) for a in self.acceptance],
            "draft_seconds": self.draft_cost,
            "catch_up_seconds_per_row": self.row_cost,
            "verify_seconds": self.verify_cost,
            "predicted_speedup": self.predicted_speedup(),
            "trials_won": self.trials_won,
            "trials_lost": self.trials_lost,
            "holding_depth": self._hold.depth if self._hold is not None else None,
        }
