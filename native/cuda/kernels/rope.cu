// Rotary embedding of x [n, H, d] at positions pos [n]; one block per (row, head). freq[i] is the
// reference's float32 angle step of pair i (0 for pairs whose M-RoPE section takes no text position).
extern "C" __global__ void rope(const float* x, const int* pos, const float* freq, float* o, int n_head, int d, int half) {
    begin_kernel();
    const float* xr = x + (i64)blockIdx.x * d;
    float* orow = o + (i64)blockIdx.x * d;
    const float p = (float)pos[blockIdx.x / n_head];
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        if (e < 2 * half) {
            const int i = e < half ? e : e - half;
            const float theta = p * freq[i];
            const float c = (float)cos((double)theta), s = (float)sin((double)theta);
            const float x0 = xr[i], x1 = xr[i + half];
            orow[e] = e < half ? x0 * c - x1 * s : x0 * s + x1 * c;
        } else {
            orow[e] = xr[e];
        }
    }
}
