/* Every kernel a SIMD level puts in mtp_k against the scalar level's, bit for bit (memcmp), on
 * random blocks and activations: tests/test_cpu_neon.py builds this with the library's sources for
 * aarch64 and runs it under qemu-aarch64 on CPUs with and without SDOT. A fused vdot (none at the
 * scalar level) is checked against the scalar path it replaces: dequant + dotn, or split + kdot;
 * then the matrix products (matmul.c) with each level's whole table, as the backend runs them.
 * Prints one line per kernel; exits 1 on any mismatch. Usage: neon_check [level ...] (default 1 2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtp.h"

int mtp_set_simd(int level);
const char *mtp_simd_name(void);

static uint64_t seed = 0x9e3779b97f4a7c15u;

static uint32_t next(void) {  /* xorshift64* */
    seed ^= seed >> 12;
    seed ^= seed << 25;
    seed ^= seed >> 27;
    return (uint32_t)((seed * 0x2545f4914f6cdd1du) >> 32);
}

/* uniform in (-1, 1) times 2^-6 .. 2^3; about one value in 64 an exact zero or -0 */
static float frand(void) {
    if (next() % 64 == 0)
        return next() % 2 ? 0.0f : -0.0f;
    return ((float)(next() >> 8) / 8388608.0f - 1.0f) * (float)(1u << (next() % 10)) / 64.0f;
}

/* a finite half below 2 of either sign, subnormals included (exponent field 0) */
static uint16_t hrand(void) { return (uint16_t)((next() & 0x8000) | (next() % 16) << 10 | (next() & 0x3ff)); }

static void fill_floats(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = frand();
}

/* n rows of k values of a weight type: random bytes, with every f16 field a finite half */
static void fill_weights(int type, uint8_t *w, int64_t n, int64_t k) {
    const int64_t bytes = n * mtp_row_bytes(type, k);
    for (int64_t i = 0; i < bytes; i++)
        w[i] = (uint8_t)next();
    if (type == T_BF16) {
        for (int64_t i = 0; i < n * k; i++) {
            float f = frand();
            uint32_t u;
            memcpy(&u, &f, 4);
            w[2 * i] = (uint8_t)(u >> 16), w[2 * i + 1] = (uint8_t)(u >> 24);
        }
        return;
    }
    int block = 1, fields[2] = {0, -1};
    switch (type) {
    case T_F16: break;
    case T_Q4_0: case T_Q5_0: case T_Q8_0: block = 32; break;
    case T_Q4_1: case T_Q5_1: block = 32, fields[1] = 2; break;
    case T_Q4_K: case T_Q5_K: block = 256, fields[1] = 2; break;
    case T_Q6_K: block = 256, fields[0] = 208; break;
    default: return;  /* F32: the bytes are never read as floats here */
    }
    const int64_t bb = mtp_row_bytes(type, block);
    for (int64_t b = 0; b < bytes / bb; b++)
        for (int f = 0; f < 2 && fields[f] >= 0; f++) {
            uint16_t h = hrand();
            memcpy(w + b * bb + fields[f], &h, 2);
        }
}

static mtp_kernels S, N;  /* the scalar table, the level's */
static int failures, checked;

static const char *type_name(int type) {
    switch (type) {
    case T_F32: return "f32";
    case T_F16: return "f16";
    case T_BF16: return "bf16";
    case T_Q4_0: return "q4_0";
    case T_Q4_1: return "q4_1";
    case T_Q5_0: return "q5_0";
    case T_Q5_1: return "q5_1";
    case T_Q8_0: return "q8_0";
    case T_Q4_K: return "q4_k";
    case T_Q5_K: return "q5_k";
    case T_Q6_K: return "q6_k";
    default: return "?";
    }
}
static const int TYPES[] = {T_F32, T_F16, T_BF16, T_Q4_0, T_Q4_1, T_Q5_0, T_Q5_1, T_Q8_0, T_Q4_K, T_Q5_K, T_Q6_K};
#define NTYPES (int)(sizeof TYPES / sizeof TYPES[0])

/* One kernel's result: the first differing float of a case, or a count of the cases that agree. */
typedef struct {
    const char *kernel;
    int cases, bad;
    char first[160];
} report;

static void compare(report *r, const void *want, const void *got, size_t bytes, const char *what) {
    r->cases++;
    if (memcmp(want, got, bytes) == 0)
        return;
    if (!r->bad++) {
        size_t i = 0;
        while (((const uint8_t *)want)[i] == ((const uint8_t *)got)[i])
            i++;
        i /= 4;
        float a, b;
        memcpy(&a, (const uint8_t *)want + 4 * i, 4);
        memcpy(&b, (const uint8_t *)got + 4 * i, 4);
        snprintf(r->first, sizeof r->first, "%s, word %zu: scalar %.9g (%08x), simd %.9g (%08x)", what, i, a,
                 *(const uint32_t *)((const uint8_t *)want + 4 * i), b, *(const uint32_t *)((const uint8_t *)got + 4 * i));
    }
}

static void finish(report *r, const char *name) {
    checked++;
    if (r->bad) {
        failures++;
        printf("  %-18s MISMATCH in %d of %d cases; first: %s\n", name, r->bad, r->cases, r->first);
    } else {
        printf("  %-18s ok (%d cases)\n", name, r->cases);
    }
}

static void skipped(const char *name) { printf("  %-18s scalar (no SIMD twin at this level)\n", name); }

/* buffers big enough for every case below */
#define MAXK 1088
#define MAXR 17
static uint8_t W[MAXR * MAXK * 4];
static float X[4 * (MAXK + 8)], XS[4 * (MAXK / 32 + 2)], A[MAXR * (MAXK + 64)], B[MAXR * (MAXK + 64)];
static float OA[4 * (MAXR + 3)], OB[4 * (MAXR + 3)];

static void check_dequant(int type) {
    char name[32];
    snprintf(name, sizeof name, "dequant %s", type_name(type));
    if (N.dequant[type] == S.dequant[type]) {
        skipped(name);
        return;
    }
    report r = {0};
    const int64_t ks[] = {256, 768, 255, 5};  /* the odd k for f16 / bf16's tails only */
    for (int c = 0; c < 4; c++) {
        const int64_t k = ks[c];
        if (mtp_row_bytes(type, k) * 256 != mtp_row_bytes(type, 256) * k)
            continue;
        fill_weights(type, W, 3, k);
        for (int row = 0; row < 3; row++) {
            const uint8_t *src = W + row * mtp_row_bytes(type, k);
            S.dequant[type](src, A, k);
            N.dequant[type](src, B, k);
            char what[48];
            snprintf(what, sizeof what, "k=%lld row %d", (long long)k, row);
            compare(&r, A, B, (size_t)k * 4, what);
        }
    }
    finish(&r, name);
}

static const int64_t DOT_K[] = {1, 2, 3, 4, 5, 7, 8, 31, 32, 33, 63, 64, 65, 255, 256, 1000, 1027};
#define NDOTK (int)(sizeof DOT_K / sizeof DOT_K[0])

static void check_dot(void) {
    if (N.dot == S.dot) {
        skipped("dot");
        return;
    }
    report r = {0};
    for (int c = 0; c < NDOTK; c++) {
        fill_floats(A, DOT_K[c]);
        fill_floats(X, DOT_K[c]);
        const float a = S.dot(A, X, DOT_K[c]), b = N.dot(A, X, DOT_K[c]);
        char what[32];
        snprintf(what, sizeof what, "k=%lld", (long long)DOT_K[c]);
        compare(&r, &a, &b, 4, what);
    }
    finish(&r, "dot");
}

static void check_dotn(void) {
    if (N.dotn == S.dotn) {
        skipped("dotn");
        return;
    }
    report r = {0};
    for (int c = 0; c < NDOTK; c++)
        for (int nt = 1; nt <= 4; nt++) {
            const int64_t k = DOT_K[c], ldx = k + 3, ldo = 2;
            fill_floats(A, k);
            fill_floats(X, nt * ldx);
            memset(OA, 0, sizeof OA), memset(OB, 0, sizeof OB);
            S.dotn(A, X, ldx, nt, k, OA, ldo);
            N.dotn(A, X, ldx, nt, k, OB, ldo);
            char what[32];
            snprintf(what, sizeof what, "k=%lld nt=%d", (long long)k, nt);
            compare(&r, OA, OB, sizeof OA, what);
        }
    finish(&r, "dotn");
}

static void check_sums(void) {
    if (N.sums == S.sums) {
        skipped("sums");
        return;
    }
    report r = {0};
    fill_floats(X, MAXK);
    S.sums(X, MAXK, A);
    N.sums(X, MAXK, B);
    compare(&r, A, B, MAXK / 32 * 4, "k=1088");
    finish(&r, "sums");
}

static void check_split(void) {
    if (N.split == S.split) {
        skipped("split");
        return;
    }
    report r = {0};
    for (int type = T_Q4_K; type <= T_Q5_K; type++)
        for (int64_t k = 256; k <= 768; k += 512) {
            fill_weights(type, W, 1, k);
            S.split(type, W, A, A + k, k);
            N.split(type, W, B, B + k, k);
            char what[32];
            snprintf(what, sizeof what, "%s k=%lld", type_name(type), (long long)k);
            compare(&r, A, B, (size_t)(k + k / 16) * 4, what);
        }
    finish(&r, "split");
}

static void check_kdot(void) {
    if (N.kdot == S.kdot) {
        skipped("kdot");
        return;
    }
    report r = {0};
    for (int64_t k = 256; k <= 768; k += 512)
        for (int nt = 1; nt <= 4; nt++) {
            const int64_t ldx = k + 5, ldX = k / 32 + 1, ldo = 3;
            fill_weights(T_Q5_K, W, 1, k);
            S.split(T_Q5_K, W, A, A + k, k);
            fill_floats(X, nt * ldx);
            for (int t = 0; t < nt; t++)
                S.sums(X + t * ldx, k, XS + t * ldX);
            memset(OA, 0, sizeof OA), memset(OB, 0, sizeof OB);
            S.kdot(A, A + k, X, ldx, XS, ldX, nt, k, OA, ldo);
            N.kdot(A, A + k, X, ldx, XS, ldX, nt, k, OB, ldo);
            char what[32];
            snprintf(what, sizeof what, "k=%lld nt=%d", (long long)k, nt);
            compare(&r, OA, OB, sizeof OA, what);
        }
    finish(&r, "kdot");
}

/* The scalar level's product of nr rows and nt tokens: its dequant + dotn, or split + kdot */
static void scalar_rows(int type, const uint8_t *w, int64_t nr, const float *x, int64_t ldx, const float *Xs, int64_t ldX,
                        int nt, int64_t k, float *out, int64_t ldo) {
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *src = w + r * mtp_row_bytes(type, k);
        if (MTP_FACTORED(type)) {
            S.split(type, src, A, A + k, k);
            S.kdot(A, A + k, x, ldx, Xs, ldX, nt, k, out + r, ldo);
        } else {
            S.dequant[type](src, A, k);
            S.dotn(A, x, ldx, nt, k, out + r, ldo);
        }
    }
}

static const int64_t ROWS[] = {1, 2, 3, 5, 7, 17};

static void check_vdot(int type) {
    char name[32];
    snprintf(name, sizeof name, "vdot %s", type_name(type));
    if (!N.vdot[type]) {
        printf("  %-18s none (dequant + dotn)\n", name);
        return;
    }
    report r = {0};
    const int block = type == T_Q8_0 ? 32 : 256;
    const int64_t ks[] = {block, 3 * block, type == T_Q8_0 ? 416 : 1024};
    for (int c = 0; c < 3; c++)
        for (int ri = 0; ri < (int)(sizeof ROWS / sizeof ROWS[0]); ri++)
            for (int nt = 1; nt <= 4; nt++) {
                const int64_t k = ks[c], nr = ROWS[ri], ldx = k + 8, ldX = k / 32 + 2, ldo = nr + 3;
                fill_weights(type, W, nr, k);
                fill_floats(X, nt * ldx);
                for (int t = 0; t < nt; t++)
                    S.sums(X + t * ldx, k, XS + t * ldX);
                memset(OA, 0, sizeof OA), memset(OB, 0, sizeof OB);
                scalar_rows(type, W, nr, X, ldx, XS, ldX, nt, k, OA, ldo);
                N.vdot[type](W, mtp_row_bytes(type, k), nr, X, ldx, MTP_FACTORED(type) ? XS : NULL, ldX, nt, k, OB, ldo);
                char what[48];
                snprintf(what, sizeof what, "k=%lld rows=%lld nt=%d", (long long)k, (long long)nr, nt);
                compare(&r, OA, OB, sizeof OA, what);
            }
    finish(&r, name);
}

static int8_t QA[4 * MAXK], QB[4 * MAXK];
static float DA[4 * MAXK / 32], DB[4 * MAXK / 32];
static int16_t SA[4 * MAXK / 16], SB[4 * MAXK / 16];

static void check_quant(void) {
    if (N.quant == S.quant) {
        skipped("quant");
        return;
    }
    report r = {0};
    const int64_t ks[] = {32, 96, 256, 1024};
    for (int c = 0; c < 4; c++)
        for (int block = 32; block <= 256; block *= 8) {
            const int64_t k = ks[c];
            if (k % block)
                continue;
            fill_floats(X, k);
            memcpy(X, (const float[]){127.0f, 63.5f, -0.5f, 1.5f, 2.5f}, 5 * 4);  /* amax 127: ties, to even */
            memset(X + k - 32, 0, 32 * 4);  /* an all-zero block: amax 0 */
            memset(SA, 0, sizeof SA), memset(SB, 0, sizeof SB);
            S.quant(X, k, block, QA, DA, SA);
            N.quant(X, k, block, QB, DB, SB);
            char what[48];
            snprintf(what, sizeof what, "block=%d k=%lld", block, (long long)k);
            compare(&r, QA, QB, (size_t)k, what);
            compare(&r, DA, DB, (size_t)(k / block) * 4, what);
            compare(&r, SA, SB, sizeof SA, what);
        }
    finish(&r, "quant");
}

static void check_qdot(int type) {
    char name[32];
    snprintf(name, sizeof name, "qdot %s", type_name(type));
    if (!S.qdot[type])
        return;
    if (N.qdot[type] == S.qdot[type]) {
        skipped(name);
        return;
    }
    report r = {0};
    const int block = MTP_Q8_BLOCK(type);
    /* Q8_0: 1, 3, 8, 13 and 34 blocks, so both full and padded groups of eight */
    const int64_t ks[] = {block, 3 * block, block == 32 ? 256 : 1024, block == 32 ? 416 : 512, block == 32 ? 1088 : 768};
    for (int c = 0; c < 5; c++)
        for (int ri = 0; ri < (int)(sizeof ROWS / sizeof ROWS[0]); ri++)
            for (int nt = 1; nt <= 4; nt++) {
                const int64_t k = ks[c], nr = ROWS[ri], ldo = nr + 3;
                fill_weights(type, W, nr, k);
                for (int t = 0; t < nt; t++) {
                    fill_floats(X, k);
                    S.quant(X, k, block, QA + t * k, DA + t * (k / block), SA + t * (k / 16));
                }
                memset(OA, 0, sizeof OA), memset(OB, 0, sizeof OB);
                S.qdot[type](W, mtp_row_bytes(type, k), nr, QA, DA, SA, nt, k, OA, ldo);
                N.qdot[type](W, mtp_row_bytes(type, k), nr, QA, DA, SA, nt, k, OB, ldo);
                char what[48];
                snprintf(what, sizeof what, "k=%lld rows=%lld nt=%d", (long long)k, (long long)nr, nt);
                compare(&r, OA, OB, sizeof OA, what);
            }
    finish(&r, name);
}

/* The matrix products as the backend runs them (matmul.c: fused kernels up to 8 tokens, decoded
 * tiles above; float32 or int8 activations), the whole table at each level */
#define MM_ROWS 19
#define MM_N 12
static float MX[MM_N * (768 + 4)], MA[MM_N * (MM_ROWS + 1)], MB[MM_N * (MM_ROWS + 1)];

static void check_matmul(mtp_pool *pool, int type, int act) {
    static const char *ACT[] = {"f32", "q8", "q8x2"};
    char name[32];
    snprintf(name, sizeof name, "matmul %s %s", type_name(type), ACT[act]);
    if (act != MTP_ACT_F32 && !S.qdot[type])
        return;
    report r = {0};
    const int block = type == T_Q4_K || type == T_Q5_K || type == T_Q6_K ? 256 : mtp_row_bytes(type, 1) > 0 ? 1 : 32;
    const int64_t k = block == 256 ? 768 : block == 1 ? 419 : 416;  /* 419: the float rows' tails */
    const int64_t ldx = k + 4, ldo = MM_ROWS + 1, ns[] = {1, 2, 3, 4, 5, 8, 9, 12};
    for (int c = 0; c < (int)(sizeof ns / sizeof ns[0]); c++) {
        fill_weights(type, W, MM_ROWS, k);
        if (type == T_F32)
            fill_floats((float *)W, MM_ROWS * k);
        fill_floats(MX, ns[c] * ldx);
        memset(MA, 0, sizeof MA), memset(MB, 0, sizeof MB);
        mtp_k = S;
        mtp_matmul_rows(pool, act, 0, 1, W, type, MM_ROWS, k, MX, ns[c], ldx, MA, ldo);
        mtp_k = N;
        mtp_matmul_rows(pool, act, 0, 1, W, type, MM_ROWS, k, MX, ns[c], ldx, MB, ldo);
        char what[32];
        snprintf(what, sizeof what, "n=%lld", (long long)ns[c]);
        compare(&r, MA, MB, sizeof MA, what);
    }
    finish(&r, name);
}

int main(int argc, char **argv) {
    int levels[8] = {1, 2}, nlevels = 2;
    if (argc > 1) {
        nlevels = 0;
        for (int i = 1; i < argc && nlevels < 8; i++)
            levels[nlevels++] = atoi(argv[i]);
    }
    mtp_pool *pool = mtp_pool_create(1);
    mtp_set_simd(0);
    S = mtp_k;
    for (int l = 0; l < nlevels; l++) {
        const int got = mtp_set_simd(levels[l]);
        printf("level %d: %s\n", levels[l], mtp_simd_name());
        if (got != levels[l]) {
            printf("  not available on this CPU\n");
            continue;
        }
        N = mtp_k;
        for (int i = 0; i < NTYPES; i++)
            check_dequant(TYPES[i]);
        check_dot();
        check_dotn();
        check_sums();
        check_split();
        check_kdot();
        for (int i = 0; i < NTYPES; i++)
            if (TYPES[i] != T_F32)
                check_vdot(TYPES[i]);
        check_quant();
        for (int i = 0; i < NTYPES; i++)
            check_qdot(TYPES[i]);
        for (int act = MTP_ACT_F32; act <= MTP_ACT_Q8X2; act++)
            for (int i = 0; i < NTYPES; i++)
                check_matmul(pool, TYPES[i], act);
    }
    mtp_pool_free(pool);
    printf("%d kernel checks, %d mismatched\n", checked, failures);
    return failures ? 1 : 0;
}
