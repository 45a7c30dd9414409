#version 460
#extension GL_GOOGLE_include_directive : require
// elementwise.cu: element-wise ops, one invocation per output element (grid-stride: the stride
// is gl_NumWorkGroups.x * gl_WorkGroupSize.x; the host never splits these grids). Rounding as
// the reference: float32 arithmetic, transcendental functions in double rounded once.
// Defines: one of BINARY, UNARY, SWIGLU.

#include "common.glsl"

int64_t first_index() { return int64_t(gl_WorkGroupID.x) * int64_t(WGS) + int64_t(gl_LocalInvocationID.x); }
int64_t grid_stride() { return int64_t(gl_NumWorkGroups.x) * int64_t(WGS); }

#if defined(BINARY)

#define OP_ADD 0
#define OP_MUL 1

// o = a (op) b, both read through 4-D element strides (0 on broadcast axes) of the output shape.
layout(push_constant, std430) uniform PC {
    F32 a;
    F32 b;
    F32 o;
    int64_t total;
    int op;
    int64_t n1, n2, n3;
    int64_t sa0, sa1, sa2, sa3;
    int64_t sb0, sb1, sb2, sb3;
} pc;

void main() {
    for (int64_t idx = first_index(); idx < pc.total; idx += grid_stride()) {
        const int64_t i3 = idx % pc.n3, t2 = idx / pc.n3, i2 = t2 % pc.n2, t1 = t2 / pc.n2, i1 = t1 % pc.n1, i0 = t1 / pc.n1;
        const float x = f32_at(pc.a, i0 * pc.sa0 + i1 * pc.sa1 + i2 * pc.sa2 + i3 * pc.sa3).v[0];
        const float y = f32_at(pc.b, i0 * pc.sb0 + i1 * pc.sb1 + i2 * pc.sb2 + i3 * pc.sb3).v[0];
        precise float r = pc.op == OP_ADD ? x + y : x * y;
        f32_at(pc.o, idx).v[0] = r;
    }
}

#elif defined(UNARY)

#define OP_SIGMOID 0
#define OP_SILU 1
#define OP_SOFTPLUS 2
#define OP_SCALE 3

layout(push_constant, std430) uniform PC {
    F32 x;
    F32 o;
    int64_t total;
    int op;
    float factor;
} pc;

void main() {
    const int op = pc.op;
    for (int64_t i = first_index(); i < pc.total; i += grid_stride()) {
        const float v = f32_at(pc.x, i).v[0];
        precise float r;
        if (op == OP_SIGMOID) {
            r = sigmoid_f(v);
        } else if (op == OP_SILU) {
            r = v * sigmoid_f(v);
        } else if (op == OP_SOFTPLUS) {
            // fminf(v, 20) is 20 for a NaN v, as in CUDA
            const float c = isnan(v) ? 20.0 : min(v, 20.0);
            r = v > 20.0 ? v : float(log1p_d(exp_d(double(c))));
        } else {
            r = v * pc.factor;
        }
        f32_at(pc.o, i).v[0] = r;
    }
}

#elif defined(SWIGLU)

// SwiGLU of the routed experts: o = silu(g) * u, as the reference's (g * sigmoid(g)) * u.
// o may be g (in place).
layout(push_constant, std430) uniform PC {
    F32 g;
    F32 u;
    F32 o;
    int64_t total;
} pc;

void main() {
    for (int64_t i = first_index(); i < pc.total; i += grid_stride()) {
        const float v = f32_at(pc.g, i).v[0];
        precise float r = v * sigmoid_f(v) * f32_at(pc.u, i).v[0];
        f32_at(pc.o, i).v[0] = r;
    }
}

#else
#error define BINARY, UNARY or SWIGLU
#endif
