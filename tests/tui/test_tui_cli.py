"""`mtprun sessions ...` and the plain REPL (`mtprun chat` without a terminal)."""

from __future__ import annotations

import json
import sqlite3
import subprocess

from mtprun.runner.cli import main
from tui_helpers import MODEL, MTPRUN

from mtprun.tui.store import Message, ModelFile, Store


def _session(data_dir) -> int:
    store = Store.in_dir(data_dir)
    model = ModelFile.of(MODEL)
    sid = store.create_session("adding", model, {"temp": 0})
    store.add_message(sid, Message("user", "add two numbers"), model)
    store.add_message(sid, Message("assistant", "<think>\nsimple\n</think>\n\n```python\ndef add(a, b):\n    return a + b\n```",
                                   token_ids=[1, 2, 3], origins="dtt", stats=None), model)
    store.close()
    return sid


def test_sessions_list_show_export_rm(tmp_path, capsys):
    sid = _session(tmp_path)
    d = ["--data-dir", str(tmp_path)]
    assert main(["sessions", "list", *d]) == 0
    assert "adding" in capsys.readouterr().out
    assert main(["sessions", "show", str(sid), *d]) == 0
    assert "def add(a, b):" in capsys.readouterr().out
    assert main(["sessions", "export", str(sid), "--format", "json", *d]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["messages"][1]["origins"] == "dtt" and doc["model"]["path"] == str(MODEL.resolve())
    assert main(["sessions", "export", str(sid), "-o", str(tmp_path / "s.md"), *d]) == 0
    assert "<summary>Thinking</summary>" in (tmp_path / "s.md").read_text()
    assert main(["sessions", "rm", str(sid), "999", *d]) == 1  # all ids checked first: nothing deleted
    assert "no session 999" in capsys.readouterr().err
    assert main(["sessions", "rm", str(sid), *d]) == 0
    assert main(["sessions", "list", *d]) == 0 and capsys.readouterr().out == ""


def test_sessions_on_bad_input_exit_non_zero(tmp_path, capsys):
    assert main(["sessions", "show", "5", "--data-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == "mtprun: error: there is no session 5 (`mtprun sessions list` lists them)."
    (tmp_path / "sessions.db").write_bytes(b"not a database" * 100)
    assert main(["sessions", "list", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "left as it is" in err


def test_repl_replies_saves_and_summarises(tmp_path):
    out = subprocess.run([*MTPRUN, "chat", str(MODEL), "--backend", "numpy", "--temp", "0", "-n", "12", "--no-think", "--data-dir", str(tmp_path)],
                         input="Write a function.\n/depth 1\n/bogus\nAnd another.\n", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    stats = [line for line in lines if line.startswith("12 tokens")]
    assert len(stats) == 2 and "mean accepted length" in stats[0]
    assert "draft depth 1" in lines and any("unknown command /bogus" in line for line in lines)
    db = sqlite3.connect(tmp_path / "sessions.db")
    rows = db.execute("SELECT role, settings FROM messages ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == ["user", "assistant", "user", "assistant"]
    assert json.loads(rows[3][1])["draft_depth"] == 1


def test_repl_model_that_fails_to_load(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    out = subprocess.run([*MTPRUN, "chat", str(bad), "--data-dir", str(tmp_path)], input="hi\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("mtprun: error:"), out.stderr


def test_keymap_config(tmp_path):
    from mtprun.tui.config import load_keymap

    good = tmp_path / "config.toml"
    good.write_text('[keys]\nstop = "ctrl+s"\nhelp = "f10,question_mark"\n')
    assert load_keymap(good) == ({"stop": "ctrl+s", "help": "f10,question_mark"}, None)
    assert load_keymap(tmp_path / "missing.toml") == ({}, None)
    bad = tmp_path / "bad.toml"
    bad.write_text("[keys\nstop = ")
    keymap, warning = load_keymap(bad)
    assert keymap == {} and "ignored the config file" in warning
