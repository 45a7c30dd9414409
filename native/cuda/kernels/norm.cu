// rms_norm and l2_norm over the last axis, one block of NORM_THREADS per row. The sum of squares
// is taken in double (as the reference) in a fixed tree order; the scale is rounded once to float.

#define NORM_THREADS 256

extern "C" __global__ void __launch_bounds__(NORM_THREADS) norm_rows(const float* x, const float* w, float* o, int d, float eps, int l2) {
    __shared__ double part[NORM_THREADS];
    const float* xr = x + (i64)blockIdx.x * d;
    float* orow = o + (i64)blockIdx.x * d;
    double s = 0.0;
    for (int e = threadIdx.x; e < d; e += NORM_THREADS) s += (double)xr[e] * (double)xr[e];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int stride = NORM_THREADS / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) part[threadIdx.x] += part[threadIdx.x + stride];
        __syncthreads();
    }
    const double total = part[0];
    const float scale = (float)(1.0 / sqrt((l2 ? total : total / d) + (double)eps));
    for (int e = threadIdx.x; e < d; e += NORM_THREADS) {
        const float y = xr[e] * scale;
        orow[e] = w ? y * w[e] : y;
    }
}
