"""What a launch hands a Metal kernel besides its pipeline and grid: the arguments as the bytes of
the kernel's MSL argument struct (passed with setBytes at buffer index 0), and its dynamic
threadgroup memory length. Pure functions: no Metal needed."""

from __future__ import annotations

from collections.abc import Sequence
from ctypes import _SimpleCData, c_uint64

from mtprun.native.device_memory import pack_arguments as shared_pack_arguments

SET_BYTES_LIMIT = 4096  # setBytes:length:atIndex: is meant for at most 4 KiB
_THREADGROUP_GRANULE = 16  # setThreadgroupMemoryLength: lengths are multiples of 16 bytes


def pack_arguments(values: Sequence[_SimpleCData]) -> bytes:
    """The launch's values (ctypes, in parameter order) laid out as MSL lays out the struct whose
    members have those types: each member at an offset aligned to its own size (pointers, long:
    8; int, float: 4), the whole padded to its largest member's alignment."""
    return shared_pack_arguments(values, SET_BYTES_LIMIT, pad_to_largest=True)


def addresses(values: Sequence[_SimpleCData]) -> list[int]:
    """The device addresses among a launch's values (gpu.py passes every pointer, and only
    pointers, as c_uint64); null pointers left out."""
    return [v.value for v in values if isinstance(v, c_uint64) and v.value]


def threadgroup_bytes(shared: int) -> int:
    """A launch's dynamic shared memory as Metal takes it: rounded up to 16 bytes."""
    return -(-shared // _THREADGROUP_GRANULE) * _THREADGROUP_GRANULE
