"""`mtprun bench`: prefill and decode speed, MTP acceptance, and where the time goes, per draft depth.

The measurement returns plain data (one JSON-able dict); `bench_report` formats it as tables. With
`--compare-llama` the same file runs in llama.cpp too, in the same run (see `bench_llama`).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mtprun.native import BACKENDS
from mtprun.runner.adaptive import DEFAULT_AUTO_MAX
from mtprun.runner.cli import add_activations_arg
from mtprun.runner.bench_bandwidth import decode_bandwidth
from mtprun.runner.errors import MtprunError
from mtprun.runner.loader import load_model
from mtprun.runner.speculative import warm_up_catch_up, warm_up_draft_steps
from mtprun.runner.stats import GenerationStats, StepRecord
from mtprun.runner.tokenizer import Tokenizer

DEFAULT_DEPTHS = "0,1,2,3,4,auto"
MAX_DEPTH = 16  # a recurrent-state snapshot is kept per verified token; deeper drafts only cost memory
PREFILL_BATCH = 512  # the decode loop's prefill batch size
# A single small forward jitters by tens of percent; each cost figure is the best of at least -r runs,
# and of more (up to MAX_COST_RUNS) while they fit in this many seconds.
COST_BUDGET_S = 0.5
MAX_COST_RUNS = 50

IDEAL_FORMULA = (
    "ideal = E(n) * t_decode / t_step(n), with E(n) = 1 + sum_{k=1..n} prod_{i<=k} a_i "
    "the expected tokens per step (a_i: acceptance at draft position i given positions 1..i-1 were accepted), "
    "t_decode one trunk forward of 1 token, t_step(n) one drafting step's graph (n chained MTP head passes "
    "and the trunk's forward of n+1 tokens): model forwards only (best of repeated runs), so the gap to the "
    "measured speedup is the loop's overhead"
)


@dataclass(frozen=True)
class BenchPrompt:
    name: str
    kind: str  # "code" or "prose" in the shipped set; any label in a user's file
    text: str


@dataclass(frozen=True)
class BenchConfig:
    model: str
    mtp_model: str | None
    backend: str
    threads: int
    activations: str  # the CPU and CUDA backends' matrix products: "f32", "q8" or "q8x2"
    depths: tuple[int, ...]  # always starts with 0, the baseline
    auto: bool  # also measure the adaptive depth (`--spec-draft-n-max auto`)
    n_prompt: int
    n_gen: int
    repetitions: int
    prompts: tuple[BenchPrompt, ...]
    compare_llama: bool
    llama_mtp: str | None  # llama.cpp's llama-speculative-simple, to measure its draft-mtp decoding too
    n_ctx: int | None


class Progress:
    """One status line on stderr, rewritten in place (only on a terminal, at most 10 times a second)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self._last >= 0.1):
            self._last = now
            sys.stderr.write(f"\r\x1b[Kmtprun bench: {text}")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


# -- command line

def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure prefill / decode speed and MTP acceptance per draft depth",
        description="Benchmark a model: prefill tokens/s with MTP off and on, then for each draft depth "
                    "decode tokens/s, acceptance, speedup over depth 0 beside the ideal speedup, the "
                    "verify/decode cost ratio and the time split. Greedy decoding on a prompt set of code "
                    "and prose.",
        epilog=IDEAL_FORMULA + ".",
    )
    p.add_argument("model", help="GGUF model file")
    p.add_argument("--mtp-model", default=None, help="MTP-only sidecar GGUF for a model without an MTP head")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("-c", "--ctx-size", type=int, default=None, help="context size (default: just what the run needs)")
    p.add_argument("--spec-draft-n-max", default=DEFAULT_DEPTHS, metavar="N[,N...]",
                   help=f"draft depths to measure, comma-separated (default {DEFAULT_DEPTHS}; 0 is always measured)")
    p.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens of the prefill test (default 512)")
    p.add_argument("-n", "--n-gen", type=int, default=128, help="tokens generated per prompt and depth (default 128)")
    p.add_argument("--prompts", default=None, metavar="FILE",
                   help='prompt set: JSON [{"name", "kind", "text"}, ...] or text with prompts separated by "---" lines')
    p.add_argument("-r", "--repetitions", type=int, default=3, help="repetitions of every timing: prefill, costs, and each prompt's decode at each depth (the fastest is kept)")
    p.add_argument("-t", "--threads", type=int, default=os.cpu_count() or 1, help="threads (default: all cores)")
    add_activations_arg(p)
    p.add_argument("--compare-llama", action="store_true", help="also run llama.cpp (llama-cpp-python) on the same file")
    p.add_argument("--llama-mtp", default=None, metavar="PROGRAM",
                   help="with --compare-llama: llama.cpp's llama-speculative-simple program, to also measure "
                        "llama.cpp's draft-mtp decoding at the same depths")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def run_bench(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    progress = Progress()
    try:
        result = run(config, progress)
    finally:
        progress.done()
    if args.json:
        print(json.dumps(result))
    else:
        from mtprun.runner.bench_report import format_report

        print(format_report(result))
    return 0


def parse_depths(text: str) -> tuple[tuple[int, ...], bool]:
    """The fixed depths (0 always included) and whether `auto` is asked for."""
    parts = text.split(",")
    auto = "auto" in parts
    try:
        depths = [int(part) for part in parts if part != "auto"]
    except ValueError:
        raise MtprunError(f"--spec-draft-n-max takes comma-separated draft depths such as {DEFAULT_DEPTHS}, got {text!r}.") from None
    bad = [d for d in depths if not 0 <= d <= MAX_DEPTH]
    if bad:
        raise MtprunError(f"draft depths must be between 0 and {MAX_DEPTH}, got {bad[0]}.")
    return tuple(sorted(set(depths) | {0})), auto


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    if args.llama_mtp and not args.compare_llama:
        raise MtprunError("--llama-mtp measures llama.cpp beside ours: give --compare-llama too.")
    for flag, value in (("-p/--n-prompt", args.n_prompt), ("-n/--n-gen", args.n_gen),
                        ("-r/--repetitions", args.repetitions), ("-t/--threads", args.threads)):
        if value < 1:
            raise MtprunError(f"{flag} must be at least 1, got {value}.")
    return BenchConfig(
        model=args.model, mtp_model=args.mtp_model, backend=args.backend, threads=args.threads,
        activations=args.activations,
        **dict(zip(("depths", "auto"), parse_depths(args.spec_draft_n_max))), n_prompt=args.n_prompt, n_gen=args.n_gen,
        repetitions=args.repetitions, prompts=tuple(load_prompts(args.prompts)),
        compare_llama=args.compare_llama, llama_mtp=args.llama_mtp, n_ctx=args.ctx_size,
    )


def load_prompts(path: str | None) -> list[BenchPrompt]:
    """The shipped prompt set, or a user's file (JSON like the shipped one, or text split on '---' lines)."""
    if path is None:
        text = resources.files("mtprun.runner").joinpath("data/bench_prompts.json").read_text(encoding="utf-8")
        return _prompts_from_json(text, "the shipped prompt set")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MtprunError(f"cannot read prompt file {path} ({getattr(exc, 'strerror', None) or exc}).") from None
    if path.endswith(".json"):
        return _prompts_from_json(text, path)
    parts = [part.strip("\n") for part in "\n".join(text.splitlines()).split("\n---\n")]
    prompts = [BenchPrompt(f"prompt-{i + 1}", "user", part) for i, part in enumerate(parts) if part.strip()]
    if not prompts:
        raise MtprunError(f"prompt file {path} has no prompts.")
    return prompts


def _prompts_from_json(text: str, origin: str) -> list[BenchPrompt]:
    try:
        items = json.loads(text)
        if not isinstance(items, list):
            raise TypeError
        prompts = [BenchPrompt(str(it.get("name", f"prompt-{i + 1}")), str(it.get("kind", "user")), it["text"])
                   if isinstance(it, dict) else BenchPrompt(f"prompt-{i + 1}", "user", it)
                   for i, it in enumerate(items)]
    except (ValueError, TypeError, KeyError, AttributeError):
        raise MtprunError(f"{origin} is not a JSON list of prompts (strings or objects with a \"text\").") from None
    if not prompts or not all(isinstance(p.text, str) and p.text for p in prompts):
        raise MtprunError(f"{origin} has no prompts, or an empty one.")
    return prompts


# -- the measurement

def run(config: BenchConfig, progress: Progress) -> dict:
    """Measure ours (then llama.cpp, if asked) and return everything as plain data."""
    from mtprun.runner.api import load

    if config.compare_llama:
        from mtprun.runner import bench_llama

        bench_llama.import_llama_cpp()  # fail before the long part, not after it
    load_kwargs, threads_note = _thread_kwargs(load, config.threads)
    progress.update("loading the model", force=True)
    # tokenize first (GGUF metadata only), to size the context to what the run needs
    loaded = load_model(config.model, config.mtp_model)
    tokenizer = Tokenizer.from_gguf(loaded.file.reader, str(loaded.path))
    prompt_ids = [tokenizer.tokenize(p.text, special=True) for p in config.prompts]
    depths = config.depths if loaded.has_mtp else (0,)
    del loaded, tokenizer
    if not all(prompt_ids):
        raise MtprunError("a prompt of the set tokenizes to nothing.")
    prefill_ids = _cycle([t for ids in prompt_ids for t in ids], config.n_prompt)
    longest = max(map(len, prompt_ids)) + config.n_gen + max(depths) + 2
    model = load(config.model, backend=config.backend, n_ctx=config.n_ctx or max(config.n_prompt + 1, longest) + 8,
                 mtp_model=config.mtp_model, max_draft=max(*depths, DEFAULT_AUTO_MAX if config.auto else 1), activations=config.activations,
                 **load_kwargs)
    if max(longest, config.n_prompt + 1) > model.n_ctx:
        raise MtprunError(f"context size {model.n_ctx} is too small for {config.n_prompt} prefill tokens, "
                          f"or for the prompts plus {config.n_gen} generated tokens.")

    eog = frozenset(model.tokenizer.eog_ids)
    progress.update("warming up", force=True)
    auto = config.auto and model.has_mtp
    _warm_up(model, prompt_ids[0], max(depths), auto, config.n_gen)
    prefill = _measure_prefill(model, prefill_ids, config.repetitions, progress)
    costs = _measure_costs(model, prompt_ids[0], max(depths), config.repetitions, progress)
    runs, every_run, each_run = _decode_runs(model, config, prompt_ids, [*depths, "auto"] if auto else depths, progress)
    kinds = sorted({p.kind for p in config.prompts})
    rows = [_depth_row(d, runs, config.prompts, costs, kinds) for d in depths]
    if auto:
        rows.append(_auto_row(runs, config.prompts, kinds))
        rows[-1]["paired_by_prompt"] = paired_ratios(each_run, depths)
    for row in rows:
        row["every_run_tokens_per_s"] = every_run[row["depth"]]
        row["by_prompt_every_run"] = each_run[row["depth"]]
    rss_ours = peak_rss_mib()
    bandwidth = decode_bandwidth(model, rows[0]["decode_tokens_per_s"])
    backend_name, has_mtp, n_ctx = model.backend_name, model.has_mtp, model.n_ctx
    memory_on, gpu = model.device_memory_bytes(), backend_name not in ("cpu", "numpy")
    del model  # our weights and caches are released before another model (or llama.cpp) loads
    device_memory = None
    if memory_on is not None and has_mtp:
        progress.update("device memory with MTP off", force=True)
        device_memory = {"mtp_on_bytes": memory_on,
                         "mtp_off_bytes": _device_memory_without_mtp(config, n_ctx, prefill_ids, prompt_ids[0], load_kwargs)}

    result = {
        "model": str(config.model),
        "mtp_model": config.mtp_model,
        "backend": backend_name,
        "has_mtp": has_mtp,
        "threads": {"requested": config.threads, "ours": threads_note},
        "activations": config.activations,
        "n_ctx": n_ctx,
        "n_prompt": config.n_prompt,
        "n_gen": config.n_gen,
        "repetitions": config.repetitions,
        "prompts": [{"name": p.name, "kind": p.kind, "tokens": len(ids)} for p, ids in zip(config.prompts, prompt_ids)],
        "prefill": prefill,
        "costs": costs,
        "depths": rows,
        "ideal_formula": IDEAL_FORMULA,
        "peak_rss_mib": rss_ours,
        "bandwidth": bandwidth,
        "device_memory": device_memory,
        "llama_cpp": None,
    }
    if config.compare_llama:
        llama = bench_llama.measure_llama(config, n_ctx, prefill_ids, prompt_ids, eog, progress, gpu)
        if config.llama_mtp and depths != (0,):
            llama["mtp"] = bench_llama.measure_llama_mtp(config, config.llama_mtp, n_ctx, gpu, progress)
        bench_llama.add_ratios(result, llama)
        result["llama_cpp"] = llama
    return result


def _device_memory_without_mtp(config: BenchConfig, n_ctx: int, prefill_ids: list[int], ids: list[int], load_kwargs: dict) -> int:
    """Device memory of the same model loaded without its MTP head, after the prefill test's prompt
    pass and a plain generation (the graphs those build hold their scratch buffers too)."""
    from mtprun.runner.api import load

    gc.collect()  # the MTP-on model's buffers are freed before this one allocates
    model = load(config.model, backend=config.backend, n_ctx=n_ctx, max_draft=0, activations=config.activations,
                 mtp=False, **load_kwargs)
    model._ctx.prompt_pass(prefill_ids, PREFILL_BATCH, None, logits_last=True)
    model.generate(ids, n_predict=config.n_gen, temp=0.0, spec_draft_n_max=0)
    return model.device_memory_bytes()


def _thread_kwargs(load, threads: int) -> tuple[dict, int | str]:
    """Pass the thread count to our backend when `load` takes one; otherwise say why it is not applied."""
    for name in ("n_threads", "threads"):
        if name in inspect.signature(load).parameters:
            return {name: threads}, threads
    return {}, "not applied: mtprun.load takes no thread count yet, so the backend uses its default"


def _cycle(tokens: list[int], n: int) -> list[int]:
    return [tokens[i % len(tokens)] for i in range(n)]


def _warm_up(model, ids: list[int], max_depth: int, auto: bool, n_gen: int) -> None:
    """One untimed short generation per depth: the first forwards pay one-off costs (graphs, caches);
    then the MTP head's graphs for every row count a step can hand it, and for `auto` those of the
    MTP cache's catch-up after plain steps (up to n_gen rows)."""
    for depth in range(max_depth + 1):
        model.generate(ids, n_predict=depth + 2, temp=0.0, spec_draft_n_max=depth)
    if model.has_mtp and (max_depth or auto):
        warm_up_draft_steps(model._ctx, max(max_depth, DEFAULT_AUTO_MAX if auto else 0), model._ctx.greedy_ids)
    if auto:
        warm_up_catch_up(model._ctx, n_gen)


def best_after_warm_up(times: list[float]) -> float:
    """Best of the repetitions after the first (a warm-up); the least disturbed by other load on the machine."""
    return min(times[1:]) if len(times) > 1 else times[0]


def _measure_prefill(model, ids: list[int], reps: int, progress: Progress) -> dict:
    """Prefill = the decode loop's prompt pass (trunk, logits of the last row); with MTP on, the same
    graphs also write the MTP head's KV cache for every prompt position on the device (and for the
    position after it, paired with a stand-in next token)."""
    ctx = model._ctx
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(reps + 1):
        progress.update(f"prefill {len(ids)} tokens, run {r + 1}/{reps + 1}", force=True)
        for mtp in (False, True) if model.has_mtp else (False,):
            ctx.reset()
            t0 = time.perf_counter()
            ctx.prompt_pass(ids, PREFILL_BATCH, ids[-1] if mtp else None, logits_last=True)
            times[mtp].append(time.perf_counter() - t0)
    ctx.reset()
    off = best_after_warm_up(times[False])
    on = best_after_warm_up(times[True]) if times[True] else None
    return {
        "tokens": len(ids),
        "mtp_off_tokens_per_s": len(ids) / off,
        "mtp_on_tokens_per_s": len(ids) / on if on else None,
        "mtp_on_slowdown": 1 - off / on if on else None,
        "seconds": {"trunk": off, "mtp": on - off if on else None},
    }


def _measure_costs(model, ids: list[int], max_depth: int, reps: int, progress: Progress) -> dict:
    """Trunk forward of k = 1..max_depth+1 tokens and the drafting step of depth n = 1..max_depth (its
    graph: n chained MTP head passes, then the trunk's n+1 tokens), after the prompt, in seconds.
    Nothing is committed, so every repetition starts from the same state."""
    ctx = model._ctx
    ctx.reset()
    past = ids[:-1] or ids
    _, h = ctx.prefill(past, 0, PREFILL_BATCH, logits_last=False)
    n_past, last = len(past), ids[-1]
    trunk, step = [], []
    for k in range(1, max_depth + 2):
        progress.update(f"costs: trunk forward of {k} token(s)", force=True)
        trunk.append(_best_time(reps, ctx.trunk, [last] * k, n_past, list(range(k)), ctx.greedy_ids))  # as decode runs it
    for n in range(1, max_depth + 1 if model.has_mtp else 1):
        progress.update(f"costs: drafting step of depth {n}", force=True)
        step.append(_best_time(reps, ctx.draft_step, [last], h[-1:], n_past, n_past, n, ctx.greedy_ids))
    ctx.reset()
    # index i: a trunk forward of i+1 tokens; a drafting step of depth i+1
    return {"trunk_seconds": trunk, "step_seconds": step}


def timed(fn: Callable[..., object], *args: object) -> float:
    """Wall seconds of one call fn(*args)."""
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _best_time(reps: int, fn, *args) -> float:
    """Best time of fn(*args) over at least reps runs after a warm-up (see COST_BUDGET_S)."""
    timed(fn, *args)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps or (len(times) < MAX_COST_RUNS and time.perf_counter() - start < COST_BUDGET_S):
        times.append(timed(fn, *args))
    return min(times)


def _decode_runs(model, config: BenchConfig, prompt_ids: list[list[int]], depths: Sequence[int | str], progress: Progress
                 ) -> tuple[dict[int | str, list[tuple[GenerationStats, list[int]]]], dict[int | str, float], dict[int | str, list[list[float]]]]:
    """Greedy generation of n_gen tokens for every prompt at every depth: {depth: [(stats, tokens) per prompt]}.
    Each prompt runs `repetitions` times at every depth, the depths alternating, and the fastest run of
    each is kept: a slow spell of the machine hits the depths alike, and is then dropped. Also returns
    each depth's tokens/s over every run (for `auto` the runs are not alike: its first ones learn, and
    probes come in some runs only, so the fastest alone would flatter it), and every run's tokens/s per
    prompt, in repetition order: on a host whose speed swings, ratios of depths run back to back in one
    repetition vary less than ratios of each depth's fastest run."""
    runs: dict[int | str, list[tuple[GenerationStats, list[int]]]] = {d: [] for d in depths}
    each: dict[int | str, list[list[float]]] = {d: [] for d in depths}
    totals = {d: [0, 0.0] for d in depths}  # tokens, decode seconds
    for i, (prompt, ids) in enumerate(zip(config.prompts, prompt_ids)):
        fastest: dict[int | str, tuple[GenerationStats, list[int]]] = {}
        for d in depths:
            each[d].append([])
        for r in range(config.repetitions):
            for depth in depths:
                gen = model.stream(ids, n_predict=config.n_gen, temp=0.0, spec_draft_n_max=depth)
                for j, _ in enumerate(gen, 1):
                    progress.update(f"decode prompt {i + 1}/{len(prompt_ids)} ({prompt.name}), run {r + 1}/{config.repetitions}, "
                                    f"depth {depth}: {j}/{config.n_gen} tokens")
                totals[depth][0] += gen.stats.generated
                totals[depth][1] += gen.stats.decode_seconds
                each[depth][-1].append(gen.stats.decode_tokens_per_s)
                if depth not in fastest or gen.stats.decode_seconds < fastest[depth][0].decode_seconds:
                    fastest[depth] = (gen.stats, gen.tokens)
        for depth in depths:
            runs[depth].append(fastest[depth])
    return runs, {d: n / s if s > 0 else 0.0 for d, (n, s) in totals.items()}, each


def paired_ratios(each_run: dict[int | str, list[list[float]]], depths: Sequence[int]) -> list[dict]:
    """Per prompt, auto against each fixed depth as the median over repetitions of the ratio of the two
    runs of one repetition (run back to back): on a host whose speed swings for seconds at a time, the
    fastest runs of two depths may come from different spells, while a repetition's runs share one.
    Returns, per prompt, auto over plain decoding and over the drafting depth it does worst against."""
    out = []
    for i, auto_runs in enumerate(each_run["auto"]):
        ratio = {d: float(np.median([a / b for a, b in zip(auto_runs, each_run[d][i])])) for d in depths}
        best = min((d for d in depths if d), key=ratio.get, default=0)
        out.append({"vs_plain": ratio[0], "vs_best": ratio[best], "best_depth": best})
    return out


def merge_stats(parts: Sequence[GenerationStats]) -> GenerationStats:
    seconds: dict[str, float] = {}
    for s in parts:
        for k, v in s.seconds.items():
            seconds[k] = seconds.get(k, 0.0) + v
    device = [s.device_seconds for s in parts]
    return GenerationStats(prompt_tokens=sum(s.prompt_tokens for s in parts), generated=sum(s.generated for s in parts),
                           steps=[step for s in parts for step in s.steps], seconds=seconds,
                           device_seconds=None if None in device else sum(device))


def conditional_acceptance(steps: Sequence[StepRecord], depth: int) -> list[float]:
    """a_i: of the steps whose drafts 1..i-1 were all accepted and that drafted an i-th, the share accepting it."""
    rates = []
    for i in range(depth):
        reached = [s for s in steps if len(s.draft) > i and s.accepted >= i]
        rates.append(sum(1 for s in reached if s.accepted > i) / len(reached) if reached else 0.0)
    return rates


def expected_tokens_per_step(a: Sequence[float]) -> float:
    """E(n) = 1 + sum_{k=1..n} prod_{i<=k} a_i."""
    total, run = 1.0, 1.0
    for rate in a:
        run *= rate
        total += run
    return total


def _summary(stats: GenerationStats) -> dict:
    decode_wall = stats.decode_seconds
    return {
        "tokens": stats.generated,
        "decode_tokens_per_s": stats.decode_tokens_per_s,
        # the share of decode wall time the GPU was busy (Vulkan timestamp queries); None where unmeasured
        "device_share": stats.device_seconds / decode_wall if stats.device_seconds is not None and decode_wall > 0 else None,
        "acceptance_rate": stats.acceptance_rate if stats.drafted else None,
        "mean_accepted_length": stats.mean_accepted_length if stats.drafted else None,
    }


def _depth_row(depth: int, runs: dict, prompts: Sequence[BenchPrompt], costs: dict, kinds: list[str]) -> dict:
    stats = merge_stats([s for s, _ in runs[depth]])
    base = merge_stats([s for s, _ in runs[0]])
    a = conditional_acceptance(stats.steps, depth)
    e_n = expected_tokens_per_step(a)
    t1, t_verify = costs["trunk_seconds"][0], costs["trunk_seconds"][depth]
    step_cost = costs["step_seconds"][depth - 1] if depth else t1
    by_kind = {kind: _summary(merge_stats([s for (s, _), p in zip(runs[depth], prompts) if p.kind == kind])) for kind in kinds}
    return {
        "depth": depth,
        **_summary(stats),
        "steps": len(stats.steps),
        "speedup": stats.decode_tokens_per_s / base.decode_tokens_per_s if base.decode_tokens_per_s else None,
        "ideal_speedup": e_n * t1 / step_cost,
        "expected_tokens_per_step": e_n,
        "accepted_per_position": stats.accepted_per_position,
        "conditional_acceptance": a,
        "verify_decode_ratio": t_verify / t1,
        "seconds": {k: stats.seconds.get(k, 0.0) for k in ("prefill", "draft", "verify", "rollback")},
        "same_tokens_as_depth_0": all(t == t0 for (_, t), (_, t0) in zip(runs[depth], runs[0])),
        "by_kind": by_kind,
        "by_prompt": [st.decode_tokens_per_s for st, _ in runs[depth]],
    }


def _auto_row(runs: dict, prompts: Sequence[BenchPrompt], kinds: list[str]) -> dict:
    """The adaptive depth: measured like a fixed depth, plus the depths it chose and what it predicted."""
    stats = merge_stats([s for s, _ in runs["auto"]])
    base = merge_stats([s for s, _ in runs[0]])
    predicted = [s.auto["predicted_speedup"] for s, _ in runs["auto"] if s.auto]
    return {
        "depth": "auto",
        **_summary(stats),
        "steps": len(stats.steps),
        "speedup": stats.decode_tokens_per_s / base.decode_tokens_per_s if base.decode_tokens_per_s else None,
        "ideal_speedup": None,
        "predicted_speedup": float(np.nanmean(predicted)) if predicted and not np.all(np.isnan(predicted)) else None,
        "depth_histogram": stats.depth_histogram,
        "accepted_per_position": stats.accepted_per_position,
        "verify_decode_ratio": None,
        "seconds": {k: stats.seconds.get(k, 0.0) for k in ("prefill", "draft", "verify", "rollback")},
        "same_tokens_as_depth_0": all(t == t0 for (_, t), (_, t0) in zip(runs["auto"], runs[0])),
        "by_kind": {kind: _summary(merge_stats([s for (s, _), p in zip(runs["auto"], prompts) if p.kind == kind]))
                    for kind in kinds},
        "by_prompt": [st.decode_tokens_per_s for st, _ in runs["auto"]],
        # what the policy saw, per prompt and step: [depth, accepted, draft s, verify s, catch-up s, catch-up rows]
        "step_records": [[[len(s.draft), s.accepted, s.draft_seconds, s.verify_seconds, s.catch_up_seconds, s.catch_up_rows]
                          for s in st.steps] for st, _ in runs["auto"]],
    }


def peak_rss_mib() -> float | None:
    """Peak resident set size of this process so far: Linux's VmHWM (this program's own; ru_maxrss
    would carry a parent's peak into a child started by fork and exec), else ru_maxrss (KiB, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 2**10 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
