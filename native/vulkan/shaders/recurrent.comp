#version 460
#extension GL_GOOGLE_include_directive : require
// recurrent.cu: recurrent ops over a state with snapshots. The state lives in m + 1 buffers of
// `size` floats: buffer `committed` (read from device memory at *committed_p) holds the committed
// value; the state after token t of this run (for the last m tokens) goes to snapshot slot
// t - max(n - m, 0), in the buffers other than the committed one.
// Defines: SSM_CONV with K (2..5), or DELTA_NET with S (32, 64, 128).

#include "common.glsl"

#if defined(SSM_CONV)

// Depthwise causal conv of x [n, C] with w [C, K] over (state [K-1, C] ++ x); one invocation per
// channel, 128 per workgroup.
layout(push_constant, std430) uniform PC {
    F32 x;
    F32 w;
    F32 o;
    F32 bufs;
    int64_t size;
    I32 committed_p;
    int m;
    int n;
    int C;
} pc;

void main() {
    const int committed = pc.committed_p.v[0];
    const int c = int(gl_WorkGroupID.x * WGS + gl_LocalInvocationID.x);
    const int C = pc.C, n = pc.n;
    if (c >= C) return;
    float win[K - 1], wc[K];
    F32 st = f32_at(pc.bufs, int64_t(committed) * pc.size);
    [[unroll]] for (int j = 0; j < K - 1; j++) win[j] = f32_at(st, int64_t(j) * C + c).v[0];
    [[unroll]] for (int j = 0; j < K; j++) wc[j] = f32_at(pc.w, int64_t(c) * K + j).v[0];
    const int first = max(n - pc.m, 0);
    for (int t = 0; t < n; t++) {
        const float xt = f32_at(pc.x, int64_t(t) * C + c).v[0];
        precise float acc = win[0] * wc[0];  // the reference's order: tap 0, then + tap j
        for (int j = 1; j < K - 1; j++) acc = acc + win[j] * wc[j];
        acc = acc + xt * wc[K - 1];
        f32_at(pc.o, int64_t(t) * C + c).v[0] = acc;
        [[unroll]] for (int j = 0; j < K - 2; j++) win[j] = win[j + 1];
        win[K - 2] = xt;
        if (t >= first) {
            F32 dst = f32_at(pc.bufs, int64_t(slot_buffer(t - first, committed)) * pc.size);
            [[unroll]] for (int j = 0; j < K - 1; j++) f32_at(dst, int64_t(j) * C + c).v[0] = win[j];
        }
    }
}

#elif defined(DELTA_NET)

// Gated delta rule, token by token, for value head gl_WorkGroupID.x; invocation j (S per
// workgroup) owns column j of the head's state [S(k), S(v)] in registers.
layout(push_constant, std430) uniform PC {
    F32 q;
    F32 k;
    F32 v;
    F32 g;
    F32 beta;
    F32 o;
    F32 bufs;
    int64_t size;
    I32 committed_p;
    int m;
    int n;
    int n_k_head;
    int n_v_head;
} pc;

shared float qs[S], ks[S];

void main() {
    const int committed = pc.committed_p.v[0];
    const int h = int(gl_WorkGroupID.x), hk = h % pc.n_k_head, j = int(gl_LocalInvocationID.x);
    const int n = pc.n, n_k_head = pc.n_k_head, n_v_head = pc.n_v_head;
    const int64_t head = int64_t(h) * S * S;
    F32 st = f32_at(pc.bufs, int64_t(committed) * pc.size + head);
    precise float s[S];
    for (int i = 0; i < S; i++) s[i] = st.v[i * S + j];
    precise double qsd = 1.0LF / sqrt(double(S));
    const float q_scale = float(qsd);
    const int first = max(n - pc.m, 0);
    for (int t = 0; t < n; t++) {
        barrier();
        precise float qj = f32_at(pc.q, (int64_t(t) * n_k_head + hk) * S + j).v[0] * q_scale;
        qs[j] = qj;
        ks[j] = f32_at(pc.k, (int64_t(t) * n_k_head + hk) * S + j).v[0];
        barrier();
        const int64_t tv = int64_t(t) * n_v_head + h;
        const float decay = exp_f(f32_at(pc.g, tv).v[0]);
        precise float sk = 0.0;
        for (int i = 0; i < S; i++) {
            s[i] = s[i] * decay;
            sk = fma(ks[i], s[i], sk);
        }
        precise float delta = (f32_at(pc.v, tv * S + j).v[0] - sk) * f32_at(pc.beta, tv).v[0];
        precise float out_ = 0.0;
        for (int i = 0; i < S; i++) {
            s[i] = s[i] + ks[i] * delta;
            out_ = fma(qs[i], s[i], out_);
        }
        f32_at(pc.o, tv * S + j).v[0] = out_;
        if (t >= first) {
            F32 dst = f32_at(pc.bufs, int64_t(slot_buffer(t - first, committed)) * pc.size + head);
            for (int i = 0; i < S; i++) dst.v[i * S + j] = s[i];
        }
    }
}

#else
#error define SSM_CONV or DELTA_NET
#endif
