"""Assembling a runnable model from a GGUF file (and optionally an MTP-only sidecar GGUF).

Checks every tensor the graphs will read (present, shape, a supported type) so that a bad file
fails here with one sentence, not later inside a backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gguf import GGMLQuantizationType

from mtprun.runner.errors import MtprunError
from mtprun.runner.gguf_file import GGUFFile
from mtprun.runner.graph import WeightTensor
from mtprun.runner.hparams import HParams, read_hparams
from mtprun.runner.models.qwen35 import Qwen35Graphs, mtp_tensor_shapes, mtp_tensors, trunk_tensors

SUPPORTED_TYPES = frozenset(
    GGMLQuantizationType[n]
    for n in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")
)


@dataclass
class LoadedModel:
    path: Path
    file: GGUFFile
    hp: HParams
    graphs: Qwen35Graphs
    weights: dict[str, WeightTensor]  # graph weight name -> memory-mapped tensor
    has_mtp: bool
    mtp_source: Path | None  # the file the MTP head comes from


def _check(f: GGUFFile, source: str, name: str, shape: tuple[int, ...]) -> WeightTensor:
    t = f.tensors.get(source)
    if t is None:
        raise MtprunError(f"{f.path}: required tensor {source!r} is missing.")
    # Leading unit axes are optional (llama.cpp writes e.g. the shared-expert gate as [d] or [1, d]).
    if _strip_leading_ones(t.shape) != _strip_leading_ones(shape):
        raise MtprunError(f"{f.path}: tensor {source!r} has shape {list(t.shape)}, expected {list(shape)}.")
    if t.ggml_type not in SUPPORTED_TYPES:
        raise MtprunError(f"{f.path}: tensor {source!r} has unsupported type {f.tensor_type_name(source)}.")
    return WeightTensor(name, t.ggml_type, tuple(shape), t.data)


def _strip_leading_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def _mtp_weights(f: GGUFFile, hp: HParams) -> dict[str, WeightTensor]:
    shapes = mtp_tensor_shapes(hp)
    return {name: _check(f, source, name, shapes[name]) for name, source in mtp_tensors(hp, list(f.tensors)).items()}


def load_model(path: str | Path, mtp_model: str | Path | None = None, mtp: bool = True) -> LoadedModel:
    """The model's trunk and, unless `mtp` is False, its MTP head (from `mtp_model` where given)."""
    f = GGUFFile(path)
    hp = read_hparams(f)
    if hp.n_layer > 0 and "blk.0.attn_norm.weight" not in f.tensors and hp.n_nextn > 0:
        raise MtprunError(f"{f.path}: this is an MTP-only sidecar; pass the model it belongs to and this file as --mtp-model.")
    tied = "output.weight" not in f.tensors
    weights = {name: _check(f, name, name, shape) for name, shape in trunk_tensors(hp, tied).items()}

    mtp_source: Path | None = None
    if mtp and mtp_model is not None:
        side = GGUFFile(mtp_model)
        side_hp = read_hparams(side)
        _check_sidecar_matches(f, hp, side, side_hp)
        weights.update(_mtp_weights(side, side_hp))
        mtp_source = side.path
    elif mtp and hp.n_nextn > 0:
        weights.update(_mtp_weights(f, hp))
        mtp_source = f.path
    has_mtp = mtp_source is not None
    shapes = {name: w.shape for name, w in weights.items()}
    return LoadedModel(f.path, f, hp, Qwen35Graphs(hp, shapes, tied), weights, has_mtp, mtp_source)


def _check_sidecar_matches(base: GGUFFile, hp: HParams, side: GGUFFile, side_hp: HParams) -> None:
    if side_hp.n_nextn < 1:
        raise MtprunError(f"{side.path}: has no MTP block (nextn_predict_layers is 0).")
    for field in ("arch", "n_layer", "n_embd", "n_vocab", "n_head", "n_head_kv", "head_dim", "n_expert"):
        if getattr(side_hp, field) != getattr(hp, field):
            raise MtprunError(
                f"{side.path}: MTP sidecar belongs to another model ({field} {getattr(side_hp, field)} "
                f"vs {getattr(hp, field)} in {base.path.name})."
            )
    if side.get("tokenizer.ggml.tokens", None) != base.get("tokenizer.ggml.tokens", None):
        raise MtprunError(f"{side.path}: MTP sidecar belongs to another model (its vocabulary differs from {base.path.name}).")
