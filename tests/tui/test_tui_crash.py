"""Crash safety: SIGKILL during a reply leaves a clean database with every completed message."""

from __future__ import annotations

import queue
import signal
import sqlite3
import subprocess
import threading
import time

from tui_helpers import MODEL, MTPRUN


def _lines(stream, q: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        q.put(line)


def test_sigkill_during_generation(tmp_path):
    proc = subprocess.Popen([*MTPRUN, "chat", str(MODEL), "--backend", "numpy", "--temp", "0", "-n", "12", "--no-think",
                             "--data-dir", str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    err: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stderr, err), daemon=True).start()
    try:
        proc.stdin.write("Write a function.\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while not err.get(timeout=max(0.1, deadline - time.monotonic())).startswith("12 tokens"):
            pass  # the first reply is complete (its statistics line follows its saving)
        proc.stdin.write("/max 5000\nWrite a long class.\n")
        proc.stdin.flush()
        while "5000" not in err.get(timeout=30):
            pass
        time.sleep(0.5)  # well into the second reply
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    db = sqlite3.connect(tmp_path / "sessions.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute("SELECT role, content, token_ids FROM messages ORDER BY seq").fetchall()
    assert [(r[0], r[1]) for r in rows if r[0] == "user"] == [("user", "Write a function."), ("user", "Write a long class.")]
    assert [r[0] for r in rows] == ["user", "assistant", "user"]
    assert len(eval(rows[1][2])) == 12
