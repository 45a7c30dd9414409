// Element-wise ops, one thread per output element (grid-stride). Rounding as the reference:
// float32 arithmetic, transcendental functions in double rounded once.

#define OP_ADD 0
#define OP_MUL 1

__device__ __forceinline__ float binary_f(int op, float x, float y) { return op == OP_ADD ? x + y : x * y; }

// o = a (op) b, both read through 4-D element strides (0 on broadcast axes) of the output shape.
extern "C" __global__ void binary(const float* a, const float* b, float* o, i64 total, int op, i64 n1, i64 n2, i64 n3,
                                  i64 sa0, i64 sa1, i64 sa2, i64 sa3, i64 sb0, i64 sb1, i64 sb2, i64 sb3) {
    begin_kernel();
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const i64 i3 = idx % n3, t2 = idx / n3, i2 = t2 % n2, t1 = t2 / n2, i1 = t1 % n1, i0 = t1 / n1;
        const float x = a[i0 * sa0 + i1 * sa1 + i2 * sa2 + i3 * sa3];
        const float y = b[i0 * sb0 + i1 * sb1 + i2 * sb2 + i3 * sb3];
        o[idx] = binary_f(op, x, y);
    }
}

#define OP_SIGMOID 0
#define OP_SILU 1
#define OP_SOFTPLUS 2
#define OP_SCALE 3

__device__ __forceinline__ float unary_f(int op, float v, float factor) {
    if (op == OP_SIGMOID) return sigmoid_f(v);
    if (op == OP_SILU) return v * sigmoid_f(v);
    if (op == OP_SOFTPLUS) return v > 20.0f ? v : (float)log1p(exp((double)fminf(v, 20.0f)));
    return v * factor;
}

extern "C" __global__ void unary(const float* x, float* o, i64 total, int op, float factor) {
    begin_kernel();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x)
        o[i] = unary_f(op, x[i], factor);
}

// SwiGLU of the routed experts: o = silu(g) * u, as the reference's (g * sigmoid(g)) * u.
extern "C" __global__ void swiglu(const float* g, const float* u, float* o, i64 total) {
    begin_kernel();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        const float v = g[i];
        o[i] = v * sigmoid_f(v) * u[i];
    }
}

// A chain of element-wise ops in one launch (fusion.py's "chain"; CUDA only): step 0 reads the start
// value, each later step applies a unary op or an add / mul with its operand, every value getting the
// operations of the separate launches in their order (a + b and a * b are b + a and b * a, exactly).
#define CHAIN_STEPS 6
#define CHAIN_BINARY 4  // a step's op: a unary op, or CHAIN_BINARY + OP_ADD / OP_MUL; -1 past the last step

struct Chain {
    const float* in[CHAIN_STEPS];  // each step's operand (step 0: the start value)
    i64 st[CHAIN_STEPS][4];        // its 4-D element strides over the output shape (0 on broadcast axes)
    int op[CHAIN_STEPS];
    float factor[CHAIN_STEPS];     // the scale steps' factors
    int flat;                      // every operand has the output's shape: read at the output's index
};

// The chain's value at output index idx of a 4-D output shape (n0, n1, n2, n3).
__device__ __forceinline__ float chain_at(const Chain& c, i64 idx, i64 n1, i64 n2, i64 n3) {
    i64 i0 = 0, i1 = 0, i2 = 0, i3 = idx;
    if (!c.flat) {
        const i64 t2 = idx / n3, t1 = t2 / n2;
        i3 = idx % n3, i2 = t2 % n2, i1 = t1 % n1, i0 = t1 / n1;
    }
    float y[CHAIN_STEPS];  // every operand loaded before any op: the loads in flight together
#pragma unroll
    for (int j = 0; j < CHAIN_STEPS; j++)  // unrolled: the parameters are read at fixed offsets
        if (j == 0 || c.op[j] >= CHAIN_BINARY)
            y[j] = c.in[j][c.flat ? idx : i0 * c.st[j][0] + i1 * c.st[j][1] + i2 * c.st[j][2] + i3 * c.st[j][3]];
    float v = y[0];
#pragma unroll
    for (int j = 1; j < CHAIN_STEPS; j++) {
        const int op = c.op[j];
        if (op >= 0) v = op >= CHAIN_BINARY ? binary_f(op - CHAIN_BINARY, v, y[j]) : unary_f(op, v, c.factor[j]);
    }
    return v;
}

extern "C" __global__ void chain(const Chain c, float* o, i64 total, i64 n1, i64 n2, i64 n3) {
    begin_kernel();
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x)
        o[idx] = chain_at(c, idx, n1, n2, n3);
}
