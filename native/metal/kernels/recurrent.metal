// recurrent.cu: recurrent ops over a state with snapshots. The state lives in m + 1 buffers of
// `size` floats: buffer `committed` (read from device memory at *committed_p, so that a prepared
// step replays with whatever the host committed since) holds the committed value; the state
// after token t of this run (for the last m tokens) goes to snapshot slot t - max(n - m, 0), in
// the buffers other than the committed one. library.py instantiates ssm_conv_<K>, delta_net_<S>.

// Depthwise causal conv of x [n, C] with w [C, K] over (state [K-1, C] ++ x); one thread per channel.
struct SsmConvArgs {
    device const float* x;
    device const float* w;
    device float* o;
    device float* bufs;
    i64 size;
    device const int* committed_p;
    int m;
    int n;
    int C;
};

template <int K>
kernel void ssm_conv(constant SsmConvArgs& a [[buffer(0)]], uint c [[thread_position_in_grid]]) {
    const int C = a.C, n = a.n;
    if ((int)c >= C) return;
    const int committed = *a.committed_p;
    float win[K - 1], wc[K];
    device const float* st = a.bufs + committed * a.size;
    for (int j = 0; j < K - 1; j++) win[j] = st[(i64)j * C + c];
    for (int j = 0; j < K; j++) wc[j] = a.w[(i64)c * K + j];
    const int first = max(n - a.m, 0);
    for (int t = 0; t < n; t++) {
        const float xt = a.x[(i64)t * C + c];
        float acc = win[0] * wc[0];  // the reference's order: tap 0, then + tap j
        for (int j = 1; j < K - 1; j++) acc = acc + win[j] * wc[j];
        acc = acc + xt * wc[K - 1];
        a.o[(i64)t * C + c] = acc;
        for (int j = 0; j < K - 2; j++) win[j] = win[j + 1];
        win[K - 2] = xt;
        if (t >= first) {
            device float* dst = a.bufs + slot_buffer(t - first, committed) * a.size;
            for (int j = 0; j < K - 1; j++) dst[(i64)j * C + c] = win[j];
        }
    }
}
typedef decltype(ssm_conv<2>) ssm_conv_t;

// Gated delta rule, token by token, for value head h (the threadgroup); thread j owns column j
// of the head's state S [S(k), S(v)] in registers, so no step needs another thread's sums.
struct DeltaNetArgs {
    device const float* q;
    device const float* k;
    device const float* v;
    device const float* g;
    device const float* beta;
    device float* o;
    device float* bufs;
    i64 size;
    device const int* committed_p;
    int m;
    int n;
    int n_k_head;
    int n_v_head;
};

template <int S>
kernel void delta_net(constant DeltaNetArgs& a [[buffer(0)]], uint h [[threadgroup_position_in_grid]],
                      uint j [[thread_index_in_threadgroup]]) {
    threadgroup float qs[S], ks[S];
    const int committed = *a.committed_p;
    const int n = a.n, n_k_head = a.n_k_head, n_v_head = a.n_v_head, hk = h % n_k_head;
    const i64 head = (i64)h * S * S;
    device const float* st = a.bufs + committed * a.size + head;
    float s[S];
    for (int i = 0; i < S; i++) s[i] = st[i * S + j];
    const float q_scale = sqrt(1.0f / (float)S);  // 1 / S is exact: one rounding, as CUDA's double
    const int first = max(n - a.m, 0);
    for (int t = 0; t < n; t++) {
        threadgroup_barrier(mem_flags::mem_threadgroup);
        qs[j] = a.q[((i64)t * n_k_head + hk) * S + j] * q_scale;
        ks[j] = a.k[((i64)t * n_k_head + hk) * S + j];
        threadgroup_barrier(mem_flags::mem_threadgroup);
        const float decay = precise::exp(a.g[(i64)t * n_v_head + h]);
        float sk = 0.0f;
        for (int i = 0; i < S; i++) {
            s[i] = s[i] * decay;
            sk = fma(ks[i], s[i], sk);
        }
        const float delta = (a.v[((i64)t * n_v_head + h) * S + j] - sk) * a.beta[(i64)t * n_v_head + h];
        float out = 0.0f;
        for (int i = 0; i < S; i++) {
            s[i] = s[i] + ks[i] * delta;
            out = fma(qs[i], s[i], out);
        }
        a.o[((i64)t * n_v_head + h) * S + j] = out;
        if (t >= first) {
            device float* dst = a.bufs + slot_buffer(t - first, committed) * a.size + head;
            for (int i = 0; i < S; i++) dst[i * S + j] = s[i];
        }
    }
}
typedef decltype(delta_net<32>) delta_net_t;
