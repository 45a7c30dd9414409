#version 460
#extension GL_GOOGLE_include_directive : require
// argmax.cu: the index of the largest value of each row of x [n, v] as a float, NumPy's order (the
// first of equal values, a NaN above every number), a row split over many workgroups: ARGMAX_PART's
// workgroup (s, r) takes chunk s of row r (invocation t: values t, t + WGS, ..., then a tree over
// the workgroup, a power of two) into part[r S + s] (the value's bits, the index); ARGMAX_ROWS' workgroup r reduces row r's S
// parts the same way. The order is total: the split does not change the result.

#include "common.glsl"

#ifdef ARGMAX_PART
layout(push_constant, std430) uniform PC {
    F32 x;
    I32 part;
    int v;
    int chunk;
} pc;
#else
layout(push_constant, std430) uniform PC {
    I32 part;
    F32 o;
    int splits;
} pc;
#endif

shared float tree_value[gl_WorkGroupSize.x];
shared int tree_index[gl_WorkGroupSize.x];

// Whether (a, i) comes before (b, j) in that order.
bool argmax_first(float a, int i, float b, int j) {
    const bool na = isnan(a), nb = isnan(b);
    if (na || nb) return na && (!nb || i < j);
    return a > b || (a == b && i < j);
}

// The workgroup's first (value, index) of its invocations' (b, j), in tree_value[0], tree_index[0].
void argmax_tree(uint tid, float b, int j) {
    tree_value[tid] = b;
    tree_index[tid] = j;
    barrier();
    for (uint stride = WGS / 2u; stride > 0u; stride >>= 1) {
        if (tid < stride && argmax_first(tree_value[tid + stride], tree_index[tid + stride], tree_value[tid], tree_index[tid])) {
            tree_value[tid] = tree_value[tid + stride];
            tree_index[tid] = tree_index[tid + stride];
        }
        barrier();
    }
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    float b = uintBitsToFloat(0xff800000u);  // -inf: any value's index comes first
    int j = 0x7fffffff;
#ifdef ARGMAX_PART
    const uint s = gl_WorkGroupID.x, r = gl_WorkGroupID.y;
    const int start = int(s) * pc.chunk, stop = min(pc.v, start + pc.chunk);
    F32 xr = f32_at(pc.x, int64_t(r) * pc.v);
    for (int e = start + int(tid); e < stop; e += int(WGS)) {
        const float a = xr.v[e];
        if (argmax_first(a, e, b, j)) {
            b = a;
            j = e;
        }
    }
    argmax_tree(tid, b, j);
    if (tid == 0u) {
        I32 p = i32_at(pc.part, 2 * (int64_t(r) * gl_NumWorkGroups.x + s));
        p.v[0] = floatBitsToInt(tree_value[0]);
        p.v[1] = tree_index[0];
    }
#else
    const uint r = gl_WorkGroupID.x;
    I32 p = i32_at(pc.part, 2 * int64_t(r) * pc.splits);
    for (int s = int(tid); s < pc.splits; s += int(WGS)) {
        const float a = intBitsToFloat(p.v[2 * s]);
        const int i = p.v[2 * s + 1];
        if (argmax_first(a, i, b, j)) {
            b = a;
            j = i;
        }
    }
    argmax_tree(tid, b, j);
    if (tid == 0u) {
        F32 o = f32_at(pc.o, int64_t(r));
        o.v[0] = float(tree_index[0]);
    }
#endif
}
