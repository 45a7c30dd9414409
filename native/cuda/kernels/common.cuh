// Shared by every kernel file (the files are compiled together as one NVRTC program; no headers).
// Built with --fmad=false: a multiply and an add stay two roundings, as in the NumPy reference;
// dot products ask for fused multiply-adds explicitly (fmaf), in a fixed order.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

#define ERR_POS 1    // a position outside the KV cache
#define ERR_TOKEN 3  // a row id outside the weight matrix

__device__ __forceinline__ void set_error(int* err, int code) { atomicCAS(err, 0, code); }

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ float bf2f(u16 h) { return __uint_as_float(((u32)h) << 16); }

// Half fields of every ggml block sit at even offsets of 2-aligned blocks.
__device__ __forceinline__ u16 ld16(const u8* p) { return *(const u16*)p; }

// Butterfly sum: every lane ends with the same value (a + b == b + a), in a fixed order.
template <typename F>
__device__ __forceinline__ F warp_sum(F v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sigmoid as the reference computes it: in double, rounded once to float.
__device__ __forceinline__ float sigmoid_f(float x) { return (float)(1.0 / (1.0 + exp(-(double)x))); }

// Programmatic dependent launch (sm_90 and later): a captured graph starts every kernel after its
// first as a programmatic dependent of the one before. Each kernel first calls allow_next(), so the
// next kernel's blocks may be placed once all of this one's have started, then wait_previous()
// before it reads anything an earlier kernel wrote or writes anything one reads; nothing but the
// weights may be touched before that wait. The wait covers the whole chain: a kernel ends only after
// its own wait, so when it returns every kernel before it has ended and its writes are visible.
// Without the graph's programmatic edges (direct launches) both are no-ops.
__device__ __forceinline__ void allow_next() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_previous() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// The opening of a kernel that has nothing to do before the wait.
__device__ __forceinline__ void begin_kernel() {
    allow_next();
    wait_previous();
}

// Which buffer holds snapshot slot r while buffer `committed` holds the committed state.
__device__ __forceinline__ int slot_buffer(int r, int committed) { return r < committed ? r : r + 1; }
