/* Matrix products straight from the weight blocks. Parts own disjoint output columns (weight
 * rows); a tile of weight rows is decoded once and used for every token of the batch, so a verify
 * batch reads each weight once. Every out[i, j] is the same dot of the same two float rows whatever
 * n, the tile, the part or the thread: a row's bits never depend on its batch. */
#include "mtp.h"

#define TILE_BYTES (32 * 1024)  /* decoded weight rows per tile: stays in L1/L2 while the batch streams */

void mtp_matmul_rows(mtp_pool *p, int part, int nparts, const void *w, int type, int64_t m, int64_t k,
                     const float *x, int64_t n, int64_t ldx, float *out, int64_t ldo) {
    int64_t lo, hi;
    mtp_split(m, part, nparts, &lo, &hi);
    if (lo >= hi)
        return;
    const int64_t row_bytes = mtp_row_bytes(type, k);
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
