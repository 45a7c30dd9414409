#version 460
#extension GL_GOOGLE_include_directive : require
// rope.cu: rotary embedding of x [n, H, d] at positions pos [n]; one workgroup (128 threads) per
// (row, head). freq[i] is the reference's float32 angle step of pair i (0 for pairs whose M-RoPE
// section takes no text position). cos and sin in double of the float angle, rounded once.

#include "common.glsl"

layout(push_constant, std430) uniform PC {
    F32 x;
    I32 pos;
    F32 freq;
    F32 o;
    int n_head;
    int d;
    int half_;
} pc;

void main() {
    const uint blk = gl_WorkGroupID.x;
    const int d = pc.d, half_ = pc.half_;
    F32 xr = f32_at(pc.x, int64_t(blk) * d);
    F32 orow = f32_at(pc.o, int64_t(blk) * d);
    const float p = float(pc.pos.v[blk / uint(pc.n_head)]);
    for (int e = int(gl_LocalInvocationID.x); e < d; e += int(WGS)) {
        if (e < 2 * half_) {
            const int i = e < half_ ? e : e - half_;
            precise float theta = p * pc.freq.v[i];
            const float c = float(cos_d(double(theta))), s = float(sin_d(double(theta)));
            const float x0 = xr.v[i], x1 = xr.v[i + half_];
            precise float r = e < half_ ? x0 * c - x1 * s : x0 * s + x1 * c;
            orow.v[e] = r;
        } else {
            orow.v[e] = xr.v[e];
        }
    }
}
