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

/* mtp_attend_fn, key by key, a query at a time: the scalar kernels' and the fallback for head sizes the
 * SIMD kernels do not take */
void mtp_attend_rows(const float *const *q, float *const *out, const int64_t *p, int nq, const float *k, const float *v, int64_t row,
                     int64_t d, float scale, float *scores, int64_t width) {
    (void)width;
    for (int c = 0; c < nq; c++) {
        float mx = -INFINITY, sum = 0.0f;
        for (int64_t t = 0; t < p[c]; t++) {
            scores[t] = mtp_k.dot(k + t * row, q[c], d) * scale;
            mx = scores[t] > mx ? scores[t] : mx;
        }
        for (int64_t t = 0; t < p[c]; t++) {
            scores[t] = expf(scores[t] - mx);
            sum += scores[t];
        }
        memset(out[c], 0, (size_t)d * 4);
        for (int64_t t = 0; t < p[c]; t++)
            axpy(out[c], scores[t] / sum, v + t * row, d);
    }
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

/* q [n, Hq, d], k, v [n, Hkv, d], pos [n]; fa[0]: scale. A unit of work is one KV head's query heads
 * for a few consecutive tokens (at most MTP_ATTEND_QUERIES queries), which share each key and value
 * row as it is read: at 3000 positions, re-reading them for each query kept tinycoder's decode on the
 * cache's bandwidth. */
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
    int64_t per_head = group;  /* query heads per unit: the largest divisor of the group that fits */
    while (per_head > MTP_ATTEND_QUERIES || group % per_head)
        per_head--;
    const int64_t tokens = MTP_ATTEND_QUERIES / per_head;
    const int64_t width = max_pos + 8, token_blocks = (n + tokens - 1) / tokens, head_blocks = group / per_head;
    float *scores = mtp_scratch(j->pool, (size_t)(MTP_ATTEND_QUERIES * width) * 4);
    int64_t lo, hi;
    mtp_split(hkv * head_blocks * token_blocks, part, nparts, &lo, &hi);
    for (int64_t u = lo; u < hi; u++) {  /* unit u: KV head, heads block, then tokens block */
        const int64_t kvh = u / (head_blocks * token_blocks), h0 = kvh * group + u / token_blocks % head_blocks * per_head;
        const int64_t i0 = u % token_blocks * tokens, i1 = i0 + tokens < n ? i0 + tokens : n;
        const float *qs[MTP_ATTEND_QUERIES];
        float *outs[MTP_ATTEND_QUERIES];
        int64_t p[MTP_ATTEND_QUERIES];
        int nq = 0;
        for (int64_t i = i0; i < i1; i++)
            for (int64_t h = h0; h < h0 + per_head; h++, nq++) {
                qs[nq] = q + (i * hq + h) * d;
                outs[nq] = (float *)nd->data + (i * hq + h) * d;
                p[nq] = pos[i] + 1;
            }
        mtp_k.attend(qs, outs, p, nq, st->k + kvh * d, st->v + kvh * d, row, d, (float)nd->fa[0], scores, width);
    }
}
