// ggml block formats (ggml-common.h), decoded to float32 exactly as quants.cuh (and so as ggml's
// dequantize_row_*). The weight type is the compile-time define WT. A row is read through 16-bit
// words: every block field sits at an even byte offset (blocks are 2-aligned).

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

#define WT_IS_FLOAT (WT == T_F32 || WT == T_F16 || WT == T_BF16)

// Value i of a float row (f32, f16 or bf16) whose first byte is at address `row`.
float deq1(uint64_t row, uint i) {
#if WT == T_F32
    return F32(row).v[i];
#elif WT == T_F16
    return h2f(uint(U16(row).v[i]));
#else
    return bf2f(uint(U16(row).v[i]));
#endif
}

// Byte n of the 16-bit words starting at word wi.
uint byte_at(U16 r, uint wi, uint n) { return (uint(r.v[wi + (n >> 1)]) >> ((n & 1u) * 8u)) & 0xFFu; }

#if !WT_IS_FLOAT
// w[0..31] = values 32*sb .. 32*sb+31 of the row whose first byte is at address `row`.
void deq32(uint64_t row, uint sb, out float w[32]) {
    U16 r = U16(row);
#if WT == T_Q8_0
    const uint bw = sb * 17u;
    const float d = h2f(uint(r.v[bw]));
    for (uint i = 0u; i < 16u; i++) {
        const int u = int(uint(r.v[bw + 1u + i]));
        precise float w0 = float(bitfieldExtract(u, 0, 8)) * d;
        precise float w1 = float(bitfieldExtract(u, 8, 8)) * d;
        w[2u * i] = w0;
        w[2u * i + 1u] = w1;
    }
#elif WT == T_Q4_0
    const uint bw = sb * 9u;
    const float d = h2f(uint(r.v[bw]));
    for (uint l = 0u; l < 16u; l++) {
        const uint q = byte_at(r, bw + 1u, l);
        precise float w0 = float(int(q & 0xFu) - 8) * d;
        precise float w1 = float(int(q >> 4) - 8) * d;
        w[l] = w0;
        w[l + 16u] = w1;
    }
#elif WT == T_Q4_1
    const uint bw = sb * 10u;
    const float d = h2f(uint(r.v[bw])), m = h2f(uint(r.v[bw + 1u]));
    for (uint l = 0u; l < 16u; l++) {
        const uint q = byte_at(r, bw + 2u, l);
        precise float w0 = float(q & 0xFu) * d + m;
        precise float w1 = float(q >> 4) * d + m;
        w[l] = w0;
        w[l + 16u] = w1;
    }
#elif WT == T_Q5_0 || WT == T_Q5_1
#if WT == T_Q5_1
    const uint bw = sb * 12u, hw = bw + 2u;
    const float d = h2f(uint(r.v[bw])), m = h2f(uint(r.v[bw + 1u]));
#else
    const uint bw = sb * 11u, hw = bw + 1u;
    const float d = h2f(uint(r.v[bw]));
#endif
    const uint qh = uint(r.v[hw]) | (uint(r.v[hw + 1u]) << 16);
    for (uint l = 0u; l < 16u; l++) {
        const uint q = byte_at(r, hw + 2u, l);
        const int x0 = int((q & 0xFu) | (((qh >> l) << 4) & 0x10u));
        const int x1 = int((q >> 4) | ((qh >> (l + 12u)) & 0x10u));
#if WT == T_Q5_1
        precise float w0 = float(x0) * d + m;
        precise float w1 = float(x1) * d + m;
#else
        precise float w0 = float(x0 - 16) * d;
        precise float w1 = float(x1 - 16) * d;
#endif
        w[l] = w0;
        w[l + 16u] = w1;
    }
#elif WT == T_Q4_K || WT == T_Q5_K
    const uint j = sb & 7u;
#if WT == T_Q5_K
    const uint bw = (sb >> 3) * 88u, qw = bw + 24u + 16u * (j >> 1);
#else
    const uint bw = (sb >> 3) * 72u, qw = bw + 8u + 16u * (j >> 1);
#endif
    const float d = h2f(uint(r.v[bw])), dmin = h2f(uint(r.v[bw + 1u]));
    // scale_min_k4 over the 12 scale bytes at byte 4 (word bw + 2)
    uint sc, mn;
    if (j < 4u) {
        sc = byte_at(r, bw + 2u, j) & 63u;
        mn = byte_at(r, bw + 2u, j + 4u) & 63u;
    } else {
        sc = (byte_at(r, bw + 2u, j + 4u) & 0xFu) | ((byte_at(r, bw + 2u, j - 4u) >> 6) << 4);
        mn = (byte_at(r, bw + 2u, j + 4u) >> 4) | ((byte_at(r, bw + 2u, j) >> 6) << 4);
    }
    precise float d1 = d * float(int(sc));
    precise float m1 = dmin * float(int(mn));
    const uint shift = (j & 1u) * 4u;
    for (uint l = 0u; l < 32u; l++) {
        int v = int((byte_at(r, qw, l) >> shift) & 0xFu);
#if WT == T_Q5_K
        v += ((byte_at(r, bw + 8u, l) >> j) & 1u) != 0u ? 16 : 0;
#endif
        precise float wl = d1 * float(v) - m1;
        w[l] = wl;
    }
#elif WT == T_Q6_K
    const uint half_ = (sb & 7u) >> 2, g = sb & 3u;
    const uint bw = (sb >> 3) * 105u;
    const uint qlw = bw + 32u * half_ + 16u * (g & 1u), qhw = bw + 64u + 16u * half_, scw = bw + 96u + 4u * half_;
    const float d = h2f(uint(r.v[bw + 104u]));
    const uint lo_shift = (g >> 1) * 4u, hi_shift = 2u * g;
    for (uint l = 0u; l < 32u; l++) {
        const int q = int(((byte_at(r, qlw, l) >> lo_shift) & 0xFu) | (((byte_at(r, qhw, l) >> hi_shift) & 3u) << 4)) - 32;
        const int sc = bitfieldExtract(int(byte_at(r, scw, (l >> 4) + 2u * g)), 0, 8);
        precise float wl = d * float(sc) * float(q);
        w[l] = wl;
    }
#else
#error unknown weight type WT
#endif
}
#endif
