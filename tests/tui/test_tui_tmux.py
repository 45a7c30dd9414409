"""The scripted tmux run of `mtprun chat` (tests/tui/tmux_chat.sh); skipped where tmux is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from tui_helpers import MODEL


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_tmux_chat(tmp_path):
    script = Path(__file__).with_name("tmux_chat.sh")
    out = subprocess.run(["bash", str(script), str(MODEL), str(tmp_path / "screen.txt")],
                         capture_output=True, text=True, timeout=330)
    assert out.returncode == 0, out.stderr + out.stdout
    screen = (tmp_path / "screen.txt").read_text()
    assert "Write a function that adds two numbers." in screen
