"""quantize_gguf: llama-quantize for an f32/f16/bf16 GGUF file (no imatrix), bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from mtprun.convert import presets, stream
from mtprun.convert.checkpoint import widen_bf16
from mtprun.convert.quantize import quantize
from mtprun.convert.writer import add_tensor_info, check_target, write_gguf
from mtprun.runner.errors import MtprunError

_FLOAT_INPUTS = (T.F32, T.F16, T.BF16)


def _as_f32(rows: np.ndarray) -> np.ndarray:
    """Float rows, or bfloat16 bit patterns (uint16), as float32."""
    if rows.dtype == np.uint16:
        return widen_bf16(rows.reshape(-1)).reshape(rows.shape)
    return rows.astype(np.float32, copy=False)


def _copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter, ftype: gguf.LlamaFileType) -> None:
    """Every key of the input, in order, then quantization version and file type re-set at the end."""
    skip = {gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.QUANTIZATION_VERSION, gguf.Keys.General.FILE_TYPE}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in skip or key.startswith("split."):
            continue
        vtype = field.types[0]
        sub_type = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(ftype)


def quantize_gguf(in_path: str | Path, out_path: str | Path, type: str, force: bool = False,
                  progress: bool = False) -> Path:
    """Write `in_path` requantized to preset `type` (e.g. "q4_k_m") at `out_path`."""
    in_path, out_path = Path(in_path), Path(out_path)
    ftype, _ = presets.preset(type)
    check_target(out_path, force)
    try:
        reader = gguf.GGUFReader(str(in_path))
    except (OSError, ValueError) as e:
        raise MtprunError(f"Cannot read GGUF file {in_path} ({e}).") from e
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    n_layer = int(reader.fields[f"{arch}.block_count"].contents())
    n_expert = int(reader.fields[f"{arch}.expert_count"].contents()) if f"{arch}.expert_count" in reader.fields else 0

    tensors = sorted(reader.tensors, key=lambda t: presets.sort_key(t.name))
    mix = presets.QuantizeMix.create(type, [t.name for t in tensors], n_layer, n_expert)
    writer = gguf.GGUFWriter(None, arch)
    _copy_metadata(reader, writer, ftype)
    layout = []
    for t in tensors:
        ne = tuple(int(n) for n in t.shape)
        ne = ne[:presets.ggml_n_dims(ne)]
        target = mix.target(t.name, ne, t.tensor_type)
        if target != t.tensor_type and t.tensor_type not in _FLOAT_INPUTS:
            raise MtprunError(f"{in_path}: tensor {t.name} is {t.tensor_type.name}; only F32, F16 and BF16 "
                              "tensors can be quantized.")
        shape = tuple(reversed(ne))
        add_tensor_info(writer, t.name, shape, target)
        layout.append((t, shape, target))

    def produce(t: gguf.ReaderTensor, shape: tuple[int, ...], target: T) -> Iterator[np.ndarray]:
        data = np.asarray(t.data)
        if target == t.tensor_type:  # same type: the bytes are copied unchanged
            yield data.view(np.uint8).reshape(-1)
            return
        # gguf-py reads BF16 as raw bytes, two per value.
        rows = (data.view(np.uint16) if t.tensor_type == T.BF16 else data).reshape(-1, shape[-1])
        step = max(1, stream.BLOCK_ELEMENTS // shape[-1])
        for start in range(0, rows.shape[0], step):  # blocks of rows: no whole-tensor float32 copy
            yield quantize(_as_f32(rows[start:start + step]), target)

    return write_gguf(writer, out_path, ((t.name, produce(t, shape, target)) for t, shape, target in layout),
                      progress)
