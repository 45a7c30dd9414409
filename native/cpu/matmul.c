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
/* int8 activations: weight rows per pass over the batch's tokens, at least FUSED_ROWS */
#define Q8_ROW_BYTES (16 * 1024)

/* Weight rows [lo, hi) against int8 activations (mtp.h): every part quantizes the whole batch (the
 * same bits in every part), then one path for any n: a few weight rows at a time, while they are in
 * L1, against every group of four tokens. */
static void matmul_q8(mtp_pool *p, const void *w, int type, int64_t lo, int64_t hi, int64_t k, const float *x, int64_t n,
                      int64_t ldx, float *out, int64_t ldo) {
    const int block = MTP_Q8_BLOCK(type);
    const int64_t nb = k / block, ns = block == 256 ? k / 16 : 0, row_bytes = mtp_row_bytes(type, k);
    float *d = mtp_scratch(p, (size_t)n * ((size_t)nb * 4 + (size_t)ns * 2 + (size_t)k));
    int16_t *s = (int16_t *)(d + n * nb);
    int8_t *q = (int8_t *)(s + n * ns);
    for (int64_t i = 0; i < n; i++)
        mtp_k.quant(x + i * ldx, k, block, q + i * k, d + i * nb, s + i * ns);
    int64_t rows = Q8_ROW_BYTES / row_bytes < FUSED_ROWS ? FUSED_ROWS : Q8_ROW_BYTES / row_bytes;
    for (int64_t j = lo; j < hi; j += rows)
        for (int64_t i = 0; i < n; i += 4)
            mtp_k.qdot[type]((const uint8_t *)w + j * row_bytes, row_bytes, hi - j < rows ? hi - j : rows, q + i * k, d + i * nb,
                             s + i * ns, n - i >= 4 ? 4 : (int)(n - i), k, out + i * ldo + j, ldo);
}

void mtp_matmul_rows(mtp_pool *p, int q8, int part, int nparts, const void *w, int type, int64_t m, int64_t k,
                     const float *x, int64_t n, int64_t ldx, float *out, int64_t ldo) {
    int64_t lo, hi;
    mtp_split(m, part, nparts, &lo, &hi);
    if (lo >= hi)
        return;
    if (q8 && mtp_k.qdot[type]) {
        matmul_q8(p, w, type, lo, hi, k, x, n, ldx, out, ldo);
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
         * dotn's four-accumulator dots three */
        const int group = factored ? 4 : 3;
        for (int64_t i = 0; i < n; i += group) {
            int nt = n - i >= group ? group : (int)(n - i);
            for (int64_t j = j0; j < j1; j++) {
                const float *r = rows + (j - j0) * stride;
                if (factored)
                    mtp_k.kdot(r, r + k, x + i * ldx, ldx, X + i * nb, nb, nt, k, out + i * ldo + j, ldo);
                else
                    mtp_k.dotn(r, x + i * ldx, ldx, nt, k, out + i * ldo + j, ldo);
            }
        }
    }
}
