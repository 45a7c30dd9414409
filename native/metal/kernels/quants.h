// ggml block formats (ggml-common.h), decoded to float32 exactly as quants.cuh (and so as ggml's
// dequantize_row_*). Quantized rows are read in units of 32 values (a whole block, or one
// 32-value sub-block of a 256-value K-quant super-block); float rows element by element. The
// template argument T is the ggml type code (library.py instantiates the kernels with it).
// MSL is C++14: `if` on the template constant instead of `if constexpr` (every branch compiles
// for every T; the dead ones fold away).

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

#define IS_FLOAT_TYPE(T) ((T) == T_F32 || (T) == T_F16 || (T) == T_BF16)

template <int T> inline float deq1(device const u8* row, i64 i) {
    if (T == T_F32) return ((device const float*)row)[i];
    if (T == T_F16) return h2f(((device const u16*)row)[i]);
    return bf2f(((device const u16*)row)[i]);
}

inline void scale_min_k4(int j, device const u8* q, thread int* sc, thread int* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// w[0..31] = values 32*sb .. 32*sb+31 of the row.
template <int T> inline void deq32(device const u8* row, int sb, thread float* w) {
    if (T == T_Q8_0) {
        device const u8* b = row + (i64)sb * 34;
        const float d = h2f(ld16(b));
        device const i8* q = (device const i8*)(b + 2);
        for (int l = 0; l < 32; l++) w[l] = (float)q[l] * d;
    } else if (T == T_Q4_0) {
        device const u8* b = row + (i64)sb * 18;
        const float d = h2f(ld16(b));
        device const u8* q = b + 2;
        for (int l = 0; l < 16; l++) {
            w[l] = (float)((q[l] & 0xF) - 8) * d;
            w[l + 16] = (float)((q[l] >> 4) - 8) * d;
        }
    } else if (T == T_Q4_1) {
        device const u8* b = row + (i64)sb * 20;
        const float d = h2f(ld16(b)), m = h2f(ld16(b + 2));
        device const u8* q = b + 4;
        for (int l = 0; l < 16; l++) {
            w[l] = (float)(q[l] & 0xF) * d + m;
            w[l + 16] = (float)(q[l] >> 4) * d + m;
        }
    } else if (T == T_Q5_0 || T == T_Q5_1) {
        const bool has_min = T == T_Q5_1;
        device const u8* b = row + (i64)sb * (has_min ? 24 : 22);
        const float d = h2f(ld16(b)), m = has_min ? h2f(ld16(b + 2)) : 0.0f;
        device const u8* h = b + (has_min ? 4 : 2);
        const u32 qh = (u32)h[0] | ((u32)h[1] << 8) | ((u32)h[2] << 16) | ((u32)h[3] << 24);
        device const u8* q = h + 4;
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
    } else if (T == T_Q4_K || T == T_Q5_K) {
        const bool five = T == T_Q5_K;
        const int j = sb & 7;
        device const u8* b = row + (i64)(sb >> 3) * (five ? 176 : 144);
        const float d = h2f(ld16(b)), dmin = h2f(ld16(b + 2));
        int sc, mn;
        scale_min_k4(j, b + 4, &sc, &mn);
        const float d1 = d * (float)sc, m1 = dmin * (float)mn;
        device const u8* qh = b + 16;
        device const u8* q = b + (five ? 48 : 16) + 32 * (j >> 1);
        const int shift = (j & 1) * 4;
        for (int l = 0; l < 32; l++) {
            int v = (q[l] >> shift) & 0xF;
            if (five) v += (qh[l] >> j) & 1 ? 16 : 0;
            w[l] = d1 * (float)v - m1;
        }
    } else if (T == T_Q6_K) {
        const int half_ = (sb & 7) >> 2, g = sb & 3;
        device const u8* b = row + (i64)(sb >> 3) * 210;
        device const u8* ql = b + 64 * half_ + (g & 1) * 32;
        device const u8* qh = b + 128 + 32 * half_;
        device const i8* sc = (device const i8*)(b + 192 + 8 * half_);
        const float d = h2f(ld16(b + 208));
        const int lo_shift = (g >> 1) * 4, hi_shift = 2 * g;
        for (int l = 0; l < 32; l++) {
            const int q = (((ql[l] >> lo_shift) & 0xF) | (((qh[l] >> hi_shift) & 3) << 4)) - 32;
            w[l] = d * (float)sc[(l >> 4) + 2 * g] * (float)q;
        }
    }
}
