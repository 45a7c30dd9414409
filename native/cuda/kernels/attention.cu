// Causal attention over the KV cache. kv_write stores the batch's K and V at their positions.
// A row's keys split into parts, by the key count alone (key_parts); a warp takes a part's keys in
// order with an online softmax, and the parts' terms fold in part order. Prompt passes fold them in
// one block a (row, G query heads), its warps taking parts in turn (attention_rows); a few rows (decode,
// verify) take a warp per part over many blocks (attention_part) and fold in a second kernel
// (attention_merge) -- split-K, so that one token's attention spreads over the GPU. Both run the
// same float operations in the same order: a row's result depends on its query and the cache alone,
// never on the batch or the kernel.
//
// The kernels are instantiated by NC, a lane's channel slots (channel 32 c + lane, head size d <= 32 NC),
// and G, the query heads of one KV head a warp takes together (they read each key's row once). Neither
// changes a head's float operations: slots past d and the other heads take no part in them.

#define ATT_WARPS 4
#define ATT_MAX_D 256
#define ATT_PARTS 128     // gpu.py's ATT_PARTS
#define ATT_PART_KEYS 32  // the fewest keys a part has (short rows: one part)
#define ATT_MERGE_AHEAD 8 // parts whose terms attention_merge loads together

extern "C" __global__ void kv_write(const float* k, const float* v, const int* pos, float* kc, float* vc, int n_kv_head, int d,
                                    int n_ctx, int* err) {
    begin_kernel();
    const int i = blockIdx.x / n_kv_head, h = blockIdx.x % n_kv_head;
    const int p = pos[i];
    if (p < 0 || p >= n_ctx) {
        if (threadIdx.x == 0) set_error(err, ERR_POS);
        return;
    }
    const i64 src = (i64)blockIdx.x * d, dst = ((i64)p * n_kv_head + h) * d;
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        kc[dst + e] = k[src + e];
        vc[dst + e] = v[src + e];
    }
}

struct KeyParts {
    int n, size;  // parts [p size, min((p + 1) size, keys)), none empty
};
__device__ __forceinline__ KeyParts key_parts(int n_keys) {
    const int parts = min(ATT_PARTS, (n_keys + ATT_PART_KEYS - 1) / ATT_PART_KEYS);
    const int size = (n_keys + parts - 1) / parts;
    return {(n_keys + size - 1) / size, size};
}

// A part's terms: the max score, the sum of exp(score - max), then the sum of exp(score - max) v.
template <int NC>
struct Att {
    static constexpr int TERMS = 32 * NC + 2;
    static constexpr int CHANNELS = (32 * NC + 32 * ATT_WARPS - 1) / (32 * ATT_WARPS);  // a thread's in a fold
    static constexpr int AHEAD = NC >= 8 ? 2 : NC >= 4 ? 4 : 8;  // keys whose rows a warp loads together
};

// The G query heads h0 .. h0 + G - 1 of row `row` (channel 32 c + lane in qv[g][c]).
template <int NC, int G>
__device__ __forceinline__ void load_queries(float (&qv)[G][NC], const float* q, int row, int n_head, int h0, int d) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int g = 0; g < G; g++) {
        const float* qr = q + ((i64)row * n_head + h0 + g) * d;
#pragma unroll
        for (int c = 0; c < NC; c++) qv[g][c] = 32 * c + lane < d ? qr[32 * c + lane] : 0.0f;
    }
}

// One warp: keys [j0, j1) of KV head hk against G queries, each head's terms written to out + g stride.
// Att::AHEAD keys' rows load together, then update each head's softmax one key after another.
template <int NC, int G>
__device__ __forceinline__ void part_terms(const float (&qv)[G][NC], const float* kc, const float* vc, int j0, int j1, int hk,
                                           int n_kv_head, int d, float scale, float* out, i64 stride) {
    constexpr int AHEAD = Att<NC>::AHEAD;
    const int lane = threadIdx.x & 31;
    float acc[G][NC], mx[G], sum[G];
#pragma unroll
    for (int g = 0; g < G; g++) {
        mx[g] = __int_as_float(0xff800000);  // -inf
        sum[g] = 0.0f;
#pragma unroll
        for (int c = 0; c < NC; c++) acc[g][c] = 0.0f;
    }
    for (int jb = j0; jb < j1; jb += AHEAD) {
        float kv[AHEAD][NC], vv[AHEAD][NC];
#pragma unroll
        for (int a = 0; a < AHEAD; a++) {
            const i64 row = ((i64)min(jb + a, j1 - 1) * n_kv_head + hk) * d;
#pragma unroll
            for (int c = 0; c < NC; c++) {
                const bool in = 32 * c + lane < d;
                kv[a][c] = in ? kc[row + 32 * c + lane] : 0.0f;
                vv[a][c] = in ? vc[row + 32 * c + lane] : 0.0f;
            }
        }
#pragma unroll
        for (int a = 0; a < AHEAD; a++) {
            if (jb + a >= j1) break;  // the same for the whole warp
#pragma unroll
            for (int g = 0; g < G; g++) {
                float s = 0.0f;
#pragma unroll
                for (int c = 0; c < NC; c++)
                    if (32 * c + lane < d) s = fmaf(qv[g][c], kv[a][c], s);
                s = warp_sum(s) * scale;
                const float m_new = fmaxf(mx[g], s), corr = expf(mx[g] - m_new), e = expf(s - m_new);
                sum[g] = sum[g] * corr + e;
#pragma unroll
                for (int c = 0; c < NC; c++)
                    if (32 * c + lane < d) acc[g][c] = acc[g][c] * corr + e * vv[a][c];
                mx[g] = m_new;
            }
        }
    }
#pragma unroll
    for (int g = 0; g < G; g++) {
        float* o = out + g * stride;
        if (lane == 0) {
            o[0] = mx[g];
            o[1] = sum[g];
        }
#pragma unroll
        for (int c = 0; c < NC; c++)
            if (32 * c + lane < d) o[2 + 32 * c + lane] = acc[g][c];
    }
}

// A part's terms as a fold reads them (this thread's channels: threadIdx.x + 32 ATT_WARPS c), and the running ones.
template <int NC>
struct Folded {
    float m, s, a[Att<NC>::CHANNELS];
};
template <int NC>
__device__ __forceinline__ Folded<NC> part_of(const float* in, int d) {
    Folded<NC> t;
    t.m = in[0], t.s = in[1];
#pragma unroll
    for (int c = 0; c < Att<NC>::CHANNELS; c++) {
        const int e = threadIdx.x + 32 * ATT_WARPS * c;
        t.a[c] = e < d ? in[2 + e] : 0.0f;
    }
    return t;
}

// Part p's terms folded into r; the first part taken as it is.
template <int NC>
__device__ __forceinline__ void fold(Folded<NC>& r, const Folded<NC>& t, int p) {
    if (p == 0) {
        r = t;
        return;
    }
    const float m = fmaxf(r.m, t.m), c0 = expf(r.m - m), c1 = expf(t.m - m);
    r.s = r.s * c0 + t.s * c1;
#pragma unroll
    for (int c = 0; c < Att<NC>::CHANNELS; c++) r.a[c] = r.a[c] * c0 + t.a[c] * c1;
    r.m = m;
}

template <int NC>
__device__ __forceinline__ void store_output(const Folded<NC>& r, float* o, int d) {
#pragma unroll
    for (int c = 0; c < Att<NC>::CHANNELS; c++) {
        const int e = threadIdx.x + 32 * ATT_WARPS * c;
        if (e < d) o[e] = r.a[c] / r.s;
    }
}

// One block a (row, G query heads of one KV head): their parts STAGE at a time, the warps taking them
// in turn, then folded in order. Grid (n n_head / G).
template <int NC, int G>
__device__ __forceinline__ void attention_rows(const float* q, const float* kc, const float* vc, const int* pos, float* o, int n_head,
                                               int n_kv_head, int d, float scale, int n_ctx) {
    constexpr int TERMS = Att<NC>::TERMS, FIT = 128 / (G * NC), STAGE = FIT < ATT_WARPS ? ATT_WARPS : FIT > 16 ? 16 : FIT;
    __shared__ float terms[STAGE][G][TERMS];
    wait_previous();
    const int i = blockIdx.x / (n_head / G), h0 = blockIdx.x % (n_head / G) * G, hk = h0 / (n_head / n_kv_head), warp = threadIdx.x >> 5;
    const int n_keys = min(pos[i] + 1, n_ctx);  // a bad position was flagged by kv_write
    const KeyParts parts = key_parts(n_keys);
    float qv[G][NC];
    load_queries<NC, G>(qv, q, i, n_head, h0, d);
    Folded<NC> r[G];
    for (int p0 = 0; p0 < parts.n; p0 += STAGE) {
        const int p1 = min(parts.n, p0 + STAGE);
        for (int p = p0 + warp; p < p1; p += ATT_WARPS)
            part_terms<NC, G>(qv, kc, vc, p * parts.size, min(n_keys, (p + 1) * parts.size), hk, n_kv_head, d, scale, terms[p - p0][0], TERMS);
        __syncthreads();
        for (int p = p0; p < p1; p++)
#pragma unroll
            for (int g = 0; g < G; g++) fold(r[g], part_of<NC>(terms[p - p0][g], d), p);
        __syncthreads();  // read before the next parts overwrite them
    }
#pragma unroll
    for (int g = 0; g < G; g++) store_output(r[g], o + ((i64)i * n_head + h0 + g) * d, d);
}

// A warp per part of G query heads: grid (n n_head / G, ATT_PARTS / ATT_WARPS); parts past the row's are skipped. Part p's
// terms of (row, query head) go to `terms` at ((row, head) ATT_PARTS + p) TERMS.
template <int NC, int G>
__device__ __forceinline__ void attention_part(const float* q, const float* kc, const float* vc, const int* pos, float* terms, int n_head,
                                               int n_kv_head, int d, float scale, int n_ctx) {
    constexpr int TERMS = Att<NC>::TERMS;
    wait_previous();
    const int i = blockIdx.x / (n_head / G), h0 = blockIdx.x % (n_head / G) * G, hk = h0 / (n_head / n_kv_head);
    const int p = blockIdx.y * ATT_WARPS + (threadIdx.x >> 5);
    const int n_keys = min(pos[i] + 1, n_ctx);
    const KeyParts parts = key_parts(n_keys);
    if (p >= parts.n) return;  // the whole warp (no block-wide step follows)
    float qv[G][NC];
    load_queries<NC, G>(qv, q, i, n_head, h0, d);
    part_terms<NC, G>(qv, kc, vc, p * parts.size, min(n_keys, (p + 1) * parts.size), hk, n_kv_head, d, scale,
                      terms + (((i64)i * n_head + h0) * ATT_PARTS + p) * TERMS, (i64)ATT_PARTS * TERMS);
}

// The parts of each (row, query head) folded in order, as attention_rows folds them: grid (n n_head).
template <int NC>
__device__ __forceinline__ void attention_merge(const float* terms, const int* pos, float* o, int n_head, int d, int n_ctx) {
    constexpr int TERMS = Att<NC>::TERMS;
    wait_previous();
    const int i = blockIdx.x / n_head;
    const KeyParts parts = key_parts(min(pos[i] + 1, n_ctx));
    const float* in = terms + (i64)blockIdx.x * ATT_PARTS * TERMS;
    Folded<NC> r;
    for (int p0 = 0; p0 < parts.n; p0 += ATT_MERGE_AHEAD) {
        Folded<NC> t[ATT_MERGE_AHEAD];
#pragma unroll
        for (int a = 0; a < ATT_MERGE_AHEAD; a++) t[a] = part_of<NC>(in + (i64)min(p0 + a, parts.n - 1) * TERMS, d);
#pragma unroll
        for (int a = 0; a < ATT_MERGE_AHEAD; a++)
            if (p0 + a < parts.n) fold(r, t[a], p0 + a);
    }
    store_output(r, o + (i64)blockIdx.x * d, d);
}

#define ATT_ARGS const float *q, const float *kc, const float *vc, const int *pos, float *o, int n_head, int n_kv_head, int d, float scale, int n_ctx
#define ATTENTION_KERNELS(NC, G)                                                                                          \
    extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) attention_rows_##NC##_##G(ATT_ARGS) {                \
        allow_next();                                                                                                    \
        attention_rows<NC, G>(q, kc, vc, pos, o, n_head, n_kv_head, d, scale, n_ctx);                                    \
    }                                                                                                                    \
    extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) attention_part_##NC##_##G(ATT_ARGS) {                \
        allow_next();                                                                                                    \
        attention_part<NC, G>(q, kc, vc, pos, o, n_head, n_kv_head, d, scale, n_ctx);                                    \
    }
#define ATTENTION_MERGE(NC)                                                                                               \
    extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) attention_merge_##NC(const float* terms, const int* pos, float* o, \
            int n_head, int d, int n_ctx) {                                                                               \
        allow_next();                                                                                                    \
        attention_merge<NC>(terms, pos, o, n_head, d, n_ctx);                                                            \
    }
#define ATTENTION_GROUPS(NC) ATTENTION_MERGE(NC) ATTENTION_KERNELS(NC, 1) ATTENTION_KERNELS(NC, 2) ATTENTION_KERNELS(NC, 3) ATTENTION_KERNELS(NC, 4)
ATTENTION_GROUPS(2)
ATTENTION_GROUPS(4)
ATTENTION_GROUPS(8)
ATTENTION_KERNELS(2, 6)
ATTENTION_KERNELS(2, 8)
ATTENTION_KERNELS(4, 6)
ATTENTION_KERNELS(4, 8)

// Every backend's kernel of the same name (the others have no split form): one block a (row, query head).
extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) attention(ATT_ARGS) {
    allow_next();
    attention_rows<8, 1>(q, kc, vc, pos, o, n_head, n_kv_head, d, scale, n_ctx);
}
