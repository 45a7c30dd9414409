"""Stream a GGUF file to disk with gguf-py's GGUFWriter, atomically.

The header (metadata and every tensor's name, shape and type) is written first, then each tensor's
data block by block as it is produced, so at most one tensor (usually one block of its rows) is in
memory. Everything goes to a temporary name in the target directory and is renamed into place
only when complete: an interrupted run never leaves a truncated file under the final name.
"""

from __future__ import annotations

import os
from math import prod
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from gguf import GGUFWriter, GGMLQuantizationType

from mtprun.convert.progress import Progress
from mtprun.convert.quantize import row_bytes
from mtprun.runner.errors import MtprunError


def tensor_nbytes(shape: Sequence[int], qtype: GGMLQuantizationType) -> int:
    """Bytes of a tensor with numpy-order `shape` stored as `qtype`."""
    return prod(shape[:-1]) * row_bytes(shape[-1], qtype)


def add_tensor_info(writer: GGUFWriter, name: str, shape: Sequence[int], qtype: GGMLQuantizationType) -> int:
    """Declare one tensor (numpy-order shape); returns its byte size."""
    nbytes = tensor_nbytes(shape, qtype)
    writer.add_tensor_info(name, tuple(shape), np.dtype(np.float32), nbytes, raw_dtype=qtype)
    return nbytes


def check_target(out_path: Path, force: bool) -> None:
    if out_path.exists() and not force:
        raise MtprunError(f"{out_path} already exists; pass --force to overwrite it.")
    if not out_path.parent.is_dir():
        raise MtprunError(f"Output directory {out_path.parent} does not exist.")


def _write_blocks(writer: GGUFWriter, name: str, blocks: Iterable[np.ndarray], bar: Progress) -> None:
    """The next declared tensor's data, one block at a time.

    GGUFWriter.write_tensor_data takes a whole tensor, so this does what it does (align the
    start, write, pad the end, drop the tensor info) with the data arriving in blocks.
    """
    infos = writer.tensors[0]
    assert name == next(iter(infos)), f"tensor {name} written out of declared order"
    expected = infos.pop(name).nbytes
    assert writer.fout is not None and len(writer.fout) == 1
    fout = writer.fout[0]
    writer.write_padding(fout, fout.tell())
    written = 0
    for block in blocks:
        block = np.ascontiguousarray(block)
        fout.write(block.data)
        written += block.nbytes
        bar.advance(name, block.nbytes)
    assert written == expected, f"tensor {name}: {written} bytes written, {expected} declared"
    writer.write_padding(fout, written)
    bar.tensor_done(name)


def write_gguf(writer: GGUFWriter, out_path: Path, tensors: Iterable[tuple[str, Iterable[np.ndarray]]],
               progress: bool) -> Path:
    """Write the declared metadata and tensors; `tensors` yields (name, blocks) in declared order,
    where the blocks, concatenated, are the tensor's bytes (each block is produced lazily)."""
    infos = writer.tensors[0]
    bar = Progress(sum(ti.nbytes for ti in infos.values()), len(infos), enabled=progress)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for name, blocks in tensors:
            _write_blocks(writer, name, blocks, bar)
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    return out_path
