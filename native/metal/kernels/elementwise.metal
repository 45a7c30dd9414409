// elementwise.cu: element-wise ops, one thread per output element (grid-stride over the whole
// grid's threads). Rounding as the reference: float32 arithmetic; transcendental functions in
// float (CUDA: in double, rounded once).

#define OP_ADD 0
#define OP_MUL 1

// o = a (op) b, both read through 4-D element strides (0 on broadcast axes) of the output shape.
struct BinaryArgs {
    device const float* a;
    device const float* b;
    device float* o;
    i64 total;
    int op;
    i64 n1, n2, n3;
    i64 sa0, sa1, sa2, sa3;
    i64 sb0, sb1, sb2, sb3;
};

kernel void binary(constant BinaryArgs& p [[buffer(0)]], uint first [[thread_position_in_grid]],
                   uint stride [[threads_per_grid]]) {
    for (i64 idx = first; idx < p.total; idx += stride) {
        const i64 i3 = idx % p.n3, t2 = idx / p.n3, i2 = t2 % p.n2, t1 = t2 / p.n2, i1 = t1 % p.n1, i0 = t1 / p.n1;
        const float x = p.a[i0 * p.sa0 + i1 * p.sa1 + i2 * p.sa2 + i3 * p.sa3];
        const float y = p.b[i0 * p.sb0 + i1 * p.sb1 + i2 * p.sb2 + i3 * p.sb3];
        p.o[idx] = p.op == OP_ADD ? x + y : x * y;
    }
}

#define OP_SIGMOID 0
#define OP_SILU 1
#define OP_SOFTPLUS 2
#define OP_SCALE 3

struct UnaryArgs {
    device const float* x;
    device float* o;
    i64 total;
    int op;
    float factor;
};

kernel void unary(constant UnaryArgs& a [[buffer(0)]], uint first [[thread_position_in_grid]],
                  uint stride [[threads_per_grid]]) {
    for (i64 i = first; i < a.total; i += stride) {
        const float v = a.x[i];
        float r;
        if (a.op == OP_SIGMOID) r = sigmoid_f(v);
        else if (a.op == OP_SILU) r = v * sigmoid_f(v);
        else if (a.op == OP_SOFTPLUS) r = v > 20.0f ? v : log1p_f(precise::exp(fmin(v, 20.0f)));
        else r = v * a.factor;
        a.o[i] = r;
    }
}

// SwiGLU of the routed experts: o = silu(g) * u, as the reference's (g * sigmoid(g)) * u.
struct SwigluArgs {
    device const float* g;
    device const float* u;
    device float* o;  // may be g (in place)
    i64 total;
};

kernel void swiglu(constant SwigluArgs& a [[buffer(0)]], uint first [[thread_position_in_grid]],
                   uint stride [[threads_per_grid]]) {
    for (i64 i = first; i < a.total; i += stride) {
        const float v = a.g[i];
        a.o[i] = v * sigmoid_f(v) * a.u[i];
    }
}
