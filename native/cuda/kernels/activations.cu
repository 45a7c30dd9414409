// The int8 activation rows of the "q8" and "q8x2" modes (matmul_q8.cu takes them), quantized as
// the CPU backend does (native/cpu/mtp.h): per block of B = 256 (K-quants) or 32 (Q8_0) values,
// amax = max |x|, d = amax / 127, q = nearest-even(x * (127 / amax)) (0 where amax is 0); q8x2 adds
// a second plane that quantizes x - d * q the same way. Token t's plane p is row P t + p of the rows.

// One value of a block whose max |x| is amax: its int8 quant; v becomes the next plane's input
// (v - d q: two roundings, --fmad=false).
__device__ __forceinline__ i8 q8_value(float& v, float amax) {
    const int qi = __float2int_rn(v * (amax > 0.0f ? 127.0f / amax : 0.0f));
    v = v - amax / 127.0f * (float)qi;
    return (i8)qi;
}

// One warp: block b of token t's row of x [n, k], lane l holding values l V .. l V + V - 1 of it in
// v, -> its int8 values in q [n P, k] and scales in d [n P, k / B].
template <int B>
__device__ __forceinline__ void q8_quantize(float (&v)[B / 32], i8* q, float* d, int t, int b, int k, int planes) {
    constexpr int V = B / 32;
    const int lane = threadIdx.x & 31, per_row = k / B;
    for (int p = 0; p < planes; p++) {
        float amax = 0.0f;
#pragma unroll
        for (int i = 0; i < V; i++) amax = fabsf(v[i]) > amax ? fabsf(v[i]) : amax;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        const i64 row = (i64)t * planes + p;
        i8* qo = q + row * k + (i64)b * B + lane * V;
#pragma unroll
        for (int i = 0; i < V; i++) qo[i] = q8_value(v[i], amax);
        if (lane == 0) d[row * per_row + b] = amax / 127.0f;
    }
}

// x [n, k] -> int8 rows q [n P, k] and their scales d [n P, k / B]; one warp per block of B values.
template <int B>
__device__ __forceinline__ void q8_rows(const float* x, i8* q, float* d, int n, int k, int planes) {
    const i64 total = (i64)n * (k / B);
    for (i64 blk = (i64)blockIdx.x * 4 + (threadIdx.x >> 5); blk < total; blk += (i64)gridDim.x * 4) {
        const int t = (int)(blk / (k / B)), b = (int)(blk % (k / B));
        const float* xb = x + (i64)t * k + (i64)b * B + (threadIdx.x & 31) * (B / 32);
        float v[B / 32];
#pragma unroll
        for (int i = 0; i < B / 32; i++) v[i] = xb[i];
        q8_quantize<B>(v, q, d, t, b, k, planes);
    }
}

extern "C" __global__ void __launch_bounds__(128) q8_rows_32(const float* x, i8* q, float* d, int n, int k, int planes) {
    begin_kernel();
    q8_rows<32>(x, q, d, n, k, planes);
}

extern "C" __global__ void __launch_bounds__(128) q8_rows_256(const float* x, i8* q, float* d, int n, int k, int planes) {
    begin_kernel();
    q8_rows<256>(x, q, d, n, k, planes);
}
