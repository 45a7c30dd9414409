"""Layout helpers shared by the native backends' graph compilers."""

from __future__ import annotations


def broadcast_strides(shape: tuple[int, ...], out4: tuple[int, ...]) -> list[int]:
    """Element strides of a C-contiguous array of `shape` read as the 4-D `out4` (0 on broadcast dims)."""
    shape4 = (1,) * (4 - len(shape)) + tuple(shape)
    strides, step = [0] * 4, 1
    for j in range(3, -1, -1):
        strides[j] = step if shape4[j] == out4[j] else 0
        step *= shape4[j]
    return strides
