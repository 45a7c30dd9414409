"""Model-family data from models.toml: HF architectures, GGUF architecture, tensor names, transforms."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from mtprun.runner.errors import MtprunError

MODELS_TOML = Path(__file__).resolve().parents[1] / "models.toml"

_LAYER_RE = re.compile(r"^(model|mtp)\.layers\.(\d+)\.(.+)$")
_EXPERT_RE = re.compile(r"\.experts\.(\d+)\.")


@dataclass(frozen=True)
class TensorTarget:
    """Where one HF tensor goes: GGUF name(s), transforms, and expert index when experts are stacked."""

    names: tuple[str, ...]
    transforms: tuple[str, ...]
    expert: int | None
    is_mtp: bool


def _entry(value: str | dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if isinstance(value, str):
        return (value,), ()
    names = tuple(value["names"]) if "names" in value else (value["name"],)
    return names, tuple(value.get("transforms", ()))


class TensorMap:
    """HF -> GGUF tensor naming for one family (see the comment at the top of models.toml)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.prefix_rewrites = [tuple(p) for p in data.get("prefix_rewrites", [])]
        self.ignore_prefixes = tuple(data.get("ignore_prefixes", []))
        self.global_ = {k: _entry(v) for k, v in data["global"].items()}
        self.layer = {k: _entry(v) for k, v in data["layer"].items()}
        self.mtp = {k: _entry(v) for k, v in data["mtp"].items()}

    def normalize(self, hf_name: str) -> str:
        for old, new in self.prefix_rewrites:
            if hf_name.startswith(old):
                return new + hf_name[len(old):]
        return hf_name

    def ignored(self, hf_name: str) -> bool:
        return self.normalize(hf_name).startswith(self.ignore_prefixes)

    def resolve(self, hf_name: str, n_layer: int) -> TensorTarget | None:
        """The GGUF target of an HF tensor, or None when the map does not know it."""
        name = self.normalize(hf_name)
        if name in self.global_:
            names, transforms = self.global_[name]
            return TensorTarget(names, transforms, None, False)
        if name in self.mtp:
            names, transforms = self.mtp[name]
            return TensorTarget(tuple(f"blk.{n_layer}.{n}" for n in names), transforms, None, True)
        m = _LAYER_RE.match(name)
        if m is None:
            return None
        kind, index, rest = m.group(1), int(m.group(2)), m.group(3)
        block = index if kind == "model" else n_layer + index
        expert = None
        if (e := _EXPERT_RE.search("." + rest)) is not None:
            expert = int(e.group(1))
            rest = _EXPERT_RE.sub(".experts.{x}.", "." + rest, count=1)[1:]
        if rest not in self.layer:
            return None
        names, transforms = self.layer[rest]
        return TensorTarget(tuple(f"blk.{block}.{n}" for n in names), transforms, expert, kind == "mtp")


@dataclass(frozen=True)
class Family:
    name: str
    gguf_arch: str
    hf_architectures: tuple[str, ...]
    tensor_map: TensorMap
    draft_depth: int


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    with open(MODELS_TOML, "rb") as f:
        return tomllib.load(f)


@lru_cache(maxsize=None)
def families() -> dict[str, Family]:
    data = _data()
    maps = {k: TensorMap(v) for k, v in data["tensor_maps"].items()}
    return {name: Family(name, f["gguf_arch"], tuple(f["hf_architectures"]), maps[f["tensor_map"]],
                         int(f["draft_depth"]))
            for name, f in data["families"].items()}


def supported_architectures() -> list[str]:
    return sorted(a for f in families().values() for a in f.hf_architectures)


def family_for_architecture(hf_arch: str) -> Family:
    for family in families().values():
        if hf_arch in family.hf_architectures:
            return family
    raise MtprunError(f"Unknown architecture {hf_arch!r}; supported architectures are "
                      f"{', '.join(supported_architectures())}.")


def pretokenizers() -> dict[str, list[str]]:
    """llama.cpp pre-tokenizer name -> the Split regexes that identify it."""
    return {name: list(p["regexes"]) for name, p in _data()["pretokenizers"].items()}
