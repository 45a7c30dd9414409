/* Routed experts. The router picks each row's experts; then, expert by expert, the rows that chose
 * it are gathered and multiplied as one small batch (each expert's weights read once per step),
 * and each row sums its experts' outputs in its own routing order. */
#include <math.h>
#include <string.h>

#include "mtp.h"


/* Softmax, top n_used (ties to the lower index), renormalised weights. */
static void route(const float *logits, int64_t n_expert, int64_t n_used, float *probs, int32_t *sel, float *wts) {
    float mx = logits[0], sum = 0.0f, chosen = 0.0f;
    for (int64_t e = 1; e < n_expert; e++)
        mx = logits[e] > mx ? logits[e] : mx;
    for (int64_t e = 0; e < n_expert; e++) {
        probs[e] = expf(logits[e] - mx);
        sum += probs[e];
    }
    for (int64_t e = 0; e < n_expert; e++)
        probs[e] = probs[e] / sum;
    for (int64_t u = 0; u < n_used; u++) {
        int64_t best = -1;
        for (int64_t e = 0; e < n_expert; e++) {
            int taken = 0;
            for (int64_t v = 0; v < u; v++)
                taken |= sel[v] == e;
            if (!taken && (best < 0 || probs[e] > probs[best]))
                best = e;
        }
        sel[u] = (int32_t)best;
        chosen += probs[best];
    }
    chosen = chosen > 6.103515625e-5f ? chosen : 6.103515625e-5f;
    for (int64_t u = 0; u < n_used; u++)
        wts[u] = probs[sel[u]] / chosen;
}

/* Phases: router products | routing (one part) | per expert: gather, gate and up, down | sum. */
int mtp_moe_phases(const mtp_job *j, const mtp_node *nd) { return 3 + 3 * (int)j->nodes[nd->in[1]].ne[0]; }

/* x [n, d]; gate_inp [E, d]; up, gate [E, f, d]; down [E, d, f]; ia[0]: n_used.
 * aux (floats): router [n, E] | weights [n, U] | sel [n, U] (int32) | order [n, U] (int32)
 *               | first [E + 1] (int32) | xg [n, d] | hg, hu [n, f] | yg [n, d] | y [n, U, d] */
MTP_OP(mtp_op_moe) {
    const mtp_node *xn = &j->nodes[nd->in[0]], *gi = &j->nodes[nd->in[1]];
    const mtp_node *up = &j->nodes[nd->in[2]], *gate = &j->nodes[nd->in[3]], *down = &j->nodes[nd->in[4]];
    const float *x = xn->data;
    int64_t n = nd->ne[0], d = nd->ne[1], E = gi->ne[0], U = nd->ia[0], f = up->ne[1], lo, hi;
    float *router = nd->aux, *wts = router + n * E;
    int32_t *sel = (int32_t *)(wts + n * U), *order = sel + n * U, *first = order + n * U;
    float *xg = (float *)(first + E + 1), *hg = xg + n * d, *hu = hg + n * f, *yg = hu + n * f, *y = yg + n * d;

    if (phase == 0) {
        mtp_matmul_rows(j->pool, j->act, part, nparts, gi->data, gi->type, E, d, x, n, d, router, E);
    } else if (phase == 1) {  /* route every row, then list the (row, slot) pairs of each expert in order */
        if (part != 0)
            return;
        for (int64_t i = 0; i < n; i++)  /* softmax in place: the logits are not needed after */
            route(router + i * E, E, U, router + i * E, sel + i * U, wts + i * U);
        int64_t pos = 0;
        for (int64_t e = 0; e < E; e++) {
            first[e] = (int32_t)pos;
            for (int64_t s = 0; s < n * U; s++)
                if (sel[s] == e)
                    order[pos++] = (int32_t)s;
        }
        first[E] = (int32_t)pos;
    } else if (phase < 2 + 3 * E) {
        int64_t e = (phase - 2) / 3, cnt = first[e + 1] - first[e];
        const int32_t *pick = order + first[e];
        if (cnt == 0)
            return;
        switch ((phase - 2) % 3) {
        case 0:
            mtp_split(cnt, part, nparts, &lo, &hi);
            for (int64_t r = lo; r < hi; r++)
                memcpy(xg + r * d, x + pick[r] / U * d, (size_t)d * 4);
            break;
        case 1: {
            int64_t bytes = mtp_row_bytes(gate->type, d) * f;
            mtp_matmul_rows(j->pool, j->act, part, nparts, (const uint8_t *)gate->data + e * bytes, gate->type, f, d, xg, cnt, d, hg, f);
            bytes = mtp_row_bytes(up->type, d) * f;
            mtp_matmul_rows(j->pool, j->act, part, nparts, (const uint8_t *)up->data + e * bytes, up->type, f, d, xg, cnt, d, hu, f);
            mtp_split(f, part, nparts, &lo, &hi);  /* the columns this part just wrote */
            for (int64_t r = 0; r < cnt; r++)
                for (int64_t c = lo; c < hi; c++)
                    hg[r * f + c] = hg[r * f + c] * mtp_sigmoid(hg[r * f + c]) * hu[r * f + c];
            break;
        }
        case 2: {
            int64_t bytes = mtp_row_bytes(down->type, f) * d;
            mtp_matmul_rows(j->pool, j->act, part, nparts, (const uint8_t *)down->data + e * bytes, down->type, d, f, hg, cnt, f, yg, d);
            mtp_split(d, part, nparts, &lo, &hi);
            for (int64_t r = 0; r < cnt; r++)
                memcpy(y + pick[r] * d + lo, yg + r * d + lo, (size_t)(hi - lo) * 4);
            break;
        }
        }
    } else {
        float *o = nd->data;
        mtp_split(n, part, nparts, &lo, &hi);
        for (int64_t i = lo; i < hi; i++)
            for (int64_t c = 0; c < d; c++) {
                float acc = 0.0f;
                for (int64_t u = 0; u < U; u++)
                    acc = acc + y[(i * U + u) * d + c] * wts[i * U + u];
                o[i * d + c] = acc;
            }
    }
}
