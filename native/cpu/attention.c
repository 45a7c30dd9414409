/* Causal softmax attention over the KV cache. Phase 0 writes the batch's K and V rows at their
 * positions (kv_write alone); phase 1 has each (token, head) read positions 0..pos: a query's
 * result depends only on its own row and the cache, never on the batch around it. */
#include <math.h>
#include <string.h>

#include "mtp.h"

/* o += a * v, vectorised per target clone. */
MTP_CLONES static void axpy(float *o, float a, const float *v, int64_t d) {
    for (int64_t i = 0; i < d; i++)
        o[i] += a * v[i];
}

/* The largest of n positions, or -1 (and the job's error set) if one is outside the cache. */
static int64_t max_position(mtp_job *j, const mtp_state *st, const int32_t *pos, int64_t n) {
    int64_t max_pos = 0;
    for (int64_t i = 0; i < n; i++) {
        if (pos[i] < 0 || pos[i] >= st->n_ctx) {
            j->error = MTP_ERR_POS;
            return -1;
        }
        max_pos = pos[i] > max_pos ? pos[i] : max_pos;
    }
    return max_pos;
}

/* k, v [n, Hkv, d] written at pos [n] (inputs in[ik], in[ik + 1], in[ik + 2]). */
static void write_kv(mtp_job *j, mtp_node *nd, int ik, int part, int nparts) {
    mtp_state *st = &j->states[nd->state];
    const mtp_node *kn = &j->nodes[nd->in[ik]];
    const float *k = kn->data, *v = j->nodes[nd->in[ik + 1]].data;
    const int32_t *pos = j->nodes[nd->in[ik + 2]].data;
    int64_t n = kn->ne[0], row = kn->ne[1] * kn->ne[2], lo, hi;
    if (max_position(j, st, pos, n) < 0)
        return;
    mtp_split(n, part, nparts, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        memcpy(st->k + pos[i] * row, k + i * row, (size_t)row * 4);
        memcpy(st->v + pos[i] * row, v + i * row, (size_t)row * 4);
    }
}

/* k, v [n, Hkv, d], pos [n]; the node's data is k's (an alias). */
MTP_OP(mtp_op_kv_write) { write_kv(j, nd, 0, part, nparts); }

/* q [n, Hq, d], k, v [n, Hkv, d], pos [n]; fa[0]: scale. */
MTP_OP(mtp_op_attention) {
    if (phase == 0) {
        write_kv(j, nd, 1, part, nparts);
        return;
    }
    mtp_state *st = &j->states[nd->state];
    const mtp_node *qn = &j->nodes[nd->in[0]], *kn = &j->nodes[nd->in[1]];
    const float *q = qn->data;
    const int32_t *pos = j->nodes[nd->in[3]].data;
    int64_t n = qn->ne[0], hq = qn->ne[1], d = qn->ne[2], hkv = kn->ne[1], group = hq / hkv, row = hkv * d;
    int64_t max_pos = max_position(j, st, pos, n), lo, hi;
    if (max_pos < 0)
        return;
    float *scores = mtp_scratch(j->pool, (size_t)(max_pos + 1) * 4);
    float scale = (float)nd->fa[0];
    mtp_split(n * hq, part, nparts, &lo, &hi);
    for (int64_t ih = lo; ih < hi; ih++) {
        int64_t i = ih / hq, h = ih % hq, kvh = h / group, p = pos[i] + 1;
        const float *qv = q + ih * d;
        float mx = -INFINITY, sum = 0.0f;
        for (int64_t t = 0; t < p; t++) {
            scores[t] = mtp_k.dot(st->k + t * row + kvh * d, qv, d) * scale;
            mx = scores[t] > mx ? scores[t] : mx;
        }
        for (int64_t t = 0; t < p; t++) {
            scores[t] = expf(scores[t] - mx);
            sum += scores[t];
        }
        float *o = (float *)nd->data + ih * d;
        memset(o, 0, (size_t)d * 4);
        for (int64_t t = 0; t < p; t++)
            axpy(o, scores[t] / sum, st->v + t * row + kvh * d, d);
    }
}
