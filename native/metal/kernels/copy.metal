// copy.cu: row copies for slice, concat and take_rows: out[r, out_off + c] = in[src(r), in_off + c]
// with src(r) = rows[r], or r where rows is null. Grid-stride.

struct CopyRowsArgs {
    device const float* in;
    device float* out;
    device const int* rows;
    i64 n_rows;
    i64 width;
    i64 in_stride;
    i64 in_off;
    i64 out_stride;
    i64 out_off;
};

kernel void copy_rows(constant CopyRowsArgs& a [[buffer(0)]], uint first [[thread_position_in_grid]],
                      uint stride [[threads_per_grid]]) {
    const i64 total = a.n_rows * a.width;
    for (i64 i = first; i < total; i += stride) {
        const i64 r = i / a.width, c = i % a.width;
        const i64 src = a.rows ? (i64)a.rows[r] : r;
        a.out[r * a.out_stride + a.out_off + c] = a.in[src * a.in_stride + a.in_off + c];
    }
}
