"""convert_checkpoint: a Hugging Face Qwen3.5 checkpoint to a GGUF file that keeps the MTP head.

For f32/f16/bf16/q8_0 this is llama.cpp's convert_hf_to_gguf.py; for the k-quant and legacy
presets it is convert_hf_to_gguf.py --outtype f32 followed by llama-quantize, done block by
block without the intermediate file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from mtprun.convert import metadata, presets, stream, vocab
from mtprun.convert.checkpoint import Checkpoint
from mtprun.convert.families import Family, family_for_architecture
from mtprun.convert.plan import MtpMode, Plan, PlannedTensor, build_plan
from mtprun.convert.quantize import quantize
from mtprun.convert.writer import add_tensor_info, check_target, write_gguf
from mtprun.runner.errors import MtprunError


def _architecture(config: dict[str, Any]) -> str:
    arches = (config.get("text_config") or {}).get("architectures") or config.get("architectures") or []
    if not arches:
        raise MtprunError("config.json names no architecture.")
    return arches[0]


def _size_label(plan: Plan) -> str:
    """gguf-py's size label (e.g. 4.5M, 4x2.6M) from the parameter count of the tensors written."""
    counter = gguf.GGUFWriter(None, "count")
    for t in plan.tensors:
        counter.add_tensor_info(t.name, t.shape, np.dtype(np.float32), 0, raw_dtype=T.F32)
    return gguf.size_label(*counter.get_total_parameter_count())


def default_output(directory: Path, model_name: str, size_label: str, outtype: str, mode: MtpMode) -> Path:
    """llama.cpp's default file name, in the checkpoint directory (mtp-<name>.gguf for the MTP head)."""
    type_name = outtype.upper()
    if mode == "only":
        return directory / f"mtp-{gguf.naming_convention(model_name, None, None, None, None, type_name)}.gguf"
    return directory / f"{gguf.naming_convention(model_name, None, None, None, size_label, type_name)}.gguf"


def _layout(plan: Plan, outtype: str, n_layer_all: int, n_expert: int
            ) -> tuple[list[tuple[PlannedTensor, tuple[int, ...], T]], gguf.LlamaFileType, bool]:
    """(tensor, written shape, type) in write order, the file type, and whether llama-quantize ran."""
    if outtype in presets.CONVERTER_OUTTYPES:
        ftype = presets.CONVERTER_OUTTYPES[outtype]
        return [(t, t.shape, presets.converter_type(t.name, t.shape, ftype)) for t in plan.tensors], ftype, False
    # llama-quantize on the (all-F32) f32 conversion: sorted by layer, trailing 1-dims dropped,
    # per-tensor mix.
    ftype, _ = presets.preset(outtype)
    ordered = sorted(plan.tensors, key=lambda t: presets.sort_key(t.name))
    mix = presets.QuantizeMix.create(outtype, [t.name for t in ordered], n_layer_all, n_expert)
    layout = []
    for t in ordered:
        ne = tuple(reversed(t.shape))[:presets.ggml_n_dims(tuple(reversed(t.shape)))]
        layout.append((t, tuple(reversed(ne)), mix.target(t.name, ne, T.F32)))
    return layout, ftype, True


def convert_checkpoint(checkpoint_dir: str | Path, out_path: str | Path | None = None, outtype: str = "f32",
                       mtp: MtpMode = "whole", force: bool = False, progress: bool = True) -> Path:
    """Convert a checkpoint directory to GGUF; returns the path written.

    mtp: "whole" keeps the MTP head in the file, "only" writes just the MTP head (a draft sidecar,
    with the embeddings and output head it shares), "none" leaves it out.
    """
    outtype = outtype.lower()
    if outtype not in presets.OUTTYPES:
        raise MtprunError(f"Unknown output type {outtype!r}; choose one of {', '.join(presets.OUTTYPES)}.")
    directory = Path(checkpoint_dir)
    ckpt = Checkpoint(directory)
    ckpt.check_complete()
    hp = metadata.merged_hparams(ckpt.config)
    family: Family = family_for_architecture(_architecture(ckpt.config))
    plan = build_plan(ckpt, family, hp, mtp)
    if mtp == "only" and plan.n_mtp == 0:
        raise MtprunError(f"--mtp-only: checkpoint {directory} has no MTP tensors.")
    size_label = _size_label(plan)
    model_name = directory.resolve().name
    out = Path(out_path) if out_path is not None else default_output(directory, model_name, size_label, outtype, mtp)
    check_target(out, force)

    n_layer_all = hp["num_hidden_layers"] + plan.n_mtp
    layout, ftype, requantized = _layout(plan, outtype, n_layer_all, hp.get("num_experts", 0))
    writer = gguf.GGUFWriter(None, family.gguf_arch)
    # A requantized file keeps the f32 conversion's metadata (file type 0 until llama-quantize re-sets it).
    metadata.add_model_metadata(writer, hp, name=model_name, size_label=size_label, n_mtp=plan.n_mtp,
                                ftype=gguf.LlamaFileType.ALL_F32 if requantized else ftype)
    vocab.add_vocab(writer, directory, hp.get("vocab_size"))
    if requantized:
        metadata.move_file_type_last(writer, ftype)
    for t, shape, qtype in layout:
        add_tensor_info(writer, t.name, shape, qtype)

    def produce(t: PlannedTensor, qtype: T) -> Iterator[np.ndarray]:
        for block in stream.blocks(ckpt, t, hp):
            if requantized:  # llama-quantize reads the f32 file's values
                block = block.astype(np.float32, copy=False)
            yield quantize(block.reshape(-1, t.shape[-1]), qtype)  # per row: blocks of rows are independent

    return write_gguf(writer, out, ((t.name, produce(t, qtype)) for t, _, qtype in layout), progress)
