/* add, mul (NumPy broadcasting over up to 4 dims), scale and the activations: sigmoid and silu in
 * float through mtp_exp (a few ulps from the NumPy reference's double-precision values), softplus in
 * double (a few values a token). */
#include <math.h>

#include "mtp.h"

/* One thread's run of sigmoid or silu; the compiler vectorises it for each target clone. */
MTP_CLONES static void logistic_run(int silu, float *o, const float *x, int64_t n) {
    if (silu)
        for (int64_t i = 0; i < n; i++) o[i] = x[i] * mtp_sigmoid(x[i]);
    else
        for (int64_t i = 0; i < n; i++) o[i] = mtp_sigmoid(x[i]);
}

/* One contiguous run of the last axis; the compiler vectorises it for each target clone. */
MTP_CLONES static void binary_run(int op, float *o, const float *a, int64_t sa, const float *b, int64_t sb, int64_t n) {
    if (op == OP_ADD) {
        if (sa == 1 && sb == 1)
            for (int64_t i = 0; i < n; i++) o[i] = a[i] + b[i];
        else
            for (int64_t i = 0; i < n; i++) o[i] = a[i * sa] + b[i * sb];
    } else {
        if (sa == 1 && sb == 1)
            for (int64_t i = 0; i < n; i++) o[i] = a[i] * b[i];
        else
            for (int64_t i = 0; i < n; i++) o[i] = a[i * sa] * b[i * sb];
    }
}

/* ia[0..3]: the output shape padded to 4 dims; sa / sb: each input's strides over it (0 where
 * broadcast). Threads split the outer three dims. */
static void binary(mtp_job *j, mtp_node *nd, int part, int nparts) {
    const float *a = j->nodes[nd->in[0]].data, *b = j->nodes[nd->in[1]].data;
    float *o = nd->data;
    const int64_t *ne = nd->ia;
    int64_t outer = ne[0] * ne[1] * ne[2], lo, hi;
    mtp_split(outer, part, nparts, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        int64_t i0 = r / (ne[1] * ne[2]), i1 = r / ne[2] % ne[1], i2 = r % ne[2];
        binary_run(nd->op, o + r * ne[3], a + i0 * nd->sa[0] + i1 * nd->sa[1] + i2 * nd->sa[2], nd->sa[3],
                   b + i0 * nd->sb[0] + i1 * nd->sb[1] + i2 * nd->sb[2], nd->sb[3], ne[3]);
    }
}

MTP_OP(mtp_op_elementwise) {
    if (nd->op == OP_ADD || nd->op == OP_MUL) {
        binary(j, nd, part, nparts);
        return;
    }
    const float *x = j->nodes[nd->in[0]].data;
    float *o = nd->data;
    int64_t lo, hi;
    mtp_split(nd->nelem, part, nparts, &lo, &hi);
    switch (nd->op) {
    case OP_SCALE: {
        float f = (float)nd->fa[0];
        for (int64_t i = lo; i < hi; i++) o[i] = x[i] * f;
        break;
    }
    case OP_SIGMOID:
    case OP_SILU:
        logistic_run(nd->op == OP_SILU, o + lo, x + lo, hi - lo);
        break;
    case OP_SOFTPLUS:  /* log(1 + exp(x)), and x itself above 20 */
        for (int64_t i = lo; i < hi; i++)
            o[i] = x[i] > 20.0f ? x[i] : (float)log1p(exp((double)x[i]));
        break;
    }
}
