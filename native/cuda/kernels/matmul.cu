// y = x W^T with W in its ggml blocks, reading each weight once for up to NB rows of x. A block
// of MM_WARPS warps covers MM_ROWS weight rows, MM_R per warp, so that x loaded once serves MM_R
// rows. A row's sum runs in a fixed order whatever NB, MM_R and the batch are (every lane covers
// the same values of the row in the same order, then a butterfly): bit-identical rows for every
// batch size.

#define MM_WARPS 4
#define MM_R 4
#define MM_ROWS (MM_WARPS * MM_R)  // CudaDevice.mm_rows

// Any format, one row: lane l takes 32-value units l, l+32, ...; fmaf chain; butterfly.
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

// ---- Q4_K, Q6_K and Q8_0 without per-value dequantization: a block's scale is factored out of
// its dot product (sum (d q) x = d sum q x; Q4_K's minimum times the sum of x), so a value costs one
// exact integer-to-float conversion (the byte put under the exponent of 2^23, then 2^23
// subtracted; cheaper than I2F) and one fmaf per row of x. A lane takes runs of 8 or 16 values
// of a block (a whole 16-byte quant vector, so that the per-run scale work is amortised). At each
// step the block stages the x its warps meet in shared memory (read coalesced once, not 32 scattered
// runs per warp), each lane reads a run's x once for all MM_R rows, and the next step's weights are
// already loading.

// Weights are read once: kept out of L1, where x stays (sm_70 and later; before, plain read-only loads).
__device__ __forceinline__ uint4 ld_stream16(const u8* p) {
#if __CUDA_ARCH__ >= 700
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
#else
    return __ldg((const uint4*)p);
#endif
}

__device__ __forceinline__ u32 ld_stream4(const u8* p) {
#if __CUDA_ARCH__ >= 700
    u32 v;
    asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
#else
    return __ldg((const u32*)p);
#endif
}

// Where a kernel reads weight words: global memory (streamed past L1), or a copy in shared memory.
struct FromGlobal {
    static __device__ __forceinline__ u32 word(const u8* p) { return ld_stream4(p); }
    static __device__ __forceinline__ u16 half(const u8* p) { return ld16(p); }
};
// Explicit ld.shared (the aligning casts hide the address space from the compiler), volatile: a staged
// copy changes at the same address from step to step, and the reads must stay after the barrier.
struct FromShared {
    static __device__ __forceinline__ u32 word(const u8* p) {
        u32 v;
        asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"((u32)__cvta_generic_to_shared(p)));
        return v;
    }
    static __device__ __forceinline__ u16 half(const u8* p) {
        u16 v;
        asm volatile("ld.shared.u16 %0, [%1];" : "=h"(v) : "r"((u32)__cvta_generic_to_shared(p)));
        return v;
    }
    static __device__ __forceinline__ uint2 pair(const u8* p) {  // 8-byte aligned
        uint2 v;
        asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "r"((u32)__cvta_generic_to_shared(p)));
        return v;
    }
    static __device__ __forceinline__ uint4 quad(const u8* p) {  // 16-byte aligned
        uint4 v;
        asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "r"((u32)__cvta_generic_to_shared(p)));
        return v;
    }
};

// N words from a 2-byte aligned address, read as aligned words and funnel-shifted into place (a
// misaligned run reads 2 bytes past its end: inside its block, or the buffer's padding).
template <int N, class Src = FromGlobal> __device__ __forceinline__ void ld_words(const u8* p, u32* w) {
    const u8* a = (const u8*)((size_t)p & ~(size_t)3);
    const u32 sh = ((u32)(size_t)p & 2) * 8;
    u32 v[N + 1];
#pragma unroll
    for (int i = 0; i < N; i++) v[i] = Src::word(a + 4 * i);
    v[N] = sh ? Src::word(a + 4 * N) : 0u;
#pragma unroll
    for (int i = 0; i < N; i++) w[i] = __funnelshift_r(v[i], v[i + 1], sh);
}

#define MAGIC 8388608.0f  // 2^23: its float holds any byte b exactly in its low mantissa bits

// 2^23 + byte e (0..3) of w, as a float.
__device__ __forceinline__ float byte_magic(u32 w, u32 e) { return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7540u | e)); }

// Per format: the block (unit) a lane reads at each warp step and where its RUNS runs of LEN
// values lie; a run's values share one scale (and one minimum).
template <int T> struct Fast;

// Q4_K: 8 lanes per 256-value super-block, 4 super-blocks a step. Lane (c, h) reads quant bytes
// 32c+16h .. +16: low nibbles are values 64c+16h+i (sub-block 2c), high nibbles 64c+32+16h+i
// (sub-block 2c+1), taken as 16q (the mask alone) with the scale divided by 16 (exact).
template <> struct Fast<T_Q4_K> {
    static constexpr int RUNS = 2, LEN = 16, PER_STEP = 4;
    static constexpr bool MINS = true;
    int unit, c, h;
    __device__ Fast(int lane) : unit(lane >> 3), c((lane >> 1) & 3), h(lane & 1) {}
    __device__ int units(int k) const { return k >> 8; }
    __device__ int x_offset(int u, int run) const { return 256 * u + 64 * c + 32 * run + 16 * h; }
    static __device__ int swizzle(int v) { return v ^ ((v >> 4) & 3); }
    struct Load { uint4 head, q; };
    __device__ Load load(const u8* row, int u) const {
        const u8* b = row + (i64)u * 144;  // 16-byte aligned: 144-byte blocks from 256-aligned buffers
        return {ld_stream16(b), ld_stream16(b + 16 + 32 * c + 16 * h)};
    }
    __device__ void scales(const Load& l, float* scale, float* mins) const {
        const float d = h2f((u16)l.head.x), dmin = h2f((u16)(l.head.x >> 16));
        const u32 s0 = l.head.y, s1 = l.head.z, s2 = l.head.w;
        const bool up = c >= 2;  // sub-blocks 4..7 keep their two high bits in bytes 0..7
        const u32 sc = up ? (s2 & 0x0F0F0F0Fu) | ((s0 >> 2) & 0x30303030u) : s0 & 0x3F3F3F3Fu;
        const u32 mn = up ? ((s2 >> 4) & 0x0F0F0F0Fu) | ((s1 >> 2) & 0x30303030u) : s1 & 0x3F3F3F3Fu;
        const u32 e = (2 * c) & 3;
        scale[0] = d * (byte_magic(sc, e) - MAGIC);
        scale[1] = d * (byte_magic(sc, e + 1) - MAGIC) * 0.0625f;
        mins[0] = dmin * (byte_magic(mn, e) - MAGIC);
        mins[1] = dmin * (byte_magic(mn, e + 1) - MAGIC);
    }
    // Values 4i .. 4i+3 of run `run`.
    __device__ void quants(const Load& l, int run, int i, float* q) const {
        const u32 w = (i == 0 ? l.q.x : i == 1 ? l.q.y : i == 2 ? l.q.z : l.q.w) & (run ? 0xF0F0F0F0u : 0x0F0F0F0Fu);
#pragma unroll
        for (int e = 0; e < 4; e++) q[e] = byte_magic(w, e) - MAGIC;
    }
};

// A Q6_K lane's bytes of the super-block at b (210-byte blocks: only 2-byte aligned): N words of ql
// at 64 half + 4N j and 64 half + 32 + 4N j, N of qh at 128 + 32 half + 4N j, its half's 8 scales, d.
template <int N> struct Q6Bytes { u32 qa[N], qb[N], qh[N], sc[2]; u16 d; };
template <int N, class Src = FromGlobal> __device__ __forceinline__ Q6Bytes<N> q6_k_bytes(const u8* b, int half, int j) {
    Q6Bytes<N> l;
    ld_words<N, Src>(b + 64 * half + 4 * N * j, l.qa);
    ld_words<N, Src>(b + 64 * half + 32 + 4 * N * j, l.qb);
    ld_words<N, Src>(b + 128 + 32 * half + 4 * N * j, l.qh);
    ld_words<2, Src>(b + 192 + 8 * half, l.sc);
    l.d = Src::half(b + 208);
    return l;
}

// Q6_K: 8 lanes per super-block, 4 a step. Lane (half, j) takes positions 128 half + 32t + 8j + p
// (p < 8) of the four quarters t: low bits from ql (bytes 8j.. for t even, 32+8j.. for t odd; the
// high nibble for t >= 2), bits 2t, 2t+1 from qh. A run lies in one 16-value scale group.
template <> struct Fast<T_Q6_K> {
    static constexpr int RUNS = 4, LEN = 8, PER_STEP = 4;
    static constexpr bool MINS = false;
    int unit, half, j;
    __device__ Fast(int lane) : unit(lane >> 3), half((lane >> 2) & 1), j(lane & 3) {}
    __device__ int units(int k) const { return k >> 8; }
    __device__ int x_offset(int u, int run) const { return 256 * u + 128 * half + 32 * run + 8 * j; }
    static __device__ int swizzle(int v) { return v ^ ((v >> 5) & 1); }
    using Load = Q6Bytes<2>;
    __device__ Load load(const u8* row, int u) const { return q6_k_bytes<2>(row + (i64)u * 210, half, j); }
    __device__ void scales(const Load& l, float* scale, float*) const {
        const float d = h2f(l.d);
        const u32 e = j >> 1, s0 = l.sc[0] ^ 0x80808080u, s1 = l.sc[1] ^ 0x80808080u;  // int8 + 128
        scale[0] = d * (byte_magic(s0, e) - (MAGIC + 128.0f));  // scale group 8 half + j/2 + 2t
        scale[1] = d * (byte_magic(s0, e + 2) - (MAGIC + 128.0f));
        scale[2] = d * (byte_magic(s1, e) - (MAGIC + 128.0f));
        scale[3] = d * (byte_magic(s1, e + 2) - (MAGIC + 128.0f));
    }
    __device__ void quants(const Load& l, int run, int i, float* q) const {
        const u32 lo = run & 1 ? l.qb[i] : l.qa[i], hb = l.qh[i];
        const u32 v = run == 0 ? (lo & 0x0F0F0F0Fu) | ((hb << 4) & 0x30303030u)
                    : run == 1 ? (lo & 0x0F0F0F0Fu) | ((hb << 2) & 0x30303030u)
                    : run == 2 ? ((lo >> 4) & 0x0F0F0F0Fu) | (hb & 0x30303030u)
                               : ((lo >> 4) & 0x0F0F0F0Fu) | ((hb >> 2) & 0x30303030u);
#pragma unroll
        for (int e = 0; e < 4; e++) q[e] = byte_magic(v, e) - (MAGIC + 32.0f);
    }
};

// Q8_0: 2 lanes per 32-value block, 16 blocks a step; lane h reads quants 16h .. 16h+15.
template <> struct Fast<T_Q8_0> {
    static constexpr int RUNS = 1, LEN = 16, PER_STEP = 16;
    static constexpr bool MINS = false;
    int unit, h;
    __device__ Fast(int lane) : unit(lane >> 1), h(lane & 1) {}
    __device__ int units(int k) const { return k >> 5; }
    __device__ int x_offset(int u, int) const { return 32 * u + 16 * h; }
    static __device__ int swizzle(int v) { return v ^ ((v >> 3) & 3); }
    struct Load { u32 q[4]; u16 d; };
    template <class Src = FromGlobal> __device__ Load load_block(const u8* b) const {
        Load l;
        ld_words<4, Src>(b + 2 + 16 * h, l.q);
        l.d = Src::half(b);
        return l;
    }
    __device__ Load load(const u8* row, int u) const { return load_block(row + (i64)u * 34); }
    __device__ void scales(const Load& l, float* scale, float*) const { scale[0] = h2f(l.d); }
    __device__ void quants(const Load& l, int, int i, float* q) const {
        const u32 w = l.q[i] ^ 0x80808080u;  // int8 + 128
#pragma unroll
        for (int e = 0; e < 4; e++) q[e] = byte_magic(w, e) - (MAGIC + 128.0f);
    }
};

// acc[r][b] = row j0+r of W . row r0+b of x, for MM_R rows and NB rows of x. Rows past m and x rows
// past n are clamped to the last one: computed, never stored.
template <int T, int NB>
__device__ __forceinline__ void mm_fast(const u8* W, i64 row_bytes, const float* x, int n, int m, int k, int j0, int r0,
                                        float (*acc)[NB]) {
    using F = Fast<T>;
    constexpr int R = MM_R;
    const F f(threadIdx.x & 31);
    const int nr = min(NB, n - r0), units = f.units(k);
    const u8* rows[R];
#pragma unroll
    for (int r = 0; r < R; r++) rows[r] = W + (i64)min(j0 + r, m - 1) * row_bytes;
    const float* xs[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) xs[b] = x + (i64)(r0 + min(b, nr - 1)) * k;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) acc[r][b] = 0.0f;
    constexpr int STEP = 32 * F::RUNS * F::LEN;  // x values a warp step covers
    constexpr int STEP4 = STEP / 4;
    __shared__ float4 xsh[NB * STEP4];
    const int steps = (units + F::PER_STEP - 1) / F::PER_STEP;
    typename F::Load next[R];
    if (f.unit < units) {
#pragma unroll
        for (int r = 0; r < R; r++) next[r] = f.load(rows[r], f.unit);
    }
    for (int st = 0; st < steps; st++) {
        const int u = st * F::PER_STEP + f.unit;
        // The step's x, read coalesced by the whole block, stored swizzled so that the lanes' runs read
        // back without bank conflicts.
        __syncthreads();
        for (int p = threadIdx.x; p < NB * STEP4; p += 32 * MM_WARPS) {
            const int b = p / STEP4, v = p % STEP4;
            if (st * STEP + 4 * v < k) xsh[b * STEP4 + F::swizzle(v)] = *(const float4*)(xs[b] + st * STEP + 4 * v);
        }
        __syncthreads();
        if (u >= units) continue;
        typename F::Load ld[R];
#pragma unroll
        for (int r = 0; r < R; r++) ld[r] = next[r];
        if (u + F::PER_STEP < units) {  // the next step's weights load during this step's arithmetic
#pragma unroll
            for (int r = 0; r < R; r++) next[r] = f.load(rows[r], u + F::PER_STEP);
        }
        float scale[R][F::RUNS], mins[R][F::RUNS];
#pragma unroll
        for (int r = 0; r < R; r++) f.scales(ld[r], scale[r], mins[r]);
#pragma unroll
        for (int run = 0; run < F::RUNS; run++) {
            float s[R][NB], xsum[NB];
#pragma unroll
            for (int b = 0; b < NB; b++) {
                xsum[b] = 0.0f;
#pragma unroll
                for (int r = 0; r < R; r++) s[r][b] = 0.0f;
            }
#pragma unroll
            for (int i = 0; i < F::LEN / 4; i++) {
                float q[R][4];
#pragma unroll
                for (int r = 0; r < R; r++) f.quants(ld[r], run, i, q[r]);
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    const float4 v = xsh[b * STEP4 + F::swizzle((f.x_offset(f.unit, run) >> 2) + i)];
                    if constexpr (F::MINS) xsum[b] = xsum[b] + v.x + v.y + v.z + v.w;
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        float a = s[r][b];
                        a = fmaf(q[r][0], v.x, a);
                        a = fmaf(q[r][1], v.y, a);
                        a = fmaf(q[r][2], v.z, a);
                        a = fmaf(q[r][3], v.w, a);
                        s[r][b] = a;
                    }
                }
            }
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    acc[r][b] = fmaf(scale[r][run], s[r][b], acc[r][b]);
                    if constexpr (F::MINS) acc[r][b] = fmaf(-mins[r][run], xsum[b], acc[r][b]);
                }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) acc[r][b] = warp_sum(acc[r][b]);
}

// x [n, k], W [m, k] -> y [n, m]; grid (ceil(m / MM_ROWS), ceil(n / NB)).
template <int T, int NB>
__device__ __forceinline__ void mm(const u8* W, i64 row_bytes, const float* x, float* y, int n, int m, int k) {
    wait_previous();
    const int j0 = (blockIdx.x * MM_WARPS + (threadIdx.x >> 5)) * MM_R;
    const int r0 = blockIdx.y * NB, nr = min(NB, n - r0);
    float acc[MM_R][NB];
    if constexpr (T == T_Q4_K || T == T_Q6_K || T == T_Q8_0) {
        mm_fast<T, NB>(W, row_bytes, x, n, m, k, j0, r0, acc);  // every warp: they share x through shared memory
    } else {
        if (j0 >= m) return;
#pragma unroll
        for (int r = 0; r < MM_R; r++)
            if (j0 + r < m) mm_row<T, NB>(W + (i64)(j0 + r) * row_bytes, k, x + (i64)r0 * k, nr, acc[r]);
    }
    if ((threadIdx.x & 31) == 0) {
#pragma unroll
        for (int r = 0; r < MM_R; r++)
#pragma unroll
            for (int b = 0; b < NB; b++)
                if (j0 + r < m && b < nr) y[(i64)(r0 + b) * m + j0 + r] = acc[r][b];
    }
}

// Expert rows, one warp each: pair p (blockIdx.y) multiplies x row p / xdiv by expert ids[p] of the
// stack W; grid (ceil(m / MM_WARPS), pairs).
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

// Rows of W picked by ids, decoded to float32; one block per row. `float_ids`: the ids are float32
// token ids (an argmax's), else int32.
template <int T>
__device__ __forceinline__ void get_rows(const u8* W, i64 row_bytes, const int* ids, float* out, int d, int n_rows, int* err, int float_ids) {
    const float f = __int_as_float(ids[blockIdx.x]);
    const int id = !float_ids ? ids[blockIdx.x] : f >= 0.0f && f < (float)n_rows ? (int)f : -1;
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
        allow_next();                                                                                         \
        mm<T, NB>(W, row_bytes, x, y, n, m, k);                                                                \
    }

#define WEIGHT_KERNELS(NAME, T)                                                                                \
    MM_NB(NAME, T, 1)                                                                                          \
    MM_NB(NAME, T, 2)                                                                                          \
    MM_NB(NAME, T, 4)                                                                                          \
    MM_NB(NAME, T, 8)                                                                                          \
    extern "C" __global__ void __launch_bounds__(32 * MM_WARPS) mmid_##NAME(                                  \
        const u8* W, i64 row_bytes, i64 expert_bytes, const int* ids, int xdiv, const float* x, float* y, int m, int k) { \
        begin_kernel();                                                                                                   \
        mm_id<T>(W, row_bytes, expert_bytes, ids, xdiv, x, y, m, k);                                           \
    }                                                                                                          \
    extern "C" __global__ void get_rows_##NAME(const u8* W, i64 row_bytes, const int* ids, float* out, int d, int n_rows, int* err, \
                                               int float_ids) {                                                                  \
        begin_kernel();                                                                                                               \
        get_rows<T>(W, row_bytes, ids, out, d, n_rows, err, float_ids);                                        \
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
