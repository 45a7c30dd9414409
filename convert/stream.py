"""Read one planned tensor as a sequence of row blocks, transformed, in file order.

A tensor whose transforms are row-local (see transforms.py) is read a block of leading rows at a
time, so no whole-tensor float32 copy exists; quantization is per row, so the blocks can be
quantized and written one by one. Other tensors, and 1-D ones (a single row), come as one block.
"""

from __future__ import annotations

from math import prod
from typing import Any, Iterator

import numpy as np

from mtprun.convert import transforms
from mtprun.convert.checkpoint import Checkpoint
from mtprun.convert.plan import PlannedTensor

# Float32 elements per block: 64 MiB, large enough to keep every quantizer thread busy.
BLOCK_ELEMENTS = 1 << 24


def _source_blocks(ckpt: Checkpoint, tensor: PlannedTensor, hp: dict[str, Any], src: str) -> Iterator[np.ndarray]:
    shape = ckpt.tensors[src].shape
    if len(shape) < 2 or not transforms.row_local(tensor.transforms, len(shape)):
        yield transforms.apply(tensor.transforms, ckpt.load(src), hp)[tensor.part]
        return
    step = max(1, BLOCK_ELEMENTS // max(prod(shape[1:]), 1))
    for start in range(0, shape[0], step):
        block = ckpt.load_rows(src, start, min(start + step, shape[0]))
        yield transforms.apply(tensor.transforms, block, hp)[tensor.part]


def blocks(ckpt: Checkpoint, tensor: PlannedTensor, hp: dict[str, Any]) -> Iterator[np.ndarray]:
    """The tensor's values (float32, or float16 from a float16 checkpoint) in row-major order, as
    blocks of whole rows; stacked experts come one expert after another."""
    expected = prod(tensor.shape)
    seen = 0
    for src in tensor.sources:
        for block in _source_blocks(ckpt, tensor, hp, src):
            assert block.shape[-1:] == tensor.shape[-1:], (tensor.name, block.shape, tensor.shape)
            seen += block.size
            yield block
    assert seen == expected, (tensor.name, seen, expected)
