"""The C quantizers (native/cpu/quantize.c) through ctypes: convert's fast path.

They give the bytes of convert/quantize.py's NumPy path (the reference, and the fallback when the
library is not built), many times faster and on several threads inside one call. The library is
the CPU backend's (native/cpu_backend.library()). MTPRUN_QUANT_NUMPY=1 turns this path off.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

TYPES = (T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K)
ENV_NUMPY = "MTPRUN_QUANT_NUMPY"

_lib: ctypes.CDLL | None = None
_missing: str | None = None


def _library() -> ctypes.CDLL | None:
    """The library with mtp_quantize typed, or None (not built, or built before quantize.c)."""
    global _lib, _missing
    if _lib is not None or _missing is not None:
        return _lib
    try:
        from mtprun.native.cpu_backend import library
        from mtprun.runner.errors import MtprunError

        try:
            lib = library()
        except (MtprunError, OSError) as e:
            _missing = str(e)
            return None
    except ImportError as e:
        _missing = str(e)
        return None
    if not hasattr(lib, "mtp_quantize"):
        _missing = "the native CPU library predates the C quantizers (rebuild mtprun)"
        return None
    lib.mtp_quantize.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
    lib.mtp_quantize.restype = ctypes.c_int
    lib.mtp_quantize_supported.argtypes = [ctypes.c_int]
    lib.mtp_quantize_supported.restype = ctypes.c_int
    lib.mtp_quantize_simd.argtypes = [ctypes.c_int]
    lib.mtp_quantize_simd.restype = ctypes.c_int
    _lib = lib
    return lib


def unavailable_reason() -> str | None:
    """Why the C path is not used (None when it is)."""
    if os.environ.get(ENV_NUMPY, "") not in ("", "0"):
        return f"{ENV_NUMPY} is set"
    if _library() is None:
        return _missing or "the native CPU library is unavailable"
    return None


def available(qtype: T | None = None) -> bool:
    """Whether quantize_rows will quantize (to `qtype`, if given) in C."""
    if unavailable_reason() is not None:
        return False
    return qtype is None or (qtype in TYPES and bool(_library().mtp_quantize_supported(int(qtype))))


def set_simd(level: int) -> int:
    """Use the best kernels at most `level` (0: portable C, 1: AVX2); returns the level chosen.
    Every level gives the same bytes; the tests check each."""
    lib = _library()
    if lib is None:
        raise RuntimeError(f"the C quantizers are unavailable: {_missing}")
    return lib.mtp_quantize_simd(level)


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def quantize_rows(qtype: T, rows: np.ndarray, threads: int | None = None) -> np.ndarray | None:
    """[n, k] values (cast to float32) as [n, row_bytes] uint8 in `qtype`'s blocks, or None when the C
    path is unavailable for this type (the caller falls back to NumPy)."""
    if not available(qtype):
        return None
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    k = rows.shape[-1]
    block, type_size = GGML_QUANT_SIZES[qtype]
    if k % block != 0:
        raise ValueError(f"rows of {k} values are not a whole number of {qtype.name} blocks")
    n = rows.size
    out = np.empty((*rows.shape[:-1], k // block * type_size), np.uint8)
    if n == 0:
        return out
    rc = _library().mtp_quantize(int(qtype), rows.ctypes.data, out.ctypes.data, n, threads or default_threads())
    if rc != 0:
        raise RuntimeError(f"mtp_quantize({qtype.name}) failed with code {rc}")
    return out
