// rms_norm and l2_norm over the last axis, one block of T = blockDim.x threads per row: 256, or 1024
// for rows past 1024 values (gpu.py's _norm_threads; the order below depends on T, so every launch of
// a row length takes the same T and a row's bits depend on its length alone, never on the batch).
// The sum of squares is taken in double (as the reference), in one order that norm_rows and
// norm_fused share: thread t adds the squares of values t, t + T, t + 2T, ... in turn; warp_sum adds
// each warp's 32 sums, then every warp adds the warps' sums (zeros past the last warp) by warp_sum
// again. The scale is rounded once to float.

#define NORM_MAX_THREADS 1024

// The block's total of the threads' s, in the order above, as the row's scale. A block of `packed`
// rows (each of d values, a multiple of 32, a thread each): row `sub`'s total from its warps' sums
// alone, the same as its own block's (whose other warps add zeros).
__device__ __forceinline__ float norm_scale(double s, int d, float eps, int l2, int packed = 1, int sub = 0) {
    __shared__ double part[NORM_MAX_THREADS / 32];
    const int lane = threadIdx.x & 31, warps = packed > 1 ? d / 32 : (int)(blockDim.x >> 5);
    s = warp_sum(s);
    if (lane == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    const double total = warp_sum(lane < warps ? part[sub * warps + lane] : 0.0);
    return (float)(1.0 / sqrt((l2 ? total : total / d) + (double)eps));
}

extern "C" __global__ void __launch_bounds__(NORM_MAX_THREADS) norm_rows(const float* x, const float* w, float* o, int d, float eps, int l2) {
    begin_kernel();
    const float* xr = x + (i64)blockIdx.x * d;
    float* orow = o + (i64)blockIdx.x * d;
    double s = 0.0;
    for (int e = threadIdx.x; e < d; e += blockDim.x) s += (double)xr[e] * (double)xr[e];
    const float scale = norm_scale(s, d, eps, l2);
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        const float y = xr[e] * scale;
        orow[e] = w ? y * w[e] : y;
    }
}

// norm_rows and the launches around it in one (fusion.py's "norm"; CUDA only), with the same sums in
// the same order, the row held in registers: x = a + b (the residual add before it; the sum also
// written to `sum` where the graph reads it), or row r of a slice at a + (r / per) * stride +
// (r % per) * d; after the scale and the weight, y *= silu(gate); then the int8 rows of the product
// that follows (q, qd: B-value blocks, activations.cu) quantized from y, as rows of k values (d, or
// a token's rows of d when the norm's rows are heads). Null pointers: not done.
// NV: a thread's values, rows up to T * NV (gpu.py picks the least that holds a row). packed > 1:
// rows shorter than a B-value block, `packed` = T / d = B / d of them a block, so that one block
// quantizes a whole int8 block (NV 1).
template <int B, int NV>
__device__ __forceinline__ void norm_fused(const float* a, i64 per, i64 stride, const float* b, float* sum, const float* w,
                                           const float* gate, float* o, i8* q, float* qd, int planes, int d, float eps, int l2,
                                           int w_early, int packed, int k) {
    const int T = packed > 1 ? d : blockDim.x;  // threads a row
    const int sub = threadIdx.x / T, tid = threadIdx.x % T, r = blockIdx.x * packed + sub;
    const float* xr = a + (r / per) * stride + (r % per) * d;
    const i64 row = (i64)r * d;
    // Every load before any store, so that the loads are in flight together (a store between them
    // could alias a later load, which would then wait for it); the weight and gate ahead of the sum.
    // A weight w (w_early) loads before the wait for the kernels before: no kernel writes it.
    float v[NV], wv[NV], gv[NV];
    auto load_w = [&] {
#pragma unroll
        for (int i = 0; i < NV; i++)
            if (tid + i * T < d) wv[i] = w[tid + i * T];
    };
    if (w && w_early) load_w();
    wait_previous();
    if (w && !w_early) load_w();
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int e = tid + i * T;
        if (e < d) {
            v[i] = b ? xr[e] + b[row + e] : xr[e];
            if (gate) gv[i] = gate[row + e];
        }
    }
    double s = 0.0;
#pragma unroll
    for (int i = 0; i < NV; i++)
        if (tid + i * T < d) s += (double)v[i] * (double)v[i];
    if (sum) {
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int e = tid + i * T;
            if (e < d) sum[row + e] = v[i];
        }
    }
    const float scale = norm_scale(s, d, eps, l2, packed, sub);
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int e = tid + i * T;
        if (e < d) {
            float y = v[i] * scale;
            if (w) y = y * wv[i];
            if (gate) y = y * (gv[i] * sigmoid_f(gv[i]));
            v[i] = y;
            o[row + e] = y;
        }
    }
    if (q) {  // T is a multiple of B: a block is value i of B consecutive threads (B / 32 warps)
        __shared__ float wmax[NV][NORM_MAX_THREADS / 32];
        constexpr int BW = B / 32;
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, first = warp - warp % BW;
        for (int p = 0; p < planes; p++) {
            float amax[NV];
#pragma unroll
            for (int i = 0; i < NV; i++) {
                if (i * T >= d) break;  // the same for the whole block
                amax[i] = tid + i * T < d ? fabsf(v[i]) : 0.0f;
#pragma unroll
                for (int o2 = 16; o2 > 0; o2 >>= 1) amax[i] = fmaxf(amax[i], __shfl_xor_sync(0xffffffffu, amax[i], o2));
                if (BW > 1 && lane == 0) wmax[i][warp] = amax[i];
            }
            if (BW > 1) {
                __syncthreads();
#pragma unroll
                for (int i = 0; i < NV; i++) {
                    if (i * T >= d) break;
                    for (int w2 = 0; w2 < BW; w2++) amax[i] = fmaxf(amax[i], wmax[i][first + w2]);
                }
                __syncthreads();  // wmax is read before the next plane writes it
            }
#pragma unroll
            for (int i = 0; i < NV; i++) {
                const int e = tid + i * T;
                if (e < d) {
                    const i64 at = row + e, qrow = at / k * planes + p, pos = at % k;  // token, place in its row
                    q[qrow * k + pos] = q8_value(v[i], amax[i]);
                    if (pos % B == 0) qd[qrow * (k / B) + pos / B] = amax[i] / 127.0f;
                }
            }
        }
    }
}

#define NORM_FUSED(B, NV)                                                                                      \
    extern "C" __global__ void __launch_bounds__(NORM_MAX_THREADS) norm_fused_##B##_##NV(const float* a, i64 per, i64 stride, const float* b, \
            float* sum, const float* w, const float* gate, float* o, i8* q, float* qd, int planes, int d, float eps, int l2,         \
            int w_early, int packed, int k) {                                                                                      \
        allow_next();                                                                                                          \
        norm_fused<B, NV>(a, per, stride, b, sum, w, gate, o, q, qd, planes, d, eps, l2, w_early, packed, k);                  \
    }
#define NORM_FUSED_NV(B) NORM_FUSED(B, 1) NORM_FUSED(B, 2) NORM_FUSED(B, 4) NORM_FUSED(B, 6) NORM_FUSED(B, 8)
NORM_FUSED_NV(32)
NORM_FUSED_NV(256)
