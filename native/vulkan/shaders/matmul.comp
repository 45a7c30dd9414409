#version 460
#extension GL_GOOGLE_include_directive : require
// matmul.cu: y = x W^T with W in its ggml blocks (mm_<t>_<NB>), the expert rows of the routed
// experts (mmid_<t>), and rows of W picked by ids (get_rows_<t>). Defines: WT (weight type, see
// quants.glsl), one of MM (with NB = 1, 2, 4, 8), MMID, GET_ROWS; SUBGROUP for the .sg build,
// CPU_DRIVER for the .cpu build.
//
// mm / mmid: one logical warp of 32 lanes per weight row, reading it once for up to NB rows of x.
// A row's sum runs in a fixed order (lane l takes 32-value units l, l+32, ...; fma chain;
// butterfly) whatever NB and the batch are: bit-identical rows for every batch size.
// Launch (as CUDA): 128 threads (4 warps), grid (ceil(m / 4), ceil(n / NB)) or (ceil(m / 4), pairs).
//
// The .cpu build, for CPU drivers (Mesa's lavapipe): one invocation per weight row, the whole row
// in one fma chain in k order, grid (ceil(m / 128), ...). There a workgroup's invocations run as
// SIMD lanes and a barrier splits the shader in two, so the warp build leaves most lanes idle on
// short rows and pays a barrier per row. Its own summation order, the same for every NB: batch-
// invariant on such a device, not bit-equal to the warp build.
// Quantized weights: x is read in 16-byte vectors, so it must be 16-byte aligned (as in CUDA).

#include "common.glsl"
#include "quants.glsl"

#if defined(MM) || defined(MMID)

#ifdef MMID
#define NB 1
layout(push_constant, std430) uniform PC {
    U16 W;
    int64_t row_bytes;
    int64_t expert_bytes;
    I32 ids;
    int xdiv;
    F32 x;
    F32 y;
    int m;
    int k;
} pc;
#else
layout(push_constant, std430) uniform PC {
    U16 W;
    int64_t row_bytes;
    F32 x;
    F32 y;
    int n;
    int m;
    int k;
} pc;
#endif

#ifdef CPU_DRIVER
#define LANES 1  // invocations per weight row
#else
#define LANES 32
#ifndef SUBGROUP
shared float wred[NB * gl_WorkGroupSize.x];
#endif
#include "warp.glsl"
#endif

void main() {
#ifdef CPU_DRIVER
    const uint lane = 0u;
    const int j = int(gl_WorkGroupID.x * WGS + gl_LocalInvocationID.x);
#else
    const uint tid = thread_id(), lane = tid & 31u, warp = tid >> 5;
    const int j = int(gl_WorkGroupID.x * (WGS >> 5) + warp);
#endif
    const int k = pc.k, m = pc.m;
    const bool live = j < m;
#ifdef MMID
    const int p = int(gl_WorkGroupID.y);
    const int r0 = p, nr = 1;
    uint64_t wrow = 0ul;
    F32 xr[1];
    if (live) {
        wrow = uint64_t(pc.W) + uint64_t(int64_t(pc.ids.v[p]) * pc.expert_bytes + int64_t(j) * pc.row_bytes);
        xr[0] = f32_at(pc.x, int64_t(p / pc.xdiv) * k);
    }
#else
    const int r0 = int(gl_WorkGroupID.y) * NB, nr = min(NB, pc.n - r0);
    const uint64_t wrow = uint64_t(pc.W) + uint64_t(int64_t(j) * pc.row_bytes);
    F32 xr[NB];
    [[unroll]] for (int r = 0; r < NB; r++) xr[r] = f32_at(pc.x, int64_t(r0 + r) * k);
#endif
    precise float acc[NB];
    [[unroll]] for (int r = 0; r < NB; r++) acc[r] = 0.0;
    if (live) {
#if WT_IS_FLOAT
        for (int e = int(lane); e < k; e += LANES) {
            const float w = deq1(wrow, uint(e));
            [[unroll]] for (int r = 0; r < NB; r++)
                if (r < nr) acc[r] = fma(w, xr[r].v[e], acc[r]);
        }
#else
        for (int sb = int(lane); sb < (k >> 5); sb += LANES) {
            float w[32];
            deq32(wrow, uint(sb), w);
            [[unroll]] for (int r = 0; r < NB; r++) {
                if (r < nr) {
                    V4 xv = V4(uint64_t(xr[r]) + uint64_t(sb) * 128ul);  // x + r * k + 32 * sb: 16-byte aligned
                    precise float a = acc[r];
                    [[unroll]] for (int i = 0; i < 8; i++) {
                        const vec4 v = xv.v[i];
                        a = fma(w[4 * i], v.x, a);
                        a = fma(w[4 * i + 1], v.y, a);
                        a = fma(w[4 * i + 2], v.z, a);
                        a = fma(w[4 * i + 3], v.w, a);
                    }
                    acc[r] = a;
                }
            }
        }
#endif
    }
#if defined(CPU_DRIVER)
    if (live) {
        [[unroll]] for (int r = 0; r < NB; r++)
            if (r < nr) f32_at(pc.y, int64_t(r0 + r) * m + j).v[0] = acc[r];
    }
#elif defined(SUBGROUP)
    [[unroll]] for (int r = 0; r < NB; r++) acc[r] = warp_sum(acc[r]);
    if (live && lane == 0u) {
        [[unroll]] for (int r = 0; r < NB; r++)
            if (r < nr) f32_at(pc.y, int64_t(r0 + r) * m + j).v[0] = acc[r];
    }
#else
    [[unroll]] for (int r = 0; r < NB; r++) wred[uint(r) * WGS + tid] = acc[r];
    barrier();
    if (live && lane == 0u) {
        [[unroll]] for (int r = 0; r < NB; r++)
            if (r < nr) f32_at(pc.y, int64_t(r0 + r) * m + j).v[0] = tree32(uint(r) * WGS + warp * 32u);
    }
#endif
}

#elif defined(GET_ROWS)

// Rows of W picked by ids, decoded to float32; one workgroup (128 threads) per row.
layout(push_constant, std430) uniform PC {
    U16 W;
    int64_t row_bytes;
    I32 ids;
    F32 out_;
    int d;
    int n_rows;
    I32 err;
    int float_ids;  // the ids are float32 token ids (an argmax's), else int32
} pc;

void main() {
    const uint row = gl_WorkGroupID.x, tid = gl_LocalInvocationID.x;
    const float f = intBitsToFloat(pc.ids.v[row]);
    const int id = pc.float_ids == 0 ? pc.ids.v[row] : f >= 0.0 && f < float(pc.n_rows) ? int(f) : -1;
    if (id < 0 || id >= pc.n_rows) {
        if (tid == 0u) set_error(pc.err, ERR_TOKEN);
        return;
    }
    const uint64_t w = uint64_t(pc.W) + uint64_t(int64_t(id) * pc.row_bytes);
    F32 o = f32_at(pc.out_, int64_t(row) * pc.d);
    const int d = pc.d;
#if WT_IS_FLOAT
    for (int e = int(tid); e < d; e += int(WGS)) o.v[e] = deq1(w, uint(e));
#else
    for (int sb = int(tid); sb < (d >> 5); sb += int(WGS)) {
        float v[32];
        deq32(w, uint(sb), v);
        [[unroll]] for (int l = 0; l < 32; l++) o.v[32 * sb + l] = v[l];
    }
#endif
}

#else
#error define MM, MMID or GET_ROWS
#endif
