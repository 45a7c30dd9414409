"""The `mtprun` command: run (streamed and --json), info, and the sidecar pairing."""

from __future__ import annotations

import json
import subprocess
import sys

from fixtures import FIXTURES, model_file, needs_fixtures, prompts, ref_json

pytestmark = needs_fixtures


def _mtprun(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtprun.runner.cli", *args], capture_output=True, text=True,
                          timeout=300, input=stdin)


def test_run_json_reports_tokens_text_and_stats():
    text = ref_json("tinycoder", "tokens.json")["prompts"]["class"]["text"]
    proc = _mtprun("run", str(model_file("tinycoder", "q8_0")), "-p", text, "-n", "16", "--temp", "0",
                   "--spec-draft-n-max", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["prompt_tokens"] == len(prompts("tinycoder")["class"])
    assert out["tokens"] == ref_json("tinycoder", "greedy32.json")["exact-q8_0"]["class"][:16]
    stats = out["stats"]
    for key in ("drafted", "accepted", "acceptance_rate", "mean_accepted_length", "accepted_per_position",
                "steps", "prefill_tokens_per_s", "decode_tokens_per_s"):
        assert key in stats
    assert stats["drafted"] > 0 and 0 < stats["acceptance_rate"] <= 1 and len(stats["accepted_per_position"]) == 2


def test_run_streams_text_and_prints_stats():
    proc = _mtprun("run", str(model_file("tinycoder", "q8_0")), "-p", "def add(a, b):", "-n", "12", "--temp", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "tok/s" in proc.stderr and "accepted" in proc.stderr


def test_model_without_mtp_runs_with_a_notice():
    proc = _mtprun("run", str(FIXTURES / "tinycoder" / "nomtp-llamacpp-q4_k_m.gguf"), "-p", "x = ", "-n", "4")
    assert proc.returncode == 0, proc.stderr
    assert "has no MTP head; drafting is off" in proc.stderr


def test_sidecar_pair_gives_the_same_tokens_as_plain_decoding():
    base = str(FIXTURES / "tinycoder" / "nomtp-llamacpp-q4_k_m.gguf")
    args = ["-p", "import os\n", "-n", "20", "--temp", "0", "--json"]
    plain = json.loads(_mtprun("run", base, *args, "--spec-type", "none").stdout)
    paired = json.loads(_mtprun("run", base, *args, "--mtp-model",
                                str(FIXTURES / "tinycoder" / "mtp-llamacpp-q8_0.gguf")).stdout)
    assert paired["tokens"] == plain["tokens"]
    assert paired["stats"]["accepted"] > 0


def test_spec_type_none_loads_no_mtp_head():
    from mtprun.runner import cli

    args = cli.build_parser().parse_args(["run", str(model_file("tinycoder", "q8_0")), "-p", "x", "--spec-type", "none"])
    model = cli._load(args)
    assert not model.has_mtp and cli._draft_depth(args, model) == 0


def test_info_describes_the_model():
    proc = _mtprun("info", str(model_file("tiny-qwen35moe", "q4_k_m")))
    assert proc.returncode == 0, proc.stderr
    assert "qwen35moe" in proc.stdout and "MTP head:      yes" in proc.stdout and "Q4_K" in proc.stdout
