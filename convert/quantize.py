"""Turn a float tensor into the bytes of one GGML type, in row chunks spread over CPU threads.

F16 is numpy's (round-to-nearest-even, as ggml); every other type goes to the C quantizers
(native_quant.py, native/cpu/quantize.c, threaded inside one call) when the native library is built
and MTPRUN_QUANT_NUMPY is not set. The NumPy path below is their reference and the fallback: BF16,
Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 come from gguf-py, whose quantizers reproduce ggml's reference ones
bit for bit; Q4_K, Q5_K and Q6_K are ours (kquants.py). Chunking bounds the temporaries, and numpy
releases the GIL inside its loops, so threads give a real speed-up on big tensors.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf import quants as gguf_quants

from mtprun.convert import kquants, native_quant

# Roughly 1 MiB of float32 per chunk: small enough for the K-quant temporaries to stay in cache.
CHUNK_ELEMENTS = 1 << 18

_KQUANTS: dict[T, Callable[[np.ndarray], np.ndarray]] = {
    T.Q4_K: kquants.quantize_q4_k,
    T.Q5_K: kquants.quantize_q5_k,
    T.Q6_K: kquants.quantize_q6_k,
}
_GGUF_TYPES = (T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1)
SUPPORTED = (T.F32, T.F16, *_GGUF_TYPES, *_KQUANTS)


# Legacy types whose gguf-py quantizer can differ from ggml in the sign of a zero scale or minimum.
_SIGNED_ZERO_FIX = (T.Q4_0, T.Q5_0, T.Q4_1, T.Q5_1)
_FP16_NEG_ZERO = np.frombuffer(np.float16(-0.0).tobytes(), np.uint8)


def _fix_zero_signs(rows: np.ndarray, out: np.ndarray, qtype: T) -> np.ndarray:
    """Match ggml where a block's scale or minimum is zero.

    ggml scans a block in order: Q4_0/Q5_0 start from max = +0, so an all-zero block gets
    d = 0 / -8 = -0; Q4_1/Q5_1 keep the first zero they meet as min (and max), so m takes that
    zero's sign and d = 0 - 0 = +0. gguf-py's vectorised min/max may pick either zero.
    """
    block, type_size = GGML_QUANT_SIZES[qtype]
    x = rows.reshape(-1, block)
    q = out.reshape(-1, type_size)
    all_zero = ~np.any(x != 0, axis=1)
    if qtype in (T.Q4_0, T.Q5_0):
        q[all_zero, 0:2] = _FP16_NEG_ZERO
        return out
    q[all_zero, 0:2] = 0
    zero_min = x.min(axis=1) == 0
    if np.any(zero_min):
        first = np.argmax(x[zero_min] == 0, axis=1)
        negative = np.signbit(x[zero_min][np.arange(first.size), first])
        q[zero_min, 2:4] = np.where(negative[:, None], _FP16_NEG_ZERO, np.uint8(0))
    return out


def _rows(rows: np.ndarray, qtype: T) -> np.ndarray:
    """Quantize [n, ncols] float32 rows into [n, row_bytes] (or a float array for F32/F16)."""
    if qtype == T.F32:
        return rows.astype(np.float32, copy=False)
    if qtype == T.F16:
        return rows.astype(np.float16)
    if qtype in _GGUF_TYPES:
        out = gguf_quants.quantize(rows, qtype)
        return _fix_zero_signs(rows, out, qtype) if qtype in _SIGNED_ZERO_FIX else out
    blocks = rows.reshape(-1, GGML_QUANT_SIZES[qtype][0]).astype(np.float32, copy=False)
    return _KQUANTS[qtype](blocks).reshape(rows.shape[0], -1)


def row_bytes(ncols: int, qtype: T) -> int:
    block, type_size = GGML_QUANT_SIZES[qtype]
    return ncols // block * type_size


def quantize(data: np.ndarray, qtype: T, threads: int | None = None) -> np.ndarray:
    """`data` (rows along the last axis) as `qtype`: a float array for F32/F16, else uint8 bytes
    shaped [..., row_bytes]."""
    if qtype not in SUPPORTED:
        raise NotImplementedError(f"quantization to {qtype.name} is not implemented")
    ncols = data.shape[-1]
    if ncols % GGML_QUANT_SIZES[qtype][0] != 0:
        raise ValueError(f"rows of {ncols} values are not a whole number of {qtype.name} blocks")
    rows = data.reshape(-1, ncols)
    if qtype in native_quant.TYPES:
        out = native_quant.quantize_rows(qtype, rows, threads)
        if out is not None:
            return out.reshape(*data.shape[:-1], -1)
    step = max(1, CHUNK_ELEMENTS // max(ncols, 1))
    if rows.shape[0] <= step:
        return _rows(rows, qtype).reshape(*data.shape[:-1], -1)
    if qtype in (T.F32, T.F16):
        out = np.empty(rows.shape, np.float32 if qtype == T.F32 else np.float16)
    else:
        out = np.empty((rows.shape[0], row_bytes(ncols, qtype)), np.uint8)

    def work(start: int) -> None:
        out[start:start + step] = _rows(rows[start:start + step], qtype)

    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        list(pool.map(work, range(0, rows.shape[0], step)))
    return out.reshape(*data.shape[:-1], -1)
