/* Matrix products straight from the weight blocks. Parts own disjoint output columns (weight
 * rows). A few tokens (decode, verify) take each weight row through a fused decode-and-dot kernel,
 * four tokens at a time, while the row is in L1; a larger batch decodes a tile of weight rows once
 * and takes each row against four tokens at a time, so each weight is read once either way. Every
 * out[i, j] is computed the same way whatever n, the tile, the part or the thread (mtp.h): a row's
 * bits never depend on its batch. */
#include "mtp.h"

#define TILE_BYTES (32 * 1024)  /* decoded weight rows per tile: stays in L1/L2 while the batch streams */
/* Batches up to this many tokens use the fused kernels (which decode a row once per four tokens):
 * measured, from 5 to 8 tokens as fast as the tiled path for Q6_K, faster for the others. */
#define FUSED_MAX_N 8
#define FUSED_ROWS 16
/* int8 activations: weight rows per pass over the batch's tokens, at least FUSED_ROWS and at most
 * Q8_MAX_ROWS */
#define Q8_ROW_BYTES (16 * 1024)
#define Q8_MAX_ROWS 512

/* The batch's activations as int8 rows (mtp.h's layout): scales, per-16 sums, quants. */
typedef struct {
    float *d;
    int16_t *s;
    int8_t *q;
} q8_rows;

/* Token i as rows planes * i + c: c = 0 quantizes x; c = 1 (MTP_ACT_Q8X2) quantizes what plane 0
 * left out, x - d * q, so that d0 * q0 + d1 * q1 holds x to ~1/250 of plane 0's rounding. `extra`:
 * bytes after the rows (64-byte aligned) for the caller, at *extra_at. */
static q8_rows quantize_rows(mtp_pool *p, int planes, int block, int64_t k, const float *x, int64_t n, int64_t ldx,
                             size_t extra, void **extra_at) {
    const int64_t nb = k / block, ns = block == 256 ? k / 16 : 0, rows = n * planes;
    const size_t bytes = (size_t)(4 * k + rows * (nb * 4 + ns * 2 + k));
    float *r = mtp_scratch(p, bytes + (extra ? 64 + extra : 0));  /* r: one row's residual */
    q8_rows a;
    a.d = r + k;
    a.s = (int16_t *)(a.d + rows * nb);
    a.q = (int8_t *)(a.s + rows * ns);
    if (extra)
        *extra_at = (void *)(((uintptr_t)r + bytes + 63) & ~(uintptr_t)63);
    for (int64_t i = 0; i < n; i++) {
        const int64_t v = planes * i;
        mtp_k.quant(x + i * ldx, k, block, a.q + v * k, a.d + v * nb, a.s + v * ns);
        if (planes < 2)
            continue;
        for (int64_t l = 0; l < k; l++)
            r[l] = x[i * ldx + l] - a.d[v * nb + l / block] * (float)a.q[v * k + l];
        mtp_k.quant(r, k, block, a.q + (v + 1) * k, a.d + (v + 1) * nb, a.s + (v + 1) * ns);
    }
    return a;
}

/* A long batch, one int8 plane, on a qgemm: the batch re-laid as groups of MTP_LANES tokens, then
 * each chunk of weight rows against every group while the chunk is in L1 / L2 (the groups, about
 * n * k bytes, stream from L2). */
static void matmul_lanes(mtp_pool *p, const void *w, int type, int64_t lo, int64_t hi, int64_t k, const float *x, int64_t n,
                         int64_t ldx, float *out, int64_t ldo, int64_t chunk) {
    const int block = MTP_Q8_BLOCK(type);
    const int64_t groups = (n + MTP_LANES - 1) / MTP_LANES, group_bytes = MTP_QLANES_BYTES(k, block);
    const int64_t row_bytes = mtp_row_bytes(type, k);
    void *lanes = NULL;
    const q8_rows a = quantize_rows(p, 1, block, k, x, n, ldx, (size_t)(groups * group_bytes + MTP_QGEMM_WORK(k)), &lanes);
    for (int64_t g = 0; g < groups; g++) {
        const int64_t t0 = g * MTP_LANES;
        mtp_k.qlanes[type](a.q, a.d, a.s, t0, n - t0 < MTP_LANES ? (int)(n - t0) : MTP_LANES, k, (uint8_t *)lanes + g * group_bytes);
    }
    void *work = (uint8_t *)lanes + groups * group_bytes;
    for (int64_t j = lo; j < hi; j += chunk)
        mtp_k.qgemm[type]((const uint8_t *)w + j * row_bytes, row_bytes, hi - j < chunk ? hi - j : chunk, lanes, group_bytes, n, k,
                          out + j, ldo, work);
}

/* Weight rows [lo, hi) against int8 activations (mtp.h): every part quantizes the whole batch (the
 * same bits in every part), then one path for any n: a few weight rows at a time, while they are in
 * L1, against every group of four activation rows (with two planes, two tokens: each weight block
 * decoded once for both planes), a token's result the first plane's product plus the second's. */
static void matmul_q8(mtp_pool *p, int planes, const void *w, int type, int64_t lo, int64_t hi, int64_t k, const float *x,
                      int64_t n, int64_t ldx, float *out, int64_t ldo) {
    const int block = MTP_Q8_BLOCK(type);
    const int64_t nb = k / block, ns = block == 256 ? k / 16 : 0, row_bytes = mtp_row_bytes(type, k), rows = n * planes;
    int64_t chunk = Q8_ROW_BYTES / row_bytes < FUSED_ROWS ? FUSED_ROWS : Q8_ROW_BYTES / row_bytes;
    chunk = chunk > Q8_MAX_ROWS ? Q8_MAX_ROWS : chunk;
    if (planes == 1 && n >= MTP_LANES && mtp_k.qgemm[type]) {
        matmul_lanes(p, w, type, lo, hi, k, x, n, ldx, out, ldo, chunk);
        return;
    }
    const q8_rows a = quantize_rows(p, planes, block, k, x, n, ldx, 0, NULL);
    float part[4 * Q8_MAX_ROWS];  /* two planes: both products of two tokens */
    for (int64_t j = lo; j < hi; j += chunk) {
        const uint8_t *wj = (const uint8_t *)w + j * row_bytes;
        const int64_t nr = hi - j < chunk ? hi - j : chunk;
        for (int64_t v = 0; v < rows; v += 4) {
            const int nt = rows - v >= 4 ? 4 : (int)(rows - v);
            if (planes == 1) {
                mtp_k.qdot[type](wj, row_bytes, nr, a.q + v * k, a.d + v * nb, a.s + v * ns, nt, k, out + v * ldo + j, ldo);
                continue;
            }
            mtp_k.qdot[type](wj, row_bytes, nr, a.q + v * k, a.d + v * nb, a.s + v * ns, nt, k, part, nr);
            for (int t = 0; t < nt / 2; t++)
                for (int64_t r = 0; r < nr; r++)
                    out[(v / 2 + t) * ldo + j + r] = part[2 * t * nr + r] + part[(2 * t + 1) * nr + r];
        }
    }
}

void mtp_matmul_rows(mtp_pool *p, int act, int part, int nparts, const void *w, int type, int64_t m, int64_t k,
                     const float *x, int64_t n, int64_t ldx, float *out, int64_t ldo) {
    int64_t lo, hi;
    mtp_split(m, part, nparts, &lo, &hi);
    if (lo >= hi)
        return;
    if (act != MTP_ACT_F32 && mtp_k.qdot[type]) {
        matmul_q8(p, act == MTP_ACT_Q8X2 ? 2 : 1, w, type, lo, hi, k, x, n, ldx, out, ldo);
        return;
    }
    const int64_t row_bytes = mtp_row_bytes(type, k), nb = k / 32;
    const int factored = MTP_FACTORED(type);
    mtp_vdot_fn vdot = mtp_k.vdot[type];
    const int fused = vdot && n <= FUSED_MAX_N;
    /* a tile row: the decoded row, or (factored) the split row's values, scales and mins */
    const int64_t stride = factored ? k + 2 * nb : k;
    int64_t tile = TILE_BYTES / (4 * stride);
    if (tile < 1)
        tile = 1;
    const int64_t sums = factored ? n * nb : 0, tiled = fused || type == T_F32 ? 0 : tile * stride;
    float *X = sums + tiled ? mtp_scratch(p, (size_t)(sums + tiled) * sizeof(float)) : NULL, *buf = X + sums;
    for (int64_t i = 0; i < n && factored; i++)
        mtp_k.sums(x + i * ldx, k, X + i * nb);
    if (fused) {  /* a few rows at a time, each group of four tokens while they are in L1 */
        for (int64_t j = lo; j < hi; j += FUSED_ROWS)
            for (int64_t i = 0; i < n; i += 4)
                vdot((const uint8_t *)w + j * row_bytes, row_bytes, hi - j < FUSED_ROWS ? hi - j : FUSED_ROWS, x + i * ldx, ldx,
                     factored ? X + i * nb : NULL, nb, n - i >= 4 ? 4 : (int)(n - i), k, out + i * ldo + j, ldo);
        return;
    }
    for (int64_t j0 = lo; j0 < hi; j0 += tile) {
        int64_t j1 = j0 + tile < hi ? j0 + tile : hi;
        const float *rows = type == T_F32 ? (const float *)w + j0 * k : buf;
        for (int64_t j = j0; j < j1 && type != T_F32; j++) {
            const uint8_t *src = (const uint8_t *)w + j * row_bytes;
            if (factored)
                mtp_k.split(type, src, buf + (j - j0) * stride, buf + (j - j0) * stride + k, k);
            else
                mtp_k.dequant[type](src, buf + (j - j0) * stride, k);
        }
        /* measured: the factored kernels keep four tokens' accumulators in AVX2's registers,
         * dotn's four-accumulator dots three; dotn2 two rows against four */
        const int pairs = !factored && mtp_k.dotn2 && k % 32 == 0, group = factored || pairs ? 4 : 3;
        for (int64_t i = 0; i < n; i += group) {
            int nt = n - i >= group ? group : (int)(n - i);
            int64_t j = j0;
            for (; pairs && j + 2 <= j1; j += 2)
                mtp_k.dotn2(rows + (j - j0) * stride, stride, x + i * ldx, ldx, nt, k, out + i * ldo + j, ldo);
            for (; j < j1; j++) {
                const float *r = rows + (j - j0) * stride;
                if (factored)
                    mtp_k.kdot(r, r + k, x + i * ldx, ldx, X + i * nb, nb, nt, k, out + i * ldo + j, ldo);
                else
                    mtp_k.dotn(r, x + i * ldx, ldx, nt, k, out + i * ldo + j, ldo);
            }
        }
    }
}
