// Recurrent ops over a state with snapshots. The state lives in m + 1 buffers of `size` floats:
// buffer `committed` (read from device memory at *committed_p, so that a captured CUDA graph replays
// with whatever the host committed since) holds the committed value; the state after token t of this run (for the last m
// tokens) goes to snapshot slot t - max(n - m, 0), in the buffers other than the committed one.

// Depthwise causal conv of x [n, C] with w [C, K] over z = state [K-1, C] ++ x: one thread per
// (channel, token), grid (ceil(C / 128), n); output t reads z[t .. t+K-1], and (for the last m tokens)
// the window z[t+1 .. t+K-1] is its snapshot.
template <int K, bool SILU>
__device__ __forceinline__ void ssm_conv(const float* x, const float* w, float* o, float* bufs, i64 size, const int* committed_p, int m, int n, int C) {
    const int committed = *committed_p;
    const int c = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (c >= C) return;
    const float* st = bufs + committed * size;
    float z[K];
#pragma unroll
    for (int j = 0; j < K; j++) {
        const int p = t + j - (K - 1);  // row of x, or of the state when negative
        z[j] = p < 0 ? st[(i64)(p + K - 1) * C + c] : x[(i64)p * C + c];
    }
    float acc = z[0] * w[(i64)c * K];  // the reference's order: tap 0, then + tap j
#pragma unroll
    for (int j = 1; j < K; j++) acc = acc + z[j] * w[(i64)c * K + j];
    o[(i64)t * C + c] = SILU ? acc * sigmoid_f(acc) : acc;  // SILU: the silu that followed (fusion.py)
    const int first = max(n - m, 0);
    if (t >= first) {
        float* dst = bufs + slot_buffer(t - first, committed) * size;
#pragma unroll
        for (int j = 0; j < K - 1; j++) dst[(i64)j * C + c] = z[j + 1];
    }
}

// Gated delta rule, token by token. Column j of a value head's state S [S(k), S(v)] evolves on its
// own (its k-dot, delta and q-dot read only that column), so DN_LANES lanes share a column, each
// keeping S / DN_LANES of its rows in registers: a column's sums are the lanes' partial sums (fmaf
// chains), then a butterfly over its lanes, the same order for every batch. Blocks of 128 threads
// (DN_COLS columns), grid (value heads, S / DN_COLS). The inputs of DN_CHUNK tokens are staged in
// shared memory, the next chunk's loading (into registers) while this one runs.
// The state is stored column after column (element (i, j) of a head at j * S + i; gpu.py's
// read_state turns it back), and lane `part` keeps rows 4 part + 32 g + e (e < 4) of its column: each
// of its loads and stores (a state, a snapshot) is a float4, and a warp's 8 lanes of one column cover
// 128 contiguous bytes. Rows apart by S floats took a store of 16 bytes per 32-byte sector, and a
// 27B-shaped 4-token step's snapshots 3.5x the time of a 1-token step's.
// q, k and v are read through row strides (fusion.py hands it slices of the conv's output rows), and
// with `l2` q and k are l2-normed here, as norm.cu's kernels do it (norm_scale's order for a
// 256-thread row, then value x scale): the two norm launches before it, and the copy of v's slice,
// are not launched. Its g and beta are chains (elementwise.cu) of shape [n, value heads]: the
// element-wise ops that made them (fusion.py), or a plain load.
#define DN_LANES 8
#define DN_COLS (128 / DN_LANES)
#define DN_CHUNK 16
template <int S>
__device__ __forceinline__ void delta_net(const Chain& g, const Chain& beta, const float* q, const float* k, const float* v, float* o,
                                          float* bufs, i64 size, const int* committed_p, int m, int n, int n_k_head, int n_v_head,
                                          i64 qk_stride, i64 v_stride, int l2, float eps) {
    constexpr int L = DN_LANES, R = S / L, G = R / 4;  // a lane's rows, as G float4s 4 L rows apart
    constexpr int QK = DN_CHUNK * S / 4 / 128, NV = DN_CHUNK * DN_COLS / 128;  // float4s of q (and of k), values of v a thread stages
    __shared__ __align__(16) float qs[DN_CHUNK][S], ks[DN_CHUNK][S], vs[DN_CHUNK][DN_COLS], gs[DN_CHUNK], bs[DN_CHUNK];
    __shared__ float scales[DN_CHUNK][2];  // with l2: q's and k's scales
    const int committed = *committed_p;
    const int h = blockIdx.x, hk = h % n_k_head, tid = threadIdx.x;
    const int col = tid / L, j = blockIdx.y * DN_COLS + col, part = tid % L;
    const i64 column = (i64)h * S * S + (i64)j * S + 4 * part;  // this lane's first row of its column
    const float* st = bufs + committed * size + column;
    float s[R];
#pragma unroll
    for (int r = 0; r < G; r++) *(float4*)&s[4 * r] = *(const float4*)(st + 4 * L * r);
    const float q_scale = (float)(1.0 / sqrt((double)S));
    const int first = max(n - m, 0);
    // This thread's share of a chunk: float4 f of q and of k is token f / (S / 4), values 4 (f % (S / 4)) ..
    float4 nq[QK], nk[QK];
    float nv[NV], ng = 0.0f, nb = 0.0f;
    auto fetch = [&](int t0) {
#pragma unroll
        for (int i = 0; i < QK; i++) {
            const int f = tid + 128 * i, t = min(t0 + f / (S / 4), n - 1), e = 4 * (f % (S / 4));
            nq[i] = *(const float4*)(q + (i64)t * qk_stride + hk * S + e);
            nk[i] = *(const float4*)(k + (i64)t * qk_stride + hk * S + e);
        }
#pragma unroll
        for (int i = 0; i < NV; i++) {  // value f of DN_CHUNK tokens x DN_COLS columns
            const int f = tid + 128 * i, t = min(t0 + f / DN_COLS, n - 1);
            nv[i] = v[(i64)t * v_stride + h * S + blockIdx.y * DN_COLS + f % DN_COLS];
        }
        if (tid < DN_CHUNK) {
            const int tg = min(t0 + tid, n - 1);
            ng = chain_at(g, (i64)tg * n_v_head + h, 1, n, n_v_head), nb = chain_at(beta, (i64)tg * n_v_head + h, 1, n, n_v_head);
        }
    };
    fetch(0);
    for (int t0 = 0; t0 < n; t0 += DN_CHUNK) {
        __syncthreads();  // the previous chunk is no longer read
#pragma unroll
        for (int i = 0; i < QK; i++) {
            const int f = tid + 128 * i, tt = f / (S / 4), e = 4 * (f % (S / 4));
            *(float4*)&qs[tt][e] = nq[i];
            *(float4*)&ks[tt][e] = nk[i];
        }
#pragma unroll
        for (int i = 0; i < NV; i++) vs[(tid + 128 * i) / DN_COLS][(tid + 128 * i) % DN_COLS] = nv[i];
        if (tid < DN_CHUNK) gs[tid] = ng, bs[tid] = nb;
        __syncthreads();
        if (t0 + DN_CHUNK < n) fetch(t0 + DN_CHUNK);
        const int len = min(DN_CHUNK, n - t0);
        if (l2) {  // a warp a vector: warp_sum of each 32 values' squares, then of those sums (norm_scale)
            const int lane = tid & 31;
            for (int i = tid >> 5; i < 2 * len; i += 128 / 32) {
                const float* x = i & 1 ? ks[i >> 1] : qs[i >> 1];
                double total = 0.0;
#pragma unroll
                for (int w = 0; w < S / 32; w++) {
                    const double part = warp_sum((double)x[32 * w + lane] * (double)x[32 * w + lane]);
                    if (lane == w) total = part;
                }
                total = warp_sum(total);
                if (lane == 0) scales[i >> 1][i & 1] = (float)(1.0 / sqrt(total + (double)eps));
            }
            __syncthreads();
        }
        for (int tt = 0; tt < len; tt++) {
            const int t = t0 + tt;
            float kk[R], qq[R];
#pragma unroll
            for (int r = 0; r < G; r++) {
                *(float4*)&kk[4 * r] = *(const float4*)&ks[tt][4 * L * r + 4 * part];
                *(float4*)&qq[4 * r] = *(const float4*)&qs[tt][4 * L * r + 4 * part];
            }
            if (l2) {
                const float q_l2 = scales[tt][0], k_l2 = scales[tt][1];
#pragma unroll
                for (int r = 0; r < R; r++) qq[r] = qq[r] * q_l2, kk[r] = kk[r] * k_l2;
            }
            const float decay = (float)exp((double)gs[tt]);
            float sk = 0.0f;
#pragma unroll
            for (int r = 0; r < R; r++) {
                s[r] = s[r] * decay;
                sk = fmaf(kk[r], s[r], sk);
            }
#pragma unroll
            for (int o2 = L / 2; o2 > 0; o2 >>= 1) sk += __shfl_xor_sync(0xffffffffu, sk, o2);
            const float delta = (vs[tt][col] - sk) * bs[tt];
            float out = 0.0f;
#pragma unroll
            for (int r = 0; r < R; r++) {
                s[r] = s[r] + kk[r] * delta;
                out = fmaf(qq[r] * q_scale, s[r], out);
            }
#pragma unroll
            for (int o2 = L / 2; o2 > 0; o2 >>= 1) out += __shfl_xor_sync(0xffffffffu, out, o2);
            if (part == 0) o[((i64)t * n_v_head + h) * S + j] = out;
            if (t >= first) {
                float* dst = bufs + slot_buffer(t - first, committed) * size + column;
#pragma unroll
                for (int r = 0; r < G; r++) *(float4*)(dst + 4 * L * r) = *(const float4*)&s[4 * r];
            }
        }
    }
}

#define SSM_CONV_AS(NAME, K, SILU)                                                                              \
    extern "C" __global__ void NAME(const float* x, const float* w, float* o, float* bufs, i64 size, const int* committed_p, int m, \
                                    int n, int C) {                                                            \
        begin_kernel();                                                                                        \
        ssm_conv<K, SILU>(x, w, o, bufs, size, committed_p, m, n, C);                                            \
    }
#define SSM_CONV(K) SSM_CONV_AS(ssm_conv_##K, K, false) SSM_CONV_AS(ssm_conv_silu_##K, K, true)
SSM_CONV(2)
SSM_CONV(3)
SSM_CONV(4)
SSM_CONV(5)

#define DELTA_NET(S)                                                                                           \
    extern "C" __global__ void __launch_bounds__(128) delta_net_##S(const Chain g, const Chain beta, const float* q, const float* k, \
                                                                  const float* v, float* o, float* bufs, i64 size, const int* committed_p, \
                                                                  int m, int n, int n_k_head, int n_v_head, i64 qk_stride, \
                                                                  i64 v_stride, int l2, float eps) {        \
        begin_kernel();                                                                                       \
        delta_net<S>(g, beta, q, k, v, o, bufs, size, committed_p, m, n, n_k_head, n_v_head, qk_stride, v_stride, l2, eps); \
    }
DELTA_NET(32)
DELTA_NET(64)
DELTA_NET(128)
