"""Opening GGUF files with gguf-py: memory-mapped tensors, typed metadata, one-sentence errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader

from mtprun.runner.errors import MtprunError
from mtprun.runner.graph import WeightTensor

_MISSING = object()


class GGUFFile:
    """A GGUF file opened read-only; tensor data stays in the file's memory map."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MtprunError(f"{self.path}: no such file.")
        try:
            with open(self.path, "rb") as fh:
                magic = fh.read(4)
        except OSError as exc:
            raise MtprunError(f"{self.path}: cannot be read ({exc.strerror}).") from None
        if magic != b"GGUF":
            raise MtprunError(f"{self.path}: not a GGUF file (wrong magic bytes {magic!r}).")
        try:
            self.reader = GGUFReader(self.path, "r")
        except Exception as exc:  # gguf-py raises assorted errors on damaged files
            raise MtprunError(f"{self.path}: damaged or truncated GGUF file ({_short(exc)}).") from None
        self.tensors: dict[str, WeightTensor] = {}
        for t in self.reader.tensors:
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))
            self.tensors[t.name] = WeightTensor(t.name, int(t.tensor_type), shape, t.data)
        self.arch = str(self.get("general.architecture"))

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """A metadata value as a Python value (lists for arrays); a missing key is a file error."""
        field = self.reader.fields.get(key)
        if field is None:
            if default is _MISSING:
                raise MtprunError(f"{self.path}: metadata key {key!r} is missing.")
            return default
        try:
            return field.contents()
        except Exception as exc:
            raise MtprunError(f"{self.path}: metadata key {key!r} cannot be read ({_short(exc)}).") from None

    def has(self, key: str) -> bool:
        return key in self.reader.fields

    def tensor_type_name(self, name: str) -> str:
        return GGMLQuantizationType(self.tensors[name].ggml_type).name

    def size_bytes(self) -> int:
        return sum(int(np.asarray(t.data).nbytes) for t in self.tensors.values())


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
