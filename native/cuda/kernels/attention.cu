// Causal attention over the KV cache. kv_write stores the batch's K and V at their positions;
// attention then gives each (row, query head) one block whose warps take keys j = warp, warp + 4, ...
// with an online softmax, merged in warp order: a row's result depends on its query and the cache
// alone, never on the batch.

#define ATT_WARPS 4
#define ATT_MAX_D 256

extern "C" __global__ void kv_write(const float* k, const float* v, const int* pos, float* kc, float* vc, int n_kv_head, int d,
                                    int n_ctx, int* err) {
    begin_kernel();
    const int i = blockIdx.x / n_kv_head, h = blockIdx.x % n_kv_head;
    const int p = pos[i];
    if (p < 0 || p >= n_ctx) {
        if (threadIdx.x == 0) set_error(err, ERR_POS);
        return;
    }
    const i64 src = (i64)blockIdx.x * d, dst = ((i64)p * n_kv_head + h) * d;
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        kc[dst + e] = k[src + e];
        vc[dst + e] = v[src + e];
    }
}

extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) attention(const float* q, const float* kc, const float* vc, const int* pos,
                                                                       float* o, int n_head, int n_kv_head, int d, float scale, int n_ctx) {
    begin_kernel();
    __shared__ float s_max[ATT_WARPS], s_sum[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][ATT_MAX_D];
    const int i = blockIdx.x / n_head, h = blockIdx.x % n_head, hk = h / (n_head / n_kv_head);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n_keys = min(pos[i] + 1, n_ctx);  // a bad position was flagged by kv_write
    const float* qr = q + (i64)blockIdx.x * d;
    float qv[ATT_MAX_D / 32], acc[ATT_MAX_D / 32];
#pragma unroll
    for (int c = 0; c < ATT_MAX_D / 32; c++) {
        const int e = 32 * c + lane;
        qv[c] = e < d ? qr[e] : 0.0f;
        acc[c] = 0.0f;
    }
    float mx = __int_as_float(0xff800000), sum = 0.0f;  // -inf
    for (int j = warp; j < n_keys; j += ATT_WARPS) {
        const i64 row = ((i64)j * n_kv_head + hk) * d;
        float s = 0.0f;
#pragma unroll
        for (int c = 0; c < ATT_MAX_D / 32; c++)
            if (32 * c + lane < d) s = fmaf(qv[c], kc[row + 32 * c + lane], s);
        s = warp_sum(s) * scale;
        const float m_new = fmaxf(mx, s), corr = expf(mx - m_new), e = expf(s - m_new);
        sum = sum * corr + e;
#pragma unroll
        for (int c = 0; c < ATT_MAX_D / 32; c++)
            if (32 * c + lane < d) acc[c] = acc[c] * corr + e * vc[row + 32 * c + lane];
        mx = m_new;
    }
    if (lane == 0) {
        s_max[warp] = mx;
        s_sum[warp] = sum;
    }
#pragma unroll
    for (int c = 0; c < ATT_MAX_D / 32; c++)
        if (32 * c + lane < d) s_acc[warp][32 * c + lane] = acc[c];
    __syncthreads();
    float m_all = s_max[0];
    for (int w = 1; w < ATT_WARPS; w++) m_all = fmaxf(m_all, s_max[w]);
    float weight[ATT_WARPS], total = 0.0f;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) {
        weight[w] = expf(s_max[w] - m_all);  // 0 for a warp that saw no key
        total += s_sum[w] * weight[w];
    }
    for (int e = threadIdx.x; e < d; e += 32 * ATT_WARPS) {
        float a = 0.0f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; w++) a += s_acc[w][e] * weight[w];
        o[(i64)blockIdx.x * d + e] = a / total;
    }
}
