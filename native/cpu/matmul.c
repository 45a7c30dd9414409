/* Matrix products straight from the weight blocks. Parts own disjoint output columns (weight
 * rows). A few tokens (decode, verify) take each weight row through a fused decode-and-dot kernel,
 * four tokens at a time, while the row is in L1; a larger batch decodes a tile of weight rows once
 * and uses it for every token, so each weight is read once either way. Every out[i, j] is the same
 * dot of the same two float rows (the fused kernels are bit-identical to decode + dot) whatever n,
 * the tile, the part or the thread: a row's bits never depend on its batch. */
#include "mtp.h"

#define TILE_BYTES (32 * 1024)  /* decoded weight rows per tile: stays in L1/L2 while the batch streams */
/* Batches up to this many tokens use the fused kernels (which decode a row once per four tokens):
 * measured, a K-quant row costs about as much to decode as four dots of it, a Q8_0 row much less. */
#define FUSED_MAX_N(type) ((type) == T_Q8_0 ? 8 : 4)

void mtp_matmul_rows(mtp_pool *p, int part, int nparts, const void *w, int type, int64_t m, int64_t k,
                     const float *x, int64_t n, int64_t ldx, float *out, int64_t ldo) {
    int64_t lo, hi;
    mtp_split(m, part, nparts, &lo, &hi);
    if (lo >= hi)
        return;
    const int64_t row_bytes = mtp_row_bytes(type, k);
    mtp_vdot_fn vdot = mtp_k.vdot[type];
    if (vdot && n <= FUSED_MAX_N(type)) {
        for (int64_t j = lo; j < hi; j++)
            for (int64_t i = 0; i < n; i += 4)
                vdot((const uint8_t *)w + j * row_bytes, x + i * ldx, ldx, n - i >= 4 ? 4 : (int)(n - i), k, out + i * ldo + j, ldo);
        return;
    }
    int64_t tile = TILE_BYTES / (4 * k);
    if (tile < 1)
        tile = 1;
    float *buf = type == T_F32 ? NULL : mtp_scratch(p, (size_t)(tile * k) * sizeof(float));
    for (int64_t j0 = lo; j0 < hi; j0 += tile) {
        int64_t j1 = j0 + tile < hi ? j0 + tile : hi;
        const float *rows;
        if (type == T_F32) {
            rows = (const float *)w + j0 * k;
        } else {
            for (int64_t j = j0; j < j1; j++)
                mtp_k.dequant[type]((const uint8_t *)w + j * row_bytes, buf + (j - j0) * k, k);
            rows = buf;
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = j0; j < j1; j++)
                out[i * ldo + j] = mtp_k.dot(rows + (j - j0) * k, x + i * ldx, k);
    }
}
