/* quants.c: the scalar reference for the float, legacy (Q4_0 .. Q8_1) and
 * IQ4 formats: dequantize, quantize (llama.cpp's reference algorithm) and the
 * dot product against the activation type. This code defines the formats;
 * every SIMD kernel is tested against it. */
#include <math.h>
#include <string.h>
#include "quants.h"

/* ---- F32, F16, BF16 ------------------------------------------------------- */

void ll_dequantize_row_f32(const void *x, float *y, int64_t n) { memcpy(y, x, (size_t)n * sizeof(float)); }
void ll_quantize_row_f32_ref(const float *x, void *y, int64_t n) { memcpy(y, x, (size_t)n * sizeof(float)); }

void ll_dequantize_row_f16(const void *x, float *y, int64_t n) {
    const ll_half *h = x;
    for (int64_t i = 0; i < n; i++) y[i] = ll_half_to_f32(h[i]);
}
void ll_quantize_row_f16_ref(const float *x, void *y, int64_t n) {
    ll_half *h = y;
    for (int64_t i = 0; i < n; i++) h[i] = ll_f32_to_half(x[i]);
}

void ll_dequantize_row_bf16(const void *x, float *y, int64_t n) {
    const uint16_t *h = x;
    for (int64_t i = 0; i < n; i++) y[i] = ll_bf16_to_f32(h[i]);
}
void ll_quantize_row_bf16_ref(const float *x, void *y, int64_t n) {
    uint16_t *h = y;
    for (int64_t i = 0; i < n; i++) h[i] = ll_f32_to_bf16(x[i]);
}

void ll_vec_dot_f32_f32(int64_t n, float *s, const void *x, const void *y) {
    const float *a = x, *b = y;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += a[i] * b[i];
    *s = sum;
}
void ll_vec_dot_f16_f32(int64_t n, float *s, const void *x, const void *y) {
    const ll_half *a = x;
    const float *b = y;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += ll_half_to_f32(a[i]) * b[i];
    *s = sum;
}
void ll_vec_dot_bf16_f32(int64_t n, float *s, const void *x, const void *y) {
    const uint16_t *a = x;
    const float *b = y;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += ll_bf16_to_f32(a[i]) * b[i];
    *s = sum;
}

/* ---- Q8_0 ------------------------------------------------------------------ */

void ll_quantize_row_q8_0_ref(const float *x, void *vy, int64_t n) {
    block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const float *v = x + b * QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(v[j]));
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = ll_f32_to_half(d);
        for (int j = 0; j < QK8_0; j++) y[b].qs[j] = (int8_t)roundf(v[j] * id);
    }
}

void ll_dequantize_row_q8_0(const void *vx, float *y, int64_t n) {
    const block_q8_0 *x = vx;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const float d = ll_half_to_f32(x[b].d);
        for (int j = 0; j < QK8_0; j++) y[b * QK8_0 + j] = x[b].qs[j] * d;
    }
}

void ll_vec_dot_q8_0_q8_0(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q8_0 *x = vx, *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        int isum = 0;
        for (int j = 0; j < QK8_0; j++) isum += x[b].qs[j] * y[b].qs[j];
        sum += (float)isum * ll_half_to_f32(x[b].d) * ll_half_to_f32(y[b].d);
    }
    *s = sum;
}

/* ---- not yet written: filled in by the legacy/IQ4 work --------------------- */
#define LL_STUB_TYPE(t) \
    void ll_dequantize_row_##t(const void *x, float *y, int64_t n) { memset(y, 0, (size_t)n * 4); } \
    void ll_quantize_row_##t##_ref(const float *x, void *y, int64_t n) { (void)x; (void)y; (void)n; }
LL_STUB_TYPE(q4_0)
LL_STUB_TYPE(q4_1)
LL_STUB_TYPE(q5_0)
LL_STUB_TYPE(q5_1)
LL_STUB_TYPE(q8_1)
LL_STUB_TYPE(iq4_nl)
LL_STUB_TYPE(iq4_xs)
#define LL_STUB_DOT(f) void f(int64_t n, float *s, const void *x, const void *y) { *s = 0; }
LL_STUB_DOT(ll_vec_dot_q4_0_q8_0)
LL_STUB_DOT(ll_vec_dot_q4_1_q8_1)
LL_STUB_DOT(ll_vec_dot_q5_0_q8_0)
LL_STUB_DOT(ll_vec_dot_q5_1_q8_1)
LL_STUB_DOT(ll_vec_dot_iq4_nl_q8_0)
LL_STUB_DOT(ll_vec_dot_iq4_xs_q8_K)
const int8_t ll_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
