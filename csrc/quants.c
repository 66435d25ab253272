/* quants.c: the scalar reference for the float, legacy (Q4_0 .. Q8_1) and
 * IQ4 formats: dequantize, quantize (llama.cpp's reference algorithm) and the
 * dot product against the activation type. This code defines the formats;
 * every SIMD kernel is tested against it. */
#include <float.h>
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

/* attention: one cache row against n_y float rows */
#define DOT_ROWS(name, ELEM)                                                              \
    void name(int64_t n, float *s, int64_t s_stride, const void *x, const float *y,      \
              size_t y_stride, int n_y) {                                                \
        for (int a = 0; a < n_y; a++) {                                                  \
            const float *ya = (const float *)((const uint8_t *)y + a * y_stride);        \
            float sum = 0.0f;                                                            \
            for (int64_t i = 0; i < n; i++) sum += ELEM * ya[i];                         \
            s[a * s_stride] = sum;                                                       \
        }                                                                                \
    }
DOT_ROWS(ll_dot_rows_f32, ((const float *)x)[i])
DOT_ROWS(ll_dot_rows_f16, ll_half_to_f32(((const ll_half *)x)[i]))
#undef DOT_ROWS

/* ---- Q8_0 ------------------------------------------------------------------ */

/* round(v) as an 8-bit level, ties away from zero. When a block's largest
 * value is below ~3e-39, 1/d overflows and v * id is +-inf (or NaN for a 0):
 * clamp to +-127 and take NaN as 0, where a bare cast would be undefined. */
static int8_t q8_level(float v) {
    const float r = roundf(v);
    return r >= 127.0f ? 127 : r <= -127.0f ? -127 : r == r ? (int8_t)r : 0;
}

void ll_quantize_row_q8_0_ref(const float *x, void *vy, int64_t n) {
    block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const float *v = x + b * QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(v[j]));
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = ll_f32_to_half(d);
        for (int j = 0; j < QK8_0; j++) y[b].qs[j] = q8_level(v[j] * id);
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


/* ---- shared by the legacy formats ----------------------------------------- */

static void min_max(const float *v, int n, float *min, float *max) {
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (v[j] < lo) lo = v[j];
        if (v[j] > hi) hi = v[j];
    }
    *min = lo;
    *max = hi;
}

/* Element j of a 32-block sits in the low nibble of qs[j] (j < 16) or the
 * high nibble of qs[j - 16]; the 5-bit formats keep bit 4 of element j in
 * bit j of qh. */
static void pack_nibbles(const uint8_t q[32], uint8_t qs[16]) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 0x0f) | (q[j + 16] << 4));
}

static void unpack_nibbles(const uint8_t qs[16], uint8_t q[32]) {
    for (int j = 0; j < 16; j++) {
        q[j] = qs[j] & 0x0f;
        q[j + 16] = qs[j] >> 4;
    }
}

static void pack_5bit(const uint8_t q[32], uint8_t qs[16], uint8_t qh_bytes[4]) {
    uint32_t qh = 0;
    for (int j = 0; j < 32; j++) qh |= (uint32_t)((q[j] >> 4) & 1) << j;
    pack_nibbles(q, qs);
    memcpy(qh_bytes, &qh, 4);
}

static void unpack_5bit(const uint8_t qs[16], const uint8_t qh_bytes[4], uint8_t q[32]) {
    uint32_t qh;
    memcpy(&qh, qh_bytes, 4);
    unpack_nibbles(qs, q);
    for (int j = 0; j < 32; j++) q[j] |= (uint8_t)(((qh >> j) & 1) << 4);
}

/* A level from v = x / d + offset + 0.5 by truncation (what llama.cpp's
 * legacy quantizers do), limited to 0..max. A block below ~1e-38 makes
 * 1/d overflow and v infinite or NaN: clamp in float first, so the conversion
 * is always defined and every platform gives the same bytes. */
static uint8_t truncated_level(float v, int max) {
    if (!(v > 0.0f)) return 0;
    return v >= (float)max ? (uint8_t)max : (uint8_t)(int)v;
}

/* The symmetric formats (Q4_0, Q5_0): levels 0..2h-1 stand for d * (q - h),
 * and the value of largest magnitude maps to -h. Returns d. */
static float symmetric_levels(const float *v, int h, uint8_t q[32]) {
    const float d = ll_signed_absmax(v, 32) / (float)-h;
    const float id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++) q[j] = truncated_level(v[j] * id + ((float)h + 0.5f), 2 * h - 1);
    return d;
}

/* The affine formats (Q4_1, Q5_1): levels 0..nmax stand for d * q + min. Returns d. */
static float affine_levels(const float *v, int nmax, uint8_t q[32], float *min) {
    float max;
    min_max(v, 32, min, &max);
    const float d = (max - *min) / (float)nmax;
    const float id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++) q[j] = truncated_level((v[j] - *min) * id + 0.5f, nmax);
    return d;
}

/* sum((q - offset) * y) over a 32-block: the integer part of every legacy dot */
static int level_dot(const uint8_t q[32], int offset, const int8_t *y) {
    int isum = 0;
    for (int j = 0; j < 32; j++) isum += (q[j] - offset) * y[j];
    return isum;
}

/* ---- Q4_0: q in 0..15, x = d * (q - 8) ------------------------------------- */

void ll_quantize_row_q4_0_ref(const float *x, void *vy, int64_t n) {
    block_q4_0 *y = vy;
    for (int64_t b = 0; b < n / QK4_0; b++) {
        uint8_t q[QK4_0];
        y[b].d = ll_f32_to_half(symmetric_levels(x + b * QK4_0, 8, q));
        pack_nibbles(q, y[b].qs);
    }
}

void ll_dequantize_row_q4_0(const void *vx, float *y, int64_t n) {
    const block_q4_0 *x = vx;
    for (int64_t b = 0; b < n / QK4_0; b++) {
        const float d = ll_half_to_f32(x[b].d);
        uint8_t q[QK4_0];
        unpack_nibbles(x[b].qs, q);
        for (int j = 0; j < QK4_0; j++) y[b * QK4_0 + j] = (q[j] - 8) * d;
    }
}

void ll_vec_dot_q4_0_q8_0(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_0 *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_0; b++) {
        uint8_t q[QK4_0];
        unpack_nibbles(x[b].qs, q);
        const int isum = level_dot(q, 8, y[b].qs);
        sum += ll_half_to_f32(x[b].d) * ll_half_to_f32(y[b].d) * (float)isum;
    }
    *s = sum;
}

/* ---- Q4_1: q in 0..15, x = d * q + m --------------------------------------- */

void ll_quantize_row_q4_1_ref(const float *x, void *vy, int64_t n) {
    block_q4_1 *y = vy;
    for (int64_t b = 0; b < n / QK4_1; b++) {
        uint8_t q[QK4_1];
        float min;
        y[b].d = ll_f32_to_half(affine_levels(x + b * QK4_1, 15, q, &min));
        y[b].m = ll_f32_to_half(min);
        pack_nibbles(q, y[b].qs);
    }
}

void ll_dequantize_row_q4_1(const void *vx, float *y, int64_t n) {
    const block_q4_1 *x = vx;
    for (int64_t b = 0; b < n / QK4_1; b++) {
        const float d = ll_half_to_f32(x[b].d), m = ll_half_to_f32(x[b].m);
        uint8_t q[QK4_1];
        unpack_nibbles(x[b].qs, q);
        for (int j = 0; j < QK4_1; j++) y[b * QK4_1 + j] = q[j] * d + m;
    }
}

/* sum((d q + m) * dy qy) = d dy sum(q qy) + m * (dy sum(qy)); the activation
 * block carries the last factor as s */
void ll_vec_dot_q4_1_q8_1(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_1 *x = vx;
    const block_q8_1 *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_1; b++) {
        uint8_t q[QK4_1];
        unpack_nibbles(x[b].qs, q);
        const int isum = level_dot(q, 0, y[b].qs);
        sum += ll_half_to_f32(x[b].d) * ll_half_to_f32(y[b].d) * (float)isum +
               ll_half_to_f32(x[b].m) * ll_half_to_f32(y[b].s);
    }
    *s = sum;
}

/* ---- Q5_0: q in 0..31, x = d * (q - 16) ------------------------------------ */

void ll_quantize_row_q5_0_ref(const float *x, void *vy, int64_t n) {
    block_q5_0 *y = vy;
    for (int64_t b = 0; b < n / QK5_0; b++) {
        uint8_t q[QK5_0];
        y[b].d = ll_f32_to_half(symmetric_levels(x + b * QK5_0, 16, q));
        pack_5bit(q, y[b].qs, y[b].qh);
    }
}

void ll_dequantize_row_q5_0(const void *vx, float *y, int64_t n) {
    const block_q5_0 *x = vx;
    for (int64_t b = 0; b < n / QK5_0; b++) {
        const float d = ll_half_to_f32(x[b].d);
        uint8_t q[QK5_0];
        unpack_5bit(x[b].qs, x[b].qh, q);
        for (int j = 0; j < QK5_0; j++) y[b * QK5_0 + j] = (q[j] - 16) * d;
    }
}

void ll_vec_dot_q5_0_q8_0(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_0 *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK5_0; b++) {
        uint8_t q[QK5_0];
        unpack_5bit(x[b].qs, x[b].qh, q);
        const int isum = level_dot(q, 16, y[b].qs);
        sum += ll_half_to_f32(x[b].d) * ll_half_to_f32(y[b].d) * (float)isum;
    }
    *s = sum;
}

/* ---- Q5_1: q in 0..31, x = d * q + m --------------------------------------- */

void ll_quantize_row_q5_1_ref(const float *x, void *vy, int64_t n) {
    block_q5_1 *y = vy;
    for (int64_t b = 0; b < n / QK5_1; b++) {
        uint8_t q[QK5_1];
        float min;
        y[b].d = ll_f32_to_half(affine_levels(x + b * QK5_1, 31, q, &min));
        y[b].m = ll_f32_to_half(min);
        pack_5bit(q, y[b].qs, y[b].qh);
    }
}

void ll_dequantize_row_q5_1(const void *vx, float *y, int64_t n) {
    const block_q5_1 *x = vx;
    for (int64_t b = 0; b < n / QK5_1; b++) {
        const float d = ll_half_to_f32(x[b].d), m = ll_half_to_f32(x[b].m);
        uint8_t q[QK5_1];
        unpack_5bit(x[b].qs, x[b].qh, q);
        for (int j = 0; j < QK5_1; j++) y[b * QK5_1 + j] = q[j] * d + m;
    }
}

void ll_vec_dot_q5_1_q8_1(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_1 *x = vx;
    const block_q8_1 *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK5_1; b++) {
        uint8_t q[QK5_1];
        unpack_5bit(x[b].qs, x[b].qh, q);
        const int isum = level_dot(q, 0, y[b].qs);
        sum += ll_half_to_f32(x[b].d) * ll_half_to_f32(y[b].d) * (float)isum +
               ll_half_to_f32(x[b].m) * ll_half_to_f32(y[b].s);
    }
    *s = sum;
}

/* ---- Q8_1: the activation type of Q4_1 / Q5_1 ------------------------------ */

void ll_quantize_row_q8_1_ref(const float *x, void *vy, int64_t n) {
    block_q8_1 *y = vy;
    for (int64_t b = 0; b < n / QK8_1; b++) {
        const float *v = x + b * QK8_1;
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; j++) amax = fmaxf(amax, fabsf(v[j]));
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            y[b].qs[j] = q8_level(v[j] * id);
            sum += y[b].qs[j];
        }
        y[b].d = ll_f32_to_half(d);
        /* from the float d, before it is rounded to half */
        y[b].s = ll_f32_to_half((float)sum * d);
    }
}

void ll_dequantize_row_q8_1(const void *vx, float *y, int64_t n) {
    const block_q8_1 *x = vx;
    for (int64_t b = 0; b < n / QK8_1; b++) {
        const float d = ll_half_to_f32(x[b].d);
        for (int j = 0; j < QK8_1; j++) y[b * QK8_1 + j] = x[b].qs[j] * d;
    }
}

/* ---- Q8_0P: the activation type of packed Q5_0 ------------------------------ */

/* Q8_0's block, with the float16 scale widened back to float32 (so the
 * values are exactly Q8_0's) and the sum of the quants beside it. */
void ll_quantize_row_q8_0p_ref(const float *x, void *vy, int64_t n) {
    block_q8_0p *y = vy;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        block_q8_0 q;
        ll_quantize_row_q8_0_ref(x + b * QK8_0, &q, QK8_0);
        int32_t sum = 0;
        for (int j = 0; j < QK8_0; j++) sum += q.qs[j];
        y[b].d = ll_half_to_f32(q.d);
        y[b].sum = sum;
        memcpy(y[b].qs, q.qs, QK8_0);
    }
}

void ll_dequantize_row_q8_0p(const void *vx, float *y, int64_t n) {
    const block_q8_0p *x = vx;
    for (int64_t b = 0; b < n / QK8_0; b++)
        for (int j = 0; j < QK8_0; j++) y[b * QK8_0 + j] = x[b].qs[j] * x[b].d;
}

/* ---- Q8_1P: the activation type of packed Q4_1 ------------------------------ */

void ll_quantize_row_q8_1p_ref(const float *x, void *vy, int64_t n) {
    block_q8_1p *y = vy;
    for (int64_t b = 0; b < n / QK8_1; b++) {
        block_q8_1 q;
        ll_quantize_row_q8_1_ref(x + b * QK8_1, &q, QK8_1);
        y[b].d = ll_half_to_f32(q.d);
        y[b].s = ll_half_to_f32(q.s);
        memcpy(y[b].qs, q.qs, QK8_1);
    }
}

void ll_dequantize_row_q8_1p(const void *vx, float *y, int64_t n) {
    const block_q8_1p *x = vx;
    for (int64_t b = 0; b < n / QK8_1; b++)
        for (int j = 0; j < QK8_1; j++) y[b * QK8_1 + j] = x[b].qs[j] * x[b].d;
}

/* ---- IQ4_NL and IQ4_XS: 4-bit indices into 16 non-uniform levels ------------ */

const int8_t ll_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* below this a group's values count as zero (llama.cpp's GROUP_MAX_EPS) */
#define IQ4_GROUP_EPS 1e-15f
/* scales tried on each side of the first guess (llama.cpp's ntry) */
#define IQ4_SCALE_TRIES 7

/* Index of the level nearest to x; a tie goes to the upper level. */
static int iq4_nearest(float x) {
    const int8_t *v = ll_iq4nl_values;
    if (x <= v[0]) return 0;
    if (x >= v[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (x < v[mid]) hi = mid;
        else lo = mid;
    }
    return x - v[lo] < v[hi] - x ? lo : hi;
}

/* Fit of a 32-group's levels at inverse scale id, weighted by x^2:
 * sum(w q x) and sum(w q q), whose ratio is the least-squares scale. */
static void iq4_fit(const float *x, float id, float *sumqx, float *sumq2) {
    float qx = 0.0f, q2 = 0.0f;
    for (int j = 0; j < 32; j++) {
        const float q = ll_iq4nl_values[iq4_nearest(id * x[j])];
        const float w = x[j] * x[j];
        qx += w * q * x[j];
        q2 += w * q * q;
    }
    *sumqx = qx;
    *sumq2 = q2;
}

/* llama.cpp's scale for one 32-group without an importance matrix: map the
 * largest magnitude to level -127, take the least-squares scale of that
 * assignment, then try the 2*7+1 assignments from inverse scales
 * (k - 127) / max and keep the one with the smallest weighted error.
 * Costs 16 passes over the group. */
static float iq4_group_scale(const float *x) {
    const float max = ll_signed_absmax(x, 32);
    if (fabsf(max) < IQ4_GROUP_EPS) return 0.0f;
    float sumqx, sumq2;
    iq4_fit(x, 1.0f / (-max / ll_iq4nl_values[0]), &sumqx, &sumq2);
    float d = sumq2 > 0 ? sumqx / sumq2 : 0.0f;
    float best = d * sumqx;
    for (int t = -IQ4_SCALE_TRIES; t <= IQ4_SCALE_TRIES; t++) {
        iq4_fit(x, (t + ll_iq4nl_values[0]) / max, &sumqx, &sumq2);
        /* sumqx^2 / sumq2 is the error reduction of this assignment */
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

/* The 4-bit indices of a 32-group at scale d, packed like Q4_0's. */
static void iq4_pack_group(const float *x, float d, uint8_t qs[16]) {
    const float id = d ? 1.0f / d : 0.0f;
    uint8_t q[32];
    for (int j = 0; j < 32; j++) q[j] = (uint8_t)iq4_nearest(id * x[j]);
    pack_nibbles(q, qs);
}

void ll_quantize_row_iq4_nl_ref(const float *x, void *vy, int64_t n) {
    block_iq4_nl *y = vy;
    for (int64_t b = 0; b < n / QK4_NL; b++) {
        const float *v = x + b * QK4_NL;
        const float d = iq4_group_scale(v);
        y[b].d = ll_f32_to_half(d);
        iq4_pack_group(v, d, y[b].qs);
    }
}

void ll_dequantize_row_iq4_nl(const void *vx, float *y, int64_t n) {
    const block_iq4_nl *x = vx;
    for (int64_t b = 0; b < n / QK4_NL; b++) {
        const float d = ll_half_to_f32(x[b].d);
        uint8_t q[QK4_NL];
        unpack_nibbles(x[b].qs, q);
        for (int j = 0; j < QK4_NL; j++) y[b * QK4_NL + j] = d * ll_iq4nl_values[q[j]];
    }
}

void ll_vec_dot_iq4_nl_q8_0(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_nl *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_NL; b++) {
        uint8_t q[QK4_NL];
        unpack_nibbles(x[b].qs, q);
        int isum = 0;
        for (int j = 0; j < QK4_NL; j++) isum += ll_iq4nl_values[q[j]] * y[b].qs[j];
        sum += ll_half_to_f32(x[b].d) * ll_half_to_f32(y[b].d) * (float)isum;
    }
    *s = sum;
}

/* IQ4_XS: 8 groups of 32 per 256-block, each with a 6-bit scale ls - 32 of
 * the block's half d (low 4 bits in scales_l, high 2 in scales_h). */
static int iq4_xs_group_scale(const block_iq4_xs *b, int g) {
    const int lo = (b->scales_l[g / 2] >> 4 * (g % 2)) & 0x0f;
    const int hi = (b->scales_h >> 2 * g) & 3;
    return (lo | hi << 4) - 32;
}

void ll_quantize_row_iq4_xs_ref(const float *x, void *vy, int64_t n) {
    block_iq4_xs *y = vy;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float *v = x + b * QK_K;
        float scales[QK_K / 32];
        float amax = 0.0f, max = 0.0f;
        for (int g = 0; g < QK_K / 32; g++) {
            scales[g] = iq4_group_scale(v + 32 * g);
            if (fabsf(scales[g]) > amax) {
                amax = fabsf(scales[g]);
                max = scales[g];
            }
        }
        /* the largest group scale becomes -32 * d; all zero gives d = -0 */
        const float d = -max / 32;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = ll_f32_to_half(d);
        y[b].scales_h = 0;
        memset(y[b].scales_l, 0, sizeof y[b].scales_l);
        for (int g = 0; g < QK_K / 32; g++) {
            int l = ll_round_nearest(id * scales[g]);
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            iq4_pack_group(v + 32 * g, d * (float)l, y[b].qs + 16 * g);
            const int u = l + 32;
            y[b].scales_l[g / 2] |= (uint8_t)((u & 0x0f) << 4 * (g % 2));
            y[b].scales_h |= (uint16_t)((u >> 4) << 2 * g);
        }
    }
}

void ll_dequantize_row_iq4_xs(const void *vx, float *y, int64_t n) {
    const block_iq4_xs *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = ll_half_to_f32(x[b].d);
        for (int g = 0; g < QK_K / 32; g++) {
            const float dl = d * (float)iq4_xs_group_scale(&x[b], g);
            uint8_t q[32];
            unpack_nibbles(x[b].qs + 16 * g, q);
            for (int j = 0; j < 32; j++) y[b * QK_K + 32 * g + j] = dl * ll_iq4nl_values[q[j]];
        }
    }
}

/* One integer sum per 256-block (|sum| < 32 * 127 * 127 * 256 < 2^31), then
 * one float multiply-add: SIMD kernels can reproduce it exactly. */
void ll_vec_dot_iq4_xs_q8_K(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_xs *x = vx;
    const block_q8_K *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int isum = 0;
        for (int g = 0; g < QK_K / 32; g++) {
            uint8_t q[32];
            unpack_nibbles(x[b].qs + 16 * g, q);
            const int8_t *a = y[b].qs + 32 * g;
            int gsum = 0;
            for (int j = 0; j < 32; j++) gsum += ll_iq4nl_values[q[j]] * a[j];
            isum += iq4_xs_group_scale(&x[b], g) * gsum;
        }
        sum += ll_half_to_f32(x[b].d) * y[b].d * (float)isum;
    }
    *s = sum;
}

/* ---- the feed-forward's gated activations ------------------------------------ */

void ll_glu_silu(float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void ll_glu_gelu_tanh(float *gate, const float *up, int64_t n) {
    const float sqrt_2_over_pi = 0.7978845608028654f;
    for (int64_t i = 0; i < n; i++) {
        const float x = gate[i];
        gate[i] = 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * x * (1.0f + 0.044715f * x * x))) * up[i];
    }
}
