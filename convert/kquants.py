"""Q4_K, Q5_K and Q6_K block quantizers, bit-identical to ggml's reference (imatrix-free) ones.

ggml quantizes one 256-value super-block at a time with plain float32 arithmetic and sequential
sums. These functions do the same arithmetic for all sub-blocks of a chunk at once: values are laid
out as [position in sub-block, sub-block], so every elementwise step is one float32 array
operation and every running sum adds whole rows in ggml's order.
"""

from __future__ import annotations

import numpy as np

QK_K = 256
F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)


def _seq_sum(terms: np.ndarray, from_first: bool = False) -> np.ndarray:
    """Left-to-right float32 sum over axis 0, starting from 0 (or from the first term, as ggml does
    where it initialises a sum with element 0).

    numpy adds directly, in order, when reducing an axis that is not the fast one (it sums pairwise
    only along the fast axis), which is the case for [n, S] with S > 1. Adding +0 at the end gives
    what a sum started at +0 gives: only a -0 total changes, to +0.
    """
    if terms.shape[1] > 1:
        total = np.add.reduce(terms, axis=0)
    else:
        total = terms[0].copy()
        for t in terms[1:]:
            total += t
    return total if from_first else total + F32(0)


def _nearest_int(x: np.ndarray) -> np.ndarray:
    # ggml adds 1.5*2^23 and reads the mantissa: round half to even, like rint.
    return np.rint(x).astype(np.int32)


def _levels_into(out: np.ndarray, scaled: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """nearest_int then clamp, in place and kept in float32 (small integers are exact there)."""
    np.rint(scaled, out=out)
    return np.clip(out, F32(lo), F32(hi), out=out)


def _by_position(blocks: np.ndarray, sub: int) -> np.ndarray:
    """[n, 256] -> [sub, n*256/sub]: column s is sub-block s (super-block s // (256/sub))."""
    return np.ascontiguousarray(blocks.reshape(-1, sub).T)


def _fp16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)


def _make_qkx2_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float,
                      nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's make_qkx2_quants for every column of x [n, S]: (scale, -min, levels L [n, S]).

    Instead of keeping the best levels found so far, each column remembers the (iscale, min) that
    produced them; the levels are recomputed once at the end.
    """
    nmax_f = F32(nmax)
    lo = x.min(axis=0)
    hi = x.max(axis=0)
    sum_w = _seq_sum(w, from_first=True)
    sum_x = _seq_sum(w * x, from_first=True)
    lo = np.where(lo > 0, F32(0), lo)
    flat = hi == lo  # constant column: all levels 0, scale 0
    lf, t, wl = np.empty_like(x), np.empty_like(x), np.empty_like(x)

    def levels(iscale: np.ndarray, lo: np.ndarray) -> np.ndarray:
        np.subtract(x, lo, out=t)
        np.multiply(t, iscale, out=t)
        return _levels_into(lf, t, 0, nmax)

    def weighted_error(scale: np.ndarray, lo: np.ndarray) -> np.ndarray:
        # sum of w * (scale*L + min - x)^2, in ggml's operation order
        np.multiply(lf, scale, out=t)
        np.add(t, lo, out=t)
        np.subtract(t, x, out=t)
        np.multiply(t, t, out=t)
        return _seq_sum(np.multiply(t, w, out=t))

    iscale = nmax_f / (hi - lo)
    scale = F32(1) / iscale
    levels(iscale, lo)
    best_error = weighted_error(scale, lo)
    best_iscale, best_lo = iscale, lo
    for step in range(nstep + 1):
        iscale = (F32(rmin) + F32(rdelta) * F32(step) + nmax_f) / (hi - lo)
        levels(iscale, lo)
        np.multiply(w, lf, out=wl)
        sum_l = _seq_sum(wl)
        sum_l2 = _seq_sum(np.multiply(wl, lf, out=t))
        sum_xl = _seq_sum(np.multiply(wl, x, out=t))
        det = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        clamp = this_min > 0
        this_min = np.where(clamp, F32(0), this_min)
        this_scale = np.where(clamp, sum_xl / sum_l2, this_scale)
        cur_error = weighted_error(this_scale, this_min)
        better = (det > 0) & (cur_error < best_error) & ~flat
        best_iscale = np.where(better, iscale, best_iscale)
        best_lo = np.where(better, lo, best_lo)
        best_error = np.where(better, cur_error, best_error)
        scale = np.where(better, this_scale, scale)
        lo = np.where(better, this_min, lo)
    final = levels(best_iscale, best_lo)
    final[:, flat] = 0
    return np.where(flat, F32(0), scale), -lo, final


def _pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins per super-block ([n, 8] each) into ggml's 12-byte layout."""
    out = np.zeros((ls.shape[0], 12), np.uint8)
    out[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    return out


def _quantize_k4(blocks: np.ndarray, nmax: int, rmin: float, nstep: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shared part of Q4_K and Q5_K: (d, dmin as fp16 [n], packed scales [n, 12], levels [n, 256])."""
    n = blocks.shape[0]
    x = _by_position(blocks, 32)  # [32, n*8]
    sum_x2 = _seq_sum(x * x)
    av_x = np.sqrt(sum_x2 / F32(32))
    w = av_x + np.abs(x)
    scales, mins, levels = _make_qkx2_quants(x, w, nmax, rmin, F32(0.1), nstep)
    scales, mins = scales.reshape(n, 8), mins.reshape(n, 8)
    # max_scale/max_min start at 0 and only grow (ggml's running maximum).
    max_scale = scales.max(axis=1)
    max_scale = np.where(max_scale > 0, max_scale, F32(0))
    max_min = mins.max(axis=1)
    max_min = np.where(max_min > 0, max_min, F32(0))
    inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
    inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
    # uint8_t ls = nearest_int(...): wraps to a byte before the MIN(63).
    ls = np.minimum(_nearest_int(inv_scale[:, None] * scales) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(_nearest_int(inv_min[:, None] * mins) & 0xFF, 63).astype(np.uint8)
    d = _fp16(max_scale / F32(63))
    dmin = _fp16(max_min / F32(63))
    # Re-quantize against the rounded fp16 scales; sub-blocks whose scale rounds to 0 keep their levels.
    dq = (d.astype(F32)[:, None] * ls.astype(F32)).reshape(-1)
    dm = (dmin.astype(F32)[:, None] * lm.astype(F32)).reshape(-1)
    requant = _levels_into(np.empty_like(x), (x + dm) / dq, 0, nmax)
    keep = dq == 0
    requant[:, keep] = levels[:, keep]
    return d, dmin, _pack_scales_k4(ls, lm), requant.T.reshape(n, QK_K).astype(np.uint8)


def quantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    """[n, 256] float32 -> [n, 144] bytes (block_q4_K: d, dmin, scales[12], qs[128])."""
    with np.errstate(all="ignore"):
        d, dmin, scales, levels = _quantize_k4(blocks, 15, -1.0, 20)
    pairs = levels.reshape(-1, 4, 2, 32)  # 64-value groups: low nibble first 32, high nibble next 32
    qs = (pairs[:, :, 0, :] | (pairs[:, :, 1, :] << 4)).reshape(-1, 128)
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), scales, qs], axis=1)


def quantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    """[n, 256] float32 -> [n, 176] bytes (block_q5_K: d, dmin, scales[12], qh[32], qs[128])."""
    with np.errstate(all="ignore"):
        d, dmin, scales, levels = _quantize_k4(blocks, 31, -0.5, 15)
    pairs = levels.reshape(-1, 4, 2, 32)
    qs = ((pairs[:, :, 0, :] & 0xF) | ((pairs[:, :, 1, :] & 0xF) << 4)).reshape(-1, 128)
    high = levels.reshape(-1, 8, 32) >> 4  # the fifth bit of sub-block j goes to bit j of qh
    qh = np.zeros((levels.shape[0], 32), np.uint8)
    for j in range(8):
        qh |= high[:, j, :] << j
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), scales, qh, qs], axis=1)


def _make_qx_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml's make_qx_quants with rmse_type 1 and no weights for every column of x [n, S]:
    (scale, levels L + nmax [n, S]). Levels are recomputed at the end from the best iscale."""
    cols = np.arange(x.shape[1])
    ax = np.abs(x)
    top = ax.argmax(axis=0)  # first index of the largest |x|, as ggml's strict '>' scan finds it
    amax = ax[top, cols]
    vmax = x[top, cols]
    tiny = amax < GROUP_MAX_EPS
    w = x * x
    wx = w * x
    lv, t = np.empty_like(x), np.empty_like(x)

    def levels(iscale: np.ndarray) -> np.ndarray:
        return _levels_into(lv, np.multiply(x, iscale, out=t), -nmax, nmax - 1)

    def sums(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        levels(iscale)
        sumlx = _seq_sum(np.multiply(wx, lv, out=t))
        np.multiply(w, lv, out=t)
        return sumlx, _seq_sum(np.multiply(t, lv, out=t))

    best_iscale = F32(-nmax) / vmax
    sumlx, suml2 = sums(best_iscale)
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(F32(nmax) + F32(0.1) * F32(step)) / vmax
        sumlx, suml2 = sums(iscale)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        best_iscale = np.where(better, iscale, best_iscale)
        scale = np.where(better, sumlx / suml2, scale)
        best = np.where(better, scale * sumlx, best)
    final = levels(best_iscale) + F32(nmax)
    final[:, tiny] = 0
    return np.where(tiny, F32(0), scale), final


def quantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    """[n, 256] float32 -> [n, 210] bytes (block_q6_K: ql[128], qh[64], scales[16], d)."""
    n = blocks.shape[0]
    with np.errstate(all="ignore"):
        x = _by_position(blocks, 16)  # [16, n*16]
        scales, levels = _make_qx_quants(x, 32)
        scales = scales.reshape(n, 16)
        top = np.abs(scales).argmax(axis=1)
        max_scale = scales[np.arange(n), top]
        zero = np.abs(max_scale) < GROUP_MAX_EPS
        iscale = F32(-128) / max_scale
        d = _fp16(F32(1) / iscale)
        sc = np.minimum(_nearest_int(iscale[:, None] * scales), 127).astype(np.int8)
        dq = (d.astype(F32)[:, None] * sc.astype(F32)).reshape(-1)
        requant = _levels_into(np.empty_like(x), x / dq, -32, 31) + F32(32)
        keep = dq == 0
        requant[:, keep] = levels[:, keep]
    q = requant.T.reshape(n, 2, 4, 32).astype(np.uint8)  # [block, half, quarter, 32]
    lo, hi = q & 0xF, q >> 4
    ql = np.concatenate([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)], axis=2).reshape(n, 128)
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(n, 64)
    out = np.concatenate([ql, qh, sc.view(np.uint8), d.view(np.uint8).reshape(-1, 2)], axis=1)
    out[zero] = 0
    return out
