// The graph's argmax op: the index of the largest value of each row of x [n, v], written as a float
// (exact for v <= 2^24), so that greedy decoding copies back a few ids instead of whole rows of
// logits. NumPy's order: the first of equal values, and a NaN above every number (the first NaN).
// Two launches, a row split over many blocks (one block a row took ~90 us of a 248k row on an H100,
// what copying the row to the host costs): argmax_part's block (s, r) takes the row's s-th chunk of
// `chunk` values (thread t: values t, t + T, ..., then a butterfly in each warp and one over the
// warps' winners) into part[r S + s] (the value's bits, the index); argmax_rows' warp r reduces row r's S
// parts. The order is total, so the split does not change the result.

// Whether (a, i) comes before (b, j) in that order.
__device__ __forceinline__ bool argmax_first(float a, int i, float b, int j) {
    const bool na = a != a, nb = b != b;
    if (na || nb) return na && (!nb || i < j);
    return a > b || (a == b && i < j);
}

// The warp's first (value, index) into every lane's (b, j).
__device__ __forceinline__ void argmax_warp(float& b, int& j) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float a = __shfl_xor_sync(0xffffffffu, b, off);
        const int i = __shfl_xor_sync(0xffffffffu, j, off);
        if (argmax_first(a, i, b, j)) b = a, j = i;
    }
}

#define ARGMAX_NONE_VALUE __int_as_float(0xff800000)  // -inf: any value's index comes first
#define ARGMAX_NONE_INDEX 0x7fffffff

// grid (S, n), blockDim.x threads (a multiple of 32, at most 1024).
extern "C" __global__ void __launch_bounds__(1024) argmax_part(const float* x, int* part, int v, int chunk) {
    begin_kernel();
    __shared__ float warp_value[32];
    __shared__ int warp_index[32];
    const int s = blockIdx.x, r = blockIdx.y, start = s * chunk, stop = min(v, start + chunk);
    const float* xr = x + (i64)r * v;
    float b = ARGMAX_NONE_VALUE;
    int j = ARGMAX_NONE_INDEX;
#pragma unroll 4
    for (int e = start + threadIdx.x; e < stop; e += blockDim.x) {
        const float a = xr[e];
        if (argmax_first(a, e, b, j)) b = a, j = e;
    }
    argmax_warp(b, j);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_value[warp] = b, warp_index[warp] = j;
    __syncthreads();
    if (warp == 0) {
        const bool held = lane < (int)(blockDim.x >> 5);
        b = held ? warp_value[lane] : ARGMAX_NONE_VALUE;
        j = held ? warp_index[lane] : ARGMAX_NONE_INDEX;
        argmax_warp(b, j);
        if (lane == 0) {
            int* p = part + 2 * ((i64)r * gridDim.x + s);
            p[0] = __float_as_int(b);
            p[1] = j;
        }
    }
}

// grid (n), one warp: row r's S parts -> o[r].
extern "C" __global__ void __launch_bounds__(32) argmax_rows(const int* part, float* o, int splits) {
    begin_kernel();
    const int* p = part + 2 * (i64)blockIdx.x * splits;
    float b = ARGMAX_NONE_VALUE;
    int j = ARGMAX_NONE_INDEX;
    for (int s = threadIdx.x; s < splits; s += 32) {
        const float a = __int_as_float(p[2 * s]);
        const int i = p[2 * s + 1];
        if (argmax_first(a, i, b, j)) b = a, j = i;
    }
    argmax_warp(b, j);
    if (threadIdx.x == 0) o[blockIdx.x] = (float)j;
}
