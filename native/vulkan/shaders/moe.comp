#version 460
#extension GL_GOOGLE_include_directive : require
// moe.cu: routed experts around the expert matmuls (mmid_*): routing per row (MOE_ROUTE), then
// the weighted sum (MOE_COMBINE).

#include "common.glsl"

#if defined(MOE_ROUTE)

// Softmax of the router logits [n, E], top n_used (ties to the lower index), weights
// renormalised; one workgroup (32 threads) per row, the scalar steps on invocation 0.
// probs is CUDA's dynamic shared memory (4 * n_expert bytes): specialization constant 1 is the
// launch's shared bytes / 4.
layout(constant_id = 1) const uint SHARED_WORDS = 1;
shared float dyn[SHARED_WORDS];

layout(push_constant, std430) uniform PC {
    F32 logits;
    I32 ids;
    F32 wts;
    int n_expert;
    int n_used;
} pc;

void main() {
    if (gl_LocalInvocationID.x != 0u) return;
    const int row = int(gl_WorkGroupID.x), n_expert = pc.n_expert, n_used = pc.n_used;
    F32 lg = f32_at(pc.logits, int64_t(row) * n_expert);
    F32 wts = f32_at(pc.wts, int64_t(row) * n_used);
    I32 ids = i32_at(pc.ids, int64_t(row) * n_used);
    float mx = lg.v[0];
    for (int e = 1; e < n_expert; e++) mx = max(mx, lg.v[e]);
    precise float sum = 0.0;
    for (int e = 0; e < n_expert; e++) {
        precise float t = lg.v[e] - mx;
        dyn[e] = exp_f(t);
        sum += dyn[e];
    }
    for (int e = 0; e < n_expert; e++) dyn[e] = div_f(dyn[e], sum);
    precise float chosen_sum = 0.0;
    for (int s = 0; s < n_used; s++) {
        int best = -1;
        for (int e = 0; e < n_expert; e++)
            if (dyn[e] >= 0.0 && (best < 0 || dyn[e] > dyn[best])) best = e;
        ids.v[s] = best;
        wts.v[s] = dyn[best];
        chosen_sum += dyn[best];
        dyn[best] = -1.0;  // taken
    }
    const float denom = max(chosen_sum, 6.103515625e-5);
    for (int s = 0; s < n_used; s++) wts.v[s] = div_f(wts.v[s], denom);
}

#elif defined(MOE_COMBINE)

// out[i] = sum over slots s (in order) of down[i * n_used + s] * wts[i * n_used + s]. Grid-stride.
layout(push_constant, std430) uniform PC {
    F32 down;
    F32 wts;
    F32 out_;
    int n;
    int d;
    int n_used;
} pc;

void main() {
    const int64_t total = int64_t(pc.n) * pc.d;
    const int n_used = pc.n_used;
    const int64_t stride = int64_t(gl_NumWorkGroups.x) * int64_t(WGS);
    for (int64_t idx = int64_t(gl_WorkGroupID.x) * int64_t(WGS) + int64_t(gl_LocalInvocationID.x); idx < total; idx += stride) {
        const int64_t i = idx / pc.d, c = idx % pc.d;
        precise float acc = 0.0;
        for (int s = 0; s < n_used; s++)
            acc = acc + f32_at(pc.down, (i * n_used + s) * pc.d + c).v[0] * f32_at(pc.wts, i * n_used + s).v[0];
        f32_at(pc.out_, idx).v[0] = acc;
    }
}

#else
#error define MOE_ROUTE or MOE_COMBINE
#endif
