// ggml block formats (ggml-common.h), decoded to float32 exactly as ggml's dequantize_row_*.
// Quantized rows are read in units of 32 values (a whole block, or one 32-value sub-block of a
// 256-value K-quant super-block); float rows element by element.

#define T_F32 0
#define T_F16 1
#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q5_0 6
#define T_Q5_1 7
#define T_Q8_0 8
#define T_Q4_K 12
#define T_Q5_K 13
#define T_Q6_K 14
#define T_BF16 30

template <int T> __device__ __forceinline__ float deq1(const u8* __restrict__ row, i64 i) {
    if constexpr (T == T_F32) return ((const float*)row)[i];
    else if constexpr (T == T_F16) return h2f(((const u16*)row)[i]);
    else return bf2f(((const u16*)row)[i]);
}

__device__ __forceinline__ void scale_min_k4(int j, const u8* q, int* sc, int* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// w[0..31] = values 32*sb .. 32*sb+31 of the row.
template <int T> __device__ __forceinline__ void deq32(const u8* __restrict__ row, int sb, float* w) {
    if constexpr (T == T_Q8_0) {
        const u8* b = row + (i64)sb * 34;
        const float d = h2f(ld16(b));
        const i8* q = (const i8*)(b + 2);
#pragma unroll
        for (int l = 0; l < 32; l++) w[l] = (float)q[l] * d;
    } else if constexpr (T == T_Q4_0) {
        const u8* b = row + (i64)sb * 18;
        const float d = h2f(ld16(b));
        const u8* q = b + 2;
#pragma unroll
        for (int l = 0; l < 16; l++) {
            w[l] = (float)((q[l] & 0xF) - 8) * d;
            w[l + 16] = (float)((q[l] >> 4) - 8) * d;
        }
    } else if constexpr (T == T_Q4_1) {
        const u8* b = row + (i64)sb * 20;
        const float d = h2f(ld16(b)), m = h2f(ld16(b + 2));
        const u8* q = b + 4;
#pragma unroll
        for (int l = 0; l < 16; l++) {
            w[l] = (float)(q[l] & 0xF) * d + m;
            w[l + 16] = (float)(q[l] >> 4) * d + m;
        }
    } else if constexpr (T == T_Q5_0 || T == T_Q5_1) {
        const bool has_min = T == T_Q5_1;
        const u8* b = row + (i64)sb * (has_min ? 24 : 22);
        const float d = h2f(ld16(b)), m = has_min ? h2f(ld16(b + 2)) : 0.0f;
        const u8* h = b + (has_min ? 4 : 2);
        const u32 qh = (u32)h[0] | ((u32)h[1] << 8) | ((u32)h[2] << 16) | ((u32)h[3] << 24);
        const u8* q = h + 4;
#pragma unroll
        for (int l = 0; l < 16; l++) {
            const int x0 = (q[l] & 0xF) | (((qh >> l) << 4) & 0x10);
            const int x1 = (q[l] >> 4) | ((qh >> (l + 12)) & 0x10);
            if (has_min) {
                w[l] = (float)x0 * d + m;
                w[l + 16] = (float)x1 * d + m;
            } else {
                w[l] = (float)(x0 - 16) * d;
                w[l + 16] = (float)(x1 - 16) * d;
            }
        }
    } else if constexpr (T == T_Q4_K || T == T_Q5_K) {
        const bool five = T == T_Q5_K;
        const int j = sb & 7;
        const u8* b = row + (i64)(sb >> 3) * (five ? 176 : 144);
        const float d = h2f(ld16(b)), dmin = h2f(ld16(b + 2));
        int sc, mn;
        scale_min_k4(j, b + 4, &sc, &mn);
        const float d1 = d * (float)sc, m1 = dmin * (float)mn;
        // Super-blocks (144 / 176 bytes) and rows are multiples of 16 bytes from 256-aligned
        // buffers, so the 32 quant bytes (and Q5_K's 32 high-bit bytes) load as two 16-byte vectors.
        const uint4* q4 = (const uint4*)(b + (five ? 48 : 16) + 32 * (j >> 1));
        const uint4 qa = q4[0], qb = q4[1];
        const u32 qw[8] = {qa.x, qa.y, qa.z, qa.w, qb.x, qb.y, qb.z, qb.w};
        u32 hw[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (five) {
            const uint4* h4 = (const uint4*)(b + 16);
            const uint4 ha = h4[0], hb = h4[1];
            hw[0] = ha.x, hw[1] = ha.y, hw[2] = ha.z, hw[3] = ha.w, hw[4] = hb.x, hw[5] = hb.y, hw[6] = hb.z, hw[7] = hb.w;
        }
        const int shift = (j & 1) * 4;
#pragma unroll
        for (int l = 0; l < 32; l++) {
            int v = (qw[l >> 2] >> (8 * (l & 3) + shift)) & 0xF;
            if (five) v += (hw[l >> 2] >> (8 * (l & 3) + j)) & 1 ? 16 : 0;
            w[l] = d1 * (float)v - m1;
        }
    } else if constexpr (T == T_Q6_K) {
        const int half = (sb & 7) >> 2, g = sb & 3;
        const u8* b = row + (i64)(sb >> 3) * 210;
        const u8* ql = b + 64 * half + (g & 1) * 32;
        const u8* qh = b + 128 + 32 * half;
        const i8* sc = (const i8*)(b + 192 + 8 * half);
        const float d = h2f(ld16(b + 208));
        const int lo_shift = (g >> 1) * 4, hi_shift = 2 * g;
        // 210-byte super-blocks are only 2-byte aligned: the quant bytes load in 16-bit pairs.
#pragma unroll
        for (int l = 0; l < 32; l += 2) {
            const u32 lo = ld16(ql + l), hi = ld16(qh + l);
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int q = (((lo >> (8 * e + lo_shift)) & 0xF) | (((hi >> (8 * e + hi_shift)) & 3) << 4)) - 32;
                w[l + e] = d * (float)sc[((l + e) >> 4) + 2 * g] * (float)q;
            }
        }
    }
}
