/* Quantized activations on AVX-512 VNNI (256-bit, VL): q8_x86.h's products with vpdpbusd (Q8_0) and
 * vpdpwssd (the scaled K-quant sums) in place of AVX2's maddubs / madd pairs: one instruction fewer
 * per 32 values and token, the same exact integers, so the same bits as AVX2 and scalar. */
#include "mtp.h"

#if defined(MTP_X86)
#include <immintrin.h>

#define Q8_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define Q8_NAME(x) x##_vnni
#define q8_dot4(a, b) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (a), (b))
#define q8_dot16(c, p, s) _mm256_dpwssd_epi32((c), (p), (s))
#include "q8_x86.h"

int mtp_q8_vnni(mtp_kernels *kt) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512vnni") || !__builtin_cpu_supports("avx512vl"))
        return 0;
    install_vnni(kt);
    return 1;
}

#else
int mtp_q8_vnni(mtp_kernels *kt) {
    (void)kt;
    return 0;
}
#endif
