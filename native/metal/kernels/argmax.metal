// argmax.cu: the index of the largest value of each row of x [n, v] as a float, NumPy's order (the
// first of equal values, a NaN above every number), one threadgroup of ARGMAX_THREADS a row: thread t
// scans values t, t + T, ..., then a tree over the threadgroup. (The Metal device does not take the
// graph's argmax yet: greedy decoding there reads the logits, as before.)

#define ARGMAX_THREADS 256

struct ArgmaxArgs {
    device const float* x;
    device float* o;
    int v;
};

// Whether (a, i) comes before (b, j) in that order.
static bool argmax_first(float a, int i, float b, int j) {
    const bool na = a != a, nb = b != b;  // NaN (the library is built without fast math)
    if (na || nb) return na && (!nb || i < j);
    return a > b || (a == b && i < j);
}

kernel void argmax_rows(constant ArgmaxArgs& a [[buffer(0)]], uint row [[threadgroup_position_in_grid]],
                        uint tid [[thread_index_in_threadgroup]]) {
    threadgroup float part_value[ARGMAX_THREADS];
    threadgroup int part_index[ARGMAX_THREADS];
    device const float* xr = a.x + (i64)row * a.v;
    float b = -INFINITY;
    int j = 0x7fffffff;
    for (int e = tid; e < a.v; e += ARGMAX_THREADS) {
        const float x = xr[e];
        if (argmax_first(x, e, b, j)) {
            b = x;
            j = e;
        }
    }
    part_value[tid] = b;
    part_index[tid] = j;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint stride = ARGMAX_THREADS / 2; stride > 0; stride >>= 1) {
        if (tid < stride && argmax_first(part_value[tid + stride], part_index[tid + stride], part_value[tid], part_index[tid])) {
            part_value[tid] = part_value[tid + stride];
            part_index[tid] = part_index[tid + stride];
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    if (tid == 0) a.o[row] = (float)part_index[0];
}
