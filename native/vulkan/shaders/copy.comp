#version 460
#extension GL_GOOGLE_include_directive : require
// copy.cu: row copies for slice, concat and take_rows: out[r, out_off + c] = in[src(r), in_off + c]
// with src(r) = rows[r], or r where rows is a null address. Grid-stride.

#include "common.glsl"

layout(push_constant, std430) uniform PC {
    F32 in_;
    F32 out_;
    I32 rows;
    int64_t n_rows;
    int64_t width;
    int64_t in_stride;
    int64_t in_off;
    int64_t out_stride;
    int64_t out_off;
} pc;

void main() {
    const int64_t total = pc.n_rows * pc.width;
    const bool indexed = uint64_t(pc.rows) != 0ul;
    const int64_t stride = int64_t(gl_NumWorkGroups.x) * int64_t(WGS);
    for (int64_t i = int64_t(gl_WorkGroupID.x) * int64_t(WGS) + int64_t(gl_LocalInvocationID.x); i < total; i += stride) {
        const int64_t r = i / pc.width, c = i % pc.width;
        const int64_t src = indexed ? int64_t(i32_at(pc.rows, r).v[0]) : r;
        f32_at(pc.out_, r * pc.out_stride + pc.out_off + c).v[0] = f32_at(pc.in_, src * pc.in_stride + pc.in_off + c).v[0];
    }
}
