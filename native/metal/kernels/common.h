// Shared by every kernel file (library.py assembles the headers, the kernel files and the
// instantiations into one source; no #include of our own files).
//
// Host contract (device.py): a kernel's arguments are one struct in buffer(0), passed with
// setBytes, members in the CUDA kernel's parameter order (pointer -> a device pointer, i.e.
// MTLBuffer.gpuAddress + offset (Metal 3); i64 -> long; int -> int; float -> float; each member
// at an offset aligned to its own size). The grid is the CUDA grid in threadgroups, the
// threadgroup the CUDA block; dynamic threadgroup memory is threadgroup(0).
//
// Arithmetic follows the CUDA kernels (built with --fmad=false) operation for operation: fast
// math is off (MTLCompileOptions, and the pragmas below from Metal 3.2), dot products ask for
// fma() in the CUDA order. Metal has no double: where CUDA computes in double (norm sums, exp,
// log1p, sin, cos), these kernels compute in float, so results agree with the reference within
// the suite's tolerance but are not bit-identical to CUDA. Batch invariance is kept: every
// reduction has the CUDA kernel's per-lane split and fixed order (simdgroups are 32 wide on Apple
// GPUs, and device.py refuses a pipeline that is not, so simd_shuffle_xor is CUDA's butterfly).

#include <metal_stdlib>
using namespace metal;

#if __METAL_VERSION__ >= 320
#pragma METAL fp math_mode(safe)
#pragma METAL fp contract(off)
#endif

typedef uchar u8;
typedef char i8;
typedef ushort u16;
typedef uint u32;
typedef long i64;

#define ERR_POS 1    // a position outside the KV cache
#define ERR_TOKEN 3  // a row id outside the weight matrix

// The first error wins (Metal has only the weak compare-exchange: retry while the flag is 0).
inline void set_error(device int* err, int code) {
    int expected = 0;
    while (!atomic_compare_exchange_weak_explicit((device atomic_int*)err, &expected, code, memory_order_relaxed,
                                                  memory_order_relaxed) && expected == 0) {
    }
}

// float16 bits -> float32, exact for every value (subnormals included, whatever the GPU does
// with half denormals).
inline float h2f(u16 h) {
    const uint sign = uint(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0u) {
        const float r = float(m) * 5.9604644775390625e-8f;  // m * 2^-24: exact
        return sign != 0u ? -r : r;
    }
    if (e == 31u) return as_type<float>(sign | 0x7F800000u | (m << 13));
    return as_type<float>(sign | ((e + 112u) << 23) | (m << 13));
}

inline float bf2f(u16 h) { return as_type<float>(uint(h) << 16); }

// Half fields of every ggml block sit at even offsets of 2-aligned blocks.
inline u16 ld16(device const u8* p) { return *(device const u16*)p; }

// Butterfly sum: every lane ends with the same value (a + b == b + a), in a fixed order.
inline float warp_sum(float v) {
    for (ushort o = 16; o > 0; o >>= 1) v += simd_shuffle_xor(v, o);
    return v;
}

// Sigmoid as the reference computes it, in float (CUDA: in double, rounded once).
inline float sigmoid_f(float x) { return 1.0f / (1.0f + precise::exp(-x)); }

// log(1 + u) for u >= 0 (MSL has no log1p): log(w) times u / (w - 1) undoes the rounding of w = 1 + u.
inline float log1p_f(float u) {
    const float w = 1.0f + u;
    return w == 1.0f ? u : precise::log(w) * (u / (w - 1.0f));
}

// Which buffer holds snapshot slot r while buffer `committed` holds the committed state.
inline int slot_buffer(int r, int committed) { return r < committed ? r : r + 1; }
