"""`mtprun bench`: one tiny run on tinycoder checks every reported field; bad flags are user errors."""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import time

import pytest

from mtprun.runner import bench
from mtprun.runner.errors import MtprunError
from mtprun.runner.loader import load_model
from mtprun.runner.models.qwen35 import decode_weight_bytes
from tests.fixtures import model_file, needs_fixtures, prompts

DEPTH_FIELDS = {
    "depth", "tokens", "decode_tokens_per_s", "acceptance_rate", "mean_accepted_length", "steps", "speedup",
    "ideal_speedup", "expected_tokens_per_step", "accepted_per_position", "conditional_acceptance",
    "verify_decode_ratio", "seconds", "same_tokens_as_depth_0", "by_kind", "device_share",
    "by_prompt", "every_run_tokens_per_s", "by_prompt_every_run",
}


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mtprun")
    bench.add_bench_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def _run_json(capsys, *argv: str) -> dict:
    assert bench.run_bench(_args(str(model_file("tinycoder", "q8_0")), *argv, "--json")) == 0
    return json.loads(capsys.readouterr().out)


@needs_fixtures
def test_bench_reports_every_field(capsys):
    r = _run_json(capsys, "-p", "16", "-n", "8", "--spec-draft-n-max", "0,1", "-r", "1", "-t", "2")
    assert r["has_mtp"] and r["llama_cpp"] is None and r["peak_rss_mib"] > 0
    assert r["device_memory"] is None if r["backend"] in ("cpu", "numpy") else r["device_memory"]["mtp_off_bytes"] > 0
    assert "E(n)" in r["ideal_formula"]
    kinds = {p["kind"] for p in r["prompts"]}
    assert kinds == {"code", "prose"} and all(p["tokens"] > 0 for p in r["prompts"])

    pre = r["prefill"]
    assert pre["tokens"] == 16
    assert pre["mtp_off_tokens_per_s"] > 0 and pre["mtp_on_tokens_per_s"] > 0
    # the share of prefill speed lost with MTP on (a timing: on a tiny prompt it can come out negative)
    assert abs(pre["mtp_on_slowdown"] - (1 - pre["mtp_on_tokens_per_s"] / pre["mtp_off_tokens_per_s"])) < 1e-9

    assert len(r["costs"]["trunk_seconds"]) == 2 and len(r["costs"]["step_seconds"]) == 1
    assert [d["depth"] for d in r["depths"]] == [0, 1]
    for d in r["depths"]:
        assert set(d) == DEPTH_FIELDS
        assert d["tokens"] == 8 * len(r["prompts"]) and d["decode_tokens_per_s"] > 0
        assert set(d["seconds"]) == {"prefill", "draft", "verify", "rollback"}
        assert d["same_tokens_as_depth_0"]  # drafting never changes greedy output
        assert set(d["by_kind"]) == kinds
        assert len(d["by_prompt"]) == len(r["prompts"]) and all(v > 0 for v in d["by_prompt"])
        # every repetition counted, the slower ones too: no faster than the fastest run of each prompt
        assert 0 < d["every_run_tokens_per_s"] <= d["decode_tokens_per_s"] * 1.000001
        # each prompt's runs in order, the fastest of them its by_prompt figure
        assert [max(runs) for runs in d["by_prompt_every_run"]] == d["by_prompt"]
    d0, d1 = r["depths"]
    bw = r["bandwidth"]
    assert bw["decode_bytes_per_s"] == pytest.approx(bw["weight_bytes_per_token"] * d0["decode_tokens_per_s"])
    if r["backend"] == "cpu":  # the CPU backend measures its read bandwidth
        assert bw["ceiling_bytes_per_s"] > 0 and bw["share"] == pytest.approx(bw["decode_bytes_per_s"] / bw["ceiling_bytes_per_s"])
    assert d0["speedup"] == d0["ideal_speedup"] == d0["verify_decode_ratio"] == 1.0
    assert d0["acceptance_rate"] is None and d0["accepted_per_position"] == []
    assert 0 < d1["acceptance_rate"] <= 1  # tinycoder's drafts are real: some are accepted
    assert d1["mean_accepted_length"] == pytest.approx(1 + d1["acceptance_rate"])
    assert d1["accepted_per_position"] == d1["conditional_acceptance"] == [d1["acceptance_rate"]]
    assert d1["expected_tokens_per_step"] == pytest.approx(1 + d1["acceptance_rate"])
    assert d1["speedup"] > 0 and d1["ideal_speedup"] > 0 and d1["verify_decode_ratio"] > 0


@needs_fixtures
def test_the_warm_up_builds_every_mtp_graph_a_step_uses():
    """After the warm-up, the timed generations build no graph of a decode step (trunk, MTP head, its
    cache's catch-up; prompt passes are timed apart): a first build (on CUDA, a graph capture) would
    fall inside a timed run, at whichever row counts its acceptance met first."""
    import mtprun

    m = mtprun.load(model_file("tinycoder", "q8_0"), backend="cpu", n_ctx=1024, max_draft=3, threads=2)
    ids = list(prompts("tinycoder").values())
    bench._warm_up(m, ids[0], 3, True, 32)

    def step_graphs() -> set:
        return {key for key in m._ctx._graphs if key[0] != "prompt"}

    built = step_graphs()
    for prompt in ids[:3]:
        for depth in (0, 1, 2, 3, "auto"):
            m.generate(prompt, n_predict=32, temp=0.0, spec_draft_n_max=depth)
    assert step_graphs() == built


@needs_fixtures
@pytest.mark.parametrize("family", ["tinycoder", "tiny-qwen35moe"])
def test_decode_weight_bytes_count_trunk_and_head_once(family):
    """Bytes a decode step reads, from the file's own tensor list: the MTP block's tensors are left
    out, an untied embedding table too (one row is read), and routed experts count at their used share."""
    loaded = load_model(model_file(family, "q8_0"))
    hp, names = loaded.hp, {t.name: t for t in loaded.file.reader.tensors}
    expected = 0.0
    for name, t in names.items():
        block = int(name.split(".")[1]) if name.startswith("blk.") else -1
        if block >= hp.n_layer or (name == "token_embd.weight" and "output.weight" in names):
            continue
        expected += int(t.n_bytes) * (hp.n_expert_used / hp.n_expert if "_exps" in name else 1)
    assert decode_weight_bytes(hp, loaded.weights) == pytest.approx(expected, abs=8)


def test_expected_tokens_and_conditional_acceptance():
    from mtprun.runner.stats import StepRecord

    steps = [StepRecord([1, 2], 2, [1, 2, 3]), StepRecord([1, 2], 1, [1, 4]),
             StepRecord([1, 2], 0, [5]), StepRecord([1, 2], 2, [1, 2, 3])]
    a = bench.conditional_acceptance(steps, 2)
    assert a == [0.75, 2 / 3]
    assert bench.expected_tokens_per_step(a) == pytest.approx(1 + 0.75 + 0.75 * 2 / 3)


@pytest.mark.parametrize("argv, message", [
    (["--spec-draft-n-max", "x"], "comma-separated draft depths"),
    (["--spec-draft-n-max", "1,,2"], "comma-separated draft depths"),
    (["--spec-draft-n-max", "-1"], "between 0 and"),
    (["--spec-draft-n-max", "99"], "between 0 and"),
    (["-n", "0"], "-n/--n-gen must be at least 1"),
    (["-p", "0"], "-p/--n-prompt must be at least 1"),
    (["-t", "0"], "-t/--threads must be at least 1"),
    (["--prompts", "/nonexistent/prompts.json"], "cannot read prompt file"),
])
def test_bad_flags_are_user_errors(argv, message):
    with pytest.raises(MtprunError, match=message):
        bench.config_from_args(_args("model.gguf", *argv))


def test_paired_ratios_compare_runs_of_one_repetition():
    """A slow spell hitting one repetition moves each depth's fastest run apart, not the paired ratios."""
    each_run = {0: [[100.0, 50.0, 100.0]], 1: [[120.0, 60.0, 110.0]], 2: [[90.0, 45.0, 140.0]],
                "auto": [[110.0, 55.0, 120.0]]}
    (ratios,) = bench.paired_ratios(each_run, [0, 1, 2])
    assert ratios["vs_plain"] == pytest.approx(1.1)  # median of 1.1, 1.1, 1.2
    # auto against depth 1: 11/12, 11/12, 12/11; against depth 2: 11/9, 11/9, 6/7: depth 1 is worst for it
    assert ratios["best_depth"] == 1 and ratios["vs_best"] == pytest.approx(110 / 120)


def test_prompt_files(tmp_path):
    shipped = bench.load_prompts(None)
    assert {p.kind for p in shipped} == {"code", "prose"} and all(p.text for p in shipped)
    text = tmp_path / "p.txt"
    text.write_text("def f():\n\n    pass\n---\nOnce upon a time\n")
    assert [p.text for p in bench.load_prompts(str(text))] == ["def f():\n\n    pass", "Once upon a time"]
    bad = tmp_path / "p.json"
    bad.write_text('{"text": "not a list"}')
    with pytest.raises(MtprunError, match="not a JSON list"):
        bench.load_prompts(str(bad))


@needs_fixtures
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_compare_llama(capsys, tmp_path):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"name": "c", "kind": "code", "text": "def add(a, b):\n"}]))
    r = _run_json(capsys, "-p", "8", "-n", "4", "--spec-draft-n-max", "1", "-r", "1", "-t", "1",
                  "--prompts", str(prompts), "--compare-llama")
    llama = r["llama_cpp"]
    assert llama["prefill_tokens_per_s"] > 0 and llama["decode_tokens_per_s"] > 0
    assert llama["mtp"] is None and llama["gpu_offload"] is False
    assert r["prefill"]["vs_llama_cpp"]["mtp_off"] > 0 and r["prefill"]["vs_llama_cpp"]["mtp_on"] > 0
    assert all(d["vs_llama_cpp"] > 0 for d in r["depths"])
    assert llama["peak_rss_mib"] > 0 and r["peak_rss_mib"] > 0
    # its forwards of 1 and 2 tokens (depth 1's verify), beside ours
    assert len(llama["trunk_seconds"]) == 2 and all(t > 0 for t in llama["trunk_seconds"])
    d0, d1 = r["depths"]
    assert d0["llama_cpp_verify_decode_ratio"] == 1.0
    assert d1["llama_cpp_verify_decode_ratio"] == pytest.approx(llama["trunk_seconds"][1] / llama["trunk_seconds"][0])


FAKE_SPECULATIVE_SIMPLE = """#!/bin/sh
# stands in for llama.cpp's llama-speculative-simple: its closing lines, 10 tokens in 0.5 s at depth 1, 0.25 s deeper
depth=0; prev=""
for a in "$@"; do [ "$prev" = "--spec-draft-n-max" ] && depth=$a; prev=$a; done
echo "$@" >> "$(dirname "$0")/calls"
[ "$depth" = 1 ] && s=0.500 || s=0.250
echo "0.00.101.001 I decoded   10 tokens in    $s seconds, speed:   20.000 t/s" >&2
echo "0.00.101.002 I n_drafted = 8" >&2
echo "0.00.101.003 I n_accept  = 6" >&2
"""


@needs_fixtures
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_llama_mtp_program(capsys, tmp_path):
    """--llama-mtp runs the program once per depth, prompt and repetition, and reads its own timer."""
    program = tmp_path / "llama-speculative-simple"
    program.write_text(FAKE_SPECULATIVE_SIMPLE)
    program.chmod(0o755)
    prompts = tmp_path / "p.txt"
    prompts.write_text("def add(a, b):\n---\nThe river")
    r = _run_json(capsys, "-p", "8", "-n", "4", "--spec-draft-n-max", "1,2,auto", "-r", "2", "-t", "1",
                  "--prompts", str(prompts), "--compare-llama", "--llama-mtp", str(program))
    mtp = r["llama_cpp"]["mtp"]
    assert [m["depth"] for m in mtp] == [1, 2]
    assert mtp[0]["decode_tokens_per_s"] == pytest.approx(20.0) and mtp[1]["decode_tokens_per_s"] == pytest.approx(40.0)
    assert all(m["tokens"] == 20 and m["acceptance_rate"] == pytest.approx(0.75) for m in mtp)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 2 * 2 * 2  # depths x prompts x repetitions
    assert all("--spec-type draft-mtp" in c and "-n 4" in c and "-ngl 0" in c for c in calls)
    depth1 = next(d for d in r["depths"] if d["depth"] == 1)
    assert depth1["vs_llama_cpp_mtp"] == pytest.approx(depth1["decode_tokens_per_s"] / 20.0)
    assert mtp[0]["speedup_over_plain"] == pytest.approx(20.0 / r["llama_cpp"]["decode_tokens_per_s"])
    from mtprun.runner.bench_report import format_report

    report = format_report(r)
    assert "llama.cpp draft-mtp" in report and "auto by prompt" in report and "prompt-2" in report
    auto = next(d for d in r["depths"] if d["depth"] == "auto")
    assert len(auto["paired_by_prompt"]) == 2 and all(p["best_depth"] in (1, 2) for p in auto["paired_by_prompt"])
    assert len(auto["step_records"]) == 2 and sum(len(steps) for steps in auto["step_records"]) == auto["steps"]
    for steps in auto["step_records"]:  # what the policy saw: each step's depth, acceptance and timings
        assert steps and all(len(s) == 6 and 0 <= s[1] <= s[0] <= 4 and s[3] > 0 for s in steps)
        assert 1 <= sum(s[1] + 1 for s in steps) <= 4  # the tokens generated (an end of generation may stop early)


@needs_fixtures
def test_llama_mtp_errors(tmp_path):
    with pytest.raises(MtprunError, match="give --compare-llama too"):
        bench.config_from_args(_args("m.gguf", "--llama-mtp", "x"))
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'error: unknown argument: --spec-type' >&2\nexit 1\n")
    broken.chmod(0o755)
    config = bench.config_from_args(_args(str(model_file("tinycoder", "q8_0")), "--spec-draft-n-max", "1",
                                          "--compare-llama", "--llama-mtp", str(broken), "-r", "1"))
    from mtprun.runner import bench_llama

    with pytest.raises(MtprunError, match="failed at depth 1 .*exit 1.*unknown argument"):
        bench_llama.measure_llama_mtp(config, str(broken), 64, False, bench.Progress(False))
    with pytest.raises(MtprunError, match="no program at"):
        bench_llama.measure_llama_mtp(config, str(tmp_path / "missing"), 64, False, bench.Progress(False))


@needs_fixtures
def test_llama_mtp_run_with_lost_closing_lines_is_repeated(tmp_path):
    """llama.cpp's log thread can drop the last lines at exit: that run is repeated, not reported as failed."""
    program = tmp_path / "flaky"
    program.write_text(f"""#!/bin/sh
echo "I decoded   10 tokens in    0.500 seconds" >&2
[ -e {tmp_path}/once ] || {{ touch {tmp_path}/once; exit 0; }}
echo "I n_drafted = 8" >&2
echo "I n_accept  = 2" >&2
""")
    program.chmod(0o755)
    config = bench.config_from_args(_args(str(model_file("tinycoder", "q8_0")), "--spec-draft-n-max", "1",
                                          "--compare-llama", "--llama-mtp", str(program), "-r", "1", "--prompts",
                                          str(_one_prompt(tmp_path))))
    from mtprun.runner import bench_llama

    [row] = bench_llama.measure_llama_mtp(config, str(program), 64, False, bench.Progress(False))
    assert row["decode_tokens_per_s"] == pytest.approx(20.0) and row["acceptance_rate"] == pytest.approx(0.25)


def _one_prompt(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("def f():")
    return path


def test_a_crash_of_llama_cpp_is_one_error(monkeypatch):
    """llama-cpp-python runs in a child process: its crash (here an abort) is a clear error here."""
    from mtprun.runner import bench_llama

    monkeypatch.setattr(bench_llama, "_CHILD", "import os\nos.abort()")
    with pytest.raises(MtprunError, match=r"llama.cpp \(llama-cpp-python\) failed while measuring the baseline \(exit -6\)"):
        bench_llama.measure_llama(None, 64, [1, 2], [[1]], frozenset(), bench.Progress(False), False)


def test_llama_cpp_timings_wait_for_its_queued_work(monkeypatch):
    """On a GPU, llama_decode returns once its graph is queued: a timed prefill or forward that does
    not synchronize times the queueing alone. Here each decode's work completes at the synchronize."""
    import types

    from mtprun.runner import bench_llama

    WORK_S = 0.02
    queued = []

    def decode(_ctx, _batch):
        queued.append(WORK_S)
        return 0

    def synchronize(_ctx):
        time.sleep(sum(queued))
        queued.clear()

    class Llama:
        def __init__(self, *args, **kwargs):
            self.ctx = object()

        def n_vocab(self):
            return 4

        def reset(self):
            pass

        def eval(self, ids):
            decode(self.ctx, ids)

        def close(self):
            pass

    batch = types.SimpleNamespace(n_tokens=0, token=[0] * 4, pos=[0] * 4, n_seq_id=[0] * 4, logits=[0] * 4, seq_id=[[0]] * 4)
    fake = types.SimpleNamespace(
        __version__="fake", Llama=Llama, llama_decode=decode, llama_synchronize=synchronize,
        llama_batch_init=lambda *a: batch, llama_batch_free=lambda b: None,
        llama_get_logits_ith=lambda ctx, i: (synchronize(ctx), (ctypes.c_float * 4)(0, 1, 0, 0))[1])
    monkeypatch.setattr(bench_llama, "import_llama_cpp", lambda: fake)
    config = bench.BenchConfig("m.gguf", None, "cpu", 1, "f32", (0, 1), False, 8, 2, 1, (), True, None, None)
    result = bench_llama._measure_llama(config, 64, [1] * 8, [[1, 2]], frozenset(), bench.Progress(False), True)
    assert result["prefill_tokens_per_s"] <= 8 / WORK_S
    assert min(result["trunk_seconds"]) >= WORK_S


def test_shares_that_round_to_zero_are_not_shown_as_zero():
    """A launch-bound model's decode on a GPU reads its weights at a tiny share of the copy bandwidth:
    "0%" read as none at all."""
    from mtprun.runner.bench_report import _pct

    assert [_pct(x) for x in (None, 0.0, 0.004, 0.005, 0.5, 1.0)] == ["-", "0%", "<1%", "<1%", "50%", "100%"]
