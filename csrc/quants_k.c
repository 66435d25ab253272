/* quants_k.c: the scalar reference for the k-quants (Q2_K .. Q6_K, Q8_K). */
#include <math.h>
#include <string.h>
#include "quants.h"

/* ---- not yet written: filled in by the k-quant work ------------------------ */
#define LL_STUB_TYPE(t) \
    void ll_dequantize_row_##t(const void *x, float *y, int64_t n) { memset(y, 0, (size_t)n * 4); } \
    void ll_quantize_row_##t##_ref(const float *x, void *y, int64_t n) { (void)x; (void)y; (void)n; }
LL_STUB_TYPE(q2_K)
LL_STUB_TYPE(q3_K)
LL_STUB_TYPE(q4_K)
LL_STUB_TYPE(q5_K)
LL_STUB_TYPE(q6_K)
LL_STUB_TYPE(q8_K)
#define LL_STUB_DOT(f) void f(int64_t n, float *s, const void *x, const void *y) { *s = 0; }
LL_STUB_DOT(ll_vec_dot_q2_K_q8_K)
LL_STUB_DOT(ll_vec_dot_q3_K_q8_K)
LL_STUB_DOT(ll_vec_dot_q4_K_q8_K)
LL_STUB_DOT(ll_vec_dot_q5_K_q8_K)
LL_STUB_DOT(ll_vec_dot_q6_K_q8_K)
