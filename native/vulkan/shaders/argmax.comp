#version 460
#extension GL_GOOGLE_include_directive : require
// argmax.cu: the index of the largest value of each row of x [n, v] as a float, NumPy's order (the
// first of equal values, a NaN above every number), one workgroup (a power of two) a row: invocation t
// scans values t, t + WGS, ..., then a tree over the workgroup (a total order: the same result).

#include "common.glsl"

layout(push_constant, std430) uniform PC {
    F32 x;
    F32 o;
    int v;
} pc;

shared float part_value[gl_WorkGroupSize.x];
shared int part_index[gl_WorkGroupSize.x];

// Whether (a, i) comes before (b, j) in that order.
bool argmax_first(float a, int i, float b, int j) {
    const bool na = isnan(a), nb = isnan(b);
    if (na || nb) return na && (!nb || i < j);
    return a > b || (a == b && i < j);
}

void main() {
    const uint tid = gl_LocalInvocationID.x, row = gl_WorkGroupID.x;
    const int v = pc.v;
    F32 xr = f32_at(pc.x, int64_t(row) * v);
    float b = uintBitsToFloat(0xff800000u);  // -inf: any value's index comes first
    int j = 0x7fffffff;
    for (int e = int(tid); e < v; e += int(WGS)) {
        const float a = xr.v[e];
        if (argmax_first(a, e, b, j)) {
            b = a;
            j = e;
        }
    }
    part_value[tid] = b;
    part_index[tid] = j;
    barrier();
    for (uint stride = WGS / 2u; stride > 0u; stride >>= 1) {
        if (tid < stride && argmax_first(part_value[tid + stride], part_index[tid + stride], part_value[tid], part_index[tid])) {
            part_value[tid] = part_value[tid + stride];
            part_index[tid] = part_index[tid + stride];
        }
        barrier();
    }
    if (tid == 0u) {
        F32 o = f32_at(pc.o, int64_t(row));
        o.v[0] = float(part_index[0]);
    }
}
