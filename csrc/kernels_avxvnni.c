/* kernels_avxvnni.c: kernels_avx2.c built a second time with AVX-VNNI
 * (-mavxvnni), so the integer dots use vpdpbusd / vpdpwssd where the AVX2
 * build pairs maddubs or madd with an add. One source, two ISAs: the switch
 * is LL_AVXVNNI, read by the few helpers that differ. */
#define LL_AVXVNNI 1
#include "kernels_avx2.c"
