/* kernels_neon.c: NEON kernels for arm64, with the dotprod extension (SDOT)
 * where the CPU has it.
 *
 * One build runs on any arm64. The integer dot products live in
 * kernels_neon_dot.inc, which this file includes twice: once with plain
 * NEON widening multiplies and once compiled for dotprod. ll_kernels_fill_neon
 * picks one set from the CPU's feature bits at load time.
 *
 * Contract with the scalar reference (quants.c, quants_k.c): activation
 * quantizers and dequantizers give the same bits. The quantized dots form
 * each block's integer sum exactly in vector lanes and then scale and add
 * blocks in the reference's order with its expression, so they too agree to
 * the bit (both files are built without FMA contraction). The float dots
 * (F32, F16, BF16) sum in vector lanes: equal up to rounding. */
#include <arm_neon.h>
#include <math.h>
#include <string.h>
#include "quants.h"

/* Clang before 16 (Apple clang before 15) declares the dotprod intrinsics
 * only when the whole file is built for dotprod; built by it, the plain
 * kernels serve every CPU. */
#if defined(__clang__) && !defined(__ARM_FEATURE_DOTPROD) &&                    \
    ((defined(__apple_build_version__) && __clang_major__ < 15) ||             \
     (!defined(__apple_build_version__) && __clang_major__ < 16))
#define LL_DOTPROD_KERNELS 0
#else
#define LL_DOTPROD_KERNELS 1
#endif

#if LL_DOTPROD_KERNELS
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20) /* the kernel's bit for the dotprod instructions */
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

static int cpu_has_dotprod(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    int has = 0;
    size_t len = sizeof has;
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &has, &len, NULL, 0) == 0 && has;
#else
    return 0;
#endif
}
#endif

/* hardware half -> float: exact for every finite value (dots only; NaN
 * payloads may differ from ll_half_to_f32, which the dequantizers use) */
static inline float half_to_f32(ll_half h) {
    __fp16 f;
    memcpy(&f, &h, sizeof f);
    return (float)f;
}

/* ---- activation quantizers (bit-identical to the references) -------------- */

/* the largest |x| of 32 floats; v receives them. maxNum skips NaNs, as the
 * references' fmaxf and ">" do. */
static inline float load_absmax32(const float *x, float32x4_t v[8]) {
    float32x4_t m = vdupq_n_f32(0.0f);
    for (int j = 0; j < 8; j++) {
        v[j] = vld1q_f32(x + 4 * j);
        m = vmaxnmq_f32(m, vabsq_f32(v[j]));
    }
    return vmaxnmvq_f32(m);
}

/* 8 of the references' q8_level(v * id): round ties away, saturate, clamp
 * to [-127, 127]; a NaN converts to 0. */
static inline int8x8_t round_away_s8(float32x4_t a, float32x4_t b, float id) {
    int32x4_t ia = vcvtaq_s32_f32(vmulq_n_f32(a, id));
    int32x4_t ib = vcvtaq_s32_f32(vmulq_n_f32(b, id));
    int8x8_t q = vqmovn_s16(vcombine_s16(vqmovn_s32(ia), vqmovn_s32(ib)));
    return vmax_s8(q, vdup_n_s8(-127));
}

static void quantize_q8_0(const float *x, void *vy, int64_t n) {
    block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / QK8_0; b++, x += QK8_0) {
        float32x4_t v[8];
        const float d = load_absmax32(x, v) / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = ll_f32_to_half(d);
        for (int j = 0; j < 4; j++)
            vst1_s8(y[b].qs + 8 * j, round_away_s8(v[2 * j], v[2 * j + 1], id));
    }
}

static void quantize_q8_1(const float *x, void *vy, int64_t n) {
    block_q8_1 *y = vy;
    for (int64_t b = 0; b < n / QK8_1; b++, x += QK8_1) {
        float32x4_t v[8];
        const float d = load_absmax32(x, v) / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        int16x8_t sum = vdupq_n_s16(0);
        for (int j = 0; j < 4; j++) {
            int8x8_t q = round_away_s8(v[2 * j], v[2 * j + 1], id);
            vst1_s8(y[b].qs + 8 * j, q);
            sum = vaddw_s8(sum, q);
        }
        y[b].d = ll_f32_to_half(d);
        y[b].s = ll_f32_to_half((float)vaddvq_s16(sum) * d);
    }
}

/* The reference keeps the sign of the first element of largest magnitude. */
static float first_of_magnitude(const float *x, int n, float amax) {
    const float32x4_t target = vdupq_n_f32(amax);
    for (int i = 0; i < n; i += 4) {
        if (vmaxvq_u32(vceqq_f32(vabsq_f32(vld1q_f32(x + i)), target)) == 0) continue;
        for (int k = 0; k < 4; k++)
            if (fabsf(x[i + k]) == amax) return x[i + k];
    }
    return amax;
}

/* 4 of min(127, nearest_int(v * iscale)) as ggml computes nearest_int:
 * adding 1.5 * 2^23 leaves round-half-even(v) in the low mantissa bits. Not
 * vcvtn: the two differ where iscale overflows (a block of subnormals), and
 * the reference's bytes are the definition even there. */
static inline int16x4_t round_even_s16(const float *x, float iscale) {
    float32x4_t v = vaddq_f32(vmulq_n_f32(vld1q_f32(x), iscale), vdupq_n_f32(12582912.0f));
    int32x4_t q = vsubq_s32(vreinterpretq_s32_u32(vandq_u32(vreinterpretq_u32_f32(v), vdupq_n_u32(0x7fffff))),
                            vdupq_n_s32(0x400000));
    return vmovn_s32(vminq_s32(q, vdupq_n_s32(127)));
}

static void quantize_q8_K(const float *x, void *vy, int64_t n) {
    block_q8_K *y = vy;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float32x4_t m = vdupq_n_f32(0.0f);
        for (int i = 0; i < QK_K; i += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(x + i)));
        const float amax = vmaxnmvq_f32(m);
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float iscale = -127.0f / first_of_magnitude(x, QK_K, amax);
        for (int g = 0; g < QK_K / 16; g++) {
            const float *xg = x + 16 * g;
            int16x8_t lo = vcombine_s16(round_even_s16(xg, iscale), round_even_s16(xg + 4, iscale));
            int16x8_t hi = vcombine_s16(round_even_s16(xg + 8, iscale), round_even_s16(xg + 12, iscale));
            int8x16_t q = vcombine_s8(vmovn_s16(lo), vmovn_s16(hi));
            vst1q_s8(y[b].qs + 16 * g, q);
            y[b].bsums[g] = vaddlvq_s8(q);
        }
        y[b].d = 1.0f / iscale;
    }
}

/* ---- float dot products (activations stay float32) ------------------------ */

/* Four independent accumulators hide the FMA latency; the tail is scalar. */
static void vec_dot_f32(int64_t n, float *s, const void *vx, const void *vy) {
    const float *x = vx, *y = vy;
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 4; k++)
            acc[k] = vfmaq_f32(acc[k], vld1q_f32(x + i + 4 * k), vld1q_f32(y + i + 4 * k));
    for (; i + 4 <= n; i += 4) acc[0] = vfmaq_f32(acc[0], vld1q_f32(x + i), vld1q_f32(y + i));
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
    for (; i < n; i++) sum += x[i] * y[i];
    *s = sum;
}

static inline float32x4_t f16_low(uint16x8_t h) { return vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h))); }
static inline float32x4_t f16_high(uint16x8_t h) { return vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h))); }

static void vec_dot_f16(int64_t n, float *s, const void *vx, const void *vy) {
    const ll_half *x = vx;
    const float *y = vy;
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint16x8_t h0 = vld1q_u16(x + i), h1 = vld1q_u16(x + i + 8);
        acc[0] = vfmaq_f32(acc[0], f16_low(h0), vld1q_f32(y + i));
        acc[1] = vfmaq_f32(acc[1], f16_high(h0), vld1q_f32(y + i + 4));
        acc[2] = vfmaq_f32(acc[2], f16_low(h1), vld1q_f32(y + i + 8));
        acc[3] = vfmaq_f32(acc[3], f16_high(h1), vld1q_f32(y + i + 12));
    }
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
    for (; i < n; i++) sum += half_to_f32(x[i]) * y[i];
    *s = sum;
}

/* Attention's dots (ll_dot_rows_fn): each 16 elements of the cache row are
 * loaded (and converted) once for the n_y query rows, four accumulators per
 * row, then the scalar tail: the same operations for a row whatever n_y is. */
static inline float32x4_t f32_at(const void *x, int64_t i) { return vld1q_f32((const float *)x + i); }
static inline float32x4_t f16_at(const void *x, int64_t i) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const ll_half *)x + i)));
}
static inline float f32_elem(const void *x, int64_t i) { return ((const float *)x)[i]; }
static inline float f16_elem(const void *x, int64_t i) { return half_to_f32(((const ll_half *)x)[i]); }

#define DOT_ROWS(name, AT, ELEM)                                                           \
    static void name(int64_t n, float *s, int64_t s_stride, const void *x, const float *y, \
                     size_t y_stride, int n_y) {                                           \
        const float *ya[4];                                                                \
        float32x4_t acc[4][4];                                                             \
        for (int a = 0; a < n_y; a++) {                                                    \
            ya[a] = (const float *)((const uint8_t *)y + a * y_stride);                    \
            for (int k = 0; k < 4; k++) acc[a][k] = vdupq_n_f32(0.0f);                     \
        }                                                                                  \
        int64_t i = 0;                                                                     \
        for (; i + 16 <= n; i += 16) {                                                     \
            const float32x4_t v[4] = {AT(x, i), AT(x, i + 4), AT(x, i + 8), AT(x, i + 12)}; \
            for (int a = 0; a < n_y; a++)                                                  \
                for (int k = 0; k < 4; k++)                                                \
                    acc[a][k] = vfmaq_f32(acc[a][k], v[k], vld1q_f32(ya[a] + i + 4 * k));  \
        }                                                                                  \
        for (int a = 0; a < n_y; a++) {                                                    \
            float sum = vaddvq_f32(vaddq_f32(vaddq_f32(acc[a][0], acc[a][1]),              \
                                             vaddq_f32(acc[a][2], acc[a][3])));            \
            for (int64_t t = i; t < n; t++) sum += ELEM(x, t) * ya[a][t];                  \
            s[a * s_stride] = sum;                                                         \
        }                                                                                  \
    }
DOT_ROWS(dot_rows_f32, f32_at, f32_elem)
DOT_ROWS(dot_rows_f16, f16_at, f16_elem)
#undef DOT_ROWS

/* bfloat16 -> float is a 16-bit shift: exact */
static inline float32x4_t bf16_low(uint16x8_t h) { return vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)); }
static inline float32x4_t bf16_high(uint16x8_t h) { return vreinterpretq_f32_u32(vshll_high_n_u16(h, 16)); }

static void vec_dot_bf16(int64_t n, float *s, const void *vx, const void *vy) {
    const uint16_t *x = vx;
    const float *y = vy;
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint16x8_t h0 = vld1q_u16(x + i), h1 = vld1q_u16(x + i + 8);
        acc[0] = vfmaq_f32(acc[0], bf16_low(h0), vld1q_f32(y + i));
        acc[1] = vfmaq_f32(acc[1], bf16_high(h0), vld1q_f32(y + i + 4));
        acc[2] = vfmaq_f32(acc[2], bf16_low(h1), vld1q_f32(y + i + 8));
        acc[3] = vfmaq_f32(acc[3], bf16_high(h1), vld1q_f32(y + i + 12));
    }
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
    for (; i < n; i++) sum += ll_bf16_to_f32(x[i]) * y[i];
    *s = sum;
}

/* ---- weight unpacking shared by the dots and the dequantizers ------------- */

/* the 32 nibbles of a legacy block: low nibbles are elements 0..15, high 16..31 */
static inline uint8x16x2_t unpack_nibbles(const uint8_t qs[16]) {
    uint8x16_t b = vld1q_u8(qs);
    return (uint8x16x2_t){{vandq_u8(b, vdupq_n_u8(0x0f)), vshrq_n_u8(b, 4)}};
}

/* bit j of the little-endian 32-bit qh as byte j: 0xff where set */
static inline uint8x16x2_t spread_bits32(const uint8_t qh[4]) {
    static const uint8_t bit_of_byte[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t bits = vld1q_u8(bit_of_byte);
    uint8x16_t lo = vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1]));
    uint8x16_t hi = vcombine_u8(vdup_n_u8(qh[2]), vdup_n_u8(qh[3]));
    return (uint8x16x2_t){{vtstq_u8(lo, bits), vtstq_u8(hi, bits)}};
}

static inline int8x16x2_t unpack_q4_0(const block_q4_0 *x) {
    uint8x16x2_t q = unpack_nibbles(x->qs);
    const int8x16_t eight = vdupq_n_s8(8);
    return (int8x16x2_t){{vsubq_s8(vreinterpretq_s8_u8(q.val[0]), eight),
                          vsubq_s8(vreinterpretq_s8_u8(q.val[1]), eight)}};
}

/* 5-bit quants: the nibble with qh's bit as bit 4 */
static inline uint8x16x2_t unpack_5bit(const uint8_t qs[16], const uint8_t qh[4]) {
    uint8x16x2_t q = unpack_nibbles(qs), h = spread_bits32(qh);
    const uint8x16_t bit4 = vdupq_n_u8(0x10);
    return (uint8x16x2_t){{vorrq_u8(q.val[0], vandq_u8(h.val[0], bit4)),
                           vorrq_u8(q.val[1], vandq_u8(h.val[1], bit4))}};
}

static inline int8x16x2_t unpack_q5_0(const block_q5_0 *x) {
    uint8x16x2_t q = unpack_5bit(x->qs, x->qh);
    const int8x16_t sixteen = vdupq_n_s8(16);
    return (int8x16x2_t){{vsubq_s8(vreinterpretq_s8_u8(q.val[0]), sixteen),
                          vsubq_s8(vreinterpretq_s8_u8(q.val[1]), sixteen)}};
}

static inline int8x16x2_t unpack_iq4_nl(const uint8_t qs[16]) {
    const int8x16_t levels = vld1q_s8(ll_iq4nl_values);
    uint8x16x2_t q = unpack_nibbles(qs);
    return (int8x16x2_t){{vqtbl1q_s8(levels, q.val[0]), vqtbl1q_s8(levels, q.val[1])}};
}

/* Q4_K / Q5_K: 8 six-bit scales and mins packed in 12 bytes */
static inline void unpack_scale_min_k4(const uint8_t q[K_SCALE_SIZE], uint8_t sc[8], uint8_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0x0f) | ((q[j] >> 6) << 4);
        mn[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
}

/* Q3_K: 16 six-bit scales (offset 32) packed in 12 bytes: low nibbles in
 * bytes 0..7, the top two bits in bytes 8..11 */
static inline void unpack_scales_q3_K(const uint8_t q[12], int8_t sc[16]) {
    for (int i = 0; i < 16; i++) {
        int low = i < 8 ? q[i] & 0x0f : q[i - 8] >> 4;
        int high = (q[8 + i % 4] >> (2 * (i / 4))) & 3;
        sc[i] = (int8_t)((low | (high << 4)) - 32);
    }
}

static inline int8x16x2_t as_s8x2(uint8x16x2_t u) {
    return (int8x16x2_t){{vreinterpretq_s8_u8(u.val[0]), vreinterpretq_s8_u8(u.val[1])}};
}

/* Q2_K / Q3_K: a half of 128 levels is 32 bytes of four 2-bit planes; each
 * call takes the next plane (32 levels in 0..3) and shifts the bytes on */
static inline uint8x16x2_t next_crumbs(uint8x16_t q[2]) {
    uint8x16x2_t w = {{vandq_u8(q[0], vdupq_n_u8(3)), vandq_u8(q[1], vdupq_n_u8(3))}};
    q[0] = vshrq_n_u8(q[0], 2);
    q[1] = vshrq_n_u8(q[1], 2);
    return w;
}

/* Q3_K: the next 32 levels (-4..3): a crumb, 4 lower where the element's
 * hmask bit is clear (bit i of hmask[l] belongs to element 32 i + l) */
static inline int8x16x2_t next_q3_K(uint8x16_t q[2], uint8x16_t hm[2]) {
    int8x16x2_t w = as_s8x2(next_crumbs(q));
    for (int k = 0; k < 2; k++) {
        uint8x16_t four_if_clear = vshlq_n_u8(vbicq_u8(vdupq_n_u8(1), hm[k]), 2);
        w.val[k] = vsubq_s8(w.val[k], vreinterpretq_s8_u8(four_if_clear));
        hm[k] = vshrq_n_u8(hm[k], 1);
    }
    return w;
}

/* Q4_K / Q5_K: a chunk of 64 levels from 32 bytes, low nibbles first. For
 * Q5_K, h holds qh (bit i of qh[l] is bit 4 of element 32 i + l) and moves
 * on 2 bits per chunk; Q4_K passes NULL, which inlining folds away. */
static inline void unpack_k4_chunk(const uint8_t qs[32], uint8x16_t *h, uint8x16x2_t *lo, uint8x16x2_t *hi) {
    const uint8x16_t m4 = vdupq_n_u8(0x0f), one = vdupq_n_u8(1);
    for (int k = 0; k < 2; k++) {
        uint8x16_t bytes = vld1q_u8(qs + 16 * k);
        lo->val[k] = vandq_u8(bytes, m4);
        hi->val[k] = vshrq_n_u8(bytes, 4);
        if (h) {
            lo->val[k] = vorrq_u8(lo->val[k], vshlq_n_u8(vandq_u8(h[k], one), 4));
            hi->val[k] = vorrq_u8(hi->val[k], vshlq_n_u8(vandq_u8(vshrq_n_u8(h[k], 1), one), 4));
            h[k] = vshrq_n_u8(h[k], 2);
        }
    }
}

/* Q6_K: the 6-bit quants (minus 32) of one 128-element half, as 8 groups of 16 */
static inline void unpack_q6_K_half(const uint8_t *ql, const uint8_t *qh, int8x16_t out[8]) {
    const uint8x16_t m4 = vdupq_n_u8(0x0f), m3 = vdupq_n_u8(3);
    const int8x16_t m32 = vdupq_n_s8(32);
    for (int h = 0; h < 2; h++) {
        uint8x16_t l0 = vld1q_u8(ql + 16 * h), l1 = vld1q_u8(ql + 32 + 16 * h);
        uint8x16_t hb = vld1q_u8(qh + 16 * h);
        uint8x16_t q[4] = {
            vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8(vandq_u8(hb, m3), 4)),
            vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), m3), 4)),
            vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), m3), 4)),
            vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4)),
        };
        for (int k = 0; k < 4; k++) out[2 * k + h] = vsubq_s8(vreinterpretq_s8_u8(q[k]), m32);
    }
}

/* IQ4_XS: group ib's 6-bit scale (offset 32): 4 low bits in scales_l, 2 high in scales_h */
static inline int iq4_xs_scale(const block_iq4_xs *x, int ib) {
    int low = (x->scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
    int high = (x->scales_h >> (2 * ib)) & 3;
    return (low | (high << 4)) - 32;
}

/* sum over the 8 groups of 32 of bsums * m: the k-quants' min term */
static inline int32_t bsums_times_mins8(const int16_t bsums[16], const uint8_t m[8]) {
    int16x8_t s = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums + 8));
    int16x8_t mm = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(m)));
    int32x4_t p = vmull_s16(vget_low_s16(s), vget_low_s16(mm));
    return vaddvq_s32(vmlal_high_s16(p, s, mm));
}

/* ---- integer dot products: plain NEON and dotprod ------------------------- */

/* Without SDOT: widen the 16 products to 16 bits (|a b| <= 2^14 fits) and
 * add them pairwise into the four 32-bit lanes. */
static inline int32x4_t dot_widening(int32x4_t acc, int8x16_t a, int8x16_t b) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
}

#define NEON_FN(name) name##_neon
#define NEON_TARGET
#define NEON_DOT(acc, a, b) dot_widening(acc, a, b)
#include "kernels_neon_dot.inc"
#undef NEON_FN
#undef NEON_TARGET
#undef NEON_DOT

#if LL_DOTPROD_KERNELS
#if defined(__clang__)
#define NEON_TARGET __attribute__((target("dotprod")))
#else
#define NEON_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
#define NEON_FN(name) name##_dotprod
#define NEON_DOT(acc, a, b) vdotq_s32(acc, a, b)
#include "kernels_neon_dot.inc"
#undef NEON_FN
#undef NEON_TARGET
#undef NEON_DOT
#endif

/* ---- dequantizers (bit-identical to the references) ----------------------- */

/* The reference keeps a NaN's payload as is; the hardware conversion would
 * quiet a signalling one, so NaN lanes are rebuilt from the bits. */
static inline float32x4_t half4_to_f32_exact(uint16x4_t h) {
    float32x4_t f = vcvt_f32_f16(vreinterpret_f16_u16(h));
    uint32x4_t w = vmovl_u16(h);
    uint32x4_t is_nan = vcgtq_u32(vandq_u32(w, vdupq_n_u32(0x7fff)), vdupq_n_u32(0x7c00));
    uint32x4_t bits = vorrq_u32(vshlq_n_u32(vandq_u32(w, vdupq_n_u32(0x8000)), 16),
                                vorrq_u32(vdupq_n_u32(0x7f800000), vshlq_n_u32(vandq_u32(w, vdupq_n_u32(0x3ff)), 13)));
    return vbslq_f32(is_nan, vreinterpretq_f32_u32(bits), f);
}

static void to_float_f16(const void *vx, float *y, int64_t n) {
    const ll_half *x = vx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vld1q_u16(x + i);
        vst1q_f32(y + i, half4_to_f32_exact(vget_low_u16(h)));
        vst1q_f32(y + i + 4, half4_to_f32_exact(vget_high_u16(h)));
    }
    for (; i < n; i++) y[i] = ll_half_to_f32(x[i]);
}

static void to_float_bf16(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vld1q_u16(x + i);
        vst1q_f32(y + i, bf16_low(h));
        vst1q_f32(y + i + 4, bf16_high(h));
    }
    for (; i < n; i++) y[i] = ll_bf16_to_f32(x[i]);
}

/* y[0..16) = q * d for 16 signed bytes (int -> float is exact, one rounding) */
static inline void store_scaled16(float *y, int8x16_t q, float d) {
    int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_high_s8(q);
    vst1q_f32(y, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), d));
    vst1q_f32(y + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), d));
    vst1q_f32(y + 8, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), d));
    vst1q_f32(y + 12, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), d));
}

/* y[0..16) = q * d + m for 16 unsigned bytes: the product rounds, then the
 * sum (no fused multiply-add, as the reference). The k-quants' "- ml" is
 * "+ (-ml)", which rounds the same. */
static inline void store_affine16(float *y, uint8x16_t q, float d, float m) {
    const float32x4_t vm = vdupq_n_f32(m);
    uint16x8_t lo = vmovl_u8(vget_low_u8(q)), hi = vmovl_high_u8(q);
    uint32x4_t w[4] = {vmovl_u16(vget_low_u16(lo)), vmovl_high_u16(lo),
                       vmovl_u16(vget_low_u16(hi)), vmovl_high_u16(hi)};
    for (int k = 0; k < 4; k++) vst1q_f32(y + 4 * k, vaddq_f32(vmulq_n_f32(vcvtq_f32_u32(w[k]), d), vm));
}

static void to_float_q4_0(const void *vx, float *y, int64_t n) {
    const block_q4_0 *x = vx;
    for (int64_t b = 0; b < n / QK4_0; b++, y += QK4_0) {
        const float d = ll_half_to_f32(x[b].d);
        int8x16x2_t q = unpack_q4_0(&x[b]);
        store_scaled16(y, q.val[0], d);
        store_scaled16(y + 16, q.val[1], d);
    }
}

static void to_float_q5_0(const void *vx, float *y, int64_t n) {
    const block_q5_0 *x = vx;
    for (int64_t b = 0; b < n / QK5_0; b++, y += QK5_0) {
        const float d = ll_half_to_f32(x[b].d);
        int8x16x2_t q = unpack_q5_0(&x[b]);
        store_scaled16(y, q.val[0], d);
        store_scaled16(y + 16, q.val[1], d);
    }
}

static void to_float_q8_0(const void *vx, float *y, int64_t n) {
    const block_q8_0 *x = vx;
    for (int64_t b = 0; b < n / QK8_0; b++, y += QK8_0) {
        const float d = ll_half_to_f32(x[b].d);
        store_scaled16(y, vld1q_s8(x[b].qs), d);
        store_scaled16(y + 16, vld1q_s8(x[b].qs + 16), d);
    }
}

static void to_float_iq4_nl(const void *vx, float *y, int64_t n) {
    const block_iq4_nl *x = vx;
    for (int64_t b = 0; b < n / QK4_NL; b++, y += QK4_NL) {
        const float d = ll_half_to_f32(x[b].d);
        int8x16x2_t q = unpack_iq4_nl(x[b].qs);
        store_scaled16(y, q.val[0], d);
        store_scaled16(y + 16, q.val[1], d);
    }
}

static void to_float_q4_1(const void *vx, float *y, int64_t n) {
    const block_q4_1 *x = vx;
    for (int64_t b = 0; b < n / QK4_1; b++, y += QK4_1) {
        const float d = ll_half_to_f32(x[b].d), m = ll_half_to_f32(x[b].m);
        uint8x16x2_t q = unpack_nibbles(x[b].qs);
        store_affine16(y, q.val[0], d, m);
        store_affine16(y + 16, q.val[1], d, m);
    }
}

static void to_float_q5_1(const void *vx, float *y, int64_t n) {
    const block_q5_1 *x = vx;
    for (int64_t b = 0; b < n / QK5_1; b++, y += QK5_1) {
        const float d = ll_half_to_f32(x[b].d), m = ll_half_to_f32(x[b].m);
        uint8x16x2_t q = unpack_5bit(x[b].qs, x[b].qh);
        store_affine16(y, q.val[0], d, m);
        store_affine16(y + 16, q.val[1], d, m);
    }
}

static void to_float_q2_K(const void *vx, float *y, int64_t n) {
    const block_q2_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = ll_half_to_f32(x[b].d), dmin = ll_half_to_f32(x[b].dmin);
        const uint8_t *sc = x[b].scales;
        for (int h = 0; h < 2; h++) {
            uint8x16_t q[2] = {vld1q_u8(x[b].qs + 32 * h), vld1q_u8(x[b].qs + 32 * h + 16)};
            for (int j = 0; j < 4; j++, y += 32, sc += 2) {
                uint8x16x2_t w = next_crumbs(q);
                store_affine16(y, w.val[0], d * (sc[0] & 0x0f), -(dmin * (sc[0] >> 4)));
                store_affine16(y + 16, w.val[1], d * (sc[1] & 0x0f), -(dmin * (sc[1] >> 4)));
            }
        }
    }
}

static void to_float_q3_K(const void *vx, float *y, int64_t n) {
    const block_q3_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = ll_half_to_f32(x[b].d);
        int8_t sc[16];
        unpack_scales_q3_K(x[b].scales, sc);
        uint8x16_t hm[2] = {vld1q_u8(x[b].hmask), vld1q_u8(x[b].hmask + 16)};
        for (int h = 0, g = 0; h < 2; h++) {
            uint8x16_t q[2] = {vld1q_u8(x[b].qs + 32 * h), vld1q_u8(x[b].qs + 32 * h + 16)};
            for (int j = 0; j < 4; j++, y += 32, g += 2) {
                int8x16x2_t w = next_q3_K(q, hm);
                store_scaled16(y, w.val[0], d * sc[g]);
                store_scaled16(y + 16, w.val[1], d * sc[g + 1]);
            }
        }
    }
}

/* Q4_K and Q5_K (qh NULL for Q4_K): x = d sc q - dmin m per 32 */
static void dequantize_k4(const uint8_t *qs, const uint8_t *qh, const uint8_t scales[12],
                          ll_half d16, ll_half dmin16, float *y) {
    const float d = ll_half_to_f32(d16), dmin = ll_half_to_f32(dmin16);
    uint8_t sc[8], mn[8];
    unpack_scale_min_k4(scales, sc, mn);
    uint8x16_t h[2];
    if (qh) h[0] = vld1q_u8(qh), h[1] = vld1q_u8(qh + 16);
    for (int j = 0; j < 4; j++, y += 64) {
        uint8x16x2_t lo, hi;
        unpack_k4_chunk(qs + 32 * j, qh ? h : NULL, &lo, &hi);
        const float d1 = d * sc[2 * j], m1 = dmin * mn[2 * j];
        const float d2 = d * sc[2 * j + 1], m2 = dmin * mn[2 * j + 1];
        for (int k = 0; k < 2; k++) {
            store_affine16(y + 16 * k, lo.val[k], d1, -m1);
            store_affine16(y + 32 + 16 * k, hi.val[k], d2, -m2);
        }
    }
}

static void to_float_q4_K(const void *vx, float *y, int64_t n) {
    const block_q4_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++, y += QK_K)
        dequantize_k4(x[b].qs, NULL, x[b].scales, x[b].d, x[b].dmin, y);
}

static void to_float_q5_K(const void *vx, float *y, int64_t n) {
    const block_q5_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++, y += QK_K)
        dequantize_k4(x[b].qs, x[b].qh, x[b].scales, x[b].d, x[b].dmin, y);
}

static void to_float_q6_K(const void *vx, float *y, int64_t n) {
    const block_q6_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = ll_half_to_f32(x[b].d);
        for (int half = 0; half < 2; half++, y += 128) {
            int8x16_t q[8];
            unpack_q6_K_half(x[b].ql + 64 * half, x[b].qh + 32 * half, q);
            const int8_t *sc = x[b].scales + 8 * half;
            for (int g = 0; g < 8; g++) store_scaled16(y + 16 * g, q[g], d * sc[g]);
        }
    }
}

static void to_float_iq4_xs(const void *vx, float *y, int64_t n) {
    const block_iq4_xs *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = ll_half_to_f32(x[b].d);
        for (int ib = 0; ib < QK_K / 32; ib++, y += 32) {
            const float dl = d * (float)iq4_xs_scale(&x[b], ib);
            int8x16x2_t q = unpack_iq4_nl(x[b].qs + 16 * ib);
            store_scaled16(y, q.val[0], dl);
            store_scaled16(y + 16, q.val[1], dl);
        }
    }
}

/* ---- the table --------------------------------------------------------------- */

static int dotprod_in_use;

/* 1 when the table holds the dotprod kernels (the tests ask which set ran) */
int ll_neon_dotprod(void) { return dotprod_in_use; }

void ll_kernels_fill_neon(ll_kernels *k) {
    k->quantize_act[LL_TYPE_Q8_0] = quantize_q8_0;
    k->quantize_act[LL_TYPE_Q8_1] = quantize_q8_1;
    k->quantize_act[LL_TYPE_Q8_K] = quantize_q8_K;

    k->vec_dot[LL_TYPE_F32] = vec_dot_f32;
    k->vec_dot[LL_TYPE_F16] = vec_dot_f16;
    k->vec_dot[LL_TYPE_BF16] = vec_dot_bf16;
    k->dot_rows[LL_TYPE_F32] = dot_rows_f32;
    k->dot_rows[LL_TYPE_F16] = dot_rows_f16;
    fill_int_dots_neon(k);
#if LL_DOTPROD_KERNELS
    dotprod_in_use = cpu_has_dotprod();
    if (dotprod_in_use) fill_int_dots_dotprod(k);
#endif

    k->to_float[LL_TYPE_F16] = to_float_f16;
    k->to_float[LL_TYPE_BF16] = to_float_bf16;
    k->to_float[LL_TYPE_Q4_0] = to_float_q4_0;
    k->to_float[LL_TYPE_Q4_1] = to_float_q4_1;
    k->to_float[LL_TYPE_Q5_0] = to_float_q5_0;
    k->to_float[LL_TYPE_Q5_1] = to_float_q5_1;
    k->to_float[LL_TYPE_Q8_0] = to_float_q8_0;
    k->to_float[LL_TYPE_IQ4_NL] = to_float_iq4_nl;
    k->to_float[LL_TYPE_Q2_K] = to_float_q2_K;
    k->to_float[LL_TYPE_Q3_K] = to_float_q3_K;
    k->to_float[LL_TYPE_Q4_K] = to_float_q4_K;
    k->to_float[LL_TYPE_Q5_K] = to_float_q5_K;
    k->to_float[LL_TYPE_Q6_K] = to_float_q6_K;
    k->to_float[LL_TYPE_IQ4_XS] = to_float_iq4_xs;
}
