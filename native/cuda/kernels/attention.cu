// Causal attention over the KV cache. kv_write stores the batch's K and V at their positions.
// A row's keys split into parts, by the key count alone (key_parts); within a part the warps take
// keys j0 + warp, j0 + warp + 4, ... with an online softmax, merged in warp order; the parts then
// fold in order. Prompt passes fold them in one block a (row, query head) (attention); a few rows
// (decode, verify) take a block per part (attention_part) and fold in a second kernel
// (attention_merge) -- split-K, so that one token's attention spreads over the GPU. Both run the
// same float operations in the same order: a row's result depends on its query and the cache alone,
// never on the batch or the kernel.

#define ATT_WARPS 4
#define ATT_MAX_D 256
#define ATT_CHANNELS (ATT_MAX_D / (32 * ATT_WARPS))  // a thread's channels: threadIdx.x + 128 t
#define ATT_PARTS 32                                 // gpu.py's ATT_PARTS
#define ATT_PART_KEYS 16                             // the fewest keys a part has (short rows: one part)

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

// A part's softmax terms: the max score, the sum of exp(score - max), and the thread's channels of
// the sum of exp(score - max) v.
struct PartTerms {
    float m, s, a[ATT_CHANNELS];
};
struct AttShared {
    float max[ATT_WARPS], sum[ATT_WARPS], acc[ATT_WARPS][ATT_MAX_D];
};

// Keys [j0, j1) against query qv (lane-strided channels), merged across the block's warps. Every
// thread of the block calls it; the shared arrays are free again when it returns.
__device__ __forceinline__ PartTerms part_terms(const float (&qv)[ATT_MAX_D / 32], const float* kc, const float* vc, int j0,
                                                int j1, int hk, int n_kv_head, int d, float scale, AttShared& sh) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float acc[ATT_MAX_D / 32];
#pragma unroll
    for (int c = 0; c < ATT_MAX_D / 32; c++) acc[c] = 0.0f;
    float mx = __int_as_float(0xff800000), sum = 0.0f;  // -inf
    for (int j = j0 + warp; j < j1; j += ATT_WARPS) {
        const i64 row = ((i64)j * n_kv_head + hk) * d;
        float s = 0.0f;
#pragma unroll
        for (int c = 0; c < ATT_MAX_D / 32; c++)
            if (32 * c + lane < d) s = fmaf(qv[c], kc[row + 32 * c + lane], s);
        s = warp_sum(s) * scale;
        const float m_new = fmaxf(mx, s), corr = expf(mx - m_new), e = expf(s - m_new);
        sum = sum * corr + e;
#pragma unroll
        for (int c = 0; c < ATT_MAX_D / 32; c++)
            if (32 * c + lane < d) acc[c] = acc[c] * corr + e * vc[row + 32 * c + lane];
        mx = m_new;
    }
    if (lane == 0) {
        sh.max[warp] = mx;
        sh.sum[warp] = sum;
    }
#pragma unroll
    for (int c = 0; c < ATT_MAX_D / 32; c++)
        if (32 * c + lane < d) sh.acc[warp][32 * c + lane] = acc[c];
    __syncthreads();
    PartTerms t;
    t.m = sh.max[0];
    for (int w = 1; w < ATT_WARPS; w++) t.m = fmaxf(t.m, sh.max[w]);
    float weight[ATT_WARPS];
    t.s = 0.0f;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) {
        weight[w] = expf(sh.max[w] - t.m);  // 0 for a warp that saw no key (a part's first key is warp 0's)
        t.s += sh.sum[w] * weight[w];
    }
#pragma unroll
    for (int c = 0; c < ATT_CHANNELS; c++) {
        const int e = threadIdx.x + 32 * ATT_WARPS * c;
        float a = 0.0f;
        if (e < d) {
#pragma unroll
            for (int w = 0; w < ATT_WARPS; w++) a += sh.acc[w][e] * weight[w];
        }
        t.a[c] = a;
    }
    __syncthreads();
    return t;
}

// Part p's terms folded into the running ones (the first part taken as it is).
__device__ __forceinline__ void fold(PartTerms& r, const PartTerms& t, int p) {
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

__device__ __forceinline__ void store_output(const PartTerms& r, float* o, int d) {
#pragma unroll
    for (int c = 0; c < ATT_CHANNELS; c++) {
        const int e = threadIdx.x + 32 * ATT_WARPS * c;
        if (e < d) o[e] = r.a[c] / r.s;
    }
}

__device__ __forceinline__ void load_query(float (&qv)[ATT_MAX_D / 32], const float* qr, int d) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int c = 0; c < ATT_MAX_D / 32; c++) qv[c] = 32 * c + lane < d ? qr[32 * c + lane] : 0.0f;
}

// One block a (row, query head): every part in turn.
extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) attention(const float* q, const float* kc, const float* vc, const int* pos,
                                                                       float* o, int n_head, int n_kv_head, int d, float scale, int n_ctx) {
    begin_kernel();
    __shared__ AttShared sh;
    const int i = blockIdx.x / n_head, h = blockIdx.x % n_head, hk = h / (n_head / n_kv_head);
    const int n_keys = min(pos[i] + 1, n_ctx);  // a bad position was flagged by kv_write
    const KeyParts parts = key_parts(n_keys);
    float qv[ATT_MAX_D / 32];
    load_query(qv, q + (i64)blockIdx.x * d, d);
    PartTerms r;
    for (int p = 0; p < parts.n; p++)
        fold(r, part_terms(qv, kc, vc, p * parts.size, min(n_keys, (p + 1) * parts.size), hk, n_kv_head, d, scale, sh), p);
    store_output(r, o + (i64)blockIdx.x * d, d);
}

// A part's terms in `terms`: (m, s, then d channels) at ((row, head) ATT_PARTS + part) (ATT_MAX_D + 2).
#define ATT_TERMS (ATT_MAX_D + 2)

// A block per (row, query head) and part: grid (n n_head, ATT_PARTS); parts past the row's exit.
extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) attention_part(const float* q, const float* kc, const float* vc, const int* pos,
                                                                            float* terms, int n_head, int n_kv_head, int d, float scale,
                                                                            int n_ctx) {
    begin_kernel();
    __shared__ AttShared sh;
    const int i = blockIdx.x / n_head, h = blockIdx.x % n_head, hk = h / (n_head / n_kv_head), p = blockIdx.y;
    const int n_keys = min(pos[i] + 1, n_ctx);
    const KeyParts parts = key_parts(n_keys);
    if (p >= parts.n) return;  // the whole block
    float qv[ATT_MAX_D / 32];
    load_query(qv, q + (i64)blockIdx.x * d, d);
    const PartTerms t = part_terms(qv, kc, vc, p * parts.size, min(n_keys, (p + 1) * parts.size), hk, n_kv_head, d, scale, sh);
    float* out = terms + ((i64)blockIdx.x * ATT_PARTS + p) * ATT_TERMS;
    if (threadIdx.x == 0) {
        out[0] = t.m;
        out[1] = t.s;
    }
#pragma unroll
    for (int c = 0; c < ATT_CHANNELS; c++) {
        const int e = threadIdx.x + 32 * ATT_WARPS * c;
        if (e < d) out[2 + e] = t.a[c];
    }
}

// The parts of each (row, query head) folded in order, as attention folds them: grid (n n_head).
extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) attention_merge(const float* terms, const int* pos, float* o, int n_head, int d,
                                                                             int n_ctx) {
    begin_kernel();
    const int i = blockIdx.x / n_head;
    const KeyParts parts = key_parts(min(pos[i] + 1, n_ctx));
    PartTerms r;
    for (int p = 0; p < parts.n; p++) {
        const float* in = terms + ((i64)blockIdx.x * ATT_PARTS + p) * ATT_TERMS;
        PartTerms t;
        t.m = in[0];
        t.s = in[1];
#pragma unroll
        for (int c = 0; c < ATT_CHANNELS; c++) {
            const int e = threadIdx.x + 32 * ATT_WARPS * c;
            t.a[c] = e < d ? in[2 + e] : 0.0f;
        }
        fold(r, t, p);
    }
    store_output(r, o + (i64)blockIdx.x * d, d);
}
