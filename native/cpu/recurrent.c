/* The recurrent ops: the causal depthwise conv and the gated delta rule. Both read the committed
 * state and never write it; the state after each of the run's last m tokens goes to a snapshot
 * buffer, which Backend.commit later makes the committed one (a rollback selects, never recomputes). */
#include <math.h>

#include "mtp.h"

float *mtp_snapshot_slot(mtp_state *s, int64_t t, int64_t n) {
    int64_t first = n > s->m ? n - s->m : 0;
    if (t < first)
        return NULL;
    int64_t r = t - first;  /* the committed buffer is skipped: snapshots use the other m */
    return s->bufs + (r < s->committed ? r : r + 1) * s->size;
}

/* x [n, C], w [C, K] (F32), state [K - 1, C]; threads own channel ranges. */
MTP_OP(mtp_op_ssm_conv) {
    mtp_state *st = &j->states[nd->state];
    const float *x = j->nodes[nd->in[0]].data, *w = j->nodes[nd->in[1]].data;
    const float *prev = st->bufs + st->committed * st->size;
    float *o = nd->data;
    int64_t n = nd->ne[0], C = nd->ne[1], K = j->nodes[nd->in[1]].ne[1], lo, hi;
    mtp_split(C, part, nparts, &lo, &hi);
    /* seq = state ++ x: row r of the K - 1 + n rows */
#define SEQ(r, c) ((r) < K - 1 ? prev[(r) * C + (c)] : x[((r) - (K - 1)) * C + (c)])
    for (int64_t t = 0; t < n; t++) {
        for (int64_t c = lo; c < hi; c++) {
            float acc = SEQ(t, c) * w[c * K];
            for (int64_t q = 1; q < K; q++)
                acc = acc + SEQ(t + q, c) * w[c * K + q];
            o[t * C + c] = acc;
        }
        float *snap = mtp_snapshot_slot(st, t, n);
        if (snap)
            for (int64_t r = 0; r < K - 1; r++)
                for (int64_t c = lo; c < hi; c++)
                    snap[r * C + c] = SEQ(t + 1 + r, c);
    }
#undef SEQ
    if (part == 0)
        st->last_n = (int32_t)n;
}

/* One value head through one token: S = prev * decay; d = (v - S^T k) * beta; S += k d^T; o = S^T q.
 * S and prev are [S_k, S_v] row-major (the same buffer or apart: the step then writes its state
 * where it is kept, with no copy); the inner loops run along S_v and vectorise per target clone. */
MTP_CLONES static void delta_step(float *S, const float *prev, int64_t dim, const float *q, const float *k, const float *v,
                                  float decay, float beta, float *tmp, float *o) {
    for (int64_t c = 0; c < dim; c++)
        tmp[c] = 0.0f;
    for (int64_t r = 0; r < dim; r++) {
        float *row = S + r * dim, kr = k[r];
        const float *from = prev + r * dim;
        for (int64_t c = 0; c < dim; c++) {
            row[c] = from[c] * decay;
            tmp[c] = tmp[c] + kr * row[c];
        }
    }
    for (int64_t c = 0; c < dim; c++) {
        tmp[c] = (v[c] - tmp[c]) * beta;
        o[c] = 0.0f;
    }
    for (int64_t r = 0; r < dim; r++) {
        float *row = S + r * dim, kr = k[r], qr = q[r];
        for (int64_t c = 0; c < dim; c++) {
            row[c] = row[c] + kr * tmp[c];
            o[c] = o[c] + qr * row[c];
        }
    }
}

/* q, k [n, Hk, S], v [n, Hv, S], g, beta [n, Hv]; value head h reads key head h % Hk.
 * Threads own value heads. A token's step writes its state straight into its snapshot buffer, or
 * into the state's work buffer for tokens that keep none (a long prompt's first ones). */
MTP_OP(mtp_op_delta_net) {
    mtp_state *st = &j->states[nd->state];
    const mtp_node *qn = &j->nodes[nd->in[0]];
    const float *q = qn->data, *k = j->nodes[nd->in[1]].data, *v = j->nodes[nd->in[2]].data;
    const float *g = j->nodes[nd->in[3]].data, *beta = j->nodes[nd->in[4]].data;
    int64_t n = nd->ne[0], hv = nd->ne[1], dim = nd->ne[2], hk = qn->ne[1], lo, hi;
    int64_t head = dim * dim;
    float qscale = (float)(1.0 / sqrt((double)dim));
    float *tmp = mtp_scratch(j->pool, (size_t)(2 * dim) * 4), *qs = tmp + dim;
    mtp_split(hv, part, nparts, &lo, &hi);
    for (int64_t h = lo; h < hi; h++) {
        const float *prev = st->bufs + st->committed * st->size + h * head;
        for (int64_t t = 0; t < n; t++) {
            const float *kr = k + (t * hk + h % hk) * dim, *qr = q + (t * hk + h % hk) * dim;
            for (int64_t c = 0; c < dim; c++)
                qs[c] = qr[c] * qscale;
            float decay = (float)exp((double)g[t * hv + h]);
            float *snap = mtp_snapshot_slot(st, t, n), *S = snap ? snap + h * head : st->work + h * head;
            delta_step(S, prev, dim, qs, kr, v + (t * hv + h) * dim, decay, beta[t * hv + h], tmp,
                       (float *)nd->data + (t * hv + h) * dim);
            prev = S;
        }
    }
    if (part == 0)
        st->last_n = (int32_t)n;
}
