#version 460
#extension GL_GOOGLE_include_directive : require
// attention.cu: causal attention over the KV cache. kv_write (define KV_WRITE) stores the batch's
// K and V at their positions; attention (define ATTENTION, SUBGROUP for the .sg build) then gives
// each (row, query head) one workgroup of 128 threads whose 4 logical warps take keys
// j = warp, warp + 4, ... with an online softmax, merged in warp order: a row's result depends on
// its query and the cache alone, never on the batch. exp is computed in double and rounded once
// to float, the same on every device; CUDA's expf (within 2 ulp of that) is not reproducible
// here, so attention is the one kernel whose bits can differ from the CUDA backend's.

#include "common.glsl"

#if defined(KV_WRITE)

// One workgroup (128 threads) per (row, kv head).
layout(push_constant, std430) uniform PC {
    F32 k;
    F32 v;
    I32 pos;
    F32 kc;
    F32 vc;
    int n_kv_head;
    int d;
    int n_ctx;
    I32 err;
} pc;

void main() {
    const int blk = int(gl_WorkGroupID.x);
    const int i = blk / pc.n_kv_head, h = blk % pc.n_kv_head;
    const int p = pc.pos.v[i];
    if (p < 0 || p >= pc.n_ctx) {
        if (gl_LocalInvocationID.x == 0u) set_error(pc.err, ERR_POS);
        return;
    }
    const int d = pc.d;
    const int64_t src = int64_t(blk) * d, dst = (int64_t(p) * pc.n_kv_head + h) * d;
    F32 ks = f32_at(pc.k, src), vs = f32_at(pc.v, src), kd = f32_at(pc.kc, dst), vd = f32_at(pc.vc, dst);
    for (int e = int(gl_LocalInvocationID.x); e < d; e += int(WGS)) {
        kd.v[e] = ks.v[e];
        vd.v[e] = vs.v[e];
    }
}

#elif defined(ATTENTION)

#define ATT_WARPS 4
#define ATT_MAX_D 256
#define NC (ATT_MAX_D / 32)

layout(push_constant, std430) uniform PC {
    F32 q;
    F32 kc;
    F32 vc;
    I32 pos;
    F32 o;
    int n_head;
    int n_kv_head;
    int d;
    float scale;
    int n_ctx;
} pc;

shared float s_max[ATT_WARPS], s_sum[ATT_WARPS];
shared float s_acc[ATT_WARPS * ATT_MAX_D];
#ifndef SUBGROUP
shared float wred[ATT_WARPS * 32];
#endif
#include "warp.glsl"

void main() {
    const int blk = int(gl_WorkGroupID.x);
    const int n_head = pc.n_head, n_kv = pc.n_kv_head, d = pc.d;
    const int i = blk / n_head, h = blk % n_head, hk = h / (n_head / n_kv);
    const uint tid = thread_id(), warp = tid >> 5, lane = tid & 31u;
    const int n_keys = min(pc.pos.v[i] + 1, pc.n_ctx);  // a bad position was flagged by kv_write
    F32 qr = f32_at(pc.q, int64_t(blk) * d);
    float qv[NC];
    precise float acc[NC];
    [[unroll]] for (int c = 0; c < NC; c++) {
        const int e = 32 * c + int(lane);
        qv[c] = e < d ? qr.v[e] : 0.0;
        acc[c] = 0.0;
    }
    precise float mx = uintBitsToFloat(0xff800000u), sum = 0.0;  // -inf
    // Every warp runs the same number of rounds (the shared-memory butterfly needs the whole
    // workgroup at its barriers); a warp past the last key only takes part in the sums.
    for (int j0 = 0; j0 < n_keys; j0 += ATT_WARPS) {
        const int j = j0 + int(warp);
        const bool live = j < n_keys;
        F32 kr = f32_at(pc.kc, (int64_t(live ? j : 0) * n_kv + hk) * d);
        F32 vr = f32_at(pc.vc, (int64_t(live ? j : 0) * n_kv + hk) * d);
        precise float s = 0.0;
        if (live) {
            [[unroll]] for (int c = 0; c < NC; c++)
                if (32 * c + int(lane) < d) s = fma(qv[c], kr.v[32 * c + int(lane)], s);
        }
#ifdef SUBGROUP
        s = warp_sum(s) * pc.scale;
#else
        wred[tid] = s;
        barrier();
        s = tree32(warp * 32u) * pc.scale;
        barrier();
#endif
        if (live) {
            precise float m_new = max(mx, s);
            precise float corr = exp_f(mx - m_new), e = exp_f(s - m_new);
            sum = sum * corr + e;
            for (int c = 0; c < NC; c++)
                if (32 * c + int(lane) < d) acc[c] = acc[c] * corr + e * vr.v[32 * c + int(lane)];
            mx = m_new;
        }
    }
    if (lane == 0u) {
        s_max[warp] = mx;
        s_sum[warp] = sum;
    }
    [[unroll]] for (int c = 0; c < NC; c++)
        if (32 * c + int(lane) < d) s_acc[warp * ATT_MAX_D + 32u * uint(c) + lane] = acc[c];
    barrier();
    precise float m_all = s_max[0];
    for (int w = 1; w < ATT_WARPS; w++) m_all = max(m_all, s_max[w]);
    precise float weight[ATT_WARPS];
    precise float total = 0.0;
    for (int w = 0; w < ATT_WARPS; w++) {
        weight[w] = exp_f(s_max[w] - m_all);  // 0 for a warp that saw no key
        total += s_sum[w] * weight[w];
    }
    F32 orow = f32_at(pc.o, int64_t(blk) * d);
    for (int e = int(tid); e < d; e += ATT_WARPS * 32) {
        precise float a = 0.0;
        for (int w = 0; w < ATT_WARPS; w++) a += s_acc[w * ATT_MAX_D + e] * weight[w];
        orow.v[e] = div_f(a, total);
    }
}

#else
#error define KV_WRITE or ATTENTION
#endif
