/* rms_norm, l2_norm and rope, each row by itself, with the NumPy reference's precision choices:
 * sums of squares in double, one rounding of the factor to float, rotation angles from a float32
 * running product of the frequency step and cos / sin taken in double. */
#include <math.h>

#include "mtp.h"

MTP_OP(mtp_op_norm) {
    const float *x = j->nodes[nd->in[0]].data;
    const float *w = nd->n_in > 1 ? j->nodes[nd->in[1]].data : NULL;
    float *o = nd->data;
    int64_t d = nd->ne[nd->ndim - 1], lo, hi;
    mtp_split(nd->nelem / d, part, nparts, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *xr = x + r * d;
        float *orow = o + r * d;
        double ss = 0;
        for (int64_t i = 0; i < d; i++)
            ss += (double)xr[i] * (double)xr[i];
        float f = nd->op == OP_RMS_NORM ? (float)(1.0 / sqrt(ss / (double)d + nd->fa[0]))
                                        : (float)(1.0 / sqrt(ss + nd->fa[0]));
        for (int64_t i = 0; i < d; i++)
            orow[i] = xr[i] * f;
        if (w)
            for (int64_t i = 0; i < d; i++)
                orow[i] = orow[i] * w[i];
    }
}

/* Qwen3.5's interleaved M-RoPE for text: pair i takes the token position if its sector belongs to
 * one of the t / h / w sections (all equal for text), else position 0 (the 4th section). */
static int uses_position(int64_t pair, const int64_t *sections) {
    int64_t total = sections[0] + sections[1] + sections[2] + sections[3];
    int64_t sector = pair % total;
    for (int axis = 0; axis < 3; axis++)
        if (sector % 3 == axis && sector < 3 * sections[axis])
            return 1;
    return 0;
}

/* ia: n_rot, sections[4]; fa[0]: freq_base. x [n, H, d], pos [n]. */
MTP_OP(mtp_op_rope) {
    const float *x = j->nodes[nd->in[0]].data;
    const int32_t *pos = j->nodes[nd->in[1]].data;
    float *o = nd->data;
    int64_t n = nd->ne[0], heads = nd->ne[1], d = nd->ne[2], half = nd->ia[0] / 2, lo, hi;
    float step = (float)pow(nd->fa[0], -2.0 / (double)nd->ia[0]);
    mtp_split(n, part, nparts, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        float power = 1.0f, p = (float)pos[t];
        for (int64_t i = 0; i < half; i++) {
            float theta = uses_position(i, nd->ia + 1) ? p * power : 0.0f;
            float c = (float)cos((double)theta), s = (float)sin((double)theta);
            for (int64_t h = 0; h < heads; h++) {
                const float *xr = x + (t * heads + h) * d;
                float *orow = o + (t * heads + h) * d;
                float x0 = xr[i], x1 = xr[i + half];
                orow[i] = x0 * c - x1 * s;
                orow[i + half] = x0 * s + x1 * c;
            }
            power *= step;
        }
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 2 * half; i < d; i++)
                o[(t * heads + h) * d + i] = x[(t * heads + h) * d + i];
    }
}
