#version 460
#extension GL_GOOGLE_include_directive : require
// norm.cu: rms_norm and l2_norm over the last axis, one workgroup (256 threads) per row. The sum
// of squares is taken in double (as the reference) in a fixed tree order; the scale is rounded
// once to float. eps arrives as a float (the CUDA kernel's parameter is float too) and is used
// as (double)eps. w == 0 (a null address): no weight.

#include "common.glsl"

layout(push_constant, std430) uniform PC {
    F32 x;
    F32 w;
    F32 o;
    int d;
    float eps;
    int l2;
} pc;

shared double part[gl_WorkGroupSize.x];

void main() {
    const uint tid = gl_LocalInvocationID.x, row = gl_WorkGroupID.x;
    const int d = pc.d;
    F32 xr = f32_at(pc.x, int64_t(row) * d);
    F32 orow = f32_at(pc.o, int64_t(row) * d);
    precise double s = 0.0LF;
    for (int e = int(tid); e < d; e += int(WGS)) {
        const double v = double(xr.v[e]);
        s += v * v;
    }
    part[tid] = s;
    barrier();
    for (uint stride = WGS / 2u; stride > 0u; stride >>= 1) {
        if (tid < stride) {
            precise double t = part[tid] + part[tid + stride];
            part[tid] = t;
        }
        barrier();
    }
    const double total = part[0];
    precise double ms = (pc.l2 != 0 ? total : total / double(d)) + double(pc.eps);
    precise double inv = 1.0LF / sqrt(ms);
    const float scale = float(inv);
    const bool has_w = uint64_t(pc.w) != 0ul;
    for (int e = int(tid); e < d; e += int(WGS)) {
        precise float y = xr.v[e] * scale;
        if (has_w) y = y * pc.w.v[e];
        orow.v[e] = y;
    }
}
