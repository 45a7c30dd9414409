/* Quantized activations on aarch64 CPUs with the dot product extension: q8_neon.h's products with
 * SDOT (four int8 products into each int32 lane) in place of widening multiplies; the same exact
 * integers, so the same bits as plain NEON and scalar. The quantizer stays q8_neon.c's. */
#include "mtp.h"

#if defined(MTP_NEON) && defined(MTP_DOTPROD)
#if defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#define Q8N_TARGET MTP_DOTPROD
#define Q8N_NAME(x) x##_dotprod
#define q8n_dot16(acc, a, b) vdotq_s32((acc), (a), (b))
#include "q8_neon.h"

static int has_dotprod(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    int v = 0;
    size_t n = sizeof v;
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &n, NULL, 0) == 0 && v;
#else
    return 0;
#endif
}

int mtp_q8_dotprod(mtp_kernels *kt) {
    if (!has_dotprod())
        return 0;
    install_dotprod(kt);
    return 1;
}

#else
int mtp_q8_dotprod(mtp_kernels *kt) {
    (void)kt;
    return 0;
}
#endif
