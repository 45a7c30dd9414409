"""Bad files, flags and prompts: one clear sentence on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fixtures import FIXTURES, model_file, needs_fixtures
from gguf_edit import copy_gguf

pytestmark = needs_fixtures

TINY = model_file("tinycoder", "q8_0")


def _mtprun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtprun.runner.cli", *args], capture_output=True, text=True, timeout=120)


def _assert_one_sentence(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("mtprun: error: ")
    for needle in needles:
        assert needle in err, err


def test_missing_file():
    _assert_one_sentence(_mtprun("run", "/nonexistent/model.gguf", "-p", "x"), "no such file")


def test_wrong_magic(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + TINY.read_bytes()[4:4096])
    _assert_one_sentence(_mtprun("run", str(bad), "-p", "x"), "bad.gguf", "not a GGUF file")


@pytest.mark.parametrize("keep", [100, 5000, 200_000])
def test_truncated_file(tmp_path, keep):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(TINY.read_bytes()[:keep])
    _assert_one_sentence(_mtprun("run", str(bad), "-p", "x"), "cut.gguf")


def test_unsupported_architecture(tmp_path):
    bad = copy_gguf(TINY, tmp_path / "llama.gguf", metadata={"general.architecture": "llama"})
    _assert_one_sentence(_mtprun("info", str(bad)), "unsupported architecture 'llama'", "qwen35")


def test_missing_tensor(tmp_path):
    bad = copy_gguf(TINY, tmp_path / "missing.gguf", drop={"blk.2.ffn_up.weight"})
    _assert_one_sentence(_mtprun("run", str(bad), "-p", "x"), "blk.2.ffn_up.weight", "missing")


def test_wrong_shape(tmp_path):
    bad = copy_gguf(TINY, tmp_path / "shape.gguf", truncate_rows={"blk.1.ssm_out.weight"})
    _assert_one_sentence(_mtprun("run", str(bad), "-p", "x"), "blk.1.ssm_out.weight", "shape")


def test_sidecar_from_another_model():
    proc = _mtprun("run", str(FIXTURES / "tinycoder" / "nomtp-llamacpp-q4_k_m.gguf"), "-p", "x",
                   "--mtp-model", str(model_file("tiny-qwen35", "q8_0")))
    _assert_one_sentence(proc, "another model")


def test_sidecar_alone_is_not_a_model():
    _assert_one_sentence(_mtprun("run", str(FIXTURES / "tinycoder" / "mtp-llamacpp-q8_0.gguf"), "-p", "x"), "sidecar")


def test_prompt_longer_than_context():
    _assert_one_sentence(_mtprun("run", str(TINY), "-c", "16", "-p", "word " * 40), "context size 16")


@pytest.mark.parametrize("flags,needle", [
    (["--spec-draft-n-max", "99"], "--spec-draft-n-max"),
    (["--spec-draft-n-max", "two"], "expected 'auto' or a number"),
    (["-n", "many"], "invalid int value"),
    (["--backend", "gpu"], "invalid choice"),
    (["-n", "-3"], "positive"),
])
def test_bad_flags(flags, needle):
    _assert_one_sentence(_mtprun("run", str(TINY), "-p", "x", *flags), needle)


def test_unreadable_prompt_file(tmp_path):
    _assert_one_sentence(_mtprun("run", str(TINY), "-f", str(tmp_path / "nope.txt")), "nope.txt")
