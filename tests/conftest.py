"""Session fixtures shared by the converter tests: files made by our converter from the fixture
checkpoints, each built once per session and only when a test asks for it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from fixtures import FIXTURES
from mtprun.convert import convert_checkpoint, quantize_gguf
from mtprun.convert.presets import CONVERTER_OUTTYPES


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """`built(model, stem)`: our file for llama.cpp's manifest `stem` of `model`
    (e.g. "llamacpp-q4_k_m", "mtp-llamacpp-q8_0", "nomtp-llamacpp-q4_k_m").

    As llama.cpp made them: f32/f16/bf16/q8_0 straight from the converter, every other type by
    quantizing the f32 conversion (which is itself built once).
    """
    out_dir = tmp_path_factory.mktemp("convert")
    cache: dict[tuple[str, str], Path] = {}

    def build(model: str, stem: str) -> Path:
        if (model, stem) in cache:
            return cache[(model, stem)]
        prefix, _, outtype = stem.rpartition("llamacpp-")
        mode = {"": "whole", "mtp-": "only", "nomtp-": "none"}[prefix]
        out = out_dir / f"{model}-{stem}.gguf"
        if outtype in CONVERTER_OUTTYPES:
            convert_checkpoint(FIXTURES / model / "hf", out, outtype=outtype, mtp=mode, progress=False)
        else:  # llama-quantize on the f32 conversion
            quantize_gguf(build(model, f"{prefix}llamacpp-f32"), out, outtype)
        cache[(model, stem)] = out
        return out

    return build
