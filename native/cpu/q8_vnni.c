/* Quantized activations on AVX-512 VNNI (256-bit, VL): q8_x86.h's products with vpdpbusd in place
 * of AVX2's maddubs / madd pairs; the K-quants pack two registers' vpdpbusd sums to int16 and scale
 * them with one vpdpwssd (three multiplies per 64 values and token where AVX2 takes four), the same
 * exact integers, so the same bits as AVX2 and scalar. */
#include "mtp.h"

#if defined(MTP_X86)
#include <immintrin.h>

#define Q8_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define Q8_NAME(x) x##_vnni
#define q8_dot4(a, b) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (a), (b))
#define q8_pair(c, v0, x0, v1, x1, s0, s1, s01) \
    ((void)(s0), (void)(s1), _mm256_dpwssd_epi32((c), _mm256_packs_epi32(q8_dot4((v0), (x0)), q8_dot4((v1), (x1))), (s01)))
#include "q8_x86.h"

int mtp_q8_vnni(mtp_kernels *kt) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512vnni") || !__builtin_cpu_supports("avx512vl"))
        return 0;
    install_vnni(kt);
    mtp_q8_lanes_vnni(kt);
    return 1;
}

#else
int mtp_q8_vnni(mtp_kernels *kt) {
    (void)kt;
    return 0;
}
#endif
