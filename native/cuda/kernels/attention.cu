// Causal attention over the KV cache. kv_write stores the batch's K and V at their positions.
// A row's keys split into parts, by the key count alone (key_parts); a warp takes a part's keys in
// order with an online softmax, and the parts' terms fold in part order. Prompt passes fold them in
// one block a (row, query head), its warps taking parts in turn (attention); a few rows (decode,
// verify) take a warp per part over many blocks (attention_part) and fold in a second kernel
// (attention_merge) -- split-K, so that one token's attention spreads over the GPU. Both run the
// same float operations in the same order: a row's result depends on its query and the cache alone,
// never on the batch or the kernel.

#define ATT_WARPS 4
#define ATT_MAX_D 256
#define ATT_CHANNELS (ATT_MAX_D / (32 * ATT_WARPS))  // a thread's channels in a fold: threadIdx.x + 128 t
#define ATT_PARTS 128                                // gpu.py's ATT_PARTS
#define ATT_PART_KEYS 32                             // the fewest keys a part has (short rows: one part)
#define ATT_STAGE 16                                 // parts attention holds in shared memory between folds
#define ATT_TERMS (ATT_MAX_D + 2)                    // a part's terms: max, sum, then the channels

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

__device__ __forceinline__ void load_query(float (&qv)[ATT_MAX_D / 32], const float* qr, int d) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int c = 0; c < ATT_MAX_D / 32; c++) qv[c] = 32 * c + lane < d ? qr[32 * c + lane] : 0.0f;
}

// One warp: keys [j0, j1) against query qv (channel 32 c + lane in qv[c]), their terms written to
// `out` (ATT_TERMS floats: the max score, the sum of exp(score - max), the sum of exp(score - max) v).
// ATT_AHEAD keys' rows load together, then update the softmax one key after another.
#define ATT_AHEAD 2
#define ATT_MERGE_AHEAD 8  // parts whose terms attention_merge loads together
__device__ __forceinline__ void part_terms(const float (&qv)[ATT_MAX_D / 32], const float* kc, const float* vc, int j0, int j1, int hk,
                                           int n_kv_head, int d, float scale, float* out) {
    const int lane = threadIdx.x & 31;
    float acc[ATT_MAX_D / 32];
#pragma unroll
    for (int c = 0; c < ATT_MAX_D / 32; c++) acc[c] = 0.0f;
    float mx = __int_as_float(0xff800000), sum = 0.0f;  // -inf
    for (int jb = j0; jb < j1; jb += ATT_AHEAD) {
        float kv[ATT_AHEAD][ATT_MAX_D / 32], vv[ATT_AHEAD][ATT_MAX_D / 32];
#pragma unroll
        for (int a = 0; a < ATT_AHEAD; a++) {
            const i64 row = ((i64)min(jb + a, j1 - 1) * n_kv_head + hk) * d;
#pragma unroll
            for (int c = 0; c < ATT_MAX_D / 32; c++) {
                const bool in = 32 * c + lane < d;
                kv[a][c] = in ? kc[row + 32 * c + lane] : 0.0f;
                vv[a][c] = in ? vc[row + 32 * c + lane] : 0.0f;
            }
        }
#pragma unroll
        for (int a = 0; a < ATT_AHEAD; a++) {
            if (jb + a >= j1) break;  // the same for the whole warp
            float s = 0.0f;
#pragma unroll
            for (int c = 0; c < ATT_MAX_D / 32; c++)
                if (32 * c + lane < d) s = fmaf(qv[c], kv[a][c], s);
            s = warp_sum(s) * scale;
            const float m_new = fmaxf(mx, s), corr = expf(mx - m_new), e = expf(s - m_new);
            sum = sum * corr + e;
#pragma unroll
            for (int c = 0; c < ATT_MAX_D / 32; c++)
                if (32 * c + lane < d) acc[c] = acc[c] * corr + e * vv[a][c];
            mx = m_new;
        }
    }
    if (lane == 0) {
        out[0] = mx;
        out[1] = sum;
    }
#pragma unroll
    for (int c = 0; c < ATT_MAX_D / 32; c++)
        if (32 * c + lane < d) out[2 + 32 * c + lane] = acc[c];
}

// A part's terms as a fold reads them (this thread's channels), and the running ones.
struct Folded {
    float m, s, a[ATT_CHANNELS];
};
__device__ __forceinline__ Folded part_of(const float* in, int d) {
    Folded t;
    t.m = in[0], t.s = in[1];
#pragma unroll
    for (int c = 0; c < ATT_CHANNELS; c++) {
        const int e = threadIdx.x + 32 * ATT_WARPS * c;
        t.a[c] = e < d ? in[2 + e] : 0.0f;
    }
    return t;
}

// Part p's terms folded into r; the first part taken as it is.
__device__ __forceinline__ void fold(Folded& r, const Folded& t, int p) {
    if (p == 0) {
        r = t;
        return;
    }
    const float m = fmaxf(r.m, t.m), c0 = expf(r.m - m), c1 = expf(t.m - m);
    r.s = r.s * c0 + t.s * c1;
#pragma unroll
    for (int c = 0; c < ATT_CHANNELS; c++) r.a[c] = r.a[c] * c0 + t.a[c] * c1;
    r.m = m;
}

__device__ __forceinline__ void store_output(const Folded& r, float* o, int d) {
#pragma unroll
    for (int c = 0; c < ATT_CHANNELS; c++) {
        const int e = threadIdx.x + 32 * ATT_WARPS * c;
        if (e < d) o[e] = r.a[c] / r.s;
    }
}

// One block a (row, query head): ATT_STAGE parts at a time, the warps taking them in turn, then
// folded in order.
extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) attention(const float* q, const float* kc, const float* vc, const int* pos,
                                                                       float* o, int n_head, int n_kv_head, int d, float scale, int n_ctx) {
    begin_kernel();
    __shared__ float terms[ATT_STAGE][ATT_TERMS];
    const int i = blockIdx.x / n_head, h = blockIdx.x % n_head, hk = h / (n_head / n_kv_head), warp = threadIdx.x >> 5;
    const int n_keys = min(pos[i] + 1, n_ctx);  // a bad position was flagged by kv_write
    const KeyParts parts = key_parts(n_keys);
    float qv[ATT_MAX_D / 32];
    load_query(qv, q + (i64)blockIdx.x * d, d);
    Folded r;
    for (int p0 = 0; p0 < parts.n; p0 += ATT_STAGE) {
        const int p1 = min(parts.n, p0 + ATT_STAGE);
        for (int p = p0 + warp; p < p1; p += ATT_WARPS)
            part_terms(qv, kc, vc, p * parts.size, min(n_keys, (p + 1) * parts.size), hk, n_kv_head, d, scale, terms[p - p0]);
        __syncthreads();
        for (int p = p0; p < p1; p++) fold(r, part_of(terms[p - p0], d), p);
        __syncthreads();  // read before the next parts overwrite them
    }
    store_output(r, o + (i64)blockIdx.x * d, d);
}

// A warp per part: grid (n n_head, ATT_PARTS / ATT_WARPS); parts past the row's are skipped. Part p's
// terms go to `terms` at ((row, head) ATT_PARTS + p) ATT_TERMS.
extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) attention_part(const float* q, const float* kc, const float* vc, const int* pos,
                                                                            float* terms, int n_head, int n_kv_head, int d, float scale,
                                                                            int n_ctx) {
    begin_kernel();
    const int i = blockIdx.x / n_head, h = blockIdx.x % n_head, hk = h / (n_head / n_kv_head);
    const int p = blockIdx.y * ATT_WARPS + (threadIdx.x >> 5);
    const int n_keys = min(pos[i] + 1, n_ctx);
    const KeyParts parts = key_parts(n_keys);
    if (p >= parts.n) return;  // the whole warp (no block-wide step follows)
    float qv[ATT_MAX_D / 32];
    load_query(qv, q + (i64)blockIdx.x * d, d);
    part_terms(qv, kc, vc, p * parts.size, min(n_keys, (p + 1) * parts.size), hk, n_kv_head, d, scale,
               terms + ((i64)blockIdx.x * ATT_PARTS + p) * ATT_TERMS);
}

// The parts of each (row, query head) folded in order, as attention folds them: grid (n n_head).
extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) attention_merge(const float* terms, const int* pos, float* o, int n_head, int d,
                                                                             int n_ctx) {
    begin_kernel();
    const int i = blockIdx.x / n_head;
    const KeyParts parts = key_parts(min(pos[i] + 1, n_ctx));
    const float* in = terms + (i64)blockIdx.x * ATT_PARTS * ATT_TERMS;
    Folded r;
    for (int p0 = 0; p0 < parts.n; p0 += ATT_MERGE_AHEAD) {
        Folded t[ATT_MERGE_AHEAD];
#pragma unroll
        for (int a = 0; a < ATT_MERGE_AHEAD; a++) t[a] = part_of(in + (i64)min(p0 + a, parts.n - 1) * ATT_TERMS, d);
#pragma unroll
        for (int a = 0; a < ATT_MERGE_AHEAD; a++)
            if (p0 + a < parts.n) fold(r, t[a], p0 + a);
    }
    store_output(r, o + (i64)blockIdx.x * d, d);
}
