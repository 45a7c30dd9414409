// attention.cu: causal attention over the KV cache. kv_write stores the batch's K and V at their
// positions; attention then gives each (row, query head) one threadgroup whose simdgroups take
// keys j = warp, warp + 4, ... with an online softmax, merged in simdgroup order: a row's result
// depends on its query and the cache alone, never on the batch.

#define ATT_WARPS 4
#define ATT_MAX_D 256

struct KvWriteArgs {
    device const float* k;
    device const float* v;
    device const int* pos;
    device float* kc;
    device float* vc;
    int n_kv_head;
    int d;
    int n_ctx;
    device int* err;
};

kernel void kv_write(constant KvWriteArgs& a [[buffer(0)]], uint group [[threadgroup_position_in_grid]],
                     uint tid [[thread_index_in_threadgroup]], uint threads [[threads_per_threadgroup]]) {
    const int i = group / a.n_kv_head, h = group % a.n_kv_head;
    const int p = a.pos[i];
    if (p < 0 || p >= a.n_ctx) {
        if (tid == 0) set_error(a.err, ERR_POS);
        return;
    }
    const i64 src = (i64)group * a.d, dst = ((i64)p * a.n_kv_head + h) * a.d;
    for (int e = tid; e < a.d; e += threads) {
        a.kc[dst + e] = a.k[src + e];
        a.vc[dst + e] = a.v[src + e];
    }
}

struct AttentionArgs {
    device const float* q;
    device const float* kc;
    device const float* vc;
    device const int* pos;
    device float* o;
    int n_head;
    int n_kv_head;
    int d;
    float scale;
    int n_ctx;
};

kernel void attention(constant AttentionArgs& a [[buffer(0)]], uint group [[threadgroup_position_in_grid]],
                      uint tid [[thread_index_in_threadgroup]], uint warp [[simdgroup_index_in_threadgroup]],
                      uint lane [[thread_index_in_simdgroup]]) {
    threadgroup float s_max[ATT_WARPS], s_sum[ATT_WARPS];
    threadgroup float s_acc[ATT_WARPS][ATT_MAX_D];
    const int d = a.d;
    const int i = group / a.n_head, h = group % a.n_head, hk = h / (a.n_head / a.n_kv_head);
    const int n_keys = min(a.pos[i] + 1, a.n_ctx);  // a bad position was flagged by kv_write
    device const float* qr = a.q + (i64)group * d;
    float qv[ATT_MAX_D / 32], acc[ATT_MAX_D / 32];
    for (int c = 0; c < ATT_MAX_D / 32; c++) {
        const int e = 32 * c + lane;
        qv[c] = e < d ? qr[e] : 0.0f;
        acc[c] = 0.0f;
    }
    float mx = -INFINITY, sum = 0.0f;
    for (int j = warp; j < n_keys; j += ATT_WARPS) {
        const i64 row = ((i64)j * a.n_kv_head + hk) * d;
        float s = 0.0f;
        for (int c = 0; c < ATT_MAX_D / 32; c++)
            if (32 * c + (int)lane < d) s = fma(qv[c], a.kc[row + 32 * c + lane], s);
        s = warp_sum(s) * a.scale;
        const float m_new = fmax(mx, s), corr = precise::exp(mx - m_new), e = precise::exp(s - m_new);
        sum = sum * corr + e;
        for (int c = 0; c < ATT_MAX_D / 32; c++)
            if (32 * c + (int)lane < d) acc[c] = acc[c] * corr + e * a.vc[row + 32 * c + lane];
        mx = m_new;
    }
    if (lane == 0) {
        s_max[warp] = mx;
        s_sum[warp] = sum;
    }
    for (int c = 0; c < ATT_MAX_D / 32; c++)
        if (32 * c + (int)lane < d) s_acc[warp][32 * c + lane] = acc[c];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    float m_all = s_max[0];
    for (int w = 1; w < ATT_WARPS; w++) m_all = fmax(m_all, s_max[w]);
    float weight[ATT_WARPS], total = 0.0f;
    for (int w = 0; w < ATT_WARPS; w++) {
        weight[w] = precise::exp(s_max[w] - m_all);  // 0 for a simdgroup that saw no key
        total += s_sum[w] * weight[w];
    }
    for (int e = tid; e < d; e += 32 * ATT_WARPS) {
        float acc_e = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) acc_e += s_acc[w][e] * weight[w];
        a.o[(i64)group * d + e] = acc_e / total;
    }
}
