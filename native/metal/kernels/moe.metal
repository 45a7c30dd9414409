// moe.cu: routed experts around the expert matmuls (mmid_*): routing per row, then the weighted sum.

// Softmax of the router logits [n, E], top n_used (ties to the lower index), weights renormalised;
// one threadgroup per row, the scalar steps on thread 0 (E is small next to the matmuls). probs is
// the launch's dynamic threadgroup memory (E floats, rounded up to 16 bytes by the host).
struct MoeRouteArgs {
    device const float* logits;
    device int* ids;
    device float* wts;
    int n_expert;
    int n_used;
};

kernel void moe_route(constant MoeRouteArgs& a [[buffer(0)]], threadgroup float* probs [[threadgroup(0)]],
                      uint row [[threadgroup_position_in_grid]], uint tid [[thread_index_in_threadgroup]]) {
    if (tid != 0) return;
    const int n_expert = a.n_expert, n_used = a.n_used;
    device const float* lg = a.logits + (i64)row * n_expert;
    device int* ids = a.ids + (i64)row * n_used;
    device float* wts = a.wts + (i64)row * n_used;
    float mx = lg[0];
    for (int e = 1; e < n_expert; e++) mx = fmax(mx, lg[e]);
    float sum = 0.0f;
    for (int e = 0; e < n_expert; e++) {
        probs[e] = precise::exp(lg[e] - mx);
        sum += probs[e];
    }
    for (int e = 0; e < n_expert; e++) probs[e] = probs[e] / sum;
    float chosen_sum = 0.0f;
    for (int s = 0; s < n_used; s++) {
        int best = -1;
        for (int e = 0; e < n_expert; e++)
            if (probs[e] >= 0.0f && (best < 0 || probs[e] > probs[best])) best = e;
        ids[s] = best;
        wts[s] = probs[best];
        chosen_sum += probs[best];
        probs[best] = -1.0f;  // taken
    }
    const float denom = fmax(chosen_sum, 6.103515625e-5f);
    for (int s = 0; s < n_used; s++) wts[s] = wts[s] / denom;
}

// out[i] = sum over slots s (in order) of down[i * n_used + s] * wts[i * n_used + s].
struct MoeCombineArgs {
    device const float* down;
    device const float* wts;
    device float* out;
    int n;
    int d;
    int n_used;
};

kernel void moe_combine(constant MoeCombineArgs& a [[buffer(0)]], uint first [[thread_position_in_grid]],
                        uint stride [[threads_per_grid]]) {
    const i64 total = (i64)a.n * a.d;
    for (i64 idx = first; idx < total; idx += stride) {
        const i64 i = idx / a.d, c = idx % a.d;
        float acc = 0.0f;
        for (int s = 0; s < a.n_used; s++) acc = acc + a.down[(i * a.n_used + s) * a.d + c] * a.wts[i * a.n_used + s];
        a.out[idx] = acc;
    }
}
