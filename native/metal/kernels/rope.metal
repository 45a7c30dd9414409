// rope.cu: rotary embedding of x [n, H, d] at positions pos [n]; one threadgroup per (row, head).
// freq[i] is the reference's float32 angle step of pair i (0 for pairs whose M-RoPE section takes
// no text position). cos and sin in float (CUDA: in double, rounded once).

struct RopeArgs {
    device const float* x;
    device const int* pos;
    device const float* freq;
    device float* o;
    int n_head;
    int d;
    int half_;  // rotated pairs (`half` is a type in MSL)
};

kernel void rope(constant RopeArgs& a [[buffer(0)]], uint row [[threadgroup_position_in_grid]],
                 uint tid [[thread_index_in_threadgroup]], uint threads [[threads_per_threadgroup]]) {
    device const float* xr = a.x + (i64)row * a.d;
    device float* orow = a.o + (i64)row * a.d;
    const float p = (float)a.pos[row / a.n_head];
    const int h = a.half_;
    for (int e = tid; e < a.d; e += threads) {
        if (e < 2 * h) {
            const int i = e < h ? e : e - h;
            const float theta = p * a.freq[i];
            const float c = precise::cos(theta), s = precise::sin(theta);
            const float x0 = xr[i], x1 = xr[i + h];
            orow[e] = e < h ? x0 * c - x1 * s : x0 * s + x1 * c;
        } else {
            orow[e] = xr[e];
        }
    }
}
