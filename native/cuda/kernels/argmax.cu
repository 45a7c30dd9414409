// The graph's argmax op: the index of the largest value of each row of x [n, v], written as a float
// (exact for v <= 2^24), so that greedy decoding copies back a few ids instead of whole rows of
// logits. NumPy's order: the first of equal values, and a NaN above every number (the first NaN).
// One block a row; thread t scans values t, t + T, ..., then a butterfly in each warp and one over
// the warps' winners (a total order: the result does not depend on T).

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

// grid (n), blockDim.x threads (a multiple of 32, at most 1024).
extern "C" __global__ void __launch_bounds__(1024) argmax_rows(const float* x, float* o, int v) {
    begin_kernel();
    __shared__ float warp_value[32];
    __shared__ int warp_index[32];
    const float* xr = x + (i64)blockIdx.x * v;
    const float below_all = __int_as_float(0xff800000);  // -inf: any value's index comes first
    float b = below_all;
    int j = 0x7fffffff;
#pragma unroll 4
    for (int e = threadIdx.x; e < v; e += blockDim.x) {
        const float a = xr[e];
        if (argmax_first(a, e, b, j)) b = a, j = e;
    }
    argmax_warp(b, j);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_value[warp] = b, warp_index[warp] = j;
    __syncthreads();
    if (warp == 0) {
        const bool held = lane < (int)(blockDim.x >> 5);
        b = held ? warp_value[lane] : below_all;
        j = held ? warp_index[lane] : 0x7fffffff;
        argmax_warp(b, j);
        if (lane == 0) o[blockIdx.x] = (float)j;
    }
}
