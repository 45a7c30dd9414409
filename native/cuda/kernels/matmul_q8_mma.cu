// Prompt-sized batches in the "q8" / "q8x2" modes on tensor cores (sm_80 and later; gpu.py launches
// these only past MM_BATCHES rows of x and where CudaDevice.int8_mma says so). The int8 rows of x are
// those of matmul_q8.cu, and so are the integer block sums: mma.sync adds int8 products exactly, so
// only the float32 order of the block terms differs from the small-batch kernels. Each output
// (row, token) is one thread's running float sum over the blocks in order, whatever the batch and
// wherever the token sits in it: rows are bit-identical across every batch these kernels take.
//
// A block of MMT_WARPS warps covers MMT_ROWS weight rows and MMT_TOKENS / P tokens: warp w takes rows
// 16 (w % MMT_GROUPS) .. + 15 (the A operand, built from the weight blocks in registers) against
// share w / MMT_GROUPS of the MMT_SPLITS shares of the tokens (the B operand); 16 rows by 64 tokens
// spilled registers.
// Each 256-value chunk of k is staged in shared memory for the whole block (weight rows, int8 x, x
// scales) by cp.async, MmtStage::STAGES - 1 chunks ahead of the one the warps multiply, so that the
// loads' latency hides behind the tensor-core work. The k order inside one mma is free as long as A
// and B agree: thread (g, t) = (lane / 4, lane % 4) supplies values 8t .. 8t+7 of a 32-value
// sub-block (4t .. 4t+3 of a 16-value Q6_K group), which for the weights is one 8-byte (4-byte) read.

#define MMT_TOKENS 64
#define MMT_WARPS 8
#define MMT_GROUPS 4  // warps that share a token share, each on its 16 rows
#define MMT_SPLITS (MMT_WARPS / MMT_GROUPS)  // token shares: a warp takes 1 / MMT_SPLITS of the block's tokens
#define MMT_ROWS (16 * MMT_GROUPS)
#define MMT_BLOCKS_PER_SM 2  // __launch_bounds__: registers for this many blocks an SM
#define MMT_STRIDE 288  // bytes a staged token: 256 + 32, so that the 8-byte loads of a half-warp hit 32 banks
// Bytes a staged weight row of one 256-value chunk takes, by type (Mma<T>::SLOT): the chunk's blocks
// from the row's 16-byte aligned-down start, padded so that a warp's reads of rows g and g + 8 fall in
// distinct banks. gpu.py's MMT_* constants mirror these (tests/test_cuda_backend.py checks).
#define MMT_SLOT_Q8_0 288  // 72 words: 8 mod 32
#define MMT_SLOT_Q4_K 160  // 40 words: 8 mod 32
#define MMT_SLOT_Q5_K 224  // 56 words: 24 mod 32
#define MMT_SLOT_Q6_K 240  // 60 words: 28 mod 32

// 4 bytes global -> shared (the x scales); before sm_80 a load and a store (see cp_async16).
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"((u32)__cvta_generic_to_shared(dst)), "l"(src) : "memory");
#else
    *(u32*)dst = *(const u32*)src;
#endif
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

// One 2-byte aligned word of shared memory (Q6_K and Q8_0 blocks are 210 and 34 bytes).
__device__ __forceinline__ u32 lds_word(const u8* p) {
    u32 w;
    ld_words<1, FromShared>(p, &w);
    return w;
}

// Per format: a unit (the weight block that shares a float scale with one x block), SLOT (MMT_SLOT_*),
// its A fragments for rows g and g + 8 (read from the stage) with their integer scales, and the
// integer sums of one token tile against them. products() leaves isum[e] (sum of scale x block dot) and imin[e] (sum of
// min x sum of x) for the accumulator elements e: rows g, g, g+8, g+8 by tokens 2t, 2t+1.
template <int T> struct Mma;

// Q4_K and Q5_K: eight 32-value sub-blocks, 6-bit scales and mins. The mins' sum, sum over j of min j
// times the sum s_j of x's sub-block j, takes two 16-deep mmas against the token's digits (see
// q8_mmt): s_j = 128 h_j + l_j with h_j in -32 .. 31 and l_j in 0 .. 127, both int8; A holds the
// mins against h (ah: depths 0 .. 7) or against l (al: depths 8 .. 15), zeros elsewhere.
template <bool Q5> struct MmaK45 {
    static constexpr int UNIT = 256, BYTES = Q5 ? 176 : 144, SLOT = Q5 ? MMT_SLOT_Q5_K : MMT_SLOT_Q4_K;
    static constexpr bool MINS = true;
    struct Frag { u32 a[8][4], ah[2], al[2], mn[2][2]; int sc[8][2]; float d[2], dmin[2]; };  // mn: the mins' words (q8_mmv)
    static __device__ Frag load(const u8* const* rows, int u, int t) {
        Frag f;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const u8* b = rows[r] + (i64)u * BYTES;
            const uint4 head = FromShared::quad(b);  // Q4_K and Q5_K blocks are 16-byte aligned, in rows and in the stage
            uint2 qh = {0u, 0u};
            if constexpr (Q5) qh = FromShared::pair(b + 16 + 8 * t);
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const uint2 q = FromShared::pair(b + (Q5 ? 48 : 16) + 32 * c + 8 * t);
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
            const u32 mine = (t & 1) ? mn[1] : mn[0];  // depths 4 (t & 1) .. + 3 of either half: mins 4 (t & 1) ..
            f.ah[r] = t < 2 ? mine : 0u, f.al[r] = t < 2 ? 0u : mine;
            f.mn[0][r] = mn[0], f.mn[1][r] = mn[1];
        }
        return f;
    }
    static __device__ void products(const Frag& f, const u8* x, const u8* digits, int t, int* isum, int* imin) {
#pragma unroll
        for (int e = 0; e < 4; e++) isum[e] = 0;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const uint2 b = FromShared::pair(x + 32 * j + 8 * t);
            int c[4] = {0, 0, 0, 0};
            mma_k32(f.a[j], b.x, b.y, c);
#pragma unroll
            for (int e = 0; e < 4; e++) isum[e] += f.sc[j][e >> 1] * c[e];
        }
        const u32 b = *(const u32*)(digits + 4 * t);  // plain: the digits change from chunk to chunk at the same address
        int hi[4] = {0, 0, 0, 0}, lo[4] = {0, 0, 0, 0};
        mma_k16(f.ah, b, hi);
        mma_k16(f.al, b, lo);
#pragma unroll
        for (int e = 0; e < 4; e++) imin[e] = 128 * hi[e] + lo[e];
    }
};

template <> struct Mma<T_Q4_K> : MmaK45<false> {};
template <> struct Mma<T_Q5_K> : MmaK45<true> {};

// Q6_K: sixteen 16-value groups with int8 scales; quants taken as q - 32 (signed bytes). Group
// s = 8 half + 2 quarter + j2 (the scale's index) holds values 128 half + 32 quarter + 16 j2 + i:
// low bits from ql byte 64 half + 32 (quarter & 1) + 16 j2 + i (the high nibble for quarter >= 2),
// bits 2 quarter, 2 quarter + 1 of qh byte 32 half + 16 j2 + i.
template <> struct Mma<T_Q6_K> {
    static constexpr int UNIT = 256, BYTES = 210, SLOT = MMT_SLOT_Q6_K;
    static constexpr bool MINS = false;
    struct Frag { u32 a[16][2]; int sc[16][2]; float d[2]; };
    static __device__ Frag load(const u8* const* rows, int u, int t) {
        Frag f;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const u8* b = rows[r] + (i64)u * BYTES;
            u32 scw[4];
            ld_words<4, FromShared>(b + 192, scw);
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int j2 = 0; j2 < 2; j2++) {
                    const u32 qh = lds_word(b + 128 + 32 * h + 16 * j2 + 4 * t);
#pragma unroll
                    for (int odd = 0; odd < 2; odd++) {
                        const u32 ql = lds_word(b + 64 * h + 32 * odd + 16 * j2 + 4 * t);
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
            f.d[r] = h2f(FromShared::half(b + 208));
        }
        return f;
    }
    static __device__ void products(const Frag& f, const u8* x, const u8*, int t, int* isum, int*) {
#pragma unroll
        for (int e = 0; e < 4; e++) isum[e] = 0;
#pragma unroll
        for (int s = 0; s < 16; s++) {
            const u32 b = FromShared::word(x + 128 * (s >> 3) + 32 * ((s >> 1) & 3) + 16 * (s & 1) + 4 * t);
            int c[4] = {0, 0, 0, 0};
            mma_k16(f.a[s], b, c);
#pragma unroll
            for (int e = 0; e < 4; e++) isum[e] += f.sc[s][e >> 1] * c[e];
        }
    }
};

// Q8_0: one 32-value block a unit.
template <> struct Mma<T_Q8_0> {
    static constexpr int UNIT = 32, BYTES = 34, SLOT = MMT_SLOT_Q8_0;
    static constexpr bool MINS = false;
    struct Frag { u32 a[4]; float d[2]; };
    static __device__ Frag load(const u8* const* rows, int u, int t) {
        Frag f;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const u8* b = rows[r] + (i64)u * BYTES;
            u32 q[2];
            ld_words<2, FromShared>(b + 2 + 8 * t, q);
            f.a[r] = q[0], f.a[2 + r] = q[1];
            f.d[r] = h2f(FromShared::half(b));
        }
        return f;
    }
    static __device__ void products(const Frag& f, const u8* x, const u8*, int t, int* isum, int*) {
        const uint2 b = FromShared::pair(x + 8 * t);
#pragma unroll
        for (int e = 0; e < 4; e++) isum[e] = 0;
        mma_k32(f.a, b.x, b.y, isum);
    }
};

// Bytes of one stage (weight rows, x rows, x scales) and the stages a block keeps: three where
// MMT_BLOCKS_PER_SM blocks an SM still fit, else two (gpu.py's mmt_shared computes the same).
#define MMT_SHARED_MAX (220 * 1024 / MMT_BLOCKS_PER_SM)
template <int T, int P>
struct MmtStage {
    static constexpr int NT = MMT_TOKENS / P, UNITS = 256 / Mma<T>::UNIT;
    static constexpr int W_BYTES = MMT_ROWS * Mma<T>::SLOT, X_BYTES = P * NT * MMT_STRIDE;
    static constexpr int BYTES = W_BYTES + X_BYTES + 4 * P * UNITS * NT;
    static constexpr int STAGES = 3 * BYTES <= MMT_SHARED_MAX ? 3 : 2;
};

// y [n, m] = x W^T from x's int8 rows (P planes a token), W [m, k]; grid (ceil(n / (MMT_TOKENS / P)),
// ceil(m / MMT_ROWS)), S::STAGES stages of dynamic shared memory; token tiles fastest so that the
// blocks running together share their weight rows in L2. Rows past m and tokens past n are clamped
// to the last (computed, never stored).
template <int T, int P>
__device__ __forceinline__ void q8_mmt(const u8* W, i64 row_bytes, const i8* xq, const float* xd, float* y, int n, int m, int k) {
    using F = Mma<T>;
    using S = MmtStage<T, P>;
    constexpr int NT = S::NT, TILES = NT / (8 * MMT_SPLITS), UNITS = S::UNITS, ROWS = MMT_ROWS, PIECES = F::SLOT / 16;
    static_assert(TILES >= 1 && NT % (8 * MMT_SPLITS) == 0, "each warp takes whole 8-token tiles");
    static_assert(F::SLOT >= UNITS * F::BYTES + 14 && F::SLOT % 16 == 0, "a slot holds a chunk's blocks from any 2-byte offset");
    extern __shared__ uint4 mmt_stage[];
    __shared__ __align__(16) u8 digits[F::MINS ? P * NT * 16 : 16];
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, group = (threadIdx.x >> 5) % MMT_GROUPS;
    const int tok0 = blockIdx.x * NT, row_base = blockIdx.y * ROWS, first = (threadIdx.x >> 5) / MMT_GROUPS * (NT / MMT_SPLITS);
    const int per_row = k / F::UNIT, chunks = (k + 255) / 256;
    // Chunk c of every row, x row and x scale into stage c % STAGES; one commit group per chunk, empty past the last.
    auto copy = [&](int c) {
        if (c < chunks) {
            u8* const st = (u8*)mmt_stage + (c % S::STAGES) * S::BYTES;
            const int c0 = 256 * c, len = min(256, k - c0), u0 = c0 / F::UNIT, units = len / F::UNIT;
            for (int i = threadIdx.x; i < ROWS * PIECES; i += blockDim.x) {
                const int r = i / PIECES, piece = i % PIECES;
                const u8* src = W + (i64)min(row_base + r, m - 1) * row_bytes + (i64)u0 * F::BYTES;
                const int mis = (int)((size_t)src & 15);
                if (16 * piece < mis + units * F::BYTES) cp_async16(st + r * F::SLOT + 16 * piece, src - mis + 16 * piece);
            }
            u8* const xs = st + S::W_BYTES;
            for (int i = threadIdx.x; i < P * NT * 16; i += blockDim.x) {
                const int piece = i & 15, tt = (i >> 4) % NT, p = i / (16 * NT);
                if (16 * piece < len)
                    cp_async16(xs + (p * NT + tt) * MMT_STRIDE + 16 * piece, (const u8*)(xq + ((i64)min(tok0 + tt, n - 1) * P + p) * k + c0 + 16 * piece));
            }
            float* const ds = (float*)(xs + S::X_BYTES);
            for (int i = threadIdx.x; i < P * units * NT; i += blockDim.x) {
                const int tt = i % NT, uu = (i / NT) % units, p = i / (NT * units);
                cp_async4(ds + (p * UNITS + uu) * NT + tt, xd + ((i64)min(tok0 + tt, n - 1) * P + p) * per_row + u0 + uu);
            }
        }
        cp_async_commit();
    };
    const u8* row_src[2] = {W + (i64)min(row_base + 16 * group + g, m - 1) * row_bytes, W + (i64)min(row_base + 16 * group + g + 8, m - 1) * row_bytes};
    float acc[TILES][4];
#pragma unroll
    for (int i = 0; i < TILES; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[i][e] = 0.0f;
#pragma unroll
    for (int c = 0; c < S::STAGES - 1; c++) copy(c);
    for (int c = 0; c < chunks; c++) {
        cp_async_wait<S::STAGES - 2>();
        __syncthreads();  // chunk c has landed, from every thread's copies; every warp is done with chunk c - 1
        copy(c + S::STAGES - 1);  // into chunk c - 1's stage
        const u8* const st = (const u8*)mmt_stage + (c % S::STAGES) * S::BYTES;
        const u8* const xs = st + S::W_BYTES;
        const float* const ds = (const float*)(xs + S::X_BYTES);
        const int c0 = 256 * c, units = min(256, k - c0) / F::UNIT, u0 = c0 / F::UNIT;
        if constexpr (F::MINS) {  // each token's 32-value sums as digits for the mins' mmas: h_0 .. h_7, l_0 .. l_7
            for (int i = threadIdx.x; i < P * NT * 8; i += blockDim.x) {
                const int j = i & 7, row = i >> 3;  // row: p NT + token
                const uint4 a = FromShared::quad(xs + row * MMT_STRIDE + 32 * j), b = FromShared::quad(xs + row * MMT_STRIDE + 32 * j + 16);
                const int ones = 0x01010101;
                const int s = __dp4a((int)a.x, ones, __dp4a((int)a.y, ones, __dp4a((int)a.z, ones, __dp4a((int)a.w, ones,
                              __dp4a((int)b.x, ones, __dp4a((int)b.y, ones, __dp4a((int)b.z, ones, __dp4a((int)b.w, ones, 0))))))));
                digits[row * 16 + j] = (u8)(s >> 7);
                digits[row * 16 + 8 + j] = (u8)(s & 127);
            }
            __syncthreads();
        }
        const u8* rows[2];
#pragma unroll
        for (int r = 0; r < 2; r++)
            rows[r] = st + (16 * group + g + 8 * r) * F::SLOT + (int)((size_t)(row_src[r] + (i64)u0 * F::BYTES) & 15);
        for (int uu = 0; uu < units; uu++) {
            const typename F::Frag w = F::load(rows, uu, t);
#pragma unroll
            for (int p = 0; p < P; p++)
#pragma unroll
                for (int i = 0; i < TILES; i++) {
                    int isum[4], imin[4];
                    const int xrow = p * NT + first + 8 * i + g;  // this thread's token of the tile
                    F::products(w, xs + xrow * MMT_STRIDE + uu * F::UNIT, digits + xrow * 16, t, isum, imin);
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int r = e >> 1;
                        const float dx = ds[(p * UNITS + uu) * NT + first + 8 * i + 2 * t + (e & 1)];
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
            const int tok = tok0 + first + 8 * i + 2 * t + (e & 1), row = row_base + 16 * group + g + 8 * (e >> 1);
            if (tok < n && row < m) y[(i64)tok * m + row] = acc[i][e];
        }
}

#define Q8_MMT(NAME, T, P)                                                                                     \
    extern "C" __global__ void __launch_bounds__(32 * MMT_WARPS, MMT_BLOCKS_PER_SM) q8_mmt_##NAME##_##P(                                     \
        const u8* W, i64 row_bytes, const i8* xq, const float* xd, float* y, int n, int m, int k) {          \
        begin_kernel();                                                                                      \
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

// Verify-sized batches (3 .. 8 tokens, as gpu.py dispatches them) of Q4_K and Q5_K products on tensor
// cores, in the K-quant order of the one-token kernel (matmul_q8.cu's kq_term / kq_total), so that
// every row equals the one-token kernel's bit for bit: tokens are the 8 columns of one mma tile (past
// n: the last token again, computed, never stored), the integer sums of a super-block come whole from
// the mmas, and the float work is the one-token kernel's. With dp4a each token of a batch costs its
// own integer work; here a batch of 8 costs what one token does.
//
// A block takes 16 weight rows; warp c of MMV_WARPS takes the super-blocks u = c mod 8 (partial c of
// kq_total), staging its 16 rows of each through shared memory by cp.async MMV_STAGES - 1 ahead, as
// q8_mm does. x comes straight from global memory (a few KiB, shared by every block: cached).
#define MMV_WARPS 8
#define MMV_STAGES 3

// The integer sums of one super-block against x at `x` (this thread's token, its 256 values):
// isum[e] = sum over blocks of scale x dot, imn[e] = sum over sub-blocks of min x sum of x, for the
// accumulator elements e (rows g, g, g+8, g+8 by tokens 2t, 2t+1). Q4_K and Q5_K: 8 blocks of 32, each
// with a scale and a min.
template <int T> __device__ __forceinline__ void mmv_sums(const typename Mma<T>::Frag& f, const i8* x, int t, int* isum, int* imn) {
#pragma unroll
    for (int e = 0; e < 4; e++) isum[e] = imn[e] = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const uint2 b = __ldg((const uint2*)(x + 32 * j + 8 * t));
        int c[4] = {0, 0, 0, 0};
        mma_k32(f.a[j], b.x, b.y, c);
#pragma unroll
        for (int e = 0; e < 4; e++) isum[e] += f.sc[j][e >> 1] * c[e];
        // the mins: min j of the row in every byte of A, so the mma adds min j x (sum of x's sub-block j)
        const u32 sel = 0x1111u * (j & 3), m0 = __byte_perm(f.mn[j >> 2][0], 0u, sel), m1 = __byte_perm(f.mn[j >> 2][1], 0u, sel);
        const u32 am[4] = {m0, m1, m0, m1};
        mma_k32(am, b.x, b.y, imn);
    }
}

// y [n, m] = x W^T from x's int8 rows (P planes a token), n <= 8, W [m, k] (a K-quant); grid
// (ceil(m / 16)), MMV_WARPS warps, mmv_shared bytes of dynamic shared memory.
template <int T, int P>
__device__ __forceinline__ void q8_mmv(const u8* W, i64 row_bytes, const i8* xq, const float* xd, float* y, int n, int m, int k, int bx) {
    using F = Mma<T>;
    constexpr int SLOT = F::SLOT, WARP_SLOT = 16 * SLOT, PIECES = SLOT / 16;
    extern __shared__ uint4 mmv_stage[];
    __shared__ float partial[MMV_WARPS][16][8];
    const int lane = threadIdx.x & 31, c = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int row_base = bx * 16, per_row = k / 256;
    const int mine = per_row > c ? (per_row - c + MMV_WARPS - 1) / MMV_WARPS : 0;  // super-blocks c, c + 8, ..
    u8* const stage = (u8*)mmv_stage + c * (MMV_STAGES * WARP_SLOT);
    auto block_of = [&](int r, int i) { return W + (i64)min(row_base + r, m - 1) * row_bytes + (i64)(c + MMV_WARPS * i) * F::BYTES; };
    // This warp's i-th super-block of its 16 rows into slot i % MMV_STAGES, each row from its 16-byte
    // aligned-down start; one commit group each, empty past the last.
    auto copy = [&](int i) {
        if (i < mine) {
            u8* const slot = stage + (i % MMV_STAGES) * WARP_SLOT;
            for (int q = lane; q < 16 * PIECES; q += 32) {
                const int r = q / PIECES, piece = q % PIECES;
                const u8* src = block_of(r, i);
                const int mis = (int)((size_t)src & 15);
                if (16 * piece < mis + F::BYTES) cp_async16(slot + r * SLOT + 16 * piece, src - mis + 16 * piece);
            }
        }
        cp_async_commit();
    };
#pragma unroll
    for (int i = 0; i < MMV_STAGES - 1; i++) copy(i);
    wait_previous();  // the first weights are on their way; x comes from the kernels before
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const int tok = min(g, n - 1);  // B column g
    for (int i = 0; i < mine; i++) {
        __syncwarp();  // every lane is done with the slot that super-block i + MMV_STAGES - 1 refills
        copy(i + MMV_STAGES - 1);
        cp_async_wait<MMV_STAGES - 1>();
        __syncwarp();  // every lane's copies of super-block i have landed
        const int u = c + MMV_WARPS * i;
        const u8* const slot = stage + (i % MMV_STAGES) * WARP_SLOT;
        const u8* rows[2];
#pragma unroll
        for (int r = 0; r < 2; r++) rows[r] = slot + (g + 8 * r) * SLOT + (int)((size_t)block_of(g + 8 * r, i) & 15);
        const typename F::Frag f = F::load(rows, 0, t);
#pragma unroll
        for (int p = 0; p < P; p++) {
            int isum[4], imn[4];
            mmv_sums<T>(f, xq + ((i64)tok * P + p) * k + 256 * u, t, isum, imn);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1, te = min(2 * t + (e & 1), n - 1);
                const float dx = __ldg(xd + ((i64)te * P + p) * per_row + u);
                float dmin = 0.0f;
                if constexpr (F::MINS) dmin = f.dmin[r];
                acc[e] = __fadd_rn(acc[e], kq_term(f.d[r], dmin, dx, isum[e], imn[e]));
            }
        }
    }
#pragma unroll
    for (int e = 0; e < 4; e++) partial[c][g + 8 * (e >> 1)][2 * t + (e & 1)] = acc[e];
    __syncthreads();
    if (threadIdx.x < 128) {
        const int r = threadIdx.x >> 3, b = threadIdx.x & 7;
        float a[MMV_WARPS];
#pragma unroll
        for (int w = 0; w < MMV_WARPS; w++) a[w] = partial[w][r][b];
        if (row_base + r < m && b < n) y[(i64)b * m + row_base + r] = kq_total(a);
    }
}

#define Q8_MMV(NAME, T, P)                                                                                     \
    extern "C" __global__ void __launch_bounds__(32 * MMV_WARPS) q8_mmv_##NAME##_##P(                          \
        const Products ps, const i8* xq, const float* xd, int n, int k) {                                      \
        allow_next();                                                                                          \
        const Product p = ps.of(blockIdx.x);                                                                   \
        q8_mmv<T, P>(p.W, p.row_bytes, xq, xd, p.y, n, p.m, k, blockIdx.x - p.start);                          \
    }

Q8_MMV(q4_k, T_Q4_K, 1)
Q8_MMV(q4_k, T_Q4_K, 2)
Q8_MMV(q5_k, T_Q5_K, 1)
Q8_MMV(q5_k, T_Q5_K, 2)
