/* Fused decode-and-dot (AVX2) for the few-token matrix products (decode, verify): each weight row is
 * decoded into registers and multiplied into the token rows at once, never stored as floats.
 *
 * Q6_K and Q8_0 are bit-identical to dotn_avx2(decoded row, x): every 32 decoded values are the
 * decoder's (same products, never fused), taken into the same four 8-lane FMA accumulators in the
 * same order (values 8c..8c+7 of each 32 into accumulator c), then summed as dotn_avx2 sums them.
 * Q4_K and Q5_K keep their scales out of the inner loop (mtp.h, MTP_FACTORED): kdot_avx2 below does
 * the same operations on the split row (mtp_split_kquant) that the fused kernels do on the blocks.
 * So a token's result is the same whether it is computed here, up to four tokens at a time, or by
 * the tiled path of a large batch. */
#include "mtp.h"

#if defined(MTP_X86)
#include "q6k_x86.h"
#include <string.h>

MTP_AVX2 static inline float half_at(const uint8_t *p) { return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8)); }

MTP_AVX2 static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* lane l of v in every lane */
MTP_AVX2 static inline __m256 lane(__m256 v, int l) { return _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(l)); }

/* nt token rows (x, x + ldx, ...), four accumulators each */
typedef struct {
    __m256 s[4][4];
} acc2;

/* Multiply 32 decoded weights w[0..3] (8 each) into every token's accumulators; x points at the
 * first of the 32 matching activations of token 0. */
#define ACC32(a, w, x, ldx, nt)                                                          \
    for (int t_ = 0; t_ < (nt); t_++)                                                    \
        for (int c_ = 0; c_ < 4; c_++)                                                   \
            (a).s[t_][c_] = _mm256_fmadd_ps((w)[c_], _mm256_loadu_ps((x) + t_ * (ldx) + 8 * c_), (a).s[t_][c_]);

MTP_AVX2 static inline void finish(acc2 *a, int nt, float *out, int64_t ldo) {
    for (int t = 0; t < nt; t++)
        out[t * ldo] = hsum(_mm256_add_ps(_mm256_add_ps(a->s[t][0], a->s[t][1]), _mm256_add_ps(a->s[t][2], a->s[t][3])));
}

MTP_AVX2 static inline void zero(acc2 *a) {
    for (int t = 0; t < 4; t++)
        for (int c = 0; c < 4; c++)
            a->s[t][c] = _mm256_setzero_ps();
}

/* int8 bytes 8c..8c+7 of a 32-byte vector, widened to 8 int32 lanes */
MTP_AVX2 static inline __m256i widen(__m256i v, int c) {
    __m128i h = c < 2 ? _mm256_castsi256_si128(v) : _mm256_extracti128_si256(v, 1);
    return _mm256_cvtepi8_epi32(c % 2 ? _mm_srli_si128(h, 8) : h);
}

/* ---- Q4_K / Q5_K, factored: per token two accumulators (even and odd sub-blocks). Sub-block j
 * adds (d * sc_j) * u, u = q[0] * x[0..7] + q[1] * x[8..15] + ... (one product, three FMAs), into
 * accumulator j % 2; after each super-block accumulator 0 takes -(dmin * mn) * X lane by lane. */
typedef struct {
    __m256 a[4][2];
} kacc;

MTP_AVX2 static inline void kzero(kacc *A) {
    for (int t = 0; t < 4; t++)
        A->a[t][0] = A->a[t][1] = _mm256_setzero_ps();
}

/* sub-block j's 32 unscaled values q[0..3] against the tokens' x (at the sub-block); scale at *s */
MTP_AVX2 __attribute__((always_inline)) static inline void ksub(kacc *A, const __m256 q[4], const float *s, const float *x, int64_t ldx, int nt, int j) {
    __m256 ds = _mm256_broadcast_ss(s);
    for (int t = 0; t < nt; t++) {
        const float *xt = x + t * ldx;
        __m256 u = _mm256_mul_ps(q[0], _mm256_loadu_ps(xt));
        u = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(xt + 8), u);
        u = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(xt + 16), u);
        u = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(xt + 24), u);
        A->a[t][j % 2] = _mm256_fmadd_ps(ds, u, A->a[t][j % 2]);
    }
}

/* the super-block's mins m (8 lanes) times the tokens' sub-block sums at X */
MTP_AVX2 __attribute__((always_inline)) static inline void kmin(kacc *A, __m256 m, const float *X, int64_t ldX, int nt) {
    for (int t = 0; t < nt; t++)
        A->a[t][0] = _mm256_fnmadd_ps(m, _mm256_loadu_ps(X + t * ldX), A->a[t][0]);
}

MTP_AVX2 static inline void kfinish(const kacc *A, int nt, float *out, int64_t ldo) {
    for (int t = 0; t < nt; t++)
        out[t * ldo] = hsum(_mm256_add_ps(A->a[t][0], A->a[t][1]));
}

/* The 6-bit scales and mins of a Q4_K / Q5_K super-block (12 bytes at s), all eight at once:
 * sub-blocks 0..3 keep the low 6 bits of bytes 0..3 (scales) and 4..7 (mins); 4..7 take a nibble
 * of bytes 8..11 and the top 2 bits of bytes 0..3 (scales) or 4..7 (mins). */
MTP_AVX2 static inline void kscales(const uint8_t *b, float *sv, __m256 *m) {
    uint64_t sc, mn;
    mtp_kquant_scales_mins(b, &sc, &mn);
    __m256 s = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc)));
    _mm256_storeu_ps(sv, _mm256_mul_ps(_mm256_set1_ps(half_at(b)), s));
    *m = _mm256_mul_ps(_mm256_set1_ps(half_at(b + 2)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mn))));
}

/* Sub-block j's 32 values as floats: nibble j % 2 of the 32 bytes at qs, plus (Q5_K, qh not NULL)
 * bit j of each qh byte as the fifth bit. */
MTP_AVX2 __attribute__((always_inline)) static inline void kdecode(const uint8_t *qs, const uint8_t *qh, int j, __m256 q[4]) {
    const __m256i nib = _mm256_set1_epi32(0xf), one = _mm256_set1_epi32(1);
    for (int c = 0; c < 4; c++) {
        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8 * c)));
        v = j % 2 ? _mm256_srli_epi32(v, 4) : _mm256_and_si256(v, nib);
        if (qh) {
            __m256i h = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qh + 8 * c)));
            v = _mm256_or_si256(v, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, j), one), 4));
        }
        q[c] = _mm256_cvtepi32_ps(v);
    }
}

MTP_AVX2 __attribute__((always_inline)) static inline void k45_rows(const uint8_t *b, int q5, const float *x, int64_t ldx, const float *X, int64_t ldX,
                                                                      int nt, int64_t k, float *out, int64_t ldo) {
    kacc A;
    kzero(&A);
    float sv[8];
    for (int64_t i = 0; i < k / 256; i++, b += q5 ? 176 : 144, x += 256, X += 8) {
        __m256 m, q[4];
        kscales(b, sv, &m);
#pragma GCC unroll 8  /* constant j: the accumulators stay in registers */
        for (int j = 0; j < 8; j++) {
            kdecode(b + (q5 ? 48 : 16) + 32 * (j / 2), q5 ? b + 16 : NULL, j, q);
            ksub(&A, q, sv + j, x + 32 * j, ldx, nt, j);
        }
        kmin(&A, m, X, ldX, nt);
    }
    kfinish(&A, nt, out, ldo);
}

MTP_AVX2 __attribute__((always_inline)) static inline void q4_k_rows(const void *w, const float *x, int64_t ldx, const float *X, int64_t ldX, int nt, int64_t k, float *out, int64_t ldo) {
    k45_rows(w, 0, x, ldx, X, ldX, nt, k, out, ldo);
}

MTP_AVX2 __attribute__((always_inline)) static inline void q5_k_rows(const void *w, const float *x, int64_t ldx, const float *X, int64_t ldX, int nt, int64_t k, float *out, int64_t ldo) {
    k45_rows(w, 1, x, ldx, X, ldX, nt, k, out, ldo);
}

/* mtp_split_kquant's floats, eight at a time */
MTP_AVX2 static void split_avx2(int type, const void *src, float *qf, float *sm, int64_t k) {
    const uint8_t *b = src;
    const int q5 = type == T_Q5_K;
    for (int64_t i = 0; i < k / 256; i++, b += q5 ? 176 : 144, qf += 256, sm += 16) {
        __m256 m, q[4];
        kscales(b, sm, &m);
        _mm256_storeu_ps(sm + 8, m);
        for (int j = 0; j < 8; j++) {
            kdecode(b + (q5 ? 48 : 16) + 32 * (j / 2), q5 ? b + 16 : NULL, j, q);
            for (int c = 0; c < 4; c++)
                _mm256_storeu_ps(qf + 32 * j + 8 * c, q[c]);
        }
    }
}

/* The same operations on a split row: q as stored floats, scales and mins from sm. */
MTP_AVX2 __attribute__((always_inline)) static inline void split_rows(const float *qf, const float *sm, const float *x, int64_t ldx, const float *X, int64_t ldX,
                                                                        int nt, int64_t k, float *out, int64_t ldo) {
    kacc A;
    kzero(&A);
    for (int64_t i = 0; i < k / 256; i++, qf += 256, sm += 16, x += 256, X += 8) {
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            __m256 q[4];
            for (int c = 0; c < 4; c++)
                q[c] = _mm256_loadu_ps(qf + 32 * j + 8 * c);
            ksub(&A, q, sm + j, x + 32 * j, ldx, nt, j);
        }
        kmin(&A, _mm256_loadu_ps(sm + 8), X, ldX, nt);
    }
    kfinish(&A, nt, out, ldo);
}

MTP_AVX2 static void kdot_avx2(const float *q, const float *sm, const float *x, int64_t ldx, const float *X, int64_t ldX, int nt, int64_t k, float *out, int64_t ldo) {
    switch (nt) {
    case 4: split_rows(q, sm, x, ldx, X, ldX, 4, k, out, ldo); break;
    case 3: split_rows(q, sm, x, ldx, X, ldX, 3, k, out, ldo); break;
    case 2: split_rows(q, sm, x, ldx, X, ldX, 2, k, out, ldo); break;
    default: split_rows(q, sm, x, ldx, X, ldX, 1, k, out, ldo);
    }
}

/* ---- Q6_K, Q8_0: decoded weights (the decoders' products) into dotn's four accumulators */
MTP_AVX2 __attribute__((always_inline)) static inline void q6_k_rows(const void *w, const float *x, int64_t ldx, const float *X, int64_t ldX, int nt, int64_t k, float *out, int64_t ldo) {
    (void)X, (void)ldX;
    const uint8_t *b = w;
    const __m256i nib = _mm256_set1_epi8(0xf), top = _mm256_set1_epi8(0x30), off = _mm256_set1_epi8(32);
    acc2 a;
    zero(&a);
    for (int64_t i = 0; i < k / 256; i++, b += 210) {
        __m128i sc = _mm_loadu_si128((const __m128i *)(b + 192));
        __m256 d = _mm256_set1_ps(half_at(b + 208));
        __m256 sv[2] = {_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))),
                        _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8))))};
        float sf[16];
        _mm256_storeu_ps(sf, sv[0]);
        _mm256_storeu_ps(sf + 8, sv[1]);
        for (int h = 0; h < 2; h++) {
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
            for (int g = 0; g < 4; g++, x += 32) {
                __m256i q = q6_k_group(b, h, g, qh, nib, top, off);
                /* the same scales either way; measured, one or two tokens go faster from memory */
                __m256 d0 = nt <= 2 ? _mm256_broadcast_ss(sf + 8 * h + 2 * g) : lane(sv[h], 2 * g);
                __m256 d1 = nt <= 2 ? _mm256_broadcast_ss(sf + 8 * h + 2 * g + 1) : lane(sv[h], 2 * g + 1), wv[4];
                for (int c = 0; c < 4; c++)
                    wv[c] = _mm256_mul_ps(c < 2 ? d0 : d1, _mm256_cvtepi32_ps(widen(q, c)));
                ACC32(a, wv, x, ldx, nt)
            }
        }
    }
    finish(&a, nt, out, ldo);
}

MTP_AVX2 __attribute__((always_inline)) static inline void q8_0_rows(const void *w, const float *x, int64_t ldx, const float *X, int64_t ldX, int nt, int64_t k, float *out, int64_t ldo) {
    (void)X, (void)ldX;
    const uint8_t *b = w;
    acc2 a;
    zero(&a);
    for (int64_t i = 0; i < k / 32; i++, b += 34, x += 32) {
        __m256 d = _mm256_set1_ps(half_at(b)), w[4];
        for (int c = 0; c < 4; c++)
            w[c] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * c)))));
        ACC32(a, w, x, ldx, nt)
    }
    finish(&a, nt, out, ldo);
}

/* nr weight rows against nt = 1..4 token rows; a constant nt per variant lets the compiler keep
 * the accumulators in registers. */
#define VDOT(name, rows)                                                                                              \
    MTP_AVX2 static void name(const void *w, int64_t rb, int64_t nr, const float *x, int64_t ldx, const float *X,     \
                              int64_t ldX, int nt, int64_t k, float *out, int64_t ldo) {                              \
        const uint8_t *b = w;                                                                                         \
        switch (nt) {                                                                                                 \
        case 4: for (int64_t r = 0; r < nr; r++) rows(b + r * rb, x, ldx, X, ldX, 4, k, out + r, ldo); break;          \
        case 3: for (int64_t r = 0; r < nr; r++) rows(b + r * rb, x, ldx, X, ldX, 3, k, out + r, ldo); break;          \
        case 2: for (int64_t r = 0; r < nr; r++) rows(b + r * rb, x, ldx, X, ldX, 2, k, out + r, ldo); break;          \
        default: for (int64_t r = 0; r < nr; r++) rows(b + r * rb, x, ldx, X, ldX, 1, k, out + r, ldo);                \
        }                                                                                                             \
    }

VDOT(vdot_q4_k, q4_k_rows)
VDOT(vdot_q5_k, q5_k_rows)
VDOT(vdot_q6_k, q6_k_rows)
VDOT(vdot_q8_0, q8_0_rows)

void mtp_fused_avx2(mtp_kernels *kt) {
    kt->split = split_avx2;
    kt->kdot = kdot_avx2;
    MTP_SET_VDOT(kt);
}

#else
void mtp_fused_avx2(mtp_kernels *kt) { (void)kt; }
#endif
