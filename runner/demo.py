"""The demo model shipped inside the package, so `mtprun run` works with no model at hand.

It is tinycoder (7.1 M parameters, trained on Python source and chat-format coding requests, with
a jointly trained MTP head, so drafts are really accepted), converted by mtprun's own converter.
Its tensors are byte-identical to llama.cpp's convert_hf_to_gguf.py + llama-quantize Q4_K_M
(tests/test_demo_model.py checks them against llama.cpp's manifest).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEMO_FILE = "tinycoder-q4_k_m.gguf"

# How data/tinycoder-q4_k_m.gguf was made, from the repository root (a sibling checkout of the
# shared fixtures); rerun it to rebuild the file.
DEMO_COMMAND = "mtprun convert ../shared/fixtures/tinycoder/hf --outtype q4_k_m -o runner/data/tinycoder-q4_k_m.gguf"


def demo_model_path() -> Path:
    """The shipped demo GGUF (a real file: package data is installed unzipped)."""
    return Path(str(resources.files("mtprun.runner") / "data" / DEMO_FILE))
