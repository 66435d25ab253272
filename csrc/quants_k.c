/* quants_k.c: the scalar reference for the k-quants (Q2_K .. Q6_K, Q8_K).
 *
 * A k-quant block holds 256 weights in sub-blocks of 16 or 32. Each sub-block
 * has a small integer scale (and, for Q2_K/Q4_K/Q5_K, a min), and the block
 * has one or two f16 scales that those integers multiply.
 *
 * Quantizing is llama.cpp's reference search (what its quantize_qN_K does
 * without an importance matrix), reproduced to the byte: the same float
 * operations in the same order with the same rounding. Where that looks
 * fussy (a cast before a clamp, a test written so NaN falls through) it is
 * because a different order gives different bytes.
 *
 * Dequantize and the dot products share one decoder per type, which turns a
 * block's packed quants into plain int8 levels, so they cannot disagree about
 * the bit layout. The dots are integer sums per sub-block times the integer
 * scales, mins through Q8_K's bsums, then one float scaling per block, summed
 * in block order: the definition every SIMD kernel is tested against. */
#include <math.h>
#include <string.h>
#include "quants.h"

/* below this the largest |x| of a group counts as zero (ggml's GROUP_MAX_EPS) */
#define GROUP_MAX_EPS 1e-15f

/* ---- rounding and the scale searches ------------------------------------- */

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Levels l = round(iscale * x) clamped to [-nmax, nmax-1], stored as l + nmax,
 * and the x^2-weighted sums sum(w x l), sum(w l^2) that rate them: the
 * least-squares scale is sumlx / suml2 and it explains sumlx^2 / suml2. */
static void symmetric_trial(const float *x, int n, int nmax, float iscale, int8_t *L,
                            float *sumlx, float *suml2) {
    float slx = 0.0f, sl2 = 0.0f;
    for (int i = 0; i < n; i++) {
        const int l = clampi(ll_round_nearest(iscale * x[i]), -nmax, nmax - 1);
        const float w = x[i] * x[i];
        L[i] = (int8_t)(l + nmax);
        slx += w * x[i] * l;
        sl2 += w * l * l;
    }
    *sumlx = slx;
    *suml2 = sl2;
}

/* llama.cpp's make_qx_quants with x^2 weights (its rmse_type 1): try the grid
 * nmax/max and 18 grids stretched by -0.9 .. +0.9 levels, keep the one whose
 * least-squares scale explains most of x. Returns that scale; L gets levels
 * in [0, 2*nmax). Used by Q6_K; 19 passes over 16 values. */
static float fit_symmetric(const float *x, int n, int nmax, int8_t *L) {
    const float max = ll_signed_absmax(x, n);
    if (fabsf(max) < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float sumlx, suml2;
    symmetric_trial(x, n, nmax, -nmax / max, L, &sumlx, &suml2);
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    int8_t trial[32]; /* n <= 32 */
    for (int step = -9; step <= 9; step++) {
        if (step == 0) continue;
        symmetric_trial(x, n, nmax, -(nmax + 0.1f * step) / max, trial, &sumlx, &suml2);
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            memcpy(L, trial, (size_t)n);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* llama.cpp's make_q3_quants with its refinement: start from the grid
 * nmax/max, then up to 5 sweeps that move each level to the one the fit of
 * the others prefers, keeping moves that raise sumlx^2 / suml2 (x^2 weights).
 * Returns the least-squares scale; L gets levels in [0, 2*nmax). */
static float fit_symmetric_refined(const float *x, int n, int nmax, int8_t *L) {
    const float max = ll_signed_absmax(x, n);
    if (fabsf(max) < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    const float iscale = -nmax / max;
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        const int l = clampi(ll_round_nearest(iscale * x[i]), -nmax, nmax - 1);
        const float w = x[i] * x[i];
        L[i] = (int8_t)l;
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int sweep = 0; sweep < 5; sweep++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) { /* not "<= 0: skip", so that a NaN skips too, as in llama.cpp */
                float sl2 = suml2 - w * L[i] * L[i];
                const int l = clampi(ll_round_nearest(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (l != L[i]) {
                    slx += w * x[i] * l;
                    sl2 += w * l * l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)l;
                        sumlx = slx;
                        suml2 = sl2;
                        changed++;
                    }
                }
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

static inline float fit_error(float diff, int use_mad) { return use_mad ? fabsf(diff) : diff * diff; }

/* llama.cpp's make_qkx2_quants: fit x ~ scale * L - the_min with L in
 * [0, nmax] and the_min >= 0, minimising the w-weighted error (|diff| when
 * use_mad, else diff^2). Starts from the grid over [min(x, 0), max(x)], then
 * tries nstep + 1 grids stretched by rmin + rdelta * step levels, each refit
 * by weighted least squares for scale and min. An accepted fit moves `min`,
 * and later grids start from it: that is llama.cpp's order and we keep it.
 * Returns the scale; *the_min gets the (non-negative) amount subtracted. */
static float fit_affine(const float *x, const float *w, int n, int nmax, float rmin, float rdelta,
                        int nstep, int use_mad, int8_t *L, float *the_min) {
    float min = x[0], max = x[0];
    float sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0.0f;
    for (int i = 0; i < n; i++) {
        L[i] = (int8_t)clampi(ll_round_nearest(iscale * (x[i] - min)), 0, nmax);
        best_error += w[i] * fit_error(scale * L[i] + min - x[i], use_mad);
    }
    int8_t trial[32];
    for (int step = 0; step <= nstep; step++) {
        iscale = (rmin + rdelta * step + nmax) / (max - min);
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < n; i++) {
            const int l = clampi(ll_round_nearest(iscale * (x[i] - min)), 0, nmax);
            trial[i] = (int8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float error = 0.0f;
            for (int i = 0; i < n; i++)
                error += w[i] * fit_error(this_scale * trial[i] + this_min - x[i], use_mad);
            if (error < best_error) {
                memcpy(L, trial, (size_t)n);
                best_error = error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* ---- bit layouts ----------------------------------------------------------- */

/* 2-bit planes (Q2_K, Q3_K low bits): byte l of 32-byte row r holds elements
 * 128r + 32s + l at bits 2s, s = 0..3. */
static void pack_2bit(const int8_t *L, uint8_t qs[QK_K / 4]) {
    for (int r = 0; r < 2; r++)
        for (int l = 0; l < 32; l++) {
            const int8_t *e = L + 128 * r + l;
            qs[32 * r + l] = (uint8_t)(e[0] | e[32] << 2 | e[64] << 4 | e[96] << 6);
        }
}

static void unpack_2bit(const uint8_t qs[QK_K / 4], int8_t q[QK_K]) {
    for (int e = 0; e < QK_K; e++) q[e] = (int8_t)((qs[32 * (e / 128) + e % 32] >> (2 * (e / 32 % 4))) & 3);
}

/* one extra bit per element (Q3_K hmask, Q5_K qh): element e is bit e/32 of byte e%32 */
static inline int high_bit(const uint8_t bits[QK_K / 8], int e) { return (bits[e % 32] >> (e / 32)) & 1; }

/* 4-bit planes (Q4_K, Q5_K low bits): 32-byte row r holds elements 64r + l in
 * its low nibbles and 64r + 32 + l in its high nibbles. */
static void pack_4bit(const int8_t *L, uint8_t qs[QK_K / 2]) {
    for (int r = 0; r < 4; r++)
        for (int l = 0; l < 32; l++) qs[32 * r + l] = (uint8_t)((L[64 * r + l] & 0xF) | (L[64 * r + 32 + l] & 0xF) << 4);
}

static void unpack_4bit(const uint8_t qs[QK_K / 2], int8_t q[QK_K]) {
    for (int e = 0; e < QK_K; e++) q[e] = (int8_t)((qs[32 * (e / 64) + e % 32] >> (4 * (e / 32 % 2))) & 0xF);
}

/* Q3_K's sixteen 6-bit scales in 12 bytes: low nibbles of 0..7 in bytes 0..7,
 * of 8..15 in the high nibbles of the same bytes; the top two bits of scale j
 * in byte 8 + j%4 at bit 2*(j/4). `s` starts zeroed. */
static void put_q3_scale(uint8_t s[12], int j, int v) {
    s[j % 8] |= (uint8_t)((v & 0xF) << (4 * (j / 8)));
    s[8 + j % 4] |= (uint8_t)((v >> 4) << (2 * (j / 4)));
}

static int q3_scale(const uint8_t s[12], int j) {
    return ((s[j % 8] >> (4 * (j / 8))) & 0xF) | ((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4;
}

/* Q4_K/Q5_K's eight 6-bit scales and eight 6-bit mins in 12 bytes (ggml's
 * get_scale_min_k4 layout): for j < 4 the scale is byte j and the min byte
 * j+4 (low 6 bits); for j >= 4 byte j+4 holds the scale's low nibble and the
 * min's low nibble above it, and their top two bits sit in bits 6-7 of bytes
 * j-4 (scale) and j (min). */
static void pack_k4_scales(const uint8_t sc[8], const uint8_t m[8], uint8_t s[12]) {
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)((sc[j] & 63) | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)((m[j] & 63) | (m[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | (m[j + 4] & 0xF) << 4);
    }
}

void ll_k4_scale_min(const uint8_t s[12], int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | (s[j - 4] >> 6) << 4;
        *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* sum of a[i] * b[i] */
static int32_t dot_i8(const int8_t *a, const int8_t *b, int n) {
    int32_t sum = 0;
    for (int i = 0; i < n; i++) sum += a[i] * b[i];
    return sum;
}

/* ---- Q2_K: x = d * sc * q - dmin * m, q in 0..3, 4-bit sc and m per 16 ------ */

void ll_quantize_row_q2_K_ref(const float *x, void *vy, int64_t n) {
    block_q2_K *y = vy;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        int8_t L[QK_K];
        float scales[16], mins[16], w[16];
        float max_scale = 0.0f, max_min = 0.0f;
        for (int j = 0; j < 16; j++) {
            for (int i = 0; i < 16; i++) w[i] = fabsf(x[16 * j + i]);
            scales[j] = fit_affine(x + 16 * j, w, 16, 3, -0.5f, 0.1f, 15, 1, L + 16 * j, &mins[j]);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        /* 4-bit scales (low nibble) and mins (high nibble) against the largest of each */
        memset(y[b].scales, 0, sizeof y[b].scales);
        y[b].d = ll_f32_to_half(0.0f);
        y[b].dmin = ll_f32_to_half(0.0f);
        if (max_scale > 0) {
            const float iscale = 15.0f / max_scale;
            for (int j = 0; j < 16; j++) y[b].scales[j] = (uint8_t)ll_round_nearest(iscale * scales[j]);
            y[b].d = ll_f32_to_half(max_scale / 15.0f);
        }
        if (max_min > 0) {
            const float iscale = 15.0f / max_min;
            for (int j = 0; j < 16; j++) y[b].scales[j] |= (uint8_t)((unsigned)ll_round_nearest(iscale * mins[j]) << 4);
            y[b].dmin = ll_f32_to_half(max_min / 15.0f);
        }
        /* requantize against the scales as stored; a zero scale keeps the search's levels */
        const float d = ll_half_to_f32(y[b].d), dmin = ll_half_to_f32(y[b].dmin);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (y[b].scales[j] & 0xF);
            if (dl == 0) continue;
            const float ml = dmin * (y[b].scales[j] >> 4);
            for (int i = 0; i < 16; i++)
                L[16 * j + i] = (int8_t)clampi(ll_round_nearest((x[16 * j + i] + ml) / dl), 0, 3);
        }
        pack_2bit(L, y[b].qs);
    }
}

static void decode_q2_K(const block_q2_K *b, int8_t q[QK_K]) { unpack_2bit(b->qs, q); }

void ll_dequantize_row_q2_K(const void *vx, float *y, int64_t n) {
    const block_q2_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++, y += QK_K) {
        int8_t q[QK_K];
        decode_q2_K(&x[b], q);
        const float d = ll_half_to_f32(x[b].d), dmin = ll_half_to_f32(x[b].dmin);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (x[b].scales[j] & 0xF), ml = dmin * (x[b].scales[j] >> 4);
            for (int i = 0; i < 16; i++) y[16 * j + i] = dl * q[16 * j + i] - ml;
        }
    }
}

void ll_vec_dot_q2_K_q8_K(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q2_K *x = vx;
    const block_q8_K *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int8_t q[QK_K];
        decode_q2_K(&x[b], q);
        int32_t isum = 0, msum = 0;
        for (int j = 0; j < 16; j++) {
            isum += (x[b].scales[j] & 0xF) * dot_i8(q + 16 * j, y[b].qs + 16 * j, 16);
            msum += (x[b].scales[j] >> 4) * y[b].bsums[j];
        }
        sum += ll_half_to_f32(x[b].d) * y[b].d * (float)isum - ll_half_to_f32(x[b].dmin) * y[b].d * (float)msum;
    }
    *s = sum;
}

/* ---- Q3_K: x = d * (sc - 32) * (q - 4), q in 0..7, 6-bit sc per 16 --------- */

void ll_quantize_row_q3_K_ref(const float *x, void *vy, int64_t n) {
    block_q3_K *y = vy;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        int8_t L[QK_K];
        float scales[16];
        float max_scale = 0.0f, amax = 0.0f;
        for (int j = 0; j < 16; j++) {
            scales[j] = fit_symmetric_refined(x + 16 * j, 16, 4, L + 16 * j);
            if (fabsf(scales[j]) > amax) { amax = fabsf(scales[j]); max_scale = scales[j]; }
        }
        /* 6-bit signed scales against the largest; its sign goes into d */
        memset(y[b].scales, 0, sizeof y[b].scales);
        y[b].d = ll_f32_to_half(0.0f);
        if (max_scale != 0) {
            const float iscale = -32.0f / max_scale;
            for (int j = 0; j < 16; j++) {
                const int8_t l = (int8_t)ll_round_nearest(iscale * scales[j]);
                put_q3_scale(y[b].scales, j, clampi(l, -32, 31) + 32);
            }
            y[b].d = ll_f32_to_half(1 / iscale);
        }
        /* requantize against the scales as stored; a zero scale keeps the search's levels */
        const float d = ll_half_to_f32(y[b].d);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (q3_scale(y[b].scales, j) - 32);
            if (dl == 0) continue;
            for (int i = 0; i < 16; i++)
                L[16 * j + i] = (int8_t)(clampi(ll_round_nearest(x[16 * j + i] / dl), -4, 3) + 4);
        }
        /* the third bit goes to hmask, the low two to the 2-bit planes */
        memset(y[b].hmask, 0, sizeof y[b].hmask);
        for (int e = 0; e < QK_K; e++) {
            if (L[e] > 3) {
                y[b].hmask[e % 32] |= (uint8_t)(1 << (e / 32));
                L[e] -= 4;
            }
        }
        pack_2bit(L, y[b].qs);
    }
}

/* levels in -4..3: a clear hmask bit means 4 lower */
static void decode_q3_K(const block_q3_K *b, int8_t q[QK_K]) {
    unpack_2bit(b->qs, q);
    for (int e = 0; e < QK_K; e++) q[e] = (int8_t)(q[e] - (high_bit(b->hmask, e) ? 0 : 4));
}

void ll_dequantize_row_q3_K(const void *vx, float *y, int64_t n) {
    const block_q3_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++, y += QK_K) {
        int8_t q[QK_K];
        decode_q3_K(&x[b], q);
        const float d = ll_half_to_f32(x[b].d);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (q3_scale(x[b].scales, j) - 32);
            for (int i = 0; i < 16; i++) y[16 * j + i] = dl * q[16 * j + i];
        }
    }
}

void ll_vec_dot_q3_K_q8_K(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q3_K *x = vx;
    const block_q8_K *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int8_t q[QK_K];
        decode_q3_K(&x[b], q);
        int32_t isum = 0;
        for (int j = 0; j < 16; j++)
            isum += (q3_scale(x[b].scales, j) - 32) * dot_i8(q + 16 * j, y[b].qs + 16 * j, 16);
        sum += ll_half_to_f32(x[b].d) * y[b].d * (float)isum;
    }
    *s = sum;
}

/* ---- Q4_K and Q5_K: x = d * sc * q - dmin * m, 6-bit sc and m per 32 -------- */

/* The search both types share: per sub-block of 32, an affine fit with
 * weights av|x| + |x|, then 6-bit scales and mins against the largest of
 * each, then every level requantized against the scales as stored. Leaves
 * levels in [0, nmax] in L and fills d, dmin and the packed scales. */
static void quantize_k4_levels(const float *x, int nmax, float rmin, int nstep, int8_t L[QK_K],
                               ll_half *d_out, ll_half *dmin_out, uint8_t packed[12]) {
    float scales[8], mins[8], w[32];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0.0f;
        for (int i = 0; i < 32; i++) sum_x2 += xs[i] * xs[i];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int i = 0; i < 32; i++) w[i] = av_x + fabsf(xs[i]);
        scales[j] = fit_affine(xs, w, 32, nmax, rmin, 0.1f, nstep, 0, L + 32 * j, &mins[j]);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        /* llama.cpp narrows to a byte before clamping to 63 */
        const uint8_t sc = (uint8_t)ll_round_nearest(inv_scale * scales[j]);
        const uint8_t m = (uint8_t)ll_round_nearest(inv_min * mins[j]);
        ls[j] = sc < 63 ? sc : 63;
        lm[j] = m < 63 ? m : 63;
    }
    pack_k4_scales(ls, lm, packed);
    *d_out = ll_f32_to_half(max_scale / 63.0f);
    *dmin_out = ll_f32_to_half(max_min / 63.0f);

    const float d = ll_half_to_f32(*d_out), dmin = ll_half_to_f32(*dmin_out);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        ll_k4_scale_min(packed, j, &sc, &m);
        const float dl = d * sc;
        if (dl == 0) continue; /* keep the search's levels */
        const float ml = dmin * m;
        for (int i = 0; i < 32; i++)
            L[32 * j + i] = (int8_t)clampi(ll_round_nearest((x[32 * j + i] + ml) / dl), 0, nmax);
    }
}

/* shared by the Q4_K and Q5_K dequantizers: q holds levels, sub-blocks of 32 */
static void dequantize_k4_block(const int8_t q[QK_K], const uint8_t packed[12], ll_half d16,
                                ll_half dmin16, float *y) {
    const float d = ll_half_to_f32(d16), dmin = ll_half_to_f32(dmin16);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        ll_k4_scale_min(packed, j, &sc, &m);
        const float dl = d * sc, ml = dmin * m;
        for (int i = 0; i < 32; i++) y[32 * j + i] = dl * q[32 * j + i] - ml;
    }
}

/* shared by the Q4_K and Q5_K dots: one block's contribution */
static float dot_k4_block(const int8_t q[QK_K], const uint8_t packed[12], ll_half d16,
                          ll_half dmin16, const block_q8_K *y) {
    int32_t isum = 0, msum = 0;
    for (int j = 0; j < 8; j++) {
        int sc, m;
        ll_k4_scale_min(packed, j, &sc, &m);
        isum += sc * dot_i8(q + 32 * j, y->qs + 32 * j, 32);
        msum += m * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
    }
    return ll_half_to_f32(d16) * y->d * (float)isum - ll_half_to_f32(dmin16) * y->d * (float)msum;
}

void ll_quantize_row_q4_K_ref(const float *x, void *vy, int64_t n) {
    block_q4_K *y = vy;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        int8_t L[QK_K];
        quantize_k4_levels(x, 15, -1.0f, 20, L, &y[b].d, &y[b].dmin, y[b].scales);
        pack_4bit(L, y[b].qs);
    }
}

void ll_dequantize_row_q4_K(const void *vx, float *y, int64_t n) {
    const block_q4_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++, y += QK_K) {
        int8_t q[QK_K];
        unpack_4bit(x[b].qs, q);
        dequantize_k4_block(q, x[b].scales, x[b].d, x[b].dmin, y);
    }
}

void ll_vec_dot_q4_K_q8_K(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_K *x = vx;
    const block_q8_K *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int8_t q[QK_K];
        unpack_4bit(x[b].qs, q);
        sum += dot_k4_block(q, x[b].scales, x[b].d, x[b].dmin, &y[b]);
    }
    *s = sum;
}

void ll_quantize_row_q5_K_ref(const float *x, void *vy, int64_t n) {
    block_q5_K *y = vy;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        int8_t L[QK_K];
        quantize_k4_levels(x, 31, -0.5f, 15, L, &y[b].d, &y[b].dmin, y[b].scales);
        memset(y[b].qh, 0, sizeof y[b].qh);
        for (int e = 0; e < QK_K; e++)
            if (L[e] > 15) y[b].qh[e % 32] |= (uint8_t)(1 << (e / 32));
        pack_4bit(L, y[b].qs); /* keeps the low nibbles */
    }
}

/* levels in 0..31: a low nibble plus 16 for a set qh bit */
static void decode_q5_K(const block_q5_K *b, int8_t q[QK_K]) {
    unpack_4bit(b->qs, q);
    for (int e = 0; e < QK_K; e++) q[e] = (int8_t)(q[e] + 16 * high_bit(b->qh, e));
}

void ll_dequantize_row_q5_K(const void *vx, float *y, int64_t n) {
    const block_q5_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++, y += QK_K) {
        int8_t q[QK_K];
        decode_q5_K(&x[b], q);
        dequantize_k4_block(q, x[b].scales, x[b].d, x[b].dmin, y);
    }
}

void ll_vec_dot_q5_K_q8_K(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_K *x = vx;
    const block_q8_K *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int8_t q[QK_K];
        decode_q5_K(&x[b], q);
        sum += dot_k4_block(q, x[b].scales, x[b].d, x[b].dmin, &y[b]);
    }
    *s = sum;
}

/* ---- Q6_K: x = d * sc * (q - 32), q in 0..63, int8 sc per 16 --------------- */

/* Layout: in each half h of 128 elements, element 128h + 32s + l keeps its
 * low nibble in ql[64h + 32*(s%2) + l] (low nibble for s < 2, high for s >= 2)
 * and its top two bits in qh[32h + l] at bit 2s. */
void ll_quantize_row_q6_K_ref(const float *x, void *vy, int64_t n) {
    block_q6_K *y = vy;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        int8_t L[QK_K];
        float scales[16];
        float max_scale = 0.0f, max_abs_scale = 0.0f;
        for (int j = 0; j < 16; j++) {
            scales[j] = fit_symmetric(x + 16 * j, 16, 32, L + 16 * j);
            if (fabsf(scales[j]) > max_abs_scale) { max_abs_scale = fabsf(scales[j]); max_scale = scales[j]; }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        /* int8 scales against the largest; its sign goes into d */
        const float iscale = -128.0f / max_scale;
        y[b].d = ll_f32_to_half(1 / iscale);
        for (int j = 0; j < 16; j++) {
            const int l = ll_round_nearest(iscale * scales[j]);
            y[b].scales[j] = (int8_t)(l < 127 ? l : 127);
        }
        /* requantize against the scales as stored; a zero scale keeps the search's levels */
        const float d = ll_half_to_f32(y[b].d);
        for (int j = 0; j < 16; j++) {
            const float dl = d * y[b].scales[j];
            if (dl == 0) continue;
            for (int i = 0; i < 16; i++)
                L[16 * j + i] = (int8_t)(clampi(ll_round_nearest(x[16 * j + i] / dl), -32, 31) + 32);
        }
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const int8_t *e = L + 128 * h + l;
                y[b].ql[64 * h + l] = (uint8_t)((e[0] & 0xF) | (e[64] & 0xF) << 4);
                y[b].ql[64 * h + 32 + l] = (uint8_t)((e[32] & 0xF) | (e[96] & 0xF) << 4);
                y[b].qh[32 * h + l] = (uint8_t)(e[0] >> 4 | (e[32] >> 4) << 2 | (e[64] >> 4) << 4 | (e[96] >> 4) << 6);
            }
    }
}

/* levels in -32..31 */
static void decode_q6_K(const block_q6_K *b, int8_t q[QK_K]) {
    for (int e = 0; e < QK_K; e++) {
        const int h = e / 128, s = e / 32 % 4, l = e % 32;
        const int lo = (b->ql[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0xF;
        const int hi = (b->qh[32 * h + l] >> (2 * s)) & 3;
        q[e] = (int8_t)((lo | hi << 4) - 32);
    }
}

void ll_dequantize_row_q6_K(const void *vx, float *y, int64_t n) {
    const block_q6_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++, y += QK_K) {
        int8_t q[QK_K];
        decode_q6_K(&x[b], q);
        const float d = ll_half_to_f32(x[b].d);
        for (int j = 0; j < 16; j++) {
            const float dl = d * x[b].scales[j];
            for (int i = 0; i < 16; i++) y[16 * j + i] = dl * q[16 * j + i];
        }
    }
}

void ll_vec_dot_q6_K_q8_K(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q6_K *x = vx;
    const block_q8_K *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int8_t q[QK_K];
        decode_q6_K(&x[b], q);
        int32_t isum = 0;
        for (int j = 0; j < 16; j++) isum += x[b].scales[j] * dot_i8(q + 16 * j, y[b].qs + 16 * j, 16);
        sum += ll_half_to_f32(x[b].d) * y[b].d * (float)isum;
    }
    *s = sum;
}

/* ---- Q8_K: x = d * q, float d, int8 q, bsums = sums of each 16 q ------------ */

void ll_quantize_row_q8_K_ref(const float *x, void *vy, int64_t n) {
    block_q8_K *y = vy;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        const float max = ll_signed_absmax(x, QK_K);
        if (max == 0) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        /* -127 (not -128) keeps every q in [-127, 127], which SIMD dots rely on */
        const float iscale = -127.0f / max;
        for (int e = 0; e < QK_K; e++) {
            const int v = ll_round_nearest(iscale * x[e]);
            y[b].qs[e] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += y[b].qs[16 * g + i];
            y[b].bsums[g] = (int16_t)sum;
        }
        y[b].d = 1 / iscale;
    }
}

void ll_dequantize_row_q8_K(const void *vx, float *y, int64_t n) {
    const block_q8_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++)
        for (int e = 0; e < QK_K; e++) y[b * QK_K + e] = x[b].d * x[b].qs[e];
}
