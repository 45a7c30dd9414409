// Element-wise ops, one thread per output element (grid-stride). Rounding as the reference:
// float32 arithmetic, transcendental functions in double rounded once.

#define OP_ADD 0
#define OP_MUL 1

// o = a (op) b, both read through 4-D element strides (0 on broadcast axes) of the output shape.
extern "C" __global__ void binary(const float* a, const float* b, float* o, i64 total, int op, i64 n1, i64 n2, i64 n3,
                                  i64 sa0, i64 sa1, i64 sa2, i64 sa3, i64 sb0, i64 sb1, i64 sb2, i64 sb3) {
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const i64 i3 = idx % n3, t2 = idx / n3, i2 = t2 % n2, t1 = t2 / n2, i1 = t1 % n1, i0 = t1 / n1;
        const float x = a[i0 * sa0 + i1 * sa1 + i2 * sa2 + i3 * sa3];
        const float y = b[i0 * sb0 + i1 * sb1 + i2 * sb2 + i3 * sb3];
        o[idx] = op == OP_ADD ? x + y : x * y;
    }
}

#define OP_SIGMOID 0
#define OP_SILU 1
#define OP_SOFTPLUS 2
#define OP_SCALE 3

extern "C" __global__ void unary(const float* x, float* o, i64 total, int op, float factor) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        const float v = x[i];
        float r;
        if (op == OP_SIGMOID) r = sigmoid_f(v);
        else if (op == OP_SILU) r = v * sigmoid_f(v);
        else if (op == OP_SOFTPLUS) r = v > 20.0f ? v : (float)log1p(exp((double)fminf(v, 20.0f)));
        else r = v * factor;
        o[i] = r;
    }
}

// SwiGLU of the routed experts: o = silu(g) * u, as the reference's (g * sigmoid(g)) * u.
extern "C" __global__ void swiglu(const float* g, const float* u, float* o, i64 total) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        const float v = g[i];
        o[i] = v * sigmoid_f(v) * u[i];
    }
}
