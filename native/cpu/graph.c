/* The graph interpreter and the library's exported entry points (loaded by native/cpu_backend.py
 * with ctypes). One mtp_run executes a whole step graph: the node list becomes a list of steps, and
 * the pool's threads work through it together, each step's parts taken by whoever is free. */
#include <stdlib.h>
#include <string.h>

#include "mtp.h"

static const char *const OP_NAMES[OP_COUNT] = {
    "input", "weight", "get_rows", "matmul", "rms_norm", "l2_norm", "add", "mul", "scale",
    "sigmoid", "silu", "softplus", "reshape", "slice", "concat", "take_rows", "rope",
    "attention", "ssm_conv", "delta_net", "moe", "kv_write", "argmax", "cat_rows",
};

/* One step = one phase of one node, cut into parts. Threads take parts from `claimed`; the thread
 * that finishes a step's last part moves `cur` on, which releases the threads waiting for it. */
typedef struct {
    int32_t node, phase, nparts;
} step;

typedef struct {
    mtp_pool *pool;
    mtp_job job;
    step *steps;
    atomic_int *claimed, *finished;
    int32_t n_steps, cap;
    int act;  /* MTP_ACT_*: mtp_set_activations */
    atomic_int cur;
} mtp_ctx;

static int op_phases(const mtp_job *j, const mtp_node *nd) {
    switch (nd->op) {
    case OP_INPUT: case OP_WEIGHT: case OP_RESHAPE: return 0;  /* data already in place */
    case OP_ATTENTION: return 2;
    case OP_MOE: return mtp_moe_phases(j, nd);
    default: return 1;
    }
}

static void op_matmul(mtp_job *j, mtp_node *nd, int phase, int part, int nparts) {
    (void)phase;
    const mtp_node *x = &j->nodes[nd->in[0]], *w = &j->nodes[nd->in[1]];
    int64_t k = w->ne[w->ndim - 1];
    mtp_matmul_rows(j->pool, j->act, part, nparts, w->data, w->type, nd->ne[1], k, x->data, nd->ne[0], k, nd->data, nd->ne[1]);
}

static void exec_part(mtp_job *j, const step *s, int part) {
    mtp_node *nd = &j->nodes[s->node];
    void (*fn)(mtp_job *, mtp_node *, int, int, int) = NULL;
    switch (nd->op) {
    case OP_MATMUL: fn = op_matmul; break;
    case OP_RMS_NORM: case OP_L2_NORM: fn = mtp_op_norm; break;
    case OP_ADD: case OP_MUL: case OP_SCALE: case OP_SIGMOID: case OP_SILU: case OP_SOFTPLUS: fn = mtp_op_elementwise; break;
    case OP_GET_ROWS: case OP_SLICE: case OP_CONCAT: case OP_TAKE_ROWS: case OP_ARGMAX: case OP_CAT_ROWS: fn = mtp_op_copy; break;
    case OP_ROPE: fn = mtp_op_rope; break;
    case OP_ATTENTION: fn = mtp_op_attention; break;
    case OP_KV_WRITE: fn = mtp_op_kv_write; break;
    case OP_SSM_CONV: fn = mtp_op_ssm_conv; break;
    case OP_DELTA_NET: fn = mtp_op_delta_net; break;
    case OP_MOE: fn = mtp_op_moe; break;
    }
    if (fn)
        fn(j, nd, s->phase, part, s->nparts);
}

static void run_steps(void *raw, int ith, int nth) {
    (void)ith;
    (void)nth;
    mtp_ctx *c = raw;
    for (int s = atomic_load(&c->cur); s < c->n_steps; s = atomic_load(&c->cur)) {
        for (int part; (part = atomic_fetch_add(&c->claimed[s], 1)) < c->steps[s].nparts;) {
            exec_part(&c->job, &c->steps[s], part);
            if (atomic_fetch_add(&c->finished[s], 1) == c->steps[s].nparts - 1)
                mtp_publish(c->pool, &c->cur, s + 1);
        }
        mtp_wait_above(c->pool, &c->cur, s);
    }
}

static int plan_steps(mtp_ctx *c, int32_t n_nodes) {
    int nth = mtp_pool_size(c->pool);
    c->n_steps = 0;
    for (int32_t i = 0; i < n_nodes; i++) {
        mtp_node *nd = &c->job.nodes[i];
        int phases = op_phases(&c->job, nd);
        int serial = nd->op == OP_SLICE || nd->op == OP_CONCAT || nd->op == OP_TAKE_ROWS || nd->op == OP_ARGMAX || nd->op == OP_CAT_ROWS;
        for (int ph = 0; ph < phases; ph++) {
            if (c->n_steps == c->cap) {
                int cap = c->cap ? 2 * c->cap : 1024;
                step *steps = realloc(c->steps, (size_t)cap * sizeof(step));
                atomic_int *claimed = realloc(c->claimed, (size_t)cap * sizeof(atomic_int));
                atomic_int *finished = realloc(c->finished, (size_t)cap * sizeof(atomic_int));
                if (steps) c->steps = steps;
                if (claimed) c->claimed = claimed;
                if (finished) c->finished = finished;
                if (!steps || !claimed || !finished)
                    return -1;
                c->cap = cap;
            }
            c->steps[c->n_steps++] = (step){i, ph, serial ? 1 : nth};
        }
    }
    for (int32_t s = 0; s < c->n_steps; s++) {
        atomic_init(&c->claimed[s], 0);
        atomic_init(&c->finished[s], 0);
    }
    atomic_init(&c->cur, 0);
    return 0;
}

/* ---- exported API */

/* 0 scalar; x86: 1 AVX2, 2 AVX2 with AVX-512 twins (the same bits as 1); aarch64: 1 NEON, 2 NEON
 * with SDOT int8 products (both the scalar kernels' bits). Each arch's functions return 0 elsewhere. */
static int simd_level = -1;

int mtp_set_simd(int level) {  /* the best available at most `level`; returns what was chosen */
    mtp_kernels_scalar(&mtp_k);
    simd_level = level >= 1 && (mtp_kernels_avx2(&mtp_k) || mtp_kernels_neon(&mtp_k)) ? 1 : 0;
    if (simd_level == 1 && level >= 2 && (mtp_kernels_avx512(&mtp_k) || mtp_q8_dotprod(&mtp_k)))
        simd_level = 2;
    return simd_level;
}

#if defined(MTP_NEON)
const char *mtp_simd_name(void) { return simd_level == 2 ? "neon-dotprod" : simd_level == 1 ? "neon" : "scalar"; }
#else
const char *mtp_simd_name(void) { return simd_level == 2 ? "avx512" : simd_level == 1 ? "avx2" : "scalar"; }
#endif

static void ensure_kernels(void) {
    if (simd_level < 0)
        mtp_set_simd(99);
}

void *mtp_create(int n_threads) {
    ensure_kernels();
    mtp_ctx *c = calloc(1, sizeof *c);
    if (c && !(c->pool = mtp_pool_create(n_threads))) {
        free(c);
        c = NULL;
    }
    return c;
}

void mtp_free(void *ctx) {
    mtp_ctx *c = ctx;
    mtp_pool_free(c->pool);
    free(c->steps);
    free(c->claimed);
    free(c->finished);
    free(c);
}

int mtp_threads(void *ctx) { return mtp_pool_size(((mtp_ctx *)ctx)->pool); }

/* The matrix products' activations (mtp.h's MTP_ACT_*); an unknown mode keeps float32 (exact). */
void mtp_set_activations(void *ctx, int act) { ((mtp_ctx *)ctx)->act = act == MTP_ACT_Q8 || act == MTP_ACT_Q8X2 ? act : MTP_ACT_F32; }

int mtp_run(void *ctx, mtp_node *nodes, int32_t n_nodes, mtp_state *states) {
    mtp_ctx *c = ctx;
    mtp_pool_quiesce(c->pool);  /* no worker still leaving the last run's steps */
    c->job = (mtp_job){nodes, states, c->pool, c->act, MTP_OK};
    if (plan_steps(c, n_nodes) != 0)
        return MTP_ERR_MEMORY;
    mtp_pool_run(c->pool, run_steps, c);
    return c->job.error;
}

/* The sum of buf's 64-bit words, read by every thread of the pool (the bandwidth test; nbytes % 8 == 0). */
uint64_t mtp_read_sum(void *ctx, const void *buf, int64_t nbytes) {
    mtp_ctx *c = ctx;
    mtp_pool_quiesce(c->pool);
    return mtp_pool_read_sum(c->pool, buf, nbytes);
}

const char *mtp_op_name(int op) { return op >= 0 && op < OP_COUNT ? OP_NAMES[op] : NULL; }

int mtp_node_size(void) { return (int)sizeof(mtp_node); }

int mtp_state_size(void) { return (int)sizeof(mtp_state); }

int64_t mtp_type_row_bytes(int type, int64_t k) {
    ensure_kernels();
    return type >= 0 && type < T_COUNT && mtp_k.dequant[type] ? mtp_row_bytes(type, k) : -1;
}

/* Decode n rows of k values (for tests and for small weights used as plain float arrays). */
int mtp_dequant(int type, const void *src, float *dst, int64_t n, int64_t k) {
    if (mtp_type_row_bytes(type, k) < 0)
        return MTP_ERR_TYPE;
    for (int64_t r = 0; r < n; r++)
        mtp_k.dequant[type]((const uint8_t *)src + r * mtp_row_bytes(type, k), dst + r * k, k);
    return MTP_OK;
}
