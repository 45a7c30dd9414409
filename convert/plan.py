"""The tensor plan of a conversion: which GGUF tensors to write, from which HF tensors, in which order.

Everything here is decided from the checkpoint's headers alone (names, dtypes, shapes), so the
GGUF header can be written before any tensor data is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mtprun.convert import transforms
from mtprun.convert.checkpoint import SUPPORTED_DTYPES, Checkpoint
from mtprun.convert.families import Family
from mtprun.runner.errors import MtprunError

MtpMode = Literal["whole", "only", "none"]
MTP_MODES = ("whole", "only", "none")


@dataclass
class PlannedTensor:
    name: str                    # GGUF name
    sources: tuple[str, ...]     # HF tensors; several when experts are stacked (in expert order)
    transforms: tuple[str, ...]
    part: int                    # which output of the transforms (a split yields several)
    shape: tuple[int, ...]       # numpy order, after transforms (and stacking)


@dataclass
class Plan:
    tensors: list[PlannedTensor]
    n_mtp: int  # MTP layers written (0 when the checkpoint has none or they are left out)


def build_plan(ckpt: Checkpoint, family: Family, hp: dict[str, Any], mode: MtpMode) -> Plan:
    """Map every checkpoint tensor, in checkpoint order, keeping or dropping the MTP head per `mode`."""
    if mode not in MTP_MODES:
        raise ValueError(f"mtp must be one of {MTP_MODES}, not {mode!r}")
    tmap = family.tensor_map
    n_layer = hp["num_hidden_layers"]
    planned: dict[str, PlannedTensor] = {}
    experts: dict[str, dict[int, str]] = {}
    mtp_blocks: set[int] = set()
    for hf_name in ckpt.names():
        if tmap.ignored(hf_name):
            continue
        target = tmap.resolve(hf_name, n_layer)
        if target is None:
            raise MtprunError(f"Cannot map checkpoint tensor {hf_name} to a GGUF tensor for {family.gguf_arch}.")
        if target.is_mtp:
            mtp_blocks.add(int(target.names[0].split(".")[1]))
        # --mtp-only keeps the MTP head plus what it shares with the trunk (embeddings, norm, head).
        is_trunk_layer = not target.is_mtp and target.names[0].startswith("blk.")
        if (mode == "none" and target.is_mtp) or (mode == "only" and is_trunk_layer):
            continue
        ref = ckpt.tensors[hf_name]
        if ref.dtype not in SUPPORTED_DTYPES:
            raise MtprunError(f"Tensor {hf_name} has dtype {ref.dtype}; supported dtypes are "
                              f"{', '.join(SUPPORTED_DTYPES)}.")
        shapes = transforms.output_shapes(target.transforms, ref.shape, hp)
        for part, (name, shape) in enumerate(zip(target.names, shapes)):
            if target.expert is not None:
                experts.setdefault(name, {})[target.expert] = hf_name
                if name in planned:
                    continue
            elif name in planned:
                raise MtprunError(f"Checkpoint tensors {planned[name].sources[0]} and {hf_name} both map to {name}.")
            planned[name] = PlannedTensor(name, (hf_name,), target.transforms, part, tuple(shape))
    for name, by_expert in experts.items():
        _stack_experts(planned[name], by_expert, hp)
    if mode == "none":
        mtp_blocks.clear()
    return Plan(list(planned.values()), len(mtp_blocks))


def _stack_experts(tensor: PlannedTensor, by_expert: dict[int, str], hp: dict[str, Any]) -> None:
    """Checkpoints with one tensor per expert: the GGUF tensor stacks them, expert 0 first."""
    n_expert = hp.get("num_experts")
    if sorted(by_expert) != list(range(n_expert or 0)):
        raise MtprunError(f"{tensor.name}: the checkpoint has experts {sorted(by_expert)} but the config "
                          f"says num_experts = {n_expert}.")
    tensor.sources = tuple(by_expert[i] for i in range(n_expert))
    tensor.shape = (n_expert, *tensor.shape)

