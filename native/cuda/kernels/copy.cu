// Row copies for slice, concat and take_rows: out[r, out_off + c] = in[src(r), in_off + c].
extern "C" __global__ void copy_rows(const float* in, float* out, const int* rows, i64 n_rows, i64 width, i64 in_stride,
                                     i64 in_off, i64 out_stride, i64 out_off) {
    begin_kernel();
    const i64 total = n_rows * width;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        const i64 r = i / width, c = i % width;
        const i64 src = rows ? (i64)rows[r] : r;
        out[r * out_stride + out_off + c] = in[src * in_stride + in_off + c];
    }
}
