/* Long batches (a prompt pass) with int8 activations on AVX-512 VNNI: sixteen tokens in the lanes
 * of one register. The row-at-a-time kernels (q8_x86.h) reduce each block's products across lanes
 * for every token, about five instructions per vpdpbusd; here a vpdpbusd takes one weight quad,
 * broadcast, against the same quad of sixteen tokens, and each (sub-)block's integer sum lands one per
 * lane with no reduction. The float steps are mtp.h's, lane by lane, so a token's bits are those of
 * every other kernel (and of its own decode step).
 *
 * vpdpbusd multiplies unsigned by signed bytes: the tokens' quants go in as x + 128 (x ^ 0x80), so
 * that the weight quads (the signed operand) broadcast straight from memory, and each sum takes back
 * 128 * (the sum of its weights), once per row for the whole batch. Q6_K's q - 32 goes in as q, then
 * 32 * (the tokens' 16-value sums) is taken back per scale. Every sum is exact in int32, as in the
 * scalar kernels.
 *
 * A weight row is decoded once (values as bytes, scales as ints) for all the batch's lane groups. */
#include "mtp.h"

#if defined(MTP_X86)
#include <immintrin.h>

#include "q6k_x86.h"

#define LANES_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define LANES_INLINE LANES_TARGET __attribute__((always_inline)) static inline

/* ---- the batch as lane groups (mtp.h's mtp_qlanes_fn): xl byte 4 * (16 * c + l) + i is quant 4c + i
 * of lane l's token; then per block of the type's quantization the lanes' scales (dl); for 256-blocks
 * then, per 32 values j, the lanes' two 16-value sums as an int16 pair (xs). Lanes past count: x = 0. */
LANES_TARGET static void build_lanes(const int8_t *q, const float *d, const int16_t *s, int64_t t0, int count, int64_t k,
                                     int block, uint8_t *xl) {
    const int64_t quads = k / 4, nb = k / block;
    float *dl = (float *)(xl + 16 * k);
    uint32_t *xs = (uint32_t *)(dl + 16 * nb);
    for (int l = 0; l < 16; l++) {
        uint32_t *dst = (uint32_t *)xl + l;
        const int live = l < count;
        const int64_t t = t0 + (live ? l : 0);  /* a dead lane points at no token past the batch */
        const uint32_t *src = (const uint32_t *)(q + t * k);
        for (int64_t c = 0; c < quads; c++)
            dst[16 * c] = (live ? src[c] : 0) ^ 0x80808080u;  /* x + 128 */
        for (int64_t b = 0; b < nb; b++)
            dl[16 * b + l] = live ? d[t * nb + b] : 0.0f;
        for (int64_t j = 0; block == 256 && j < k / 32; j++) {
            const int16_t *pair = s + t * (k / 16) + 2 * j;
            xs[16 * j + l] = live ? (uint16_t)pair[0] | (uint32_t)(uint16_t)pair[1] << 16 : 0;
        }
    }
}

LANES_TARGET static void lanes_q8_0(const int8_t *q, const float *d, const int16_t *s, int64_t t0, int count, int64_t k, uint8_t *xl) {
    build_lanes(q, d, s, t0, count, k, 32, xl);
}

LANES_TARGET static void lanes_kquant(const int8_t *q, const float *d, const int16_t *s, int64_t t0, int count, int64_t k, uint8_t *xl) {
    build_lanes(q, d, s, t0, count, k, 256, xl);
}

LANES_INLINE float half_at(const uint8_t *p) { return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8)); }

LANES_INLINE int32_t quad_at(const uint8_t *p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

/* Results of R rows for one lane group into out (tokens t0.., count of them) */
LANES_INLINE void scatter(const __m512 *acc, int R, int64_t count, float *out, int64_t ldo) {
    float v[2][16];
    for (int r = 0; r < R; r++)
        _mm512_storeu_ps(v[r], acc[r]);
    for (int64_t l = 0; l < count; l++)
        for (int r = 0; r < R; r++)
            out[l * ldo + r] = v[r][l];
}

/* MTP_QGEMM_ROWS weight rows are decoded at a time (in `work`: mtp.h's MTP_QGEMM_WORK(k) bytes), each to
 * v, one byte per value, and its scales: Q8_0, sc: per 32 values what the tokens' offset of 128 adds
 * (128 * the sum of the weights), d the block scale; Q4_K / Q5_K, sc_j per 32 values, Q6_K sc_g per
 * 16; pair, per 32 values, Q4_K / Q5_K (mn_j, mn_j), Q6_K (sc_2j, sc_2j+1) as int16 pairs; per 256:
 * corr, 128 * sum sc * (the sum of its values), what the offset adds; d, dmin. */
typedef struct {
    uint8_t *v;
    int32_t *sc, *pair, *corr;
    float *d, *dmin;
} decoded_row;

static decoded_row decoded_at(void *work, int64_t k, int r) {
    uint8_t *base = (uint8_t *)work + (size_t)r * MTP_QGEMM_WORK(k) / MTP_QGEMM_ROWS;
    decoded_row row = {base, (int32_t *)(base + k), NULL, NULL, NULL, NULL};
    row.pair = row.sc + k / 16;
    row.corr = row.pair + k / 32;
    row.d = (float *)(row.corr + k / 256);
    row.dmin = row.d + k / 32;
    return row;
}

/* ---- Q8_0 */

/* 128 * the sum of a block's 32 signed weights: sad_epu8 sums the weights plus 128 as unsigned bytes */
LANES_INLINE int32_t q8_0_offset(const uint8_t *blk) {
    __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), _mm256_set1_epi8((char)0x80));
    __m256i s = _mm256_sad_epu8(u, _mm256_setzero_si256());
    __m128i h = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    return 128 * ((int32_t)(_mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1)) - 32 * 128);
}

LANES_TARGET static void decode_q8_0(const uint8_t *b, int64_t k, const decoded_row *row) {
    for (int64_t i = 0; i < k / 32; i++, b += 34) {
        __builtin_memcpy(row->v + 32 * i, b + 2, 32);
        row->sc[i] = q8_0_offset(b);
        row->d[i] = half_at(b);
    }
}

/* R (1 or 2) decoded rows against one lane group: mtp.h's lane sums L_c, then its tree */
LANES_INLINE void q8_0_rows(const decoded_row *rows, int R, const uint8_t *xl, int64_t k, __m512 *out) {
    const int64_t nb = k / 32, padded = (nb + 7) / 8 * 8;
    const float *dl = (const float *)(xl + 16 * k);
    __m512 L[2][8];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 8; c++)
            L[r][c] = _mm512_setzero_ps();
    for (int64_t g = 0; g < padded; g += 8) {
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++) {  /* block g + c into lane sums c */
            const int64_t b = g + c;
            if (b >= nb) {  /* mtp.h pads with t = 0 */
                for (int r = 0; r < R; r++)
                    L[r][c] = _mm512_add_ps(L[r][c], _mm512_setzero_ps());
                continue;
            }
            __m512i acc[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                const __m512i xv = _mm512_loadu_si512((const void *)(xl + 512 * b + 64 * i));
                for (int r = 0; r < R; r++)
                    acc[r] = _mm512_dpbusd_epi32(acc[r], xv, _mm512_set1_epi32(quad_at(rows[r].v + 32 * b + 4 * i)));
            }
            const __m512 dx = _mm512_loadu_ps(dl + 16 * b);
            for (int r = 0; r < R; r++) {
                const __m512i isum = _mm512_sub_epi32(acc[r], _mm512_set1_epi32(rows[r].sc[b]));
                L[r][c] = _mm512_add_ps(L[r][c], _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(rows[r].d[b]), dx), _mm512_cvtepi32_ps(isum)));
            }
        }
    }
    for (int r = 0; r < R; r++)
        out[r] = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(L[r][0], L[r][4]), _mm512_add_ps(L[r][2], L[r][6])),
                               _mm512_add_ps(_mm512_add_ps(L[r][1], L[r][5]), _mm512_add_ps(L[r][3], L[r][7])));
}

/* ---- K-quants */

/* 128 * the sum over a 256-block's scales of sc * (the sum of its `span` values) */
LANES_INLINE int32_t scaled_offset(const uint8_t *v, const int32_t *sc, int span) {
    int32_t total = 0;
    for (int c = 0; c < 8; c++) {  /* 32 values: sad_epu8 sums each 8 */
        const __m256i s = _mm256_sad_epu8(_mm256_loadu_si256((const __m256i *)(v + 32 * c)), _mm256_setzero_si256());
        int64_t e[4];
        _mm256_storeu_si256((__m256i *)e, s);
        if (span == 32)
            total += sc[c] * (int32_t)(e[0] + e[1] + e[2] + e[3]);
        else
            total += sc[2 * c] * (int32_t)(e[0] + e[1]) + sc[2 * c + 1] * (int32_t)(e[2] + e[3]);
    }
    return 128 * total;
}

LANES_TARGET static void decode_k45(const uint8_t *b, int q5, int64_t k, const decoded_row *row) {
    uint8_t *v = row->v;
    for (int64_t i = 0; i < k / 256; i++, b += q5 ? 176 : 144, v += 256) {
        for (int j = 0; j < 8; j++) {
            int s, m;
            mtp_kquant_scale_min(b + 4, j, &s, &m);
            row->sc[8 * i + j] = s;
            row->pair[8 * i + j] = m | m << 16;
        }
        row->d[i] = half_at(b);
        row->dmin[i] = half_at(b + 2);
        const uint8_t *qs = b + (q5 ? 48 : 16);
        const __m256i hb = q5 ? _mm256_loadu_si256((const __m256i *)(b + 16)) : _mm256_setzero_si256();
        for (int p = 0; p < 4; p++) {
            __m256i v0, v1;
            k45_pair(_mm256_loadu_si256((const __m256i *)(qs + 32 * p)), hb, p, q5, &v0, &v1);
            _mm256_storeu_si256((__m256i *)(v + 64 * p), v0);
            _mm256_storeu_si256((__m256i *)(v + 64 * p + 32), v1);
        }
        row->corr[i] = scaled_offset(v, row->sc + 8 * i, 32);
    }
}

LANES_TARGET static void decode_q6_k(const uint8_t *b, int64_t k, const decoded_row *row) {
    const __m256i nib = _mm256_set1_epi8(0xf), top = _mm256_set1_epi8(0x30), zero = _mm256_setzero_si256();
    uint8_t *v = row->v;
    for (int64_t i = 0; i < k / 256; i++, b += 210, v += 256) {
        const int8_t *s = (const int8_t *)(b + 192);
        for (int g = 0; g < 16; g++)
            row->sc[16 * i + g] = s[g];
        for (int j = 0; j < 8; j++)
            row->pair[8 * i + j] = (uint16_t)(int16_t)s[2 * j] | (uint32_t)(uint16_t)(int16_t)s[2 * j + 1] << 16;
        row->d[i] = half_at(b + 208);
        for (int h = 0; h < 2; h++) {
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
            for (int g = 0; g < 4; g++)  /* the quants q, 0..63 (q6_k_group less no offset) */
                _mm256_storeu_si256((__m256i *)(v + 128 * h + 32 * g), q6_k_group(b, h, g, qh, nib, top, zero));
        }
        row->corr[i] = scaled_offset(v, row->sc + 16 * i, 16);
    }
}

/* t_i summed in order from 0, for R decoded rows against one lane group: per scale, its values (each
 * lane quad loaded once for the rows) times the tokens plus 128, times the scale; less corr */
LANES_INLINE void kquant_rows(const decoded_row *rows, int R, int q6, const uint8_t *xl, int64_t k, __m512 *out) {
    const float *dl = (const float *)(xl + 16 * k);
    const __m512i *xs = (const __m512i *)(dl + 16 * (k / 256));
    const int scales = q6 ? 16 : 8, quads = q6 ? 4 : 8;
    for (int r = 0; r < R; r++)
        out[r] = _mm512_setzero_ps();
    for (int64_t i = 0; i < k / 256; i++) {
        __m512i isum[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
        for (int g = 0; g < scales; g++) {
            __m512i acc[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
            const int64_t c0 = 64 * i + quads * g;
#pragma GCC unroll 8
            for (int c = 0; c < quads; c++) {
                const __m512i xv = _mm512_loadu_si512((const void *)(xl + 64 * (c0 + c)));
                for (int r = 0; r < R; r++)
                    acc[r] = _mm512_dpbusd_epi32(acc[r], xv, _mm512_set1_epi32(quad_at(rows[r].v + 4 * (c0 + c))));
            }
            for (int r = 0; r < R; r++)
                isum[r] = _mm512_add_epi32(isum[r], _mm512_mullo_epi32(acc[r], _mm512_set1_epi32(rows[r].sc[scales * i + g])));
        }
        const __m512 dx = _mm512_loadu_ps(dl + 16 * i);
        for (int r = 0; r < R; r++) {
            const decoded_row *row = &rows[r];
            __m512i second = _mm512_setzero_si512();  /* Q4_K / Q5_K: sum_j mn_j * xsum_j; Q6_K: sum_g sc_g * xsum_g */
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                second = _mm512_dpwssd_epi32(second, _mm512_loadu_si512((const void *)(xs + 8 * i + j)), _mm512_set1_epi32(row->pair[8 * i + j]));
            const __m512i body = _mm512_sub_epi32(isum[r], _mm512_set1_epi32(row->corr[i]));
            if (q6) {  /* quants q - 32 */
                const __m512i is = _mm512_sub_epi32(body, _mm512_slli_epi32(second, 5));
                out[r] = _mm512_add_ps(out[r], _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(row->d[i]), dx), _mm512_cvtepi32_ps(is)));
            } else {
                const __m512 t = _mm512_sub_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(row->d[i]), dx), _mm512_cvtepi32_ps(body)),
                                               _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(row->dmin[i]), dx), _mm512_cvtepi32_ps(second)));
                out[r] = _mm512_add_ps(out[r], t);
            }
        }
    }
}

LANES_INLINE void gemm_lanes(int type, const uint8_t *w, int64_t rb, int64_t nr, const uint8_t *lanes, int64_t group_bytes,
                              int64_t n, int64_t k, float *out, int64_t ldo, void *work) {
    decoded_row dec[MTP_QGEMM_ROWS];
    for (int r = 0; r < MTP_QGEMM_ROWS; r++)
        dec[r] = decoded_at(work, k, r);
    for (int64_t r0 = 0; r0 < nr; r0 += MTP_QGEMM_ROWS) {
        const int rows = nr - r0 < MTP_QGEMM_ROWS ? (int)(nr - r0) : MTP_QGEMM_ROWS;
        for (int r = 0; r < rows; r++) {
            const uint8_t *b = w + (r0 + r) * rb;
            if (type == T_Q8_0)
                decode_q8_0(b, k, &dec[r]);
            else if (type == T_Q6_K)
                decode_q6_k(b, k, &dec[r]);
            else
                decode_k45(b, type == T_Q5_K, k, &dec[r]);
        }
        const uint8_t *xl = lanes;
        for (int64_t t0 = 0; t0 < n; t0 += 16, xl += group_bytes) {
            const int64_t count = n - t0 < 16 ? n - t0 : 16;
            for (int r = 0; r < rows;) {
                const int R = rows - r >= 2 ? 2 : 1;
                __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
                if (type == T_Q8_0)
                    q8_0_rows(dec + r, R, xl, k, acc);
                else
                    kquant_rows(dec + r, R, type == T_Q6_K, xl, k, acc);
                scatter(acc, R, count, out + t0 * ldo + r0 + r, ldo);
                r += R;
            }
        }
    }
}

/* mtp_qgemm_fn for one type */
#define GEMM_OF(name, type)                                                                                      \
    LANES_TARGET static void name(const void *w, int64_t rb, int64_t nr, const uint8_t *lanes, int64_t group_bytes, \
                                  int64_t n, int64_t k, float *out, int64_t ldo, void *work) {                  \
        gemm_lanes(type, w, rb, nr, lanes, group_bytes, n, k, out, ldo, work);                                  \
    }
GEMM_OF(gemm_q8_0, T_Q8_0)
GEMM_OF(gemm_q4_k, T_Q4_K)
GEMM_OF(gemm_q5_k, T_Q5_K)
GEMM_OF(gemm_q6_k, T_Q6_K)

void mtp_q8_lanes_vnni(mtp_kernels *kt) {
    kt->qlanes[T_Q8_0] = lanes_q8_0;
    kt->qgemm[T_Q8_0] = gemm_q8_0;
    kt->qlanes[T_Q4_K] = kt->qlanes[T_Q5_K] = kt->qlanes[T_Q6_K] = lanes_kquant;
    kt->qgemm[T_Q4_K] = gemm_q4_k;
    kt->qgemm[T_Q5_K] = gemm_q5_k;
    kt->qgemm[T_Q6_K] = gemm_q6_k;
}

#else
void mtp_q8_lanes_vnni(mtp_kernels *kt) { (void)kt; }
#endif
