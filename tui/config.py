"""The user's config file: key bindings, as `[keys]` binding-id = "key[,key...]" (see the F1 screen for the ids)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def default_config_path() -> Path:
    env = os.environ.get("MTPRUN_CONFIG")
    return Path(env) if env else platformdirs.user_config_path("mtprun", appauthor=False) / "config.toml"


def load_keymap(path: Path | None) -> tuple[dict[str, str], str | None]:
    """(keymap, warning): a missing file is an empty keymap; a bad one is ignored with a warning."""
    path = path or default_config_path()
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        return {}, None
    except (OSError, tomllib.TOMLDecodeError) as e:
        return {}, f"ignored the config file {path} ({e})."
    keys = doc.get("keys", {})
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        return {}, f"ignored the config file {path} ([keys] must map binding ids to key strings)."
    return dict(keys), None
