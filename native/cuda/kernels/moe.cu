// Routed experts around the expert matmuls (mmid_*): routing per row, then the weighted sum.

// Softmax of the router logits [n, E], top n_used (ties to the lower index), weights renormalised;
// one block per row, the scalar steps on thread 0 (E is small next to the matmuls).
extern "C" __global__ void moe_route(const float* logits, int* ids, float* wts, int n_expert, int n_used) {
    begin_kernel();
    extern __shared__ float probs[];
    const float* lg = logits + (i64)blockIdx.x * n_expert;
    if (threadIdx.x != 0) return;
    float mx = lg[0];
    for (int e = 1; e < n_expert; e++) mx = fmaxf(mx, lg[e]);
    float sum = 0.0f;
    for (int e = 0; e < n_expert; e++) {
        probs[e] = (float)exp((double)(lg[e] - mx));
        sum += probs[e];
    }
    for (int e = 0; e < n_expert; e++) probs[e] = probs[e] / sum;
    float chosen_sum = 0.0f;
    for (int s = 0; s < n_used; s++) {
        int best = -1;
        for (int e = 0; e < n_expert; e++)
            if (probs[e] >= 0.0f && (best < 0 || probs[e] > probs[best])) best = e;
        ids[blockIdx.x * n_used + s] = best;
        wts[blockIdx.x * n_used + s] = probs[best];
        chosen_sum += probs[best];
        probs[best] = -1.0f;  // taken
    }
    const float denom = fmaxf(chosen_sum, 6.103515625e-5f);
    for (int s = 0; s < n_used; s++) wts[blockIdx.x * n_used + s] = wts[blockIdx.x * n_used + s] / denom;
}

// out[i] = sum over slots s (in order) of down[i * n_used + s] * wts[i * n_used + s].
extern "C" __global__ void moe_combine(const float* down, const float* wts, float* out, int n, int d, int n_used) {
    begin_kernel();
    const i64 total = (i64)n * d;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const i64 i = idx / d, c = idx % d;
        float acc = 0.0f;
        for (int s = 0; s < n_used; s++) acc = acc + down[(i * n_used + s) * d + c] * wts[i * n_used + s];
        out[idx] = acc;
    }
}
