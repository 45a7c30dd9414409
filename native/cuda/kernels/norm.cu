// rms_norm and l2_norm over the last axis, one block of NORM_THREADS per row. The sum of squares
// is taken in double (as the reference) in a fixed tree order; the scale is rounded once to float.

#define NORM_THREADS 256

// The block's sum of the threads' s, in a fixed tree order, as the row's scale.
__device__ __forceinline__ float norm_scale(double s, double* part, int d, float eps, int l2) {
    part[threadIdx.x] = s;
    __syncthreads();
    for (int stride = NORM_THREADS / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) part[threadIdx.x] += part[threadIdx.x + stride];
        __syncthreads();
    }
    const double total = part[0];
    return (float)(1.0 / sqrt((l2 ? total : total / d) + (double)eps));
}

extern "C" __global__ void __launch_bounds__(NORM_THREADS) norm_rows(const float* x, const float* w, float* o, int d, float eps, int l2) {
    __shared__ double part[NORM_THREADS];
    const float* xr = x + (i64)blockIdx.x * d;
    float* orow = o + (i64)blockIdx.x * d;
    double s = 0.0;
    for (int e = threadIdx.x; e < d; e += NORM_THREADS) s += (double)xr[e] * (double)xr[e];
    const float scale = norm_scale(s, part, d, eps, l2);
    for (int e = threadIdx.x; e < d; e += NORM_THREADS) {
        const float y = xr[e] * scale;
        orow[e] = w ? y * w[e] : y;
    }
}

// norm_rows and the launches around it in one (fusion.py's "norm"; CUDA only), with the same sums in
// the same order, the row held in registers: x = a + b (the residual add before it; the sum also
// written to `sum` where the graph reads it), or row r of a slice at a + (r / per) * stride +
// (r % per) * d; after the scale and the weight, y *= silu(gate); then the int8 rows of the product
// that follows (q, qd: B-value blocks, activations.cu) quantized from y. Null pointers: not done.
// NV: a thread's values, rows up to NORM_THREADS * NV (gpu.py picks the least that holds a row).
template <int B, int NV>
__device__ __forceinline__ void norm_fused(const float* a, i64 per, i64 stride, const float* b, float* sum, const float* w,
                                           const float* gate, float* o, i8* q, float* qd, int planes, int d, float eps, int l2) {
    __shared__ double part[NORM_THREADS];
    const int r = blockIdx.x;
    const float* xr = a + (r / per) * stride + (r % per) * d;
    const i64 row = (i64)r * d;
    // Loads and stores in separate loops, so that each loop's loads are in flight together (a store
    // between them could alias a later load, which would then wait for it).
    float v[NV];
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int e = threadIdx.x + i * NORM_THREADS;
        if (e < d) v[i] = b ? xr[e] + b[row + e] : xr[e];
    }
    double s = 0.0;
#pragma unroll
    for (int i = 0; i < NV; i++)
        if (threadIdx.x + i * NORM_THREADS < d) s += (double)v[i] * (double)v[i];
    if (sum) {
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int e = threadIdx.x + i * NORM_THREADS;
            if (e < d) sum[row + e] = v[i];
        }
    }
    const float scale = norm_scale(s, part, d, eps, l2);
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int e = threadIdx.x + i * NORM_THREADS;
        if (e < d) {
            float y = v[i] * scale;
            if (w) y = y * w[e];
            if (gate) {
                const float g = gate[row + e];
                y = y * (g * sigmoid_f(g));
            }
            v[i] = y;
        }
    }
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int e = threadIdx.x + i * NORM_THREADS;
        if (e < d) o[row + e] = v[i];
    }
    if (q) {  // a block of 256 is value i of every thread, of 32 value i of one warp
        __shared__ float wmax[NV][NORM_THREADS / 32];
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        for (int p = 0; p < planes; p++) {
            float amax[NV];
#pragma unroll
            for (int i = 0; i < NV; i++) {
                amax[i] = threadIdx.x + i * NORM_THREADS < d ? fabsf(v[i]) : 0.0f;
#pragma unroll
                for (int o2 = 16; o2 > 0; o2 >>= 1) amax[i] = fmaxf(amax[i], __shfl_xor_sync(0xffffffffu, amax[i], o2));
                if (B == NORM_THREADS && lane == 0) wmax[i][warp] = amax[i];
            }
            if (B == NORM_THREADS) {
                __syncthreads();
#pragma unroll
                for (int i = 0; i < NV; i++)
                    for (int w2 = 0; w2 < NORM_THREADS / 32; w2++) amax[i] = fmaxf(amax[i], wmax[i][w2]);
                __syncthreads();  // wmax is read before the next plane writes it
            }
            const i64 qrow = (i64)r * planes + p;
#pragma unroll
            for (int i = 0; i < NV; i++) {
                const int e = threadIdx.x + i * NORM_THREADS;
                if (e < d) {
                    q[qrow * d + e] = q8_value(v[i], amax[i]);
                    if (e % B == 0) qd[qrow * (d / B) + e / B] = amax[i] / 127.0f;
                }
            }
        }
    }
}

#define NORM_FUSED(B, NV)                                                                                      \
    extern "C" __global__ void __launch_bounds__(NORM_THREADS) norm_fused_##B##_##NV(const float* a, i64 per, i64 stride, const float* b, \
            float* sum, const float* w, const float* gate, float* o, i8* q, float* qd, int planes, int d, float eps, int l2) { \
        norm_fused<B, NV>(a, per, stride, b, sum, w, gate, o, q, qd, planes, d, eps, l2);                      \
    }
#define NORM_FUSED_NV(B) NORM_FUSED(B, 4) NORM_FUSED(B, 8) NORM_FUSED(B, 16) NORM_FUSED(B, 32)
NORM_FUSED_NV(32)
NORM_FUSED_NV(256)
