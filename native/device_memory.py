"""Small pieces the GPU devices share: kernel arguments packed as a C struct, device addresses
mapped back to their buffers, and typed views of host staging bytes."""

from __future__ import annotations

import bisect
import weakref
from ctypes import _SimpleCData, sizeof
from typing import Any, Sequence

import numpy as np


def pack_arguments(values: Sequence[_SimpleCData], limit: int, pad_to_largest: bool = False) -> bytes:
    """A launch's values (ctypes, in parameter order) laid out as the kernels declare them, one
    struct (Vulkan push constants, std430; Metal's argument struct): each member at an offset
    aligned to its own size; the whole padded to 4 bytes, or to its largest member (Metal)."""
    out = bytearray()
    for v in values:
        out += bytes(-len(out) % sizeof(v))
        out += bytes(v)
    align = max([4] + [sizeof(v) for v in values]) if pad_to_largest else 4
    out += bytes(-len(out) % align)
    if len(out) > limit:
        raise ValueError(f"kernel arguments take {len(out)} bytes; the device takes at most {limit}.")
    return bytes(out)


def byte_view(array: np.ndarray, offset: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A typed view of `shape` at byte `offset` of a uint8 array (a host staging buffer)."""
    count = int(np.prod(shape, dtype=np.int64))
    return array[offset : offset + count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)


class AddressMap:
    """Live buffers by device address, to turn an address back into (buffer, offset). Weak: a
    buffer is freed when its owner drops it (its destructor calls `remove`)."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._buffers: list[weakref.ref] = []

    def add(self, buf: Any) -> None:
        i = bisect.bisect(self._starts, buf.ptr)
        self._starts.insert(i, buf.ptr)
        self._buffers.insert(i, weakref.ref(buf))

    def remove(self, buf: Any) -> None:
        i = bisect.bisect_left(self._starts, buf.ptr)
        if i < len(self._starts) and self._starts[i] == buf.ptr:
            del self._starts[i], self._buffers[i]

    def find(self, ptr: int, nbytes: int) -> tuple[Any, int]:
        i = bisect.bisect(self._starts, ptr) - 1
        buf = self._buffers[i]() if i >= 0 else None
        if buf is None or ptr + nbytes > buf.ptr + buf.nbytes:
            raise ValueError(f"device address {ptr:#x} (+{nbytes}) is in no buffer")
        return buf, ptr - buf.ptr
