/* kernels_neon.c: NEON (+dotprod where present) kernels for arm64. */
#include <arm_neon.h>
#include "quants.h"

void ll_kernels_fill_neon(ll_kernels *k) {
    (void)k; /* not yet written: the scalar kernels stand in */
}
