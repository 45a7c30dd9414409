"""A NumPy model of the CPU backend's quantized-activation products (native/cpu/mtp.h, "q8" and
"q8x2" modes): the same int8 quantization of each token row (and of its rounding error), the same
exact integer block sums (int64 here), and the same float32 operations in the same order, so it
reproduces the kernels bit for bit."""

from __future__ import annotations

import numpy as np
from gguf.constants import GGMLQuantizationType as T

F32 = np.float32
K_TYPES = (T.Q4_K, T.Q5_K, T.Q6_K)


def block_size(qtype: T) -> int:
    return 256 if qtype in K_TYPES else 32


def quantize_rows(x: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x [n, k] -> int8 quants [n, k], scales [n, k / block], per-16 sums of the quants [n, k / 16]."""
    n, k = x.shape
    xb = x.astype(F32).reshape(n, k // block, block)
    amax = np.abs(xb).max(axis=-1)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, F32(127) / amax, F32(0)).astype(F32)
    q = np.rint(xb * inv[..., None]).astype(np.int64)  # rint: nearest, ties to even
    return q.reshape(n, k), (amax / F32(127)).astype(F32), q.reshape(n, k // 16, 16).sum(-1)


def _halves(raw: np.ndarray, offset: int) -> np.ndarray:
    return raw[..., offset : offset + 2].copy().view(np.float16)[..., 0].astype(F32)


def _k45_scales(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 6-bit scales and mins of Q4_K / Q5_K super-blocks [..., 8] (ggml's 12-byte packing)."""
    s = raw[..., 4:16].astype(np.int64)
    sc = np.concatenate([s[..., 0:4] & 63, (s[..., 8:12] & 0xF) | ((s[..., 0:4] >> 6) << 4)], axis=-1)
    mn = np.concatenate([s[..., 4:8] & 63, (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)], axis=-1)
    return sc, mn


def _k45_quants(raw: np.ndarray, q5: bool) -> np.ndarray:
    """[..., 8 sub-blocks, 32] unsigned quants of Q4_K / Q5_K super-blocks."""
    qs = raw[..., 48:176] if q5 else raw[..., 16:144]
    qs = qs.reshape(*qs.shape[:-1], 4, 32).astype(np.int64)
    q = np.stack([(qs[..., j // 2, :] >> (4 * (j % 2))) & 0xF for j in range(8)], axis=-2)
    if q5:
        qh = raw[..., 16:48].astype(np.int64)
        q |= np.stack([((qh >> j) & 1) << 4 for j in range(8)], axis=-2)
    return q


def _q6_k_quants(raw: np.ndarray) -> np.ndarray:
    """[..., 16 groups, 16] signed quants (q - 32) of Q6_K super-blocks."""
    e = np.arange(256)
    h, r = e // 128, e % 128
    ql, qh = raw[..., :128].astype(np.int64), raw[..., 128:192].astype(np.int64)
    lo = (ql[..., 64 * h + r % 64] >> (4 * (r // 64))) & 0xF
    hi = (qh[..., 32 * h + r % 32] >> (2 * (r // 32))) & 3
    return ((lo | hi << 4) - 32).reshape(*raw.shape[:-1], 16, 16)


def decode_ints(qtype: T, raw: np.ndarray) -> dict:
    """A weight [rows, bytes] as its integers and f32 scales per (super-)block."""
    rows = raw.shape[0]
    if qtype == T.Q8_0:
        b = raw.reshape(rows, -1, 34)
        return {"d": _halves(b, 0), "q": b[..., 2:].copy().view(np.int8).astype(np.int64)}
    if qtype == T.Q6_K:
        b = raw.reshape(rows, -1, 210)
        return {"d": _halves(b, 208), "q": _q6_k_quants(b), "sc": b[..., 192:208].copy().view(np.int8).astype(np.int64)}
    b = raw.reshape(rows, -1, 176 if qtype == T.Q5_K else 144)
    sc, mn = _k45_scales(b)
    return {"d": _halves(b, 0), "dmin": _halves(b, 2), "sc": sc, "mn": mn, "q": _k45_quants(b, qtype == T.Q5_K)}


def dequantize(qtype: T, w: dict) -> np.ndarray:
    """The weights as gguf-py decodes them, from decode_ints' integers (checks the decoding)."""
    if qtype == T.Q8_0:
        return (w["d"][..., None] * w["q"].astype(F32)).reshape(w["q"].shape[0], -1)
    if qtype == T.Q6_K:
        return ((w["d"][..., None] * w["sc"].astype(F32))[..., None] * w["q"].astype(F32)).reshape(w["q"].shape[0], -1)
    ds = (w["d"][..., None] * w["sc"].astype(F32))[..., None]
    dm = (w["dmin"][..., None] * w["mn"].astype(F32))[..., None]
    return (ds * w["q"].astype(F32) - dm).reshape(w["q"].shape[0], -1)


def _in_order(terms: np.ndarray) -> np.ndarray:
    """terms [rows, n] summed left to right in float32."""
    acc = np.zeros(terms.shape[0], F32)
    for i in range(terms.shape[1]):
        acc = acc + terms[:, i]
    return acc


def _q8_0_lanes(terms: np.ndarray) -> np.ndarray:
    """terms [rows, nb] into lane b % 8 (padded with zeros), then mtp.h's tree."""
    rows, nb = terms.shape
    padded = np.zeros((rows, -(-nb // 8) * 8), F32)
    padded[:, :nb] = terms
    lanes = np.zeros((rows, 8), F32)
    for g in range(0, padded.shape[1], 8):
        lanes = lanes + padded[:, g : g + 8]
    L = [lanes[:, i] for i in range(8)]
    return ((L[0] + L[4]) + (L[2] + L[6])) + ((L[1] + L[5]) + (L[3] + L[7]))


def matmul(qtype: T, raw: np.ndarray, x: np.ndarray, planes: int = 1) -> np.ndarray:
    """out [n, rows] of the q8 (one plane) or q8x2 (two) mode: raw [rows, bytes] weight blocks, x [n, k]."""
    w = decode_ints(qtype, raw)
    block = block_size(qtype)
    xq, dx, xs = quantize_rows(x, block)
    out = _products(qtype, w, xq, dx, xs)
    if planes == 2:  # the second plane quantizes x - d * q; its product is added
        residual = x - np.repeat(dx, block, axis=1) * xq.astype(F32)
        out = out + _products(qtype, w, *quantize_rows(residual, block))
    return out


def _products(qtype: T, w: dict, xq: np.ndarray, dx: np.ndarray, xs: np.ndarray) -> np.ndarray:
    rows, k = w["q"].shape[0], xq.shape[1]
    out = np.empty((xq.shape[0], rows), F32)
    for t in range(xq.shape[0]):
        if qtype == T.Q8_0:
            isum = (w["q"] * xq[t].reshape(1, -1, 32)).sum(-1)
            out[t] = _q8_0_lanes((w["d"] * dx[t]) * isum.astype(F32))
            continue
        if qtype == T.Q6_K:
            isum = (w["sc"] * (w["q"] * xq[t].reshape(1, -1, 16, 16)).sum(-1)).sum(-1)
            out[t] = _in_order((w["d"] * dx[t]) * isum.astype(F32))
            continue
        isum = (w["sc"] * (w["q"] * xq[t].reshape(1, -1, 8, 32)).sum(-1)).sum(-1)
        xsum = xs[t].reshape(1, k // 256, 8, 2).sum(-1)
        imn = (w["mn"] * xsum).sum(-1)
        out[t] = _in_order((w["d"] * dx[t]) * isum.astype(F32) - (w["dmin"] * dx[t]) * imn.astype(F32))
    return out
