// argmax.cu: the index of the largest value of each row of x [n, v] as a float, NumPy's order (the
// first of equal values, a NaN above every number), a row split over many threadgroups: argmax_part's
// threadgroup (s, r) of ARGMAX_THREADS takes chunk s of row r into part[r S + s] (the value's bits,
// the index); argmax_rows' threadgroup r of 32 reduces row r's S parts. (The Metal device does not
// take the graph's argmax yet: greedy decoding there reads the logits, as before.)

#define ARGMAX_THREADS 256
#define ARGMAX_ROWS_THREADS 32

struct ArgmaxPartArgs {
    device const float* x;
    device int* part;
    int v;
    int chunk;
};

struct ArgmaxRowsArgs {
    device const int* part;
    device float* o;
    int splits;
};

// Whether (a, i) comes before (b, j) in that order.
static bool argmax_first(float a, int i, float b, int j) {
    const bool na = a != a, nb = b != b;  // NaN (the library is built without fast math)
    if (na || nb) return na && (!nb || i < j);
    return a > b || (a == b && i < j);
}

// The threadgroup's first (value, index) of its threads' (b, j), T threads (a power of two).
template <uint T>
static void argmax_tree(threadgroup float* tree_value, threadgroup int* tree_index, uint tid, thread float& b, thread int& j) {
    tree_value[tid] = b;
    tree_index[tid] = j;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint stride = T / 2; stride > 0; stride >>= 1) {
        if (tid < stride && argmax_first(tree_value[tid + stride], tree_index[tid + stride], tree_value[tid], tree_index[tid])) {
            tree_value[tid] = tree_value[tid + stride];
            tree_index[tid] = tree_index[tid + stride];
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    b = tree_value[0];
    j = tree_index[0];
}

kernel void argmax_part(constant ArgmaxPartArgs& a [[buffer(0)]], uint2 group [[threadgroup_position_in_grid]],
                        uint2 groups [[threadgroups_per_grid]], uint tid [[thread_index_in_threadgroup]]) {
    threadgroup float tree_value[ARGMAX_THREADS];
    threadgroup int tree_index[ARGMAX_THREADS];
    const uint s = group.x, r = group.y;
    const int start = (int)s * a.chunk, stop = min(a.v, start + a.chunk);
    device const float* xr = a.x + (i64)r * a.v;
    float b = -INFINITY;
    int j = 0x7fffffff;
    for (int e = start + (int)tid; e < stop; e += ARGMAX_THREADS) {
        const float x = xr[e];
        if (argmax_first(x, e, b, j)) {
            b = x;
            j = e;
        }
    }
    argmax_tree<ARGMAX_THREADS>(tree_value, tree_index, tid, b, j);
    if (tid == 0) {
        device int* p = a.part + 2 * ((i64)r * groups.x + s);
        p[0] = as_type<int>(b);
        p[1] = j;
    }
}

kernel void argmax_rows(constant ArgmaxRowsArgs& a [[buffer(0)]], uint row [[threadgroup_position_in_grid]],
                        uint tid [[thread_index_in_threadgroup]]) {
    threadgroup float tree_value[ARGMAX_ROWS_THREADS];
    threadgroup int tree_index[ARGMAX_ROWS_THREADS];
    device const int* p = a.part + 2 * (i64)row * a.splits;
    float b = -INFINITY;
    int j = 0x7fffffff;
    for (int s = tid; s < a.splits; s += ARGMAX_ROWS_THREADS) {
        const float x = as_type<float>(p[2 * s]);
        const int i = p[2 * s + 1];
        if (argmax_first(x, i, b, j)) {
            b = x;
            j = i;
        }
    }
    argmax_tree<ARGMAX_ROWS_THREADS>(tree_value, tree_index, tid, b, j);
    if (tid == 0) a.o[row] = (float)j;
}
