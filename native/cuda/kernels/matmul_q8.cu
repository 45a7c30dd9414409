// The "q8" and "q8x2" activation modes (CUDA only: gpu.py launches these where the device's
// `activations` asks for them): each row of x becomes int8 blocks with a float scale, then products
// with Q4_K, Q5_K, Q6_K and Q8_0 weights run on integer dot products (dp4a: four values an
// instruction, exact), where the float32 path spends three instructions a value and so cannot keep
// up with the memory. The int8 rows come from activations.cu (q8_rows, or a fused kernel). A row's
// sum runs in a fixed order whatever the batch. Q8_0: every lane covers the same blocks in the same
// order for each token, then a butterfly. K-quants: the K-quant order (kq_term, kq_total), which
// matmul_q8_mma.cu's q8_mmv keeps on tensor cores: the four lanes of a super-block add their
// integer sums first, then each super-block is one float term.
//
// The weights reach the lanes through shared memory: each warp copies the contiguous bytes of its
// rows' next steps with 16-byte cp.async (whole lines a warp instruction, and no registers held
// for loads in flight), several steps ahead, then each lane reads its block parts from the copy.

__device__ __forceinline__ int dp4(u32 a, u32 b, int c) { return __dp4a((int)a, (int)b, c); }

__device__ __forceinline__ uint4 ld_x16(const i8* p) { return __ldg((const uint4*)p); }

// The products one launch computes (gpu.py's `_Products`, filled by `_matmul`): up to PRODUCTS weight
// matrices of one type with the same input rows (q, k and v; gate and up), each over its own range of blocks along x,
// from `start` on (unused entries: INT_MAX). Each row is computed as by a launch of its own: merging
// launches changes no bit.
#define PRODUCTS 4
struct Product { const u8* W; i64 row_bytes; float* y; int m, start; };
struct Products {
    Product p[PRODUCTS];
    __device__ __forceinline__ Product of(int bx) const {  // unrolled: no local copy of the parameters
        Product q = p[0];
#pragma unroll
        for (int i = 1; i < PRODUCTS; i++)
            if (bx >= p[i].start) q = p[i];
        return q;
    }
};

// The K-quant order of a row's sum in the int8 modes, shared by the small-batch kernels (q8_mm here,
// q8_mmv on tensor cores), so that a verify batch's rows equal the one-token kernel's bit for bit.
// Super-block u of a row is one term from its whole integer sums (scale x block dot, min x x sum)
// and x's scale dx, rounded step by step (no fused multiply-add: both kernels round the same way);
// the terms of super-blocks u = c mod 8 add up in order into partial c (plane by plane in q8x2);
// kq_total adds the eight partials in one tree.
__device__ __forceinline__ float kq_term(float d, float dmin, float dx, int isum, int imn) {
    return __fsub_rn(__fmul_rn(__fmul_rn(d, dx), (float)isum), __fmul_rn(__fmul_rn(dmin, dx), (float)imn));
}
__device__ __forceinline__ float kq_total(const float* a) {
    return __fadd_rn(__fadd_rn(__fadd_rn(a[0], a[4]), __fadd_rn(a[2], a[6])), __fadd_rn(__fadd_rn(a[1], a[5]), __fadd_rn(a[3], a[7])));
}

// Per format: which block (unit) a lane reads at each warp step (as Fast<T> in matmul.cu), its
// part of a block in the shared-memory copy, its weight quants unpacked to bytes (unsigned below
// 128, or Q8_0's signed ones: both fit dp4a's signed operands) with integer scales, the x quants it
// meets, and its part of the product.

// Q4_K and Q5_K: lane c of 4 per super-block, 8 super-blocks a step; its 32 quant bytes hold
// values 64c+i (sub-block 2c, low nibbles) and 64c+32+i (sub-block 2c+1, high nibbles); Q5_K's
// fifth bits are bits 2c and 2c+1 of qh byte i.
template <bool Q5> struct IntK45 {
    static constexpr int PER_STEP = 8, BLOCK = 256, BYTES = Q5 ? 176 : 144;
    static constexpr bool KQ = true;  // the K-quant order (kq_term)
    static constexpr bool MINS = true;  // a min x x-sum part to add up across the lanes
    int unit, c;
    __device__ IntK45(int lane) : unit(lane >> 2), c(lane & 3) {}
    __device__ int units(int k) const { return k >> 8; }
    struct Load { uint4 head, q[2], qh[2]; };
    __device__ Load load(const u8* b) const {  // 16-byte aligned: 144- or 176-byte blocks, so rows stay aligned
        const uint4* v = (const uint4*)b;
        Load l;
        l.head = v[0];
        l.q[0] = v[(Q5 ? 3 : 1) + 2 * c];
        l.q[1] = v[(Q5 ? 4 : 2) + 2 * c];
        if constexpr (Q5) {
            l.qh[0] = v[1];
            l.qh[1] = v[2];
        }
        return l;
    }
    struct W { u32 lo[8], hi[8]; int sc0, sc1, mn0, mn1; float d, dmin; };
    __device__ W unpack(const Load& l) const {
        W w;
        const u32 q[8] = {l.q[0].x, l.q[0].y, l.q[0].z, l.q[0].w, l.q[1].x, l.q[1].y, l.q[1].z, l.q[1].w};
#pragma unroll
        for (int i = 0; i < 8; i++) {
            w.lo[i] = q[i] & 0x0F0F0F0Fu;
            w.hi[i] = (q[i] >> 4) & 0x0F0F0F0Fu;
        }
        if constexpr (Q5) {
            const u32 qh[8] = {l.qh[0].x, l.qh[0].y, l.qh[0].z, l.qh[0].w, l.qh[1].x, l.qh[1].y, l.qh[1].z, l.qh[1].w};
#pragma unroll
            for (int i = 0; i < 8; i++) {
                w.lo[i] |= ((qh[i] >> (2 * c)) & 0x01010101u) << 4;
                w.hi[i] |= ((qh[i] >> (2 * c + 1)) & 0x01010101u) << 4;
            }
        }
        w.d = h2f((u16)l.head.x);
        w.dmin = h2f((u16)(l.head.x >> 16));
        const u32 s0 = l.head.y, s1 = l.head.z, s2 = l.head.w;
        const bool up = c >= 2;  // sub-blocks 4..7 keep their two high bits in bytes 0..7
        const u32 sc = up ? (s2 & 0x0F0F0F0Fu) | ((s0 >> 2) & 0x30303030u) : s0 & 0x3F3F3F3Fu;
        const u32 mn = up ? ((s2 >> 4) & 0x0F0F0F0Fu) | ((s1 >> 2) & 0x30303030u) : s1 & 0x3F3F3F3Fu;
        const u32 e = 8 * ((2 * c) & 3);
        w.sc0 = (sc >> e) & 0xFF;
        w.sc1 = (sc >> (e + 8)) & 0xFF;
        w.mn0 = (mn >> e) & 0xFF;
        w.mn1 = (mn >> (e + 8)) & 0xFF;
        return w;
    }
    struct X { u32 a[8], b[8]; int sa, sb; float d; };  // x quants of both sub-blocks, their sums, the scale
    __device__ X x(const i8* xq, const float* xd, int u) const {
        X v;
        const i8* p = xq + 256 * u + 64 * c;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const uint4 a = ld_x16(p + 16 * i), b = ld_x16(p + 32 + 16 * i);
            v.a[4 * i] = a.x, v.a[4 * i + 1] = a.y, v.a[4 * i + 2] = a.z, v.a[4 * i + 3] = a.w;
            v.b[4 * i] = b.x, v.b[4 * i + 1] = b.y, v.b[4 * i + 2] = b.z, v.b[4 * i + 3] = b.w;
        }
        v.sa = v.sb = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            v.sa = dp4(v.a[i], 0x01010101u, v.sa);
            v.sb = dp4(v.b[i], 0x01010101u, v.sb);
        }
        v.d = __ldg(xd + u);
        return v;
    }
    // This lane's part of the super-block's integer sums: scale x block dot, min x sum of x.
    __device__ void sums(const W& w, const X& v, int& isum, int& imn) const {
        int ia = 0, ib = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            ia = dp4(w.lo[i], v.a[i], ia);
            ib = dp4(w.hi[i], v.b[i], ib);
        }
        isum = w.sc0 * ia + w.sc1 * ib;
        imn = w.mn0 * v.sa + w.mn1 * v.sb;
    }
};

template <int T> struct Int;
template <> struct Int<T_Q4_K> : IntK45<false> { using IntK45<false>::IntK45; };
template <> struct Int<T_Q5_K> : IntK45<true> { using IntK45<true>::IntK45; };

// Q6_K: lane (half, j) of 4 per super-block, 8 a step: runs t < 4 of 16 values at
// 128 half + 32t + 16j, each one scale group (8 half + j + 2t): low bits from ql bytes 64 half + 16j
// (t even; high nibbles for t >= 2) or 64 half + 32 + 16j (t odd), bits 2t, 2t+1 from qh bytes
// 32 half + 16j. Quants q - 32 taken as q with 32 times the run's x sum subtracted.
template <> struct Int<T_Q6_K> {
    static constexpr int PER_STEP = 8, BLOCK = 256, BYTES = 210;
    static constexpr bool KQ = true, MINS = false;  // imn is 0 in every lane
    int unit, half, j;
    __device__ Int(int lane) : unit(lane >> 2), half((lane >> 1) & 1), j(lane & 1) {}
    __device__ int units(int k) const { return k >> 8; }
    using Load = Q6Bytes<4>;
    __device__ Load load(const u8* b) const { return q6_k_bytes<4, FromShared>(b, half, j); }
    struct W { u32 q[4][4]; int sc[4]; float d; static constexpr float dmin = 0.0f; };
    __device__ W unpack(const Load& l) const {
        W w;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const u32 qa = l.qa[i], qb = l.qb[i], hb = l.qh[i];
            w.q[0][i] = (qa & 0x0F0F0F0Fu) | ((hb << 4) & 0x30303030u);
            w.q[1][i] = (qb & 0x0F0F0F0Fu) | ((hb << 2) & 0x30303030u);
            w.q[2][i] = ((qa >> 4) & 0x0F0F0F0Fu) | (hb & 0x30303030u);
            w.q[3][i] = ((qb >> 4) & 0x0F0F0F0Fu) | ((hb >> 2) & 0x30303030u);
        }
        const u32 e = 8 * j;
        w.sc[0] = (int)(signed char)(l.sc[0] >> e);
        w.sc[1] = (int)(signed char)(l.sc[0] >> (e + 16));
        w.sc[2] = (int)(signed char)(l.sc[1] >> e);
        w.sc[3] = (int)(signed char)(l.sc[1] >> (e + 16));
        w.d = h2f(l.d);
        return w;
    }
    struct X { uint4 q[4]; int s[4]; float d; };
    __device__ X x(const i8* xq, const float* xd, int u) const {
        X v;
#pragma unroll
        for (int t = 0; t < 4; t++) {
            v.q[t] = ld_x16(xq + 256 * u + 128 * half + 32 * t + 16 * j);
            v.s[t] = dp4(v.q[t].x, 0x01010101u, dp4(v.q[t].y, 0x01010101u, dp4(v.q[t].z, 0x01010101u, dp4(v.q[t].w, 0x01010101u, 0))));
        }
        v.d = __ldg(xd + u);
        return v;
    }
    __device__ void sums(const W& w, const X& v, int& isum, int& imn) const {
        isum = 0;
#pragma unroll
        for (int t = 0; t < 4; t++) {
            const int s = dp4(w.q[t][0], v.q[t].x, dp4(w.q[t][1], v.q[t].y, dp4(w.q[t][2], v.q[t].z, dp4(w.q[t][3], v.q[t].w, 0))));
            isum += w.sc[t] * (s - 32 * v.s[t]);
        }
        imn = 0;
    }
};

// Q8_0: lane h of 2 per 32-value block, 16 blocks a step: quants 16h .. 16h+15.
template <> struct Int<T_Q8_0> {
    static constexpr int PER_STEP = 16, BLOCK = 32, BYTES = 34;
    static constexpr bool KQ = false;
    Fast<T_Q8_0> f;
    int unit;
    __device__ Int(int lane) : f(lane), unit(f.unit) {}
    __device__ int units(int k) const { return k >> 5; }
    using Load = Fast<T_Q8_0>::Load;
    __device__ Load load(const u8* b) const { return f.load_block<FromShared>(b); }
    struct W { u32 q[4]; float d; };
    __device__ W unpack(const Load& l) const { return {{l.q[0], l.q[1], l.q[2], l.q[3]}, h2f(l.d)}; }
    struct X { uint4 q; float d; };
    __device__ X x(const i8* xq, const float* xd, int u) const { return {ld_x16(xq + 32 * u + 16 * f.h), __ldg(xd + u)}; }
    __device__ float dot(const W& w, const X& v) const {
        const int isum = dp4(w.q[0], v.q.x, dp4(w.q[1], v.q.y, dp4(w.q[2], v.q.z, dp4(w.q[3], v.q.w, 0))));
        return (w.d * v.d) * (float)isum;
    }
};

// 16 bytes global -> shared past L1; a thread's copies complete by commit groups. Before sm_80 (no
// cp.async) a copy is a load and a store, done at once: commits and waits are then no-ops, and the
// __syncwarp / __syncthreads after each wait still make every lane's stores visible to the others.
__device__ __forceinline__ void cp_async16(u8* dst, const u8* src) {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"((u32)__cvta_generic_to_shared(dst)), "l"(src) : "memory");
#else
    *(uint4*)dst = __ldcg((const uint4*)src);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
// Until at most N of this thread's groups are in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// y [n, m] = x W^T from x's int8 rows (P planes a token), W [m, k]; grid (ceil(m / (MM_WARPS R)),
// ceil(n / NB)), SMEM bytes of dynamic shared memory. Each warp takes R weight rows (rows past m
// clamped to the last: computed, never stored) and reads each x block once for all of them. A warp
// step's units are contiguous in a row: the warp copies them, for its R rows, into one of its
// STAGES slots of shared memory (16-byte chunks from the row's aligned-down start: a 2-byte aligned
// row keeps its offset mod 16, the same at every step) STAGES - 1 steps ahead of the one it works
// on. R and SMEM change no row's float order (a lane's units and the butterfly stay the same).
template <int T, int NB, int P, int R, int SMEM>
__device__ __forceinline__ void q8_mm(const u8* W, i64 row_bytes, const i8* xq, const float* xd, float* y, int n, int m, int k, int bx) {
    using F = Int<T>;
    constexpr int STEP_BYTES = F::PER_STEP * F::BYTES;
    static_assert(STEP_BYTES % 16 == 0, "a step keeps a row's offset mod 16");
    constexpr int CHUNKS = F::BYTES % 16 == 0 ? STEP_BYTES / 16 : (STEP_BYTES + 14 + 15) / 16;  // rows 16-aligned, or not
    constexpr int SLOT = 16 * CHUNKS, STAGES = SMEM / (MM_WARPS * R * SLOT);
    static_assert(STAGES >= 2, "one step copied while another is read");
    extern __shared__ uint4 q8_stage[];
    const int lane = threadIdx.x & 31;
    const int j0 = (bx * MM_WARPS + (threadIdx.x >> 5)) * R;
    if (j0 >= m) return;  // warps share nothing here
    u8* const stage = (u8*)q8_stage + (threadIdx.x >> 5) * (STAGES * R * SLOT);
    const F f(lane);
    const int r0 = blockIdx.y * NB, nr = min(NB, n - r0), units = f.units(k), per_row = k / F::BLOCK;
    const int steps = (units + F::PER_STEP - 1) / F::PER_STEP;
    const u8* rows[R];  // aligned down to 16 bytes
    int mis[R];         // the row's offset from there
#pragma unroll
    for (int r = 0; r < R; r++) {
        const u8* row = W + (i64)min(j0 + r, m - 1) * row_bytes;
        rows[r] = (const u8*)((size_t)row & ~(size_t)15);
        mis[r] = (int)((size_t)row & 15);
    }
    // Step s's bytes of every row into slot s % STAGES; a group per step, empty past the last.
    auto copy = [&](int s) {
        if (s < steps) {
            const int u0 = s * F::PER_STEP, bytes = (min(units - u0, F::PER_STEP)) * F::BYTES;
            u8* slot = stage + (s % STAGES) * (R * SLOT);
#pragma unroll
            for (int r = 0; r < R; r++) {
                const u8* src = rows[r] + (i64)u0 * F::BYTES;
                const int nch = (mis[r] + bytes + 15) >> 4;
#pragma unroll
                for (int t = 0; t < (CHUNKS + 31) / 32; t++) {
                    const int i = lane + 32 * t;
                    if (i < nch) cp_async16(slot + r * SLOT + 16 * i, src + 16 * i);
                }
            }
        }
        cp_async_commit();
    };
    float acc[R][NB];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) acc[r][b] = 0.0f;
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) copy(s);
    wait_previous();  // the first weights are on their way; x comes from the kernels before
    for (int s = 0; s < steps; s++) {
        const int u = s * F::PER_STEP + f.unit;
        __syncwarp();  // every lane is done with the slot that step s + STAGES - 1 refills
        copy(s + STAGES - 1);
        typename F::X v0;  // the first x row's blocks load while the copy lands
        if (u < units) v0 = f.x(xq + (i64)r0 * P * k, xd + (i64)r0 * P * per_row, u);
        cp_async_wait<STAGES - 1>();
        __syncwarp();  // every lane's copies of step s have landed
        if (u < units) {
            const u8* slot = stage + (s % STAGES) * (R * SLOT) + f.unit * F::BYTES;
            typename F::W w[R];
#pragma unroll
            for (int r = 0; r < R; r++) w[r] = f.unpack(f.load(slot + r * SLOT + mis[r]));
#pragma unroll
            for (int b = 0; b < NB; b++) {
                const i64 row0 = (i64)(r0 + min(b, nr - 1)) * P;
#pragma unroll
                for (int p = 0; p < P; p++) {
                    const typename F::X v = b == 0 && p == 0 ? v0 : f.x(xq + (row0 + p) * k, xd + (row0 + p) * per_row, u);
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        if constexpr (F::KQ) {
                            int isum, imn;
                            f.sums(w[r], v, isum, imn);
                            // the super-block's four lanes (all in or all out of this branch)
                            const u32 quad = 0xFu << (lane & ~3);
                            isum += __shfl_xor_sync(quad, isum, 1);
                            isum += __shfl_xor_sync(quad, isum, 2);
                            if constexpr (F::MINS) {
                                imn += __shfl_xor_sync(quad, imn, 1);
                                imn += __shfl_xor_sync(quad, imn, 2);
                            }
                            acc[r][b] = __fadd_rn(acc[r][b], kq_term(w[r].d, w[r].dmin, v.d, isum, imn));
                        } else {
                            acc[r][b] = acc[r][b] + f.dot(w[r], v);
                        }
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) {
            if constexpr (F::KQ) {  // lane 4c holds partial c (its four lanes the same): kq_total's tree
                float& a = acc[r][b];
                a = __fadd_rn(a, __shfl_xor_sync(0xffffffffu, a, 16));
                a = __fadd_rn(a, __shfl_xor_sync(0xffffffffu, a, 8));
                a = __fadd_rn(a, __shfl_xor_sync(0xffffffffu, a, 4));
            } else {
                acc[r][b] = warp_sum(acc[r][b]);
            }
        }
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int b = 0; b < NB; b++)
                if (j0 + r < m && b < nr) y[(i64)(r0 + b) * m + j0 + r] = acc[r][b];
    }
}

#define Q8_MM(NAME, T, NB, P, R, SMEM)                                                                         \
    extern "C" __global__ void __launch_bounds__(32 * MM_WARPS) q8_mm_##NAME##_##NB##_##P(                    \
        const Products ps, const i8* xq, const float* xd, int n, int k) {                                    \
        allow_next();                                                                                        \
        const Product p = ps.of(blockIdx.x);                                                                 \
        q8_mm<T, NB, P, R, SMEM>(p.W, p.row_bytes, xq, xd, p.y, n, p.m, k, blockIdx.x - p.start);              \
    }

// A type's kernels: one token (decode) with R1 rows a warp and SMEM1 bytes, batches with R and SMEM.
#define Q8_KERNELS(NAME, T, R1, SMEM1, R, SMEM)                                                              \
    Q8_MM(NAME, T, 1, 1, R1, SMEM1)                                                                            \
    Q8_MM(NAME, T, 2, 1, R, SMEM)                                                                              \
    Q8_MM(NAME, T, 4, 1, R, SMEM)                                                                              \
    Q8_MM(NAME, T, 8, 1, R, SMEM)                                                                              \
    Q8_MM(NAME, T, 1, 2, R1, SMEM1)                                                                            \
    Q8_MM(NAME, T, 2, 2, R, SMEM)                                                                              \
    Q8_MM(NAME, T, 4, 2, R, SMEM)                                                                              \
    Q8_MM(NAME, T, 8, 2, R, SMEM)

// Rows per warp and shared memory of a block, as gpu.py's Q8_MM_BLOCKS: R 4 with 54 KiB (four blocks
// an SM) by default. One-token K-quant products take R 2 with 18 KiB (Q4_K) or 27 KiB (Q6_K): twice
// the blocks, more warps an SM in flight. H100, 27B shapes, every one-token Q4_K product of a
// pass 1.41 -> 1.29 ms, Q6_K 0.75 -> 0.73 ms; with 4 tokens those shapes were slower, so batches keep R 4.
Q8_KERNELS(q8_0, T_Q8_0, 4, 55296, 4, 55296)
Q8_KERNELS(q4_k, T_Q4_K, 2, 18432, 4, 55296)
Q8_KERNELS(q5_k, T_Q5_K, 4, 55296, 4, 55296)
Q8_KERNELS(q6_k, T_Q6_K, 2, 27648, 4, 55296)
