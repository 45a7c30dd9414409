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

/* mtp_attend_fn, key by key: the scalar kernels' and the fallback for head sizes the SIMD kernels do
 * not take */
void mtp_attend_rows(const float *q, const float *k, const float *v, int64_t row, int64_t p, int64_t d, float scale, float *scores,
                     float *out) {
    float mx = -INFINITY, sum = 0.0f;
    for (int64_t t = 0; t < p; t++) {
        scores[t] = mtp_k.dot(k + t * row, q, d) * scale;
        mx = scores[t] > mx ? scores[t] : mx;
    }
    for (int64_t t = 0; t < p; t++) {
        scores[t] = expf(scores[t] - mx);
        sum += scores[t];
    }
    memset(out, 0, (size_t)d * 4);
    for (int64_t t = 0; t < p; t++)
        axpy(out, scores[t] / sum, v + t * row, d);
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

/* q [n, Hq, d], k, v [n, Hkv, d], pos [n]; fa[0]: scale. Queries of one KV head go to the same part,
 * token after token, so its key and value rows stay in cache between them. */
MTP_OP(mtp_op_attention) {
    if (phase == 0) {
        write_kv(j, nd, 1, part, nparts);
        return;
    }
    mtp_state *st = &j->states[nd->state];
    const mtp_node *qn = &j->nodes[nd->in[0]], *kn = &j->nodes[nd->in[1]];
    const float *q = qn->data;
    const int32_t *pos = j->nodes[nd->in[3]].data;
    const int64_t n = qn->ne[0], hq = qn->ne[1], d = qn->ne[2], hkv = kn->ne[1], group = hq / hkv, row = hkv * d;
    const int64_t max_pos = max_position(j, st, pos, n);
    if (max_pos < 0)
        return;
    float *scores = mtp_scratch(j->pool, (size_t)(max_pos + 8) * 4);
    int64_t lo, hi;
    mtp_split(n * hq, part, nparts, &lo, &hi);
    for (int64_t c = lo; c < hi; c++) {  /* query c: KV head c / (n * group), then token, then head in the group */
        const int64_t kvh = c / (n * group), i = c / group % n, h = kvh * group + c % group;
        mtp_k.attend(q + (i * hq + h) * d, st->k + kvh * d, st->v + kvh * d, row, pos[i] + 1, d, (float)nd->fa[0], scores,
                     (float *)nd->data + (i * hq + h) * d);
    }
}
