// Prompt-sized batches in the "q8" / "q8x2" modes on tensor cores (sm_80 and later; gpu.py launches
// these only past MM_BATCHES rows of x and where CudaDevice.int8_mma says so). The int8 rows of x are
// those of matmul_q8.cu, and so are the integer block sums: mma.sync adds int8 products exactly, so
// only the float32 order of the block terms differs from the small-batch kernels. Each output
// (row, token) is one thread's running float sum over the blocks in order, whatever the batch and
// wherever the token sits in it: rows are bit-identical across every batch these kernels take.
//
// A block of MMT_WARPS warps covers 16 MMT_WARPS weight rows and MMT_TOKENS tokens; warp w takes rows 16w .. 16w+15
// (the A operand, built from the weight blocks in registers) against every token (the B operand,
// staged in shared memory one 256-value chunk at a time). The k order inside one mma is free as
// long as A and B agree: thread (g, t) = (lane / 4, lane % 4) supplies values 8t .. 8t+7 of a
// 32-value sub-block (4t .. 4t+3 of a 16-value Q6_K group), which for the weights is one aligned
// 8-byte (4-byte) load.

#define MMT_TOKENS 64
#define MMT_WARPS 8
#define MMT_STRIDE 288  // bytes a staged token: 256 + 32, so that the 8-byte loads of a half-warp hit 32 banks

__device__ __forceinline__ uint2 ld_stream8(const u8* p) {
    uint2 v;
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}

// c += A (16 x 32) . B (32 x 8), int8 in, int32 out: a[0], a[2] row g, a[1], a[3] row g + 8.
__device__ __forceinline__ void mma_k32(const u32* a, u32 b0, u32 b1, int* c) {
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// c += A (16 x 16) . B (16 x 8): a[0] row g, a[1] row g + 8.
__device__ __forceinline__ void mma_k16(const u32* a, u32 b, int* c) {
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b));
#endif
}

// One 2-byte aligned word (Q6_K and Q8_0 blocks are 210 and 34 bytes).
__device__ __forceinline__ u32 ld_word(const u8* p) {
    u32 w;
    ld_words<1>(p, &w);
    return w;
}

// Per format: a unit (the weight block that shares a float scale with one x block), its A
// fragments for rows g and g + 8 with their integer scales, and the integer sums of one token
// tile against them. products() leaves isum[e] (sum of scale x block dot) and imin[e] (sum of
// min x sum of x) for the accumulator elements e: rows g, g, g+8, g+8 by tokens 2t, 2t+1.
template <int T> struct Mma;

// Q4_K and Q5_K: eight 32-value sub-blocks, 6-bit scales and mins; the mins' sum comes from a second
// mma whose A holds each row's min in every byte.
template <bool Q5> struct MmaK45 {
    static constexpr int UNIT = 256, BYTES = Q5 ? 176 : 144;
    static constexpr bool MINS = true;
    struct Frag { u32 a[8][4], mn[2][2]; int sc[8][2]; float d[2], dmin[2]; };  // mn: 4 mins a word
    static __device__ Frag load(const u8* const* rows, int u, int t) {
        Frag f;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const u8* b = rows[r] + (i64)u * BYTES;
            const uint4 head = ld_stream16(b);
            uint2 qh = {0u, 0u};
            if constexpr (Q5) qh = ld_stream8(b + 16 + 8 * t);
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const uint2 q = ld_stream8(b + (Q5 ? 48 : 16) + 32 * c + 8 * t);
                u32 lo0 = q.x & 0x0F0F0F0Fu, lo1 = q.y & 0x0F0F0F0Fu;
                u32 hi0 = (q.x >> 4) & 0x0F0F0F0Fu, hi1 = (q.y >> 4) & 0x0F0F0F0Fu;
                if constexpr (Q5) {
                    lo0 |= ((qh.x >> (2 * c)) & 0x01010101u) << 4;
                    lo1 |= ((qh.y >> (2 * c)) & 0x01010101u) << 4;
                    hi0 |= ((qh.x >> (2 * c + 1)) & 0x01010101u) << 4;
                    hi1 |= ((qh.y >> (2 * c + 1)) & 0x01010101u) << 4;
                }
                f.a[2 * c][r] = lo0, f.a[2 * c][2 + r] = lo1;
                f.a[2 * c + 1][r] = hi0, f.a[2 * c + 1][2 + r] = hi1;
            }
            f.d[r] = h2f((u16)head.x);
            f.dmin[r] = h2f((u16)(head.x >> 16));
            const u32 s0 = head.y, s1 = head.z, s2 = head.w;
            const u32 sc[2] = {s0 & 0x3F3F3F3Fu, (s2 & 0x0F0F0F0Fu) | ((s0 >> 2) & 0x30303030u)};
            const u32 mn[2] = {s1 & 0x3F3F3F3Fu, ((s2 >> 4) & 0x0F0F0F0Fu) | ((s1 >> 2) & 0x30303030u)};
#pragma unroll
            for (int j = 0; j < 8; j++) f.sc[j][r] = (int)__byte_perm(sc[j >> 2], 0u, 0x4440u | (j & 3));
            f.mn[r][0] = mn[0], f.mn[r][1] = mn[1];
        }
        return f;
    }
    static __device__ void products(const Frag& f, const u8* x, int t, int* isum, int* imin) {
#pragma unroll
        for (int e = 0; e < 4; e++) isum[e] = imin[e] = 0;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const uint2 b = *(const uint2*)(x + 32 * j + 8 * t);
            int c[4] = {0, 0, 0, 0};
            mma_k32(f.a[j], b.x, b.y, c);
#pragma unroll
            for (int e = 0; e < 4; e++) isum[e] += f.sc[j][e >> 1] * c[e];
            const u32 sel = (j & 3) * 0x1111u, m0 = __byte_perm(f.mn[0][j >> 2], 0u, sel), m1 = __byte_perm(f.mn[1][j >> 2], 0u, sel);
            const u32 m[4] = {m0, m1, m0, m1};  // each row's min in every byte
            mma_k32(m, b.x, b.y, imin);
        }
    }
};

template <> struct Mma<T_Q4_K> : MmaK45<false> {};
template <> struct Mma<T_Q5_K> : MmaK45<true> {};

// Q6_K: sixteen 16-value groups with int8 scales; quants taken as q - 32 (signed bytes). Group
// s = 8 half + 2 quarter + j2 (the scale's index) holds values 128 half + 32 quarter + 16 j2 + i:
// low bits from ql byte 64 half + 32 (quarter & 1) + 16 j2 + i (the high nibble for quarter >= 2),
// bits 2 quarter, 2 quarter + 1 of qh byte 32 half + 16 j2 + i.
template <> struct Mma<T_Q6_K> {
    static constexpr int UNIT = 256;
    static constexpr bool MINS = false;
    struct Frag { u32 a[16][2]; int sc[16][2]; float d[2]; };
    static __device__ Frag load(const u8* const* rows, int u, int t) {
        Frag f;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const u8* b = rows[r] + (i64)u * 210;
            u32 scw[4];
            ld_words<4>(b + 192, scw);
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int j2 = 0; j2 < 2; j2++) {
                    const u32 qh = ld_word(b + 128 + 32 * h + 16 * j2 + 4 * t);
#pragma unroll
                    for (int odd = 0; odd < 2; odd++) {
                        const u32 ql = ld_word(b + 64 * h + 32 * odd + 16 * j2 + 4 * t);
#pragma unroll
                        for (int upper = 0; upper < 2; upper++) {
                            const int quarter = 2 * upper + odd, s = 8 * h + 2 * quarter + j2;
                            const u32 v = ((upper ? ql >> 4 : ql) & 0x0F0F0F0Fu) | (((qh >> (2 * quarter)) & 0x03030303u) << 4);
                            f.a[s][r] = ((v | 0x80808080u) - 0x20202020u) ^ 0x80808080u;  // q - 32 in each byte
                        }
                    }
                }
#pragma unroll
            for (int s = 0; s < 16; s++) f.sc[s][r] = (int)(i8)__byte_perm(scw[s >> 2], 0u, 0x4440u | (s & 3));
            f.d[r] = h2f(ld16(b + 208));
        }
        return f;
    }
    static __device__ void products(const Frag& f, const u8* x, int t, int* isum, int*) {
#pragma unroll
        for (int e = 0; e < 4; e++) isum[e] = 0;
#pragma unroll
        for (int s = 0; s < 16; s++) {
            const u32 b = *(const u32*)(x + 128 * (s >> 3) + 32 * ((s >> 1) & 3) + 16 * (s & 1) + 4 * t);
            int c[4] = {0, 0, 0, 0};
            mma_k16(f.a[s], b, c);
#pragma unroll
            for (int e = 0; e < 4; e++) isum[e] += f.sc[s][e >> 1] * c[e];
        }
    }
};

// Q8_0: one 32-value block a unit.
template <> struct Mma<T_Q8_0> {
    static constexpr int UNIT = 32;
    static constexpr bool MINS = false;
    struct Frag { u32 a[4]; float d[2]; };
    static __device__ Frag load(const u8* const* rows, int u, int t) {
        Frag f;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const u8* b = rows[r] + (i64)u * 34;
            u32 q[2];
            ld_words<2>(b + 2 + 8 * t, q);
            f.a[r] = q[0], f.a[2 + r] = q[1];
            f.d[r] = h2f(ld16(b));
        }
        return f;
    }
    static __device__ void products(const Frag& f, const u8* x, int t, int* isum, int*) {
        const uint2 b = *(const uint2*)(x + 8 * t);
#pragma unroll
        for (int e = 0; e < 4; e++) isum[e] = 0;
        mma_k32(f.a, b.x, b.y, isum);
    }
};

// y [n, m] = x W^T from x's int8 rows (P planes a token), W [m, k]; grid (ceil(n / MMT_TOKENS), ceil(m / (16 MMT_WARPS))),
// token tiles fastest so that the blocks running together share their weight rows in L2. Rows
// past m and tokens past n are clamped to the last (computed, never stored).
template <int T, int P>
__device__ __forceinline__ void q8_mmt(const u8* W, i64 row_bytes, const i8* xq, const float* xd, float* y, int n, int m, int k) {
    using F = Mma<T>;
    constexpr int NT = MMT_TOKENS, TILES = NT / 8, UNITS = 256 / F::UNIT;
    __shared__ __align__(16) u8 xs[P * NT * MMT_STRIDE];
    __shared__ float dxs[P][UNITS][NT];
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int tok0 = blockIdx.x * NT, row0 = (blockIdx.y * MMT_WARPS + (threadIdx.x >> 5)) * 16;
    const u8* rows[2] = {W + (i64)min(row0 + g, m - 1) * row_bytes, W + (i64)min(row0 + g + 8, m - 1) * row_bytes};
    const int per_row = k / F::UNIT;
    float acc[TILES][4];
#pragma unroll
    for (int i = 0; i < TILES; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[i][e] = 0.0f;
    for (int c0 = 0; c0 < k; c0 += 256) {
        const int len = min(256, k - c0), units = len / F::UNIT, u0 = c0 / F::UNIT;
        typename F::Frag w = F::load(rows, u0, t);  // loading while the chunk is staged
        __syncthreads();  // the previous chunk is no longer read
        for (int i = threadIdx.x; i < P * NT * 16; i += blockDim.x) {
            const int piece = i & 15, tt = (i >> 4) % NT, p = i / (16 * NT);
            if (16 * piece < len) {
                const i64 src = ((i64)min(tok0 + tt, n - 1) * P + p) * k + c0 + 16 * piece;
                *(uint4*)(xs + (p * NT + tt) * MMT_STRIDE + 16 * piece) = ld_x16(xq + src);
            }
        }
        for (int i = threadIdx.x; i < P * units * NT; i += blockDim.x) {
            const int tt = i % NT, uu = (i / NT) % units, p = i / (NT * units);
            dxs[p][uu][tt] = xd[((i64)min(tok0 + tt, n - 1) * P + p) * per_row + u0 + uu];
        }
        __syncthreads();
        for (int uu = 0; uu < units; uu++) {
            if (uu > 0) w = F::load(rows, u0 + uu, t);
#pragma unroll
            for (int p = 0; p < P; p++)
#pragma unroll
                for (int i = 0; i < TILES; i++) {
                    int isum[4], imin[4];
                    F::products(w, xs + (p * NT + 8 * i + g) * MMT_STRIDE + uu * F::UNIT, t, isum, imin);
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int r = e >> 1;
                        const float dx = dxs[p][uu][8 * i + 2 * t + (e & 1)];
                        float term = (w.d[r] * dx) * (float)isum[e];
                        if constexpr (F::MINS) term = term - (w.dmin[r] * dx) * (float)imin[e];
                        acc[i][e] = acc[i][e] + term;
                    }
                }
        }
    }
#pragma unroll
    for (int i = 0; i < TILES; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int tok = tok0 + 8 * i + 2 * t + (e & 1), row = row0 + g + 8 * (e >> 1);
            if (tok < n && row < m) y[(i64)tok * m + row] = acc[i][e];
        }
}

#define Q8_MMT(NAME, T, P)                                                                                     \
    extern "C" __global__ void __launch_bounds__(32 * MMT_WARPS, 2) q8_mmt_##NAME##_##P(                                     \
        const u8* W, i64 row_bytes, const i8* xq, const float* xd, float* y, int n, int m, int k) {          \
        q8_mmt<T, P>(W, row_bytes, xq, xd, y, n, m, k);                                                        \
    }

Q8_MMT(q8_0, T_Q8_0, 1)
Q8_MMT(q8_0, T_Q8_0, 2)
Q8_MMT(q4_k, T_Q4_K, 1)
Q8_MMT(q4_k, T_Q4_K, 2)
Q8_MMT(q5_k, T_Q5_K, 1)
Q8_MMT(q5_k, T_Q5_K, 2)
Q8_MMT(q6_k, T_Q6_K, 1)
Q8_MMT(q6_k, T_Q6_K, 2)
