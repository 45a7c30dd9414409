// Recurrent ops over a state with snapshots. The state lives in m + 1 buffers of `size` floats:
// buffer `committed` (read from device memory at *committed_p, so that a captured CUDA graph replays
// with whatever the host committed since) holds the committed value; the state after token t of this run (for the last m
// tokens) goes to snapshot slot t - max(n - m, 0), in the buffers other than the committed one.

// Depthwise causal conv of x [n, C] with w [C, K] over (state [K-1, C] ++ x); one thread per channel.
template <int K>
__device__ __forceinline__ void ssm_conv(const float* x, const float* w, float* o, float* bufs, i64 size, const int* committed_p, int m, int n, int C) {
    const int committed = *committed_p;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float win[K - 1], wc[K];
    const float* st = bufs + committed * size;
#pragma unroll
    for (int j = 0; j < K - 1; j++) win[j] = st[(i64)j * C + c];
#pragma unroll
    for (int j = 0; j < K; j++) wc[j] = w[(i64)c * K + j];
    const int first = max(n - m, 0);
    for (int t = 0; t < n; t++) {
        const float xt = x[(i64)t * C + c];
        float acc = win[0] * wc[0];  // the reference's order: tap 0, then + tap j
#pragma unroll
        for (int j = 1; j < K - 1; j++) acc = acc + win[j] * wc[j];
        acc = acc + xt * wc[K - 1];
        o[(i64)t * C + c] = acc;
#pragma unroll
        for (int j = 0; j < K - 2; j++) win[j] = win[j + 1];
        win[K - 2] = xt;
        if (t >= first) {
            float* dst = bufs + slot_buffer(t - first, committed) * size;
#pragma unroll
            for (int j = 0; j < K - 1; j++) dst[(i64)j * C + c] = win[j];
        }
    }
}

// Gated delta rule, token by token, for value head blockIdx.x; thread j owns column j of the
// head's state S [S(k), S(v)] in registers, so no step needs another thread's sums.
template <int S>
__device__ __forceinline__ void delta_net(const float* q, const float* k, const float* v, const float* g, const float* beta, float* o,
                                          float* bufs, i64 size, const int* committed_p, int m, int n, int n_k_head, int n_v_head) {
    const int committed = *committed_p;
    __shared__ float qs[S], ks[S];
    const int h = blockIdx.x, hk = h % n_k_head, j = threadIdx.x;
    const i64 head = (i64)h * S * S;
    const float* st = bufs + committed * size + head;
    float s[S];
#pragma unroll
    for (int i = 0; i < S; i++) s[i] = st[i * S + j];
    const float q_scale = (float)(1.0 / sqrt((double)S));
    const int first = max(n - m, 0);
    for (int t = 0; t < n; t++) {
        __syncthreads();
        qs[j] = q[((i64)t * n_k_head + hk) * S + j] * q_scale;
        ks[j] = k[((i64)t * n_k_head + hk) * S + j];
        __syncthreads();
        const float decay = (float)exp((double)g[(i64)t * n_v_head + h]);
        float sk = 0.0f;
#pragma unroll
        for (int i = 0; i < S; i++) {
            s[i] = s[i] * decay;
            sk = fmaf(ks[i], s[i], sk);
        }
        const float delta = (v[((i64)t * n_v_head + h) * S + j] - sk) * beta[(i64)t * n_v_head + h];
        float out = 0.0f;
#pragma unroll
        for (int i = 0; i < S; i++) {
            s[i] = s[i] + ks[i] * delta;
            out = fmaf(qs[i], s[i], out);
        }
        o[((i64)t * n_v_head + h) * S + j] = out;
        if (t >= first) {
            float* dst = bufs + slot_buffer(t - first, committed) * size + head;
#pragma unroll
            for (int i = 0; i < S; i++) dst[i * S + j] = s[i];
        }
    }
}

#define SSM_CONV(K)                                                                                            \
    extern "C" __global__ void ssm_conv_##K(const float* x, const float* w, float* o, float* bufs, i64 size, const int* committed_p, int m, \
                                            int n, int C) {                                                    \
        ssm_conv<K>(x, w, o, bufs, size, committed_p, m, n, C);                                                  \
    }
SSM_CONV(2)
SSM_CONV(3)
SSM_CONV(4)
SSM_CONV(5)

#define DELTA_NET(S)                                                                                           \
    extern "C" __global__ void __launch_bounds__(S) delta_net_##S(const float* q, const float* k, const float* v, const float* g, \
                                                                  const float* beta, float* o, float* bufs, i64 size, const int* committed_p, \
                                                                  int m, int n, int n_k_head, int n_v_head) { \
        delta_net<S>(q, k, v, g, beta, o, bufs, size, committed_p, m, n, n_k_head, n_v_head);                    \
    }
DELTA_NET(32)
DELTA_NET(64)
DELTA_NET(128)
