// matmul.cu: y = x W^T with W in its ggml blocks (mm_<t>_<NB>), the expert rows of the routed
// experts (mmid_<t>), and rows of W picked by ids (get_rows_<t>); library.py instantiates them
// per weight type under those names. One simdgroup (32 lanes) per weight row, reading it once for
// up to NB rows of x. A row's sum runs in a fixed order (lane l takes 32-value units l, l+32, ...;
// fma chain; butterfly) whatever NB and the batch are: bit-identical rows for every batch size.

#define MM_WARPS 4

template <int T, int NB>
inline void mm_row(device const u8* wrow, int k, device const float* x, int nr, uint lane, thread float* acc) {
    for (int r = 0; r < NB; r++) acc[r] = 0.0f;
    if (IS_FLOAT_TYPE(T)) {
        for (int e = lane; e < k; e += 32) {
            const float w = deq1<T>(wrow, e);
            for (int r = 0; r < NB; r++)
                if (r < nr) acc[r] = fma(w, x[(i64)r * k + e], acc[r]);
        }
    } else {
        for (int sb = lane; sb < (k >> 5); sb += 32) {
            float w[32];
            deq32<T>(wrow, sb, w);
            for (int r = 0; r < NB; r++) {
                if (r < nr) {
                    device const float4* xv = (device const float4*)(x + (i64)r * k + 32 * sb);
                    float a = acc[r];
                    for (int i = 0; i < 8; i++) {
                        const float4 v = xv[i];
                        a = fma(w[4 * i], v.x, a);
                        a = fma(w[4 * i + 1], v.y, a);
                        a = fma(w[4 * i + 2], v.z, a);
                        a = fma(w[4 * i + 3], v.w, a);
                    }
                    acc[r] = a;
                }
            }
        }
    }
    for (int r = 0; r < NB; r++) acc[r] = warp_sum(acc[r]);
}

// x [n, k], W [m, k] -> y [n, m]; grid (ceil(m / MM_WARPS), ceil(n / NB)), MM_WARPS simdgroups.
struct MmArgs {
    device const u8* W;
    i64 row_bytes;
    device const float* x;
    device float* y;
    int n;
    int m;
    int k;
};

template <int T, int NB>
kernel void mm(constant MmArgs& a [[buffer(0)]], uint2 tg [[threadgroup_position_in_grid]],
               uint warp [[simdgroup_index_in_threadgroup]], uint lane [[thread_index_in_simdgroup]]) {
    const int j = tg.x * MM_WARPS + warp;
    if (j >= a.m) return;  // the whole simdgroup: j is per simdgroup
    const int r0 = tg.y * NB, nr = min(NB, a.n - r0);
    float acc[NB];
    mm_row<T, NB>(a.W + (i64)j * a.row_bytes, a.k, a.x + (i64)r0 * a.k, nr, lane, acc);
    if (lane == 0) {
        for (int r = 0; r < NB; r++)
            if (r < nr) a.y[(i64)(r0 + r) * a.m + j] = acc[r];
    }
}
typedef decltype(mm<T_F32, 1>) mm_t;

// Expert rows: pair p (threadgroup y) multiplies x row p / xdiv by expert ids[p] of the stack W.
struct MmidArgs {
    device const u8* W;
    i64 row_bytes;
    i64 expert_bytes;
    device const int* ids;
    int xdiv;
    device const float* x;
    device float* y;
    int m;
    int k;
};

template <int T>
kernel void mmid(constant MmidArgs& a [[buffer(0)]], uint2 tg [[threadgroup_position_in_grid]],
                 uint warp [[simdgroup_index_in_threadgroup]], uint lane [[thread_index_in_simdgroup]]) {
    const int j = tg.x * MM_WARPS + warp;
    if (j >= a.m) return;
    const int p = tg.y;
    float acc[1];
    mm_row<T, 1>(a.W + a.ids[p] * a.expert_bytes + (i64)j * a.row_bytes, a.k, a.x + (i64)(p / a.xdiv) * a.k, 1, lane, acc);
    if (lane == 0) a.y[(i64)p * a.m + j] = acc[0];
}
typedef decltype(mmid<T_F32>) mmid_t;

// Rows of W picked by ids, decoded to float32; one threadgroup per row.
struct GetRowsArgs {
    device const u8* W;
    i64 row_bytes;
    device const int* ids;
    device float* out;
    int d;
    int n_rows;
    device int* err;
    int float_ids;  // the ids are float32 token ids (an argmax's), else int32
};

template <int T>
kernel void get_rows(constant GetRowsArgs& a [[buffer(0)]], uint row [[threadgroup_position_in_grid]],
                     uint tid [[thread_index_in_threadgroup]], uint threads [[threads_per_threadgroup]]) {
    const float f = as_type<float>(a.ids[row]);
    const int id = a.float_ids == 0 ? a.ids[row] : f >= 0.0f && f < float(a.n_rows) ? int(f) : -1;
    if (id < 0 || id >= a.n_rows) {
        if (tid == 0) set_error(a.err, ERR_TOKEN);
        return;
    }
    device const u8* w = a.W + (i64)id * a.row_bytes;
    device float* o = a.out + (i64)row * a.d;
    if (IS_FLOAT_TYPE(T)) {
        for (int e = tid; e < a.d; e += threads) o[e] = deq1<T>(w, e);
    } else {
        for (int sb = tid; sb < (a.d >> 5); sb += threads) {
            float v[32];
            deq32<T>(w, sb, v);
            for (int l = 0; l < 32; l++) o[32 * sb + l] = v[l];
        }
    }
}
typedef decltype(get_rows<T_F32>) get_rows_t;
