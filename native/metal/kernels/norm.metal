// norm.cu: rms_norm and l2_norm over the last axis, one threadgroup of NORM_THREADS per row. The
// sum of squares is taken in float (CUDA: in double), each thread's share as an fma chain (an
// exact square, one rounding per step), then CUDA's fixed tree; the scale in float.

#define NORM_THREADS 256

struct NormArgs {
    device const float* x;
    device const float* w;  // null: no weight
    device float* o;
    int d;
    float eps;
    int l2;
};

kernel void norm_rows(constant NormArgs& a [[buffer(0)]], uint row [[threadgroup_position_in_grid]],
                      uint tid [[thread_index_in_threadgroup]]) {
    threadgroup float part[NORM_THREADS];
    const int d = a.d;
    device const float* xr = a.x + (i64)row * d;
    device float* orow = a.o + (i64)row * d;
    float s = 0.0f;
    for (int e = tid; e < d; e += NORM_THREADS) s = fma(xr[e], xr[e], s);
    part[tid] = s;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint stride = NORM_THREADS / 2; stride > 0; stride >>= 1) {
        if (tid < stride) part[tid] += part[tid + stride];
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    const float total = part[0];
    const float scale = 1.0f / sqrt((a.l2 ? total : total / (float)d) + a.eps);
    for (int e = tid; e < d; e += NORM_THREADS) {
        const float y = xr[e] * scale;
        orow[e] = a.w ? y * a.w[e] : y;
    }
}
