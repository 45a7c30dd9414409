/* mtprun's native CPU backend: the step-graph interpreter's data layout and the kernels it shares.
 *
 * native/cpu_backend.py mirrors mtp_node and mtp_state with ctypes (it checks their sizes through
 * mtp_node_size / mtp_state_size), compiles a Graph into an mtp_node array once, and runs it with
 * one mtp_run call. Activations are float32 (i32 for integer inputs); weights stay in ggml blocks.
 */
#ifndef MTP_H
#define MTP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Op codes; the names (mtp_op_name) match runner.graph.OPS, and Python maps them by name. */
enum {
    OP_INPUT, OP_WEIGHT, OP_GET_ROWS, OP_MATMUL, OP_RMS_NORM, OP_L2_NORM, OP_ADD, OP_MUL, OP_SCALE,
    OP_SIGMOID, OP_SILU, OP_SOFTPLUS, OP_RESHAPE, OP_SLICE, OP_CONCAT, OP_TAKE_ROWS, OP_ROPE,
    OP_ATTENTION, OP_SSM_CONV, OP_DELTA_NET, OP_MOE, OP_KV_WRITE, OP_ARGMAX, OP_CAT_ROWS, OP_COUNT
};

/* ggml type ids (ggml.h's enum ggml_type) of the weight formats read here. */
enum {
    T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8,
    T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_BF16 = 30, T_COUNT = 40
};

#define MTP_MAX_IN 5

typedef struct {
    int32_t op, type, n_in, ndim;  /* type: ggml type of `data` (F32 for every activation) */
    int32_t in[MTP_MAX_IN];        /* input node indices */
    int32_t state;                 /* index into the state array, or -1 */
    int64_t ne[4];                 /* shape, NumPy order (ne[0] is the row axis) */
    int64_t nelem;
    void *data;                    /* activation buffer, weight blocks, or the input's buffer (reshape) */
    void *aux;                     /* op scratch shared by the threads (moe), or take_rows' indices */
    int64_t ia[8];                 /* integer attributes (see graph.c per op) */
    double fa[2];                  /* float attributes */
    int64_t sa[4], sb[4];          /* add / mul: element strides of inputs a, b over the 4-D output */
} mtp_node;

/* A named cache. kv: k, v of [n_ctx, ...]. recurrent: m + 1 buffers of `size` floats, one of them
 * (`committed`) the committed state, the others the snapshots after the last run's final tokens. */
typedef struct {
    float *k, *v;
    int64_t n_ctx;
    float *bufs;
    float *work;       /* a recurrence's running state during a run */
    int64_t size;
    int32_t m, committed, last_n, pad;
} mtp_state;

/* ---- thread pool (threads.c) */
#include <stdatomic.h>
typedef struct mtp_pool mtp_pool;
typedef void (*mtp_task)(void *arg, int ith, int nth);
mtp_pool *mtp_pool_create(int n_threads);
void mtp_pool_free(mtp_pool *p);
int mtp_pool_size(const mtp_pool *p);
void mtp_pool_quiesce(mtp_pool *p);  /* wait until no worker is inside a task; none enters until the next run */
/* fn on every thread, the caller included; returns when the caller's fn does, so fn must make the
 * caller wait for the work itself. `arg` must stay valid until the next quiesce. */
void mtp_pool_run(mtp_pool *p, mtp_task fn, void *arg);
void mtp_wait_above(mtp_pool *p, atomic_int *v, int value);  /* until *v > value: spin, then sleep */
void mtp_publish(mtp_pool *p, atomic_int *v, int value);     /* *v = value, waking the waiters */
void *mtp_scratch(mtp_pool *p, size_t bytes);              /* the calling thread's buffer, grown on demand */
uint64_t mtp_pool_read_sum(mtp_pool *p, const void *buf, int64_t nbytes);  /* bandwidth.c: all threads read buf */

/* ---- one graph run, as the ops see it */
typedef struct {
    mtp_node *nodes;
    mtp_state *states;
    mtp_pool *pool;
    int act;             /* the matrix products' activations: MTP_ACT_* (mtp_set_activations) */
    volatile int error;  /* nonzero op error code; checked after the run */
} mtp_job;

enum { MTP_OK = 0, MTP_ERR_POS = 1, MTP_ERR_TYPE = 2, MTP_ERR_ID = 3, MTP_ERR_MEMORY = 4 };

/* An op runs as one or more phases (graph.c counts them); the threads split each phase into
 * `nparts` parts and take them as they come, so an op never waits inside itself. */
#define MTP_OP(name) void name(mtp_job *j, mtp_node *nd, int phase __attribute__((unused)), int part, int nparts)

/* ---- weight formats (quants.c, dispatched to the best SIMD variant at load)
 *
 * Products with Q4_K / Q5_K weights (MTP_FACTORED) use the scales factored out of the sums: per
 * 32-value sub-block j of a row, (d * sc_j) * sum(q * x) - (dmin * mn_j) * X_j, with X_j the sum of
 * the token's x over sub-block j (computed once per token per product). Every other type is
 * decode-then-dot. Each SIMD level computes a row's result one way, on every path (fused or tiled,
 * any batch size or thread count), so a row's bits never depend on its batch. */
#define MTP_FACTORED(type) ((type) == T_Q4_K || (type) == T_Q5_K)
typedef void (*mtp_dequant_fn)(const void *src, float *dst, int64_t k);
typedef float (*mtp_dot_fn)(const float *a, const float *b, int64_t k);
/* out[t * ldo] = dot(w, x + t * ldx) for t < nt (1..4), each bit-identical to dot */
typedef void (*mtp_dotn_fn)(const float *w, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo);
/* dotn for two rows, w and w + ldw: out[t * ldo + r], k a multiple of 32 */
typedef void (*mtp_dotn2_fn)(const float *w, int64_t ldw, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo);
/* nq (<= MTP_ATTEND_QUERIES) attention queries of one KV head (rows `row` floats apart, d values each):
 * out[c] = softmax(scale * K q[c]) V over positions 0..p[c]-1, with scores (nq rows of `width` >=
 * max p + 8 floats) as scratch. The queries share each key and value row as it is read; each query's
 * operations are its own, the same whatever other queries it is computed with. */
#define MTP_ATTEND_QUERIES 8
typedef void (*mtp_attend_fn)(const float *const *q, float *const *out, const int64_t *p, int nq, const float *k, const float *v,
                              int64_t row, int64_t d, float scale, float *scores, int64_t width);
/* X[b] = sum of x[32b .. 32b + 31], for b < k / 32 */
typedef void (*mtp_sums_fn)(const float *x, int64_t k, float *X);
typedef void (*mtp_split_fn)(int type, const void *src, float *q, float *sm, int64_t k);
/* A factored row (mtp_split_kquant's q and sm) against nt = 1..4 token rows with their sums X */
typedef void (*mtp_kdot_fn)(const float *q, const float *sm, const float *x, int64_t ldx, const float *X, int64_t ldX,
                            int nt, int64_t k, float *out, int64_t ldo);
/* out[t * ldo + r] = product of row r < nr (at w + r * row_bytes) with token t < nt (1..4), straight
 * from the blocks, bit-identical to dequant + dotn, or (MTP_FACTORED) to split + kdot; X, ldX: the
 * tokens' sums (factored only) */
typedef void (*mtp_vdot_fn)(const void *w, int64_t row_bytes, int64_t nr, const float *x, int64_t ldx, const float *X,
                            int64_t ldX, int nt, int64_t k, float *out, int64_t ldo);
/* ---- quantized activations (the backend's "q8" and "q8x2" modes, q8.c): each token row of x
 * becomes int8 blocks of MTP_Q8_BLOCK(type) values with a float scale, as ggml's q8_0 / q8_K (but
 * scales kept in f32). Per block: amax = max |x|, d = amax / 127, q = nearest-even(x * (127 / amax))
 * (0 where amax is 0). Per 16 values (256-blocks only) the int16 sum of q. n rows lie at q + t * k,
 * d + t * (k / block), s + t * (k / 16). q8x2 quantizes x - d * q (f32) the same way as a second
 * plane and adds its product to the first's (matmul.c).
 *
 * Products with int8 activations (mtp_qdot_fn): per weight block an int32 integer sum, exact, then
 * f32 arithmetic in one fixed order (never fused, so NumPy reproduces it bit for bit):
 *   Q8_0 (32-blocks b):   t_b = (dw_b * dx_b) * isum_b, added into lane b % 8 of 8 partial sums
 *                         (blocks past k padded with t = 0 up to a multiple of 8), then
 *                         ((L0 + L4) + (L2 + L6)) + ((L1 + L5) + (L3 + L7));
 *   Q4_K / Q5_K (256-blocks i, sub-blocks j):
 *                         t_i = (d_i * dx_i) * sum_j sc_j * isum_ij - (dmin_i * dx_i) * sum_j mn_j * xsum_ij;
 *   Q6_K (256-blocks i, 16-value groups g):
 *                         t_i = (d_i * dx_i) * sum_g sc_g * isum_ig  (quants q - 32);
 *   K-quants: the t_i summed in order from 0.
 * Every SIMD level computes exactly these operations, so scalar, AVX2, AVX-512 VNNI and NEON give the
 * same bits, for every token whatever the batch. Types without a qdot keep f32 activations. */
/* An mtp_qdot_fn over nr weight rows from a one-row kernel `rows`, with nt a constant in each loop
 * so the accumulators stay in registers; `target`: the SIMD build's function attribute. */
#define MTP_QDOT_ROWS(target, name, rows)                                                                          \
    target static void name(const void *w, int64_t rb, int64_t nr, const int8_t *q, const float *d, const int16_t *s, \
                            int nt, int64_t k, float *out, int64_t ldo) {                                         \
        const uint8_t *b = w;                                                                                      \
        switch (nt) {                                                                                              \
        case 4: for (int64_t r = 0; r < nr; r++) rows(b + r * rb, q, d, s, 4, k, out + r, ldo); break;             \
        case 3: for (int64_t r = 0; r < nr; r++) rows(b + r * rb, q, d, s, 3, k, out + r, ldo); break;             \
        case 2: for (int64_t r = 0; r < nr; r++) rows(b + r * rb, q, d, s, 2, k, out + r, ldo); break;             \
        default: for (int64_t r = 0; r < nr; r++) rows(b + r * rb, q, d, s, 1, k, out + r, ldo);                   \
        }                                                                                                          \
    }
#define MTP_Q8_BLOCK(type) ((type) == T_Q4_K || (type) == T_Q5_K || (type) == T_Q6_K ? 256 : 32)
typedef void (*mtp_quant_fn)(const float *x, int64_t k, int block, int8_t *q, float *d, int16_t *s);
/* out[t * ldo + r] for weight rows r < nr (at w + r * row_bytes) and tokens t < nt (1..4) */
typedef void (*mtp_qdot_fn)(const void *w, int64_t row_bytes, int64_t nr, const int8_t *q, const float *d, const int16_t *s,
                            int nt, int64_t k, float *out, int64_t ldo);

/* Long batches (q8_lanes.c): tokens t0 .. t0 + count - 1 (count <= MTP_LANES) of a quantized batch
 * (q, d, s as mtp_qdot_fn takes them) re-laid as one lane group of MTP_QLANES_BYTES(k, block) bytes */
#define MTP_LANES 16
#define MTP_QLANES_BYTES(k, block) ((k) * MTP_LANES + (k) / (block) * MTP_LANES * 4 + ((block) == 256 ? (k) / 32 * MTP_LANES * 4 : 0))
typedef void (*mtp_qlanes_fn)(const int8_t *q, const float *d, const int16_t *s, int64_t t0, int count, int64_t k, uint8_t *xl);
/* out[t * ldo + r] for weight rows r < nr and the n tokens, from their lane groups (group_bytes apart),
 * bit-identical to qdot; work: MTP_QGEMM_WORK(k) bytes of the caller's scratch */
#define MTP_QGEMM_ROWS 8  /* weight rows a qgemm decodes at a time */
#define MTP_QGEMM_WORK(k) (MTP_QGEMM_ROWS * ((k) + (k) / 16 * 4 + (k) / 32 * 8 + (k) / 256 * 8))
typedef void (*mtp_qgemm_fn)(const void *w, int64_t row_bytes, int64_t nr, const uint8_t *lanes, int64_t group_bytes, int64_t n,
                             int64_t k, float *out, int64_t ldo, void *work);

typedef struct {
    mtp_dequant_fn dequant[T_COUNT];  /* k values of one row; NULL: type not supported */
    mtp_dot_fn dot;
    mtp_dotn_fn dotn;
    mtp_dotn2_fn dotn2;               /* NULL: dotn a row at a time */
    mtp_sums_fn sums;
    mtp_attend_fn attend;
    mtp_split_fn split;               /* mtp_split_kquant or a faster twin (the same floats) */
    mtp_kdot_fn kdot;
    mtp_vdot_fn vdot[T_COUNT];        /* fused decode-and-dot; NULL: decode a tile, then dot */
    mtp_quant_fn quant;               /* one token row to int8 blocks */
    mtp_qdot_fn qdot[T_COUNT];        /* int8-activation products; NULL: f32 activations */
    mtp_qlanes_fn qlanes[T_COUNT];    /* with qgemm: long batches, tokens in the lanes; NULL: qdot */
    mtp_qgemm_fn qgemm[T_COUNT];
} mtp_kernels;
extern mtp_kernels mtp_k;
/* A SIMD level's table entries for its decoders, each file's own static deq_<type> functions */
#define MTP_SET_DEQUANT(kt)                                                                           \
    do {                                                                                              \
        (kt)->dequant[T_F16] = deq_f16, (kt)->dequant[T_BF16] = deq_bf16;                             \
        (kt)->dequant[T_Q4_0] = deq_q4_0, (kt)->dequant[T_Q4_1] = deq_q4_1;                           \
        (kt)->dequant[T_Q5_0] = deq_q5_0, (kt)->dequant[T_Q5_1] = deq_q5_1;                           \
        (kt)->dequant[T_Q8_0] = deq_q8_0, (kt)->dequant[T_Q4_K] = deq_q4_k;                           \
        (kt)->dequant[T_Q5_K] = deq_q5_k, (kt)->dequant[T_Q6_K] = deq_q6_k;                           \
    } while (0)
/* A SIMD level's fused decode-then-dot kernels (each level defines vdot_q4_k .. vdot_q8_0) into the table. */
#define MTP_SET_VDOT(kt)                                                                              \
    do {                                                                                              \
        (kt)->vdot[T_Q4_K] = vdot_q4_k, (kt)->vdot[T_Q5_K] = vdot_q5_k;                               \
        (kt)->vdot[T_Q6_K] = vdot_q6_k, (kt)->vdot[T_Q8_0] = vdot_q8_0;                               \
    } while (0)
/* A Q4_K / Q5_K row as unscaled values q[k] (exact small integers) and, per super-block i,
 * sm[16i + j] = d * sc_j, sm[16i + 8 + j] = dmin * mn_j: the same floats on every SIMD level. */
void mtp_split_kquant(int type, const void *src, float *q, float *sm, int64_t k);
int64_t mtp_row_bytes(int type, int64_t k);  /* bytes of a k-value row, or -1 (unsupported type) */
float mtp_f16_to_f32(uint16_t h);
void mtp_kernels_scalar(mtp_kernels *k);
void mtp_attend_rows(const float *const *q, float *const *out, const int64_t *p, int nq, const float *k, const float *v, int64_t row,
                     int64_t d, float scale, float *scores, int64_t width);  /* attention.c: mtp_attend_fn key by key */
void mtp_q8_scalar(mtp_kernels *k);          /* q8.c: the reference quantizer and qdots */
void mtp_q8_avx2(mtp_kernels *k);            /* q8_avx2.c (AVX2 CPUs only) */
int mtp_q8_vnni(mtp_kernels *k);             /* q8_vnni.c: 0 where the CPU lacks AVX-512 VNNI + VL */
void mtp_q8_lanes_vnni(mtp_kernels *k);      /* q8_lanes.c: its qlanes / qgemm (with mtp_q8_vnni only) */
int mtp_kernels_avx2(mtp_kernels *k);        /* 0 where the CPU or compiler lacks AVX2/FMA/F16C */
void mtp_fused_avx2(mtp_kernels *k);         /* fused_avx2.c: the vdot and kdot entries (AVX2 CPUs only) */
/* fused_avx512.c, on top of the AVX2 table: bit-identical AVX-512 twins of some of its kernels;
 * 0 where the CPU lacks AVX-512 F/BW/VL */
int mtp_kernels_avx512(mtp_kernels *k);
int mtp_kernels_neon(mtp_kernels *k);        /* simd_neon.c: 0 off aarch64; the scalar kernels' bits */
void mtp_q8_neon(mtp_kernels *k);            /* q8_neon.c (aarch64 only) */
int mtp_q8_dotprod(mtp_kernels *k);          /* q8_dotprod.c: 0 where the CPU lacks the dot product (SDOT) */

/* ---- matrix products (matmul.c): out[i, j] = row j of w . x[i], the same dot for every i;
 * part `part` of `nparts` computes its share of the m output columns. act: float32 activations
 * (exact), or where the type has a qdot, one int8 plane (as llama.cpp), or two (the second
 * quantizes the first one's rounding error; the sum of the two products) */
enum { MTP_ACT_F32 = 0, MTP_ACT_Q8 = 1, MTP_ACT_Q8X2 = 2 };
void mtp_matmul_rows(mtp_pool *p, int act, int part, int nparts, const void *w, int type, int64_t m, int64_t k,
                     const float *x, int64_t n, int64_t ldx, float *out, int64_t ldo);

/* ---- ops (one file per family) */
MTP_OP(mtp_op_norm);        /* rms_norm, l2_norm */
MTP_OP(mtp_op_rope);
MTP_OP(mtp_op_attention);   /* phase 0 writes the batch's K, V; phase 1 attends */
MTP_OP(mtp_op_kv_write);    /* attention's phase 0 alone */
MTP_OP(mtp_op_ssm_conv);
MTP_OP(mtp_op_delta_net);
MTP_OP(mtp_op_moe);         /* mtp_moe_phases(nd) phases */
MTP_OP(mtp_op_elementwise); /* add mul scale sigmoid silu softplus */
MTP_OP(mtp_op_copy);        /* get_rows slice concat take_rows argmax cat_rows */
int mtp_moe_phases(const mtp_job *j, const mtp_node *nd);

/* Recurrent snapshot slot for token t of an n-token run, or NULL when that token keeps none. */
float *mtp_snapshot_slot(mtp_state *s, int64_t t, int64_t n);

/* Q4_K / Q5_K: the 6-bit scale and min of sub-block j, packed in 12 bytes. */
static inline void mtp_kquant_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | (s[j - 4] >> 6) << 4;
        *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* Q4_K / Q5_K: all eight 6-bit scales (sc) and mins (mn) of a super-block (its 12 scale bytes at
 * b + 4), byte j holding sub-block j's: the SIMD kernels' form of mtp_kquant_scale_min. */
static inline void mtp_kquant_scales_mins(const uint8_t *b, uint64_t *sc, uint64_t *mn) {
    uint32_t a, c, e;
    memcpy(&a, b + 4, 4);
    memcpy(&c, b + 8, 4);
    memcpy(&e, b + 12, 4);
    *sc = (a & 0x3f3f3f3f) | (uint64_t)((e & 0x0f0f0f0f) | ((a >> 2) & 0x30303030)) << 32;
    *mn = (c & 0x3f3f3f3f) | (uint64_t)(((e >> 4) & 0x0f0f0f0f) | ((c >> 2) & 0x30303030)) << 32;
}

/* exp(x) in float: x = n ln2 + r (ln2 in two parts, n ln2's first product exact), exp(r) by its
 * Taylor series to r^7 (|r| <= ln2 / 2: the last term left out is under 1e-8 of the result), times
 * 2^n through the exponent bits; x is clamped to [-87, 88]. Plain multiplies and adds (no library
 * call, no fused multiply-add): loops over it vectorise, and every target clone gives the same bits.
 * Sigmoid and silu through it are within 2.7 float ulps of the double-precision values; with libm's
 * double exp they took 17% of a 4-token verify with int8 activations (tinycoder, 2 threads). */
static inline float mtp_exp(float x) {
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;  /* round(x / ln2): 1.5 * 2^23 */
    const float r = (x - n * 0.693145751953125f) - n * 1.42860677e-6f;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int32_t i; float f; } scale = {((int32_t)n + 127) << 23};
    return p * scale.f;
}

static inline float mtp_sigmoid(float x) { return 1.0f / (1.0f + mtp_exp(-x)); }

/* Even split of [0, n) over nth threads. */
static inline void mtp_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}

/* Per-function SIMD targets, so one binary carries every variant and picks one at run time. */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define MTP_X86 1
#define MTP_AVX2 __attribute__((target("avx2,fma,f16c")))
#if defined(__linux__) && !defined(__clang__)
#define MTP_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
/* aarch64: NEON is always there; SDOT (the dot product extension, Armv8.2+) per function. */
#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define MTP_NEON 1
#if !defined(__clang__)
#define MTP_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))  /* GCC's arm_neon.h wants the arch */
#elif __clang_major__ >= 16 || defined(__ARM_FEATURE_DOTPROD)
/* clang's arm_neon.h declares SDOT for a target attribute from 16 on (earlier: only under -march) */
#define MTP_DOTPROD __attribute__((target("dotprod")))
#endif
#endif
#ifndef MTP_CLONES
#define MTP_CLONES
#endif

#endif
