"""Fixtures of the chat UI tests (tinycoder: trained, with real MTP acceptance)."""

from __future__ import annotations

import pytest
from tui_helpers import MODEL, N_PREDICT

if not MODEL.is_file():  # ../shared/fixtures is not present
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def model():
    import mtprun

    return mtprun.load(MODEL, backend="numpy")  # the reference: tokens and snapshots are pinned to it


@pytest.fixture
def settings():
    from mtprun.tui.engine import Settings

    return Settings(temp=0.0, n_predict=N_PREDICT, thinking=False, draft_depth=2)


@pytest.fixture
def store(tmp_path):
    from mtprun.tui.store import Store

    s = Store(tmp_path / "data" / "sessions.db")
    yield s
    s.close()
