/* kernels_avx2.c: AVX2 + FMA + F16C kernels (compiled with those flags only
 * here; used when cpuid reports them). */
#include <immintrin.h>
#include "quants.h"

void ll_kernels_fill_avx2(ll_kernels *k) {
    (void)k; /* not yet written: the scalar kernels stand in */
}
