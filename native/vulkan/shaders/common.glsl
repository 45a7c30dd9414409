// Shared by every kernel (the Vulkan twin of native/cuda/kernels/common.cuh).
//
// Host contract: no descriptor sets. Every buffer is reached through its device address
// (GL_EXT_buffer_reference); the kernel's arguments are one push-constant block, members in the
// CUDA parameter order (pointer -> 8-byte buffer reference, i64 -> int64_t, int -> int,
// float -> float; std430). Specialization constant 0 is the workgroup size (the CUDA block
// size); the grid is the CUDA grid. Per-row kernels index with gl_WorkGroupID (the host may
// split a large grid with vkCmdDispatchBase), grid-stride kernels stride by
// gl_NumWorkGroups.x * gl_WorkGroupSize.x.
//
// Arithmetic follows the CUDA kernels operation for operation (they are built with
// --fmad=false): every float result that feeds another operation sits in a `precise` variable
// (SPIR-V NoContraction), so no driver fuses a * b + c or reorders a sum; dot products ask for
// fma() explicitly, in the CUDA order. GPUs fuse fma() (on an NVIDIA H100 every kernel but
// attention gives the CUDA backend's bits); Mesa's lavapipe computes it as a multiply then an
// add, which the Vulkan spec allows, so there sums differ from CUDA's in the last bits (still
// the same for every batch size). Transcendentals are computed in double by the helpers below
// and rounded once to float, as the CUDA kernels' (float)exp((double)x).

#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference2 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_spirv_intrinsics : require
#ifdef SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif

layout(local_size_x_id = 0) in;

// IEEE float32 as CUDA (built without -ftz) computes it: subnormals kept, not flushed to zero
// (SPIR-V DenormPreserve 32), and infinities, NaNs and signed zeros honoured
// (SignedZeroInfNanPreserve 32). A device without shaderDenormPreserveFloat32 or
// shaderSignedZeroInfNanPreserveFloat32 gets the module with these two modes (and their
// capabilities) taken out: build_shaders.spirv_code(name, sg, denorm_preserve=False,
// inf_nan_preserve=False).
spirv_execution_mode(capabilities = [4464], 4459, 32);
spirv_execution_mode(capabilities = [4466], 4461, 32);

layout(buffer_reference, std430, buffer_reference_align = 4) buffer F32 { float v[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer I32 { int v[]; };
// Weights in their ggml blocks: every field of every block sits at an even byte offset of a
// 2-aligned block, so 16-bit words reach all of them (row_bytes need not be a multiple of 4).
layout(buffer_reference, std430, buffer_reference_align = 2) buffer U16 { uint16_t v[]; };
// Rows of x as the quantized matmuls read them (CUDA's float4 loads): 16-byte aligned.
layout(buffer_reference, std430, buffer_reference_align = 16) buffer V4 { vec4 v[]; };

#define ERR_POS 1    // a position outside the KV cache
#define ERR_TOKEN 3  // a row id outside the weight matrix

#define WGS gl_WorkGroupSize.x

// Element `i` of a float array at `base` (64-bit offsets, as the CUDA pointer arithmetic).
F32 f32_at(F32 base, int64_t i) { return F32(uint64_t(base) + uint64_t(i) * 4ul); }
I32 i32_at(I32 base, int64_t i) { return I32(uint64_t(base) + uint64_t(i) * 4ul); }

void set_error(I32 err, int code) { atomicCompSwap(err.v[0], 0, code); }

// float16 bits -> float32, exact for every value: the hardware conversion, except for zeros and
// subnormals, which are rebuilt exactly (m * 2^-24 is a normal float) whatever the device does
// with float16 subnormals.
float h2f(uint h) {
    float f = unpackHalf2x16(h).x;
    if ((h & 0x7C00u) == 0u) {
        precise float r = float(h & 0x3FFu) * 5.9604644775390625e-8;
        f = (h & 0x8000u) != 0u ? -r : r;
    }
    return f;
}

float bf2f(uint h) { return uintBitsToFloat(h << 16); }

// a / b rounded once to float: the quotient of two floats in double, rounded to float, is the
// correctly rounded float quotient (no double rounding: 53 >= 2 * 24 + 2), whatever precision
// the device gives float division.
float div_f(float a, float b) {
    precise double q = double(a) / double(b);
    return float(q);
}

// ---- double-precision exp, log1p, sin, cos (ports of FreeBSD msun's e_exp.c, e_log.c,
// k_sin.c, k_cos.c; errors below 1 ulp of a double), so that rounding the result to float
// agrees with CUDA's double functions except where a result lies within a few double ulps of
// a float rounding boundary.

double d_from_bits(uint hi, uint lo) { return packDouble2x32(uvec2(lo, hi)); }

double exp_d(double x) {
    if (isnan(x)) return x;
    if (x > 7.09782712893383973096e+02LF) return d_from_bits(0x7FF00000u, 0u);  // overflow: +inf
    if (x < -7.45133219101941108420e+02LF) return 0.0LF;                         // underflow
    const double ln2hi = 6.93147180369123816490e-01LF, ln2lo = 1.90821492927058770002e-10LF;
    const double invln2 = 1.44269504088896338700e+00LF;
    const double P1 = 1.66666666666666019037e-01LF, P2 = -2.77777777770155933842e-03LF,
                 P3 = 6.61375632143793436117e-05LF, P4 = -1.65339022054652515390e-06LF,
                 P5 = 4.13813679705723846039e-08LF;
    const double ax = abs(x);
    int k = 0;
    precise double hi = 0.0LF, lo = 0.0LF, r = x;
    if (ax > 3.46573590279972654709e-01LF) {  // |x| > 0.5 ln2
        if (ax < 1.03972077083991796413e+00LF) {  // |x| < 1.5 ln2
            k = x < 0.0LF ? -1 : 1;
        } else {
            precise double t = invln2 * x + (x < 0.0LF ? -0.5LF : 0.5LF);
            k = int(t);  // truncation toward zero, as C's (int)
        }
        const double dk = double(k);
        hi = x - dk * ln2hi;  // exact: dk * ln2hi is exact (ln2hi has 32 bits)
        lo = dk * ln2lo;
        r = hi - lo;
    } else if (ax < 3.7252902984e-09LF) {  // |x| < 2^-28
        precise double one_x = 1.0LF + x;
        return one_x;
    }
    precise double t = r * r;
    precise double c = r - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
    if (k == 0) {
        precise double y0 = 1.0LF - ((r * c) / (c - 2.0LF) - r);
        return y0;
    }
    precise double y = 1.0LF - ((lo - (r * c) / (2.0LF - c)) - hi);
    // y * 2^k, in two exact steps where 2^k alone is not a normal double.
    if (k >= -1021) {
        precise double s = y * d_from_bits(uint(k + 1023) << 20, 0u);
        return s;
    }
    precise double s1 = y * d_from_bits(uint(k + 1000 + 1023) << 20, 0u);
    precise double s2 = s1 * d_from_bits(uint(-1000 + 1023) << 20, 0u);
    return s2;
}

// Natural log of a positive, finite, normal double.
double log_d(double x) {
    const double ln2hi = 6.93147180369123816490e-01LF, ln2lo = 1.90821492927058770002e-10LF;
    const double Lg1 = 6.666666666666735130e-01LF, Lg2 = 3.999999999940941908e-01LF,
                 Lg3 = 2.857142874366239149e-01LF, Lg4 = 2.222219843214978396e-01LF,
                 Lg5 = 1.818357216161805012e-01LF, Lg6 = 1.531383769920937332e-01LF,
                 Lg7 = 1.479819860511658591e-01LF;
    const uvec2 w = unpackDouble2x32(x);  // (lo, hi)
    int hx = int(w.y);
    int k = (hx >> 20) - 1023;
    hx &= 0x000fffff;
    const int i0 = (hx + 0x95f64) & 0x100000;
    const double xn = d_from_bits(uint(hx | (i0 ^ 0x3ff00000)), w.x);  // x or x/2, normalised
    k += i0 >> 20;
    precise double f = xn - 1.0LF;
    const double dk = double(k);
    if ((0x000fffff & (2 + hx)) < 3) {  // -2^-20 <= f < 2^-20
        if (f == 0.0LF) {
            precise double z0 = dk * ln2hi + dk * ln2lo;
            return z0;
        }
        precise double R0 = f * f * (0.5LF - 0.33333333333333333LF * f);
        precise double z1 = dk * ln2hi - ((R0 - dk * ln2lo) - f);
        return z1;
    }
    precise double s = f / (2.0LF + f);
    precise double z = s * s;
    int i = hx - 0x6147a;
    precise double ww = z * z;
    const int j = 0x6b851 - hx;
    precise double t1 = ww * (Lg2 + ww * (Lg4 + ww * Lg6));
    precise double t2 = z * (Lg1 + ww * (Lg3 + ww * (Lg5 + ww * Lg7)));
    i |= j;
    precise double R = t2 + t1;
    if (i > 0) {
        precise double hfsq = 0.5LF * f * f;
        precise double z2 = dk * ln2hi - ((hfsq - (s * (hfsq + R) + dk * ln2lo)) - f);
        return z2;
    }
    precise double z3 = dk * ln2hi - ((s * (f - R) - dk * ln2lo) - f);
    return z3;
}

// log(1 + u) for u >= 0 (or +inf / NaN): log(w) of w = 1 + u, corrected by the rounding of w.
double log1p_d(double u) {
    if (isnan(u) || isinf(u)) return u;
    precise double w = 1.0LF + u;
    if (w == 1.0LF) return u;
    precise double r = log_d(w) + (u - (w - 1.0LF)) / w;
    return r;
}

double sin_kernel(double x) {
    const double S1 = -1.66666666666666324348e-01LF, S2 = 8.33333333332248946124e-03LF,
                 S3 = -1.98412698298579493134e-04LF, S4 = 2.75573137070700676789e-06LF,
                 S5 = -2.50507602534068634195e-08LF, S6 = 1.58969099521155010221e-10LF;
    precise double z = x * x;
    precise double w = z * z;
    precise double r = S2 + z * (S3 + z * S4) + z * w * (S5 + z * S6);
    precise double v = z * x;
    precise double s = x + v * (S1 + z * r);
    return s;
}

double cos_kernel(double x) {
    const double C1 = 4.16666666666666019037e-02LF, C2 = -1.38888888888741095749e-03LF,
                 C3 = 2.48015872894767294178e-05LF, C4 = -2.75573143513906633035e-07LF,
                 C5 = 2.08757232129817482790e-09LF, C6 = -1.13596475577881948265e-11LF;
    precise double z = x * x;
    precise double w = z * z;
    precise double r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
    precise double hz = 0.5LF * z;
    precise double ww = 1.0LF - hz;
    precise double c = ww + (((1.0LF - ww) - hz) + z * r);
    return c;
}

// x = k * pi/2 + r, |r| <= ~pi/4, for |x| < 2^26 (a float angle: kept exact by a four-part
// Cody-Waite split of pi/2 whose first three parts have 27 bits, so k * part is exact).
double reduce_pio2(double x, out int quadrant) {
    if (abs(x) <= 7.853981633974483e-01LF) {
        quadrant = 0;
        return x;
    }
    precise double kd = roundEven(x * 0.6366197723675814LF);
    quadrant = int(int64_t(kd) & 3l);
    precise double r = x - kd * 1.570796325802803LF;  // exact (Sterbenz)
    r = r - kd * 9.920935739593517e-10LF;
    r = r - kd * 5.721188709663575e-18LF;
    r = r - kd * 1.6446256936324258e-26LF;
    return r;
}

double sin_d(double x) {
    if (isnan(x) || isinf(x)) return d_from_bits(0x7FF80000u, 0u);  // NaN
    int q;
    const double r = reduce_pio2(x, q);
    const double v = (q & 1) == 0 ? sin_kernel(r) : cos_kernel(r);
    return (q & 2) == 0 ? v : -v;
}

double cos_d(double x) {
    if (isnan(x) || isinf(x)) return d_from_bits(0x7FF80000u, 0u);  // NaN
    int q;
    const double r = reduce_pio2(x, q);
    const double v = (q & 1) == 0 ? cos_kernel(r) : sin_kernel(r);
    return (q == 0 || q == 3) ? v : -v;
}

// Sigmoid as the reference computes it: in double, rounded once to float.
float sigmoid_f(float x) {
    precise double d = 1.0LF / (1.0LF + exp_d(-double(x)));
    return float(d);
}

float exp_f(float x) { return float(exp_d(double(x))); }

// Which buffer holds snapshot slot r while buffer `committed` holds the committed state.
int slot_buffer(int r, int committed) { return r < committed ? r : r + 1; }
