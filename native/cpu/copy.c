/* Ops that only move or pick data: get_rows (decoding weight rows), slice, concat, take_rows,
 * cat_rows and argmax (which index of each row). */
#include <string.h>

#include "mtp.h"

static int64_t last_dim(const mtp_node *n) { return n->ne[n->ndim - 1]; }

/* ia[0]: the ids are float32 (an argmax's token ids), else int32 */
static void get_rows(mtp_job *j, mtp_node *nd, int part, int nparts) {
    const mtp_node *w = &j->nodes[nd->in[0]];
    const void *ids = j->nodes[nd->in[1]].data;
    int64_t vocab = w->ne[0], d = w->ne[1], row_bytes = mtp_row_bytes(w->type, d), lo, hi;
    mtp_split(nd->ne[0], part, nparts, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        float f = nd->ia[0] ? ((const float *)ids)[i] : 0.0f;
        int64_t id = nd->ia[0] ? (f >= 0.0f && f < (float)vocab ? (int64_t)f : -1) : ((const int32_t *)ids)[i];
        if (id < 0 || id >= vocab) {
            j->error = MTP_ERR_ID;
            continue;
        }
        mtp_k.dequant[w->type]((const uint8_t *)w->data + id * row_bytes, (float *)nd->data + i * d, d);
    }
}

MTP_OP(mtp_op_copy) {
    if (nd->op == OP_GET_ROWS) {
        get_rows(j, nd, part, nparts);
        return;
    }
    if (part != 0)  /* small copies: one thread */
        return;
    const mtp_node *a = &j->nodes[nd->in[0]];
    float *o = nd->data;
    const float *x = a->data;
    int64_t la = last_dim(a);
    switch (nd->op) {
    case OP_SLICE: {  /* ia: start, stop on the last axis */
        int64_t w = nd->ia[1] - nd->ia[0];
        for (int64_t r = 0; r < a->nelem / la; r++)
            memcpy(o + r * w, x + r * la + nd->ia[0], (size_t)w * 4);
        break;
    }
    case OP_CONCAT: {
        const mtp_node *b = &j->nodes[nd->in[1]];
        int64_t lb = last_dim(b);
        for (int64_t r = 0; r < a->nelem / la; r++) {
            memcpy(o + r * (la + lb), x + r * la, (size_t)la * 4);
            memcpy(o + r * (la + lb) + la, (const float *)b->data + r * lb, (size_t)lb * 4);
        }
        break;
    }
    case OP_CAT_ROWS:
        memcpy(o, x, (size_t)a->nelem * 4);
        memcpy(o + a->nelem, j->nodes[nd->in[1]].data, (size_t)j->nodes[nd->in[1]].nelem * 4);
        break;
    case OP_TAKE_ROWS: {  /* aux: int64 row indices, ne[0] of them */
        const int64_t *rows = nd->aux;
        int64_t row = a->nelem / a->ne[0];
        for (int64_t r = 0; r < nd->ne[0]; r++)
            memcpy(o + r * row, x + rows[r] * row, (size_t)row * 4);
        break;
    }
    case OP_ARGMAX:  /* NumPy's: the first of equal values, the first NaN above every number; as a float */
        for (int64_t r = 0; r < a->nelem / la; r++) {
            const float *row = x + r * la;
            int64_t best = 0;
            for (int64_t e = 1; e < la && row[best] == row[best]; e++)
                if (row[e] != row[e] || row[e] > row[best])
                    best = e;
            o[r] = (float)best;
        }
        break;
    }
}
