// y = x W^T with W in its ggml blocks. One warp per weight row, reading it once for up to NB rows
// of x. A row's sum runs in a fixed order (lane l takes 32-value units l, l+32, ...; fmaf chain;
// butterfly) whatever NB and the batch are: bit-identical rows for every batch size.

#define MM_WARPS 4

template <int T, int NB>
__device__ __forceinline__ void mm_row(const u8* __restrict__ wrow, int k, const float* __restrict__ x, int nr, float* acc) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < NB; r++) acc[r] = 0.0f;
    if constexpr (T == T_F32 || T == T_F16 || T == T_BF16) {
        for (int e = lane; e < k; e += 32) {
            const float w = deq1<T>(wrow, e);
#pragma unroll
            for (int r = 0; r < NB; r++)
                if (r < nr) acc[r] = fmaf(w, x[(i64)r * k + e], acc[r]);
        }
    } else {
        for (int sb = lane; sb < (k >> 5); sb += 32) {
            float w[32];
            deq32<T>(wrow, sb, w);
#pragma unroll
            for (int r = 0; r < NB; r++) {
                if (r < nr) {
                    const float4* xv = (const float4*)(x + (i64)r * k + 32 * sb);
                    float a = acc[r];
#pragma unroll
                    for (int i = 0; i < 8; i++) {
                        const float4 v = xv[i];
                        a = fmaf(w[4 * i], v.x, a);
                        a = fmaf(w[4 * i + 1], v.y, a);
                        a = fmaf(w[4 * i + 2], v.z, a);
                        a = fmaf(w[4 * i + 3], v.w, a);
                    }
                    acc[r] = a;
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < NB; r++) acc[r] = warp_sum(acc[r]);
}

// x [n, k], W [m, k] -> y [n, m]; grid (ceil(m / MM_WARPS), ceil(n / NB)).
template <int T, int NB>
__device__ __forceinline__ void mm(const u8* W, i64 row_bytes, const float* x, float* y, int n, int m, int k) {
    const int j = blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    if (j >= m) return;
    const int r0 = blockIdx.y * NB, nr = min(NB, n - r0);
    float acc[NB];
    mm_row<T, NB>(W + (i64)j * row_bytes, k, x + (i64)r0 * k, nr, acc);
    if ((threadIdx.x & 31) == 0) {
#pragma unroll
        for (int r = 0; r < NB; r++)
            if (r < nr) y[(i64)(r0 + r) * m + j] = acc[r];
    }
}

// Expert rows: pair p (blockIdx.y) multiplies x row p / xdiv by expert ids[p] of the stack W.
template <int T>
__device__ __forceinline__ void mm_id(const u8* W, i64 row_bytes, i64 expert_bytes, const int* ids, int xdiv, const float* x,
                                      float* y, int m, int k) {
    const int j = blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    if (j >= m) return;
    const int p = blockIdx.y;
    float acc[1];
    mm_row<T, 1>(W + ids[p] * expert_bytes + (i64)j * row_bytes, k, x + (i64)(p / xdiv) * k, 1, acc);
    if ((threadIdx.x & 31) == 0) y[(i64)p * m + j] = acc[0];
}

// Rows of W picked by ids, decoded to float32; one block per row.
template <int T>
__device__ __forceinline__ void get_rows(const u8* W, i64 row_bytes, const int* ids, float* out, int d, int n_rows, int* err) {
    const int id = ids[blockIdx.x];
    if (id < 0 || id >= n_rows) {
        if (threadIdx.x == 0) set_error(err, ERR_TOKEN);
        return;
    }
    const u8* row = W + (i64)id * row_bytes;
    float* o = out + (i64)blockIdx.x * d;
    if constexpr (T == T_F32 || T == T_F16 || T == T_BF16) {
        for (int e = threadIdx.x; e < d; e += blockDim.x) o[e] = deq1<T>(row, e);
    } else {
        for (int sb = threadIdx.x; sb < (d >> 5); sb += blockDim.x) {
            float w[32];
            deq32<T>(row, sb, w);
#pragma unroll
            for (int l = 0; l < 32; l++) o[32 * sb + l] = w[l];
        }
    }
}

#define MM_NB(NAME, T, NB)                                                                                     \
    extern "C" __global__ void __launch_bounds__(32 * MM_WARPS)                                               \
        mm_##NAME##_##NB(const u8* W, i64 row_bytes, const float* x, float* y, int n, int m, int k) {         \
        mm<T, NB>(W, row_bytes, x, y, n, m, k);                                                                \
    }

#define WEIGHT_KERNELS(NAME, T)                                                                                \
    MM_NB(NAME, T, 1)                                                                                          \
    MM_NB(NAME, T, 2)                                                                                          \
    MM_NB(NAME, T, 4)                                                                                          \
    MM_NB(NAME, T, 8)                                                                                          \
    extern "C" __global__ void __launch_bounds__(32 * MM_WARPS) mmid_##NAME(                                  \
        const u8* W, i64 row_bytes, i64 expert_bytes, const int* ids, int xdiv, const float* x, float* y, int m, int k) { \
        mm_id<T>(W, row_bytes, expert_bytes, ids, xdiv, x, y, m, k);                                           \
    }                                                                                                          \
    extern "C" __global__ void get_rows_##NAME(const u8* W, i64 row_bytes, const int* ids, float* out, int d, int n_rows, int* err) { \
        get_rows<T>(W, row_bytes, ids, out, d, n_rows, err);                                                   \
    }

WEIGHT_KERNELS(f32, T_F32)
WEIGHT_KERNELS(f16, T_F16)
WEIGHT_KERNELS(bf16, T_BF16)
WEIGHT_KERNELS(q4_0, T_Q4_0)
WEIGHT_KERNELS(q4_1, T_Q4_1)
WEIGHT_KERNELS(q5_0, T_Q5_0)
WEIGHT_KERNELS(q5_1, T_Q5_1)
WEIGHT_KERNELS(q8_0, T_Q8_0)
WEIGHT_KERNELS(q4_k, T_Q4_K)
WEIGHT_KERNELS(q5_k, T_Q5_K)
WEIGHT_KERNELS(q6_k, T_Q6_K)
