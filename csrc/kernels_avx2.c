/* kernels_avx2.c: AVX2 + FMA + F16C kernels (compiled with those flags only
 * here; used when cpuid reports them). kernels_avxvnni.c builds this file a
 * second time with LL_AVXVNNI defined and -mavxvnni: the "avxvnni" ISA,
 * which only changes the integer dot helpers (dot4_*, add_madd) and the
 * nibble split (nibbles_x16_32). kernels_avx512.c builds it a third time with
 * LL_AVX512 too (the same VNNI dots in their EVEX encoding) under its own
 * 512-bit kernels.
 *
 * Every kernel computes what its scalar twin in quants.c / quants_k.c
 * computes. The activation quantizers are bit-identical to the reference.
 * The dot products form each block's integer sum exactly as the scalar code
 * does (only the order of the integer additions differs) and then scale it
 * in float, so they differ from the scalar result only by float rounding
 * order. The dequantizers are bit-identical: they do the same float
 * operations in the same order (this file is built with -ffp-contract=off so
 * the compiler does not fuse them).
 *
 * Integer recipe: _mm256_maddubs_epi16 multiplies unsigned by signed bytes and
 * adds pairs into int16; it saturates only above 32767, which two products of
 * magnitude <= 128 * 127 never reach. Signed weights either use the sign
 * trick (|w| times y carrying w's sign, exact because our quantizers never
 * produce an activation of -128 from NaN-free input) or an offset
 * ((q - 8) * y = q * y - 8 * y, and the k-quants' -32 or -4 through the
 * bsums). _mm256_madd_epi16 then applies int16 sub-block scales while
 * widening to int32. Horizontal sums happen once per row, never inside the
 * loops. */
#include <immintrin.h>
#include <stddef.h>
#include "quants.h"

/* ---- small helpers ---------------------------------------------------------- */

static inline float h2f(ll_half h) { return _cvtsh_ss(h); }

static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hsum_ps128(__m128 v) {
    const __m128 s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

static inline float hmax_ps(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

/* Weight rows stream from DRAM, and these loops do a few dozen instructions
 * per 64-byte line: the out-of-order window alone keeps too few lines in
 * flight. Asking for the line PREFETCH_AHEAD bytes ahead (latency x
 * bandwidth is ~1.5 KB) made DRAM-resident Q4_0 GEMV ~2x faster. Past the
 * end of a row this reads into the next one; past the end of the matrix a
 * prefetch is harmless. */
#define PREFETCH_AHEAD 2048
static inline void prefetch_span(const void *p, size_t bytes) {
    for (size_t off = 0; off < bytes; off += 64)
        _mm_prefetch((const char *)p + PREFETCH_AHEAD + off, _MM_HINT_T0);
}

static inline __m256i load256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline __m128i load128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

/* unsigned bytes (<= 128) times signed bytes: 16 int16 pair sums */
static inline __m256i mul_u8_i8(__m256i u, __m256i s) { return _mm256_maddubs_epi16(u, s); }

/* signed bytes times signed bytes: the sign trick turns it into mul_u8_i8 */
static inline __m256i mul_i8_i8(__m256i x, __m256i y) {
    return _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

/* 16 int16 -> 8 int32 pair sums */
static inline __m256i widen_pairs(__m256i p16) { return _mm256_madd_epi16(p16, _mm256_set1_epi16(1)); }

/* The helpers below are where the AVX-VNNI build (LL_AVXVNNI, see
 * kernels_avxvnni.c) differs: vpdpbusd multiplies unsigned by signed bytes
 * and adds each 4 products into int32 in one instruction, where AVX2 needs
 * maddubs then madd; vpdpwssd is madd and add in one. Both are exact (no
 * saturation), so the two builds give the same integer sums. */

/* AVX512-VNNI's EVEX forms of the same instructions: CPUs with AVX-512 but
 * without AVX-VNNI (Ice Lake, Cascade Lake) have only these. */
#if defined(LL_AVX512)
#define dpbusd256 _mm256_dpbusd_epi32
#define dpwssd256 _mm256_dpwssd_epi32
#elif defined(LL_AVXVNNI)
#define dpbusd256 _mm256_dpbusd_avx_epi32
#define dpwssd256 _mm256_dpwssd_avx_epi32
#endif

/* unsigned bytes times signed bytes: 8 int32 sums of 4 products. The AVX2
 * build's maddubs saturates its int16 pair sums, so there u <= 128;
 * vpdpbusd takes any unsigned byte. */
static inline __m256i dot4_u8_i8(__m256i u, __m256i s) {
#ifdef LL_AVXVNNI
    return dpbusd256(_mm256_setzero_si256(), u, s);
#else
    return widen_pairs(mul_u8_i8(u, s));
#endif
}

/* signed bytes times signed bytes: 8 int32 sums of 4 products */
static inline __m256i dot4_i8_i8(__m256i x, __m256i y) {
    return dot4_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

/* (u - k) * y for unsigned u and k, as 8 int32 sums of 4 products: u * y - k * y
 * costs two unsigned products and a subtraction, less than the sign trick.
 * AVX2 subtracts the int16 pair sums (|u * y| <= 31 * 127 twice fits) before
 * widening them once. */
static inline __m256i dot4_offset(__m256i u, __m256i k, __m256i y) {
#ifdef LL_AVXVNNI
    return _mm256_sub_epi32(dot4_u8_i8(u, y), dot4_u8_i8(k, y));
#else
    return widen_pairs(_mm256_sub_epi16(mul_u8_i8(u, y), mul_u8_i8(k, y)));
#endif
}

/* sum + (16 int16 scales) * (16 int16 pair sums), pairs added into 8 int32 */
static inline __m256i add_madd(__m256i sum, __m256i scale, __m256i p16) {
#ifdef LL_AVXVNNI
    return dpwssd256(sum, scale, p16);
#else
    return _mm256_add_epi32(sum, _mm256_madd_epi16(scale, p16));
#endif
}

/* 16 bytes of packed nibbles -> 32 bytes: the low nibbles, then the high ones
 * (the legacy formats' element order) */
static inline __m256i nibbles_32(const uint8_t *qs) {
    /* a broadcast load and a per-lane shift keep this off the shuffle port */
    const __m256i both = _mm256_broadcastsi128_si256(load128(qs));
    return _mm256_and_si256(_mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
}

/* The VNNI builds skip the shift: low nibbles, then the high nibbles left in
 * place (16 * h). vpdpbusd takes unsigned bytes up to 255 without saturating,
 * so the upper 128-bit lane's int32 sums come out exactly 16 times too large;
 * the dot scales them back once per row (scale_hi_lane), which is exact
 * because a power of two commutes with float rounding. One AND per block
 * instead of a shift and an AND. */
#ifdef LL_AVXVNNI
static inline __m256i nibbles_x16_32(const uint8_t *qs) {
    const __m256i mask = _mm256_setr_m128i(_mm_set1_epi8(0x0f), _mm_set1_epi8((char)0xf0));
    return _mm256_and_si256(_mm256_broadcastsi128_si256(load128(qs)), mask);
}
#define HI_LANE_SCALE 16
#else
static inline __m256i nibbles_x16_32(const uint8_t *qs) { return nibbles_32(qs); }
#define HI_LANE_SCALE 1
#endif

/* undo nibbles_x16_32's factor on the upper lane of a float accumulator */
static inline __m256 scale_hi_lane(__m256 acc) {
    return _mm256_mul_ps(acc, _mm256_setr_ps(1, 1, 1, 1, 1.0f / HI_LANE_SCALE, 1.0f / HI_LANE_SCALE,
                                             1.0f / HI_LANE_SCALE, 1.0f / HI_LANE_SCALE));
}

/* 32 bits -> 32 bytes, 0xff where bit k of the little-endian word is set */
static inline __m256i bits_32(const uint8_t *qh) {
    uint32_t w;
    memcpy(&w, qh, 4);
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)w),
        _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
    return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

/* Shuffles of a [S | S] vector of 8 int16 scales (both 128-bit lanes equal).
 * pair_shuffle[j]: words 2j (low lane) and 2j+1 (high lane), for 32 bytes of
 * activations that span two sub-blocks of 16.
 * word_shuffle[k]: word k in every position, for a sub-block of 32. */
#define W2(k) (2 * (k)), (2 * (k) + 1)
#define W8(k) W2(k), W2(k), W2(k), W2(k), W2(k), W2(k), W2(k), W2(k)
static const uint8_t pair_shuffle[4][32] = {
    {W8(0), W8(1)}, {W8(2), W8(3)}, {W8(4), W8(5)}, {W8(6), W8(7)},
};
static const uint8_t word_shuffle[8][32] = {
    {W8(0), W8(0)}, {W8(1), W8(1)}, {W8(2), W8(2)}, {W8(3), W8(3)},
    {W8(4), W8(4)}, {W8(5), W8(5)}, {W8(6), W8(6)}, {W8(7), W8(7)},
};
#undef W8
#undef W2

static inline __m256i scale_pair(__m256i s, int j) {
    return _mm256_shuffle_epi8(s, load256(pair_shuffle[j]));
}
static inline __m256i scale_word(__m256i s, int k) {
    return _mm256_shuffle_epi8(s, load256(word_shuffle[k]));
}

/* sum + scale * (u * y) per int16 pair: one sub-block's scaled products */
static inline __m256i add_scaled(__m256i sum, __m256i scale, __m256i u, const int8_t *y) {
    return add_madd(sum, scale, mul_u8_i8(u, load256(y)));
}

/* [lo | lo] from the low 128 bits */
static inline __m256i dup_lo(__m256i v) { return _mm256_permute4x64_epi64(v, 0x44); }
static inline __m256i dup_hi(__m256i v) { return _mm256_permute4x64_epi64(v, 0xee); }

/* ---- activation quantizers ---------------------------------------------------- */

/* The reference's Q8_0 / Q8_1 level of 8 floats: roundf (halves away from
 * zero) clamped to [-127, 127], NaN as 0 (a block below ~3e-39 makes v * id
 * infinite or NaN). Adding the largest float below 0.5 with v's sign and
 * truncating rounds exactly as roundf does; clamping before the truncation
 * gives the same result as clamping after it. */
static inline __m256i q8_levels(__m256 v) {
    const __m256 half = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(0x1.fffffep-2f));
    __m256 t = _mm256_add_ps(v, half);
    t = _mm256_and_ps(t, _mm256_cmp_ps(t, t, _CMP_ORD_Q));
    t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    return _mm256_cvttps_epi32(t);
}

/* 4 x 8 int32 -> 32 int8 in order, keeping each value's low byte as the
 * scalar (int8_t) conversion does: Q8_K's levels wrap as ggml's do where a
 * degenerate block takes them out of range, and saturating packs would not */
static inline __m256i pack_low_bytes(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ff = _mm256_set1_epi32(0xff);
    const __m256i ab = _mm256_packus_epi32(_mm256_and_si256(a, ff), _mm256_and_si256(b, ff));
    const __m256i cd = _mm256_packus_epi32(_mm256_and_si256(c, ff), _mm256_and_si256(d, ff));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
}

/* One block of 32 for Q8_0 / Q8_1: d = amax / 127, qs = roundf(x / d).
 * The max runs as the scalar fmaxf chain does (max_ps returns its second
 * operand when the first is NaN, so NaNs are skipped the same way). */
static float quantize_block_32(const float *x, int8_t *qs) {
    __m256 v[4], amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        amax = _mm256_max_ps(abs_ps(v[k]), amax);
    }
    const float d = hmax_ps(amax) / 127.0f;
    const __m256 id = _mm256_set1_ps(d ? 1.0f / d : 0.0f);
    __m256i q[4];
    for (int k = 0; k < 4; k++) q[k] = q8_levels(_mm256_mul_ps(v[k], id));
    _mm256_storeu_si256((__m256i *)qs, pack_low_bytes(q[0], q[1], q[2], q[3]));
    return d;
}

static void quantize_q8_0(const float *x, void *vy, int64_t n) {
    block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / QK8_0; b++)
        y[b].d = ll_f32_to_half(quantize_block_32(x + b * QK8_0, y[b].qs));
}

static inline int hsum_epi32(__m256i v) {
    const __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    const __m128i s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
    return _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 1)));
}

static void quantize_q8_1(const float *x, void *vy, int64_t n) {
    block_q8_1 *y = vy;
    for (int64_t b = 0; b < n / QK8_1; b++) {
        const float d = quantize_block_32(x + b * QK8_1, y[b].qs);
        const int sum = hsum_epi32(widen_pairs(mul_u8_i8(_mm256_set1_epi8(1), load256(y[b].qs))));
        y[b].d = ll_f32_to_half(d);
        y[b].s = ll_f32_to_half((float)sum * d);
    }
}

/* Q8_0's block with its scale as float32 and the sum of its quants */
static void quantize_q8_0p(const float *x, void *vy, int64_t n) {
    block_q8_0p *y = vy;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const float d = quantize_block_32(x + b * QK8_0, y[b].qs);
        y[b].d = h2f(ll_f32_to_half(d));
        y[b].sum = hsum_epi32(widen_pairs(mul_u8_i8(_mm256_set1_epi8(1), load256(y[b].qs))));
    }
}

/* Q8_1's block with d and s as float32 */
static void quantize_q8_1p(const float *x, void *vy, int64_t n) {
    block_q8_1p *y = vy;
    for (int64_t b = 0; b < n / QK8_1; b++) {
        const float d = quantize_block_32(x + b * QK8_1, y[b].qs);
        const int sum = hsum_epi32(widen_pairs(mul_u8_i8(_mm256_set1_epi8(1), load256(y[b].qs))));
        y[b].d = h2f(ll_f32_to_half(d));
        y[b].s = h2f(ll_f32_to_half((float)sum * d));
    }
}

/* ggml's nearest_int: adding 1.5 * 2^23 rounds to an integer (ties to even)
 * in the low mantissa bits, which are then read back as the integer. */
static inline __m256i nearest_int_epi32(__m256 v) {
    const __m256i bits = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12582912.0f)));
    const __m256i mantissa = _mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff));
    return _mm256_sub_epi32(mantissa, _mm256_set1_epi32(0x00400000));
}

/* bsums of a Q8_K block from its 256 quants: the sum of each 16 */
static void q8_K_bsums(const int8_t *qs, int16_t *bsums) {
    const __m256i ones8 = _mm256_set1_epi8(1);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i g[2];
    for (int h = 0; h < 2; h++) {
        __m256i s[4]; /* int32 sums of 4 bytes each */
        for (int c = 0; c < 4; c++) s[c] = widen_pairs(mul_u8_i8(ones8, load256(qs + 128 * h + 32 * c)));
        /* two hadds leave [s0 lo, s1 lo, s2 lo, s3 lo | s0 hi, s1 hi, ...] */
        const __m256i sums = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
        g[h] = _mm256_permutevar8x32_epi32(sums, order);
    }
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(g[0], g[1]), 0xd8);
    _mm256_storeu_si256((__m256i *)bsums, packed);
}

/* ggml's quantize_row_q8_K_ref: the scale maps the first element of largest
 * magnitude to -127, d = 1 / that scale. */
static void quantize_q8_K(const float *x, void *vy, int64_t n) {
    block_q8_K *y = vy;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int k = 0; k < 32; k++)
            acc[k & 3] = _mm256_max_ps(abs_ps(_mm256_loadu_ps(x + 8 * k)), acc[k & 3]);
        const float amax =
            hmax_ps(_mm256_max_ps(_mm256_max_ps(acc[0], acc[1]), _mm256_max_ps(acc[2], acc[3])));
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float max = 0.0f;
        const __m256 vamax = _mm256_set1_ps(amax);
        for (int k = 0; k < 32; k++) {
            const __m256 ax = abs_ps(_mm256_loadu_ps(x + 8 * k));
            const int m = _mm256_movemask_ps(_mm256_cmp_ps(ax, vamax, _CMP_EQ_OQ));
            if (m) {
                max = x[8 * k + __builtin_ctz((unsigned)m)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m256 vis = _mm256_set1_ps(iscale);
        const __m256i top = _mm256_set1_epi32(127);
        for (int c = 0; c < 8; c++) {
            __m256i q[4];
            for (int k = 0; k < 4; k++) {
                const __m256 v = _mm256_mul_ps(vis, _mm256_loadu_ps(x + 32 * c + 8 * k));
                q[k] = _mm256_min_epi32(nearest_int_epi32(v), top);
            }
            _mm256_storeu_si256((__m256i *)(y[b].qs + 32 * c), pack_low_bytes(q[0], q[1], q[2], q[3]));
        }
        q8_K_bsums(y[b].qs, y[b].bsums);
        y[b].d = 1.0f / iscale;
    }
}

/* ---- float weights against float activations ------------------------------ */

/* 32 elements per step in four accumulators; the tail below 8 is scalar. */
#define FLOAT_DOT(name, LOAD8, ELEM)                                              \
    static void name(int64_t n, float *s, const void *vx, const void *vy) {     \
        const float *y = vy;                                                     \
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(),               \
                         _mm256_setzero_ps(), _mm256_setzero_ps()};              \
        int64_t i = 0;                                                           \
        for (; i + 32 <= n; i += 32)                                             \
            for (int k = 0; k < 4; k++)                                          \
                acc[k] = _mm256_fmadd_ps(LOAD8(vx, i + 8 * k),                   \
                                         _mm256_loadu_ps(y + i + 8 * k), acc[k]); \
        for (; i + 8 <= n; i += 8)                                               \
            acc[0] = _mm256_fmadd_ps(LOAD8(vx, i), _mm256_loadu_ps(y + i), acc[0]); \
        float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]),         \
                                          _mm256_add_ps(acc[2], acc[3])));       \
        for (; i < n; i++) sum += ELEM(vx, i) * y[i];                            \
        *s = sum;                                                                \
    }

static inline __m256 load8_f32(const void *x, int64_t i) { return _mm256_loadu_ps((const float *)x + i); }
static inline __m256 load8_f16(const void *x, int64_t i) {
    return _mm256_cvtph_ps(load128((const ll_half *)x + i));
}
static inline __m256 load8_bf16(const void *x, int64_t i) {
    const __m256i w = _mm256_cvtepu16_epi32(load128((const uint16_t *)x + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
static inline float elem_f32(const void *x, int64_t i) { return ((const float *)x)[i]; }
static inline float elem_f16(const void *x, int64_t i) { return ll_half_to_f32(((const ll_half *)x)[i]); }
static inline float elem_bf16(const void *x, int64_t i) { return ll_bf16_to_f32(((const uint16_t *)x)[i]); }

FLOAT_DOT(dot_f32, load8_f32, elem_f32)
FLOAT_DOT(dot_f16, load8_f16, elem_f16)
FLOAT_DOT(dot_bf16, load8_bf16, elem_bf16)
#undef FLOAT_DOT

/* The kernel `name` over 1..4 rows at y (of y_t) that calls name##_n with
 * n_y a constant, so that the compiler unrolls each count's loops over the
 * rows (ll_dot_rows_fn, ll_gemm8_fn). */
#define BY_ROWS(name, y_t)                                                                \
    static void name(int64_t n, float *s, int64_t s_stride, const void *x, const y_t *y,  \
                     size_t y_stride, int n_y) {                                          \
        switch (n_y) {                                                                    \
        case 1: name##_n(n, s, s_stride, x, y, y_stride, 1); break;                       \
        case 2: name##_n(n, s, s_stride, x, y, y_stride, 2); break;                       \
        case 3: name##_n(n, s, s_stride, x, y, y_stride, 3); break;                       \
        default: name##_n(n, s, s_stride, x, y, y_stride, 4); break;                      \
        }                                                                                 \
    }

/* Attention's dots (ll_dot_rows_fn): each cache row's 8-element chunk is
 * loaded (and converted) once for the n_y query rows. Per row two
 * accumulators take alternate chunks of 8, then one horizontal sum and a
 * scalar tail: the same operations for each row whatever n_y is. */
#define DOT_ROWS(name, LOAD8, ELEM)                                                       \
    static inline __attribute__((always_inline)) void name##_n(                          \
            int64_t n, float *s, int64_t s_stride, const void *vx, const float *y,       \
            size_t y_stride, const int n_y) {                                            \
        const float *ya[4];                                                              \
        __m256 acc[4][2];                                                                \
        for (int a = 0; a < n_y; a++) {                                                  \
            ya[a] = (const float *)((const uint8_t *)y + a * y_stride);                  \
            acc[a][0] = acc[a][1] = _mm256_setzero_ps();                                 \
        }                                                                                \
        int64_t i = 0;                                                                   \
        for (; i + 16 <= n; i += 16) {                                                   \
            const __m256 x0 = LOAD8(vx, i), x1 = LOAD8(vx, i + 8);                       \
            for (int a = 0; a < n_y; a++) {                                              \
                acc[a][0] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(ya[a] + i), acc[a][0]);  \
                acc[a][1] = _mm256_fmadd_ps(x1, _mm256_loadu_ps(ya[a] + i + 8), acc[a][1]); \
            }                                                                            \
        }                                                                                \
        if (i + 8 <= n) {                                                                \
            const __m256 x0 = LOAD8(vx, i);                                              \
            for (int a = 0; a < n_y; a++)                                                \
                acc[a][0] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(ya[a] + i), acc[a][0]);  \
            i += 8;                                                                      \
        }                                                                                \
        for (int a = 0; a < n_y; a++) {                                                  \
            float sum = hsum_ps(_mm256_add_ps(acc[a][0], acc[a][1]));                    \
            for (int64_t t = i; t < n; t++) sum += ELEM(vx, t) * ya[a][t];               \
            s[a * s_stride] = sum;                                                       \
        }                                                                                \
    }                                                                                    \
    BY_ROWS(name, float)

DOT_ROWS(dot_rows_f32, load8_f32, elem_f32)
DOT_ROWS(dot_rows_f16, load8_f16, elem_f16)
#undef DOT_ROWS

/* ---- legacy formats against Q8_0 / Q8_1 --------------------------------------- */

/* Each type's integer dot of one block with 32 activation bytes, as 8 int32
 * partial sums, in two steps: the block's weights as 32 bytes (W_*), then
 * their dot with the activations (DOT_*). A matmul against several
 * activation rows unpacks each weight block once (LEGACY_DOT4). */
static inline __m256i w_q4_0(const block_q4_0 *x) { return nibbles_x16_32(x->qs); }
static inline __m256i dot_w_q4_0(__m256i w, const int8_t *yq) {
    const __m256i offset = _mm256_setr_m128i(_mm_set1_epi8(8), _mm_set1_epi8((char)(8 * HI_LANE_SCALE)));
    return dot4_offset(w, offset, load256(yq));
}
/* Q5_0 / Q5_1's unsigned 5-bit quants: nibble | bit k of qh << 4 */
static inline __m256i q5_quants(const uint8_t *qs, const uint8_t *qh) {
    return _mm256_or_si256(nibbles_32(qs), _mm256_and_si256(bits_32(qh), _mm256_set1_epi8(0x10)));
}
/* Q5_0 as signed bytes q - 16: the dot is then the sign trick's one
 * product, where the offset form (u * y - 16 * y) needs two; the |w| it
 * takes is shared by the rows of a 4-row dot. */
static inline __m256i w_q5_0(const block_q5_0 *x) {
    return _mm256_sub_epi8(q5_quants(x->qs, x->qh), _mm256_set1_epi8(16));
}
/* the signed types keep |w| and move w's signs onto the activations */
static inline __m256i w_q8_0(const block_q8_0 *x) { return load256(x->qs); }
static inline __m256i dot_w_i8(__m256i w, const int8_t *yq) { return dot4_i8_i8(w, load256(yq)); }
static inline __m256i w_iq4_nl(const block_iq4_nl *x) {
    const __m256i table = _mm256_broadcastsi128_si256(load128(ll_iq4nl_values));
    return _mm256_shuffle_epi8(table, nibbles_32(x->qs));
}
static inline __m256i w_q4_1(const block_q4_1 *x) { return nibbles_x16_32(x->qs); }
static inline __m256i w_q5_1(const block_q5_1 *x) { return q5_quants(x->qs, x->qh); }
static inline __m256i dot_w_u8(__m256i w, const int8_t *yq) { return dot4_u8_i8(w, load256(yq)); }

static inline uint16_t half_at(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

/* hx * hy for the float16 fields at x, y of 4 consecutive blocks (strides in
 * bytes): one F16C conversion instead of eight scalar ones, which otherwise
 * cost as much as a 32-element block's integer dot. */
static inline __m128i dword_at(const uint8_t *p) {
    uint32_t w;
    memcpy(&w, p, 4);
    return _mm_cvtsi32_si128((int)w);
}

/* the float16 fields at p and p + stride .. p + 3 * stride in words 0..3 */
static inline __m128i halves_4(const uint8_t *p, size_t stride) {
    const __m128i h01 = _mm_unpacklo_epi16(dword_at(p), dword_at(p + stride));
    const __m128i h23 = _mm_unpacklo_epi16(dword_at(p + 2 * stride), dword_at(p + 3 * stride));
    return _mm_unpacklo_epi32(h01, h23);
}

static inline __m128 half_products_4(const uint8_t *x, size_t xs, const uint8_t *y, size_t ys) {
    const __m256 f = _mm256_cvtph_ps(_mm_unpacklo_epi64(halves_4(x, xs), halves_4(y, ys)));
    return _mm_mul_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps(f, 1));
}

/* Per block d_x * d_y * (integer dot), four blocks per step; Q8_1 pairs add
 * m_x * s_y, where s_y = d_y * sum(qy) was stored by the quantizer (m and s
 * sit at offset 2 of both blocks). Each block's 8 int32 partial sums are
 * converted and scaled on their own: a scale broadcast from memory is a load,
 * no shuffle, which is cheaper than joining two blocks' sums with hadd
 * (three uops, two of them on the one shuffle port) and permuting the scales
 * to match. X16: BLOCK_DOT's upper lane is 16 times too large (nibbles_x16_32),
 * undone once on the sum. */
#define LEGACY_DOT(name, block_t, act_t, W, DOT, HAS_MIN, X16)                       \
    static void name(int64_t n, float *s, const void *vx, const void *vy) {          \
        const block_t *x = vx;                                                        \
        const act_t *y = vy;                                                          \
        const int64_t nb = n / 32;                                                    \
        __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};                   \
        __m128 mins = _mm_setzero_ps();                                               \
        int64_t b = 0;                                                                \
        for (; b + 4 <= nb; b += 4) {                                                 \
            prefetch_span(&x[b], 4 * sizeof *x);                                      \
            float d[4];                                                               \
            _mm_storeu_ps(d, half_products_4((const uint8_t *)&x[b], sizeof *x,       \
                                             (const uint8_t *)&y[b], sizeof *y));     \
            if (HAS_MIN)                                                              \
                mins = _mm_add_ps(mins, half_products_4((const uint8_t *)&x[b] + 2, sizeof *x, \
                                                        (const uint8_t *)&y[b] + 2, sizeof *y)); \
            for (int k = 0; k < 4; k++) {                                             \
                const __m256 p = _mm256_cvtepi32_ps(DOT(W(&x[b + k]), y[b + k].qs));  \
                acc[k & 1] = _mm256_fmadd_ps(_mm256_broadcast_ss(&d[k]), p, acc[k & 1]); \
            }                                                                         \
        }                                                                             \
        float tail = 0.0f;                                                            \
        for (; b < nb; b++) {                                                         \
            const uint8_t *xb = (const uint8_t *)&x[b], *yb = (const uint8_t *)&y[b]; \
            const float d = h2f(half_at(xb)) * h2f(half_at(yb));                      \
            const __m256 p = _mm256_cvtepi32_ps(DOT(W(&x[b]), y[b].qs));              \
            acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(d), p, acc[0]);                   \
            if (HAS_MIN) tail += h2f(half_at(xb + 2)) * h2f(half_at(yb + 2));         \
        }                                                                             \
        __m256 sum = _mm256_add_ps(acc[0], acc[1]);                                   \
        if (X16) sum = scale_hi_lane(sum);                                            \
        *s = hsum_ps(sum) + (hsum_ps128(mins) + tail);                                \
    }

/* One weight row against four activation rows (y_stride bytes apart), each
 * result to s[r * s_stride]: LEGACY_DOT's arithmetic, operation for operation,
 * for each row (so the same bits as four calls of it), with each weight block
 * unpacked once for the four. For prompt processing, where the unpacking is
 * a third of a block's work. */
#define LEGACY_DOT4(name, block_t, act_t, W, DOT, HAS_MIN, X16)                      \
    static void name(int64_t n, float *s, int64_t s_stride, const void *vx,          \
                     const void *vy, size_t y_stride) {                               \
        const block_t *x = vx;                                                        \
        const act_t *y[4];                                                            \
        for (int r = 0; r < 4; r++) y[r] = (const act_t *)((const uint8_t *)vy + r * y_stride); \
        const int64_t nb = n / 32;                                                    \
        __m256 acc[4][2];                                                             \
        __m128 mins[4];                                                               \
        float tail[4];                                                                \
        for (int r = 0; r < 4; r++) {                                                 \
            acc[r][0] = acc[r][1] = _mm256_setzero_ps();                              \
            mins[r] = _mm_setzero_ps();                                               \
            tail[r] = 0.0f;                                                           \
        }                                                                             \
        int64_t b = 0;                                                                \
        for (; b + 4 <= nb; b += 4) {                                                 \
            float d[4][4];                                                            \
            for (int r = 0; r < 4; r++) {                                             \
                _mm_storeu_ps(d[r], half_products_4((const uint8_t *)&x[b], sizeof *x, \
                                                    (const uint8_t *)&y[r][b], sizeof *y[r])); \
                if (HAS_MIN)                                                          \
                    mins[r] = _mm_add_ps(mins[r], half_products_4(                    \
                        (const uint8_t *)&x[b] + 2, sizeof *x,                        \
                        (const uint8_t *)&y[r][b] + 2, sizeof *y[r]));                \
            }                                                                         \
            for (int k = 0; k < 4; k++) {                                             \
                const __m256i w = W(&x[b + k]);                                       \
                for (int r = 0; r < 4; r++) {                                         \
                    const __m256 p = _mm256_cvtepi32_ps(DOT(w, y[r][b + k].qs));      \
                    acc[r][k & 1] = _mm256_fmadd_ps(_mm256_broadcast_ss(&d[r][k]), p, \
                                                    acc[r][k & 1]);                   \
                }                                                                     \
            }                                                                         \
        }                                                                             \
        for (; b < nb; b++) {                                                         \
            const uint8_t *xb = (const uint8_t *)&x[b];                               \
            const __m256i w = W(&x[b]);                                               \
            for (int r = 0; r < 4; r++) {                                             \
                const uint8_t *yb = (const uint8_t *)&y[r][b];                        \
                const float d = h2f(half_at(xb)) * h2f(half_at(yb));                  \
                const __m256 p = _mm256_cvtepi32_ps(DOT(w, y[r][b].qs));              \
                acc[r][0] = _mm256_fmadd_ps(_mm256_set1_ps(d), p, acc[r][0]);         \
                if (HAS_MIN) tail[r] += h2f(half_at(xb + 2)) * h2f(half_at(yb + 2));  \
            }                                                                         \
        }                                                                             \
        for (int r = 0; r < 4; r++) {                                                 \
            __m256 sum = _mm256_add_ps(acc[r][0], acc[r][1]);                         \
            if (X16) sum = scale_hi_lane(sum);                                        \
            s[r * s_stride] = hsum_ps(sum) + (hsum_ps128(mins[r]) + tail[r]);         \
        }                                                                             \
    }

static_assert(offsetof(block_q4_1, m) == 2 && offsetof(block_q5_1, m) == 2 && offsetof(block_q8_1, s) == 2,
              "the Q8_1 dots read m and s at offset 2");

#define LEGACY_DOTS(type, block_t, act_t, DOT, HAS_MIN, X16)                          \
    LEGACY_DOT(dot_##type, block_t, act_t, w_##type, DOT, HAS_MIN, X16)                \
    LEGACY_DOT4(dot4_##type, block_t, act_t, w_##type, DOT, HAS_MIN, X16)

LEGACY_DOTS(q4_0, block_q4_0, block_q8_0, dot_w_q4_0, 0, 1)
LEGACY_DOTS(q5_0, block_q5_0, block_q8_0, dot_w_i8, 0, 0)
LEGACY_DOTS(q8_0, block_q8_0, block_q8_0, dot_w_i8, 0, 0)
LEGACY_DOTS(iq4_nl, block_iq4_nl, block_q8_0, dot_w_i8, 0, 0)
LEGACY_DOTS(q4_1, block_q4_1, block_q8_1, dot_w_u8, 1, 1)
LEGACY_DOTS(q5_1, block_q5_1, block_q8_1, dot_w_u8, 1, 0)
#undef LEGACY_DOTS
#undef LEGACY_DOT4
#undef LEGACY_DOT

/* ---- packed weights (pack.c) ---------------------------------------------------------- */

/* 4 activation bytes at p in every 32-bit lane */
static inline __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* The 8 nibble vectors of packed qs (block_q5_0x8, block_q4_1x8): w[k]
 * holds elements 4k..4k+3 of each of the 8 rows (row r in lane r). */
static inline void packed_nibbles(const uint8_t qs[4][32], __m256i w[8]) {
    const __m256i m15 = _mm256_set1_epi8(0x0f);
    for (int j = 0; j < 4; j++) {
        const __m256i q = load256(qs[j]);
        w[j] = _mm256_and_si256(q, m15);
        w[j + 4] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m15);
    }
}

/* The 8 weight vectors of a packed Q5_0 block: w[k] holds elements 4k..4k+3
 * of each of the 8 rows (row r in lane r), unsigned 5-bit quants. Bit k of
 * qh moves to bit 4 (16-bit shifts by at most 4 keep each byte's bits in
 * their byte where the mask looks). */
static inline void q5_0x8_weights(const block_q5_0x8 *x, __m256i w[8]) {
    const __m256i bit4 = _mm256_set1_epi8(0x10);
    const __m256i qh = load256(x->qh);
    packed_nibbles(x->qs, w);
    for (int j = 0; j < 4; j++) {
        w[j] = _mm256_or_si256(w[j], _mm256_and_si256(_mm256_slli_epi16(qh, 4 - j), bit4));
        w[j + 4] = _mm256_or_si256(w[j + 4], _mm256_and_si256(_mm256_srli_epi16(qh, j), bit4));
    }
}

/* Packed Q5_0 against n_y (1..4) Q8_0P rows. Per row and block: u * y over
 * the unsigned quants (four products of at most 2 * 31 * 127 add up in int16
 * without saturating), minus 16 * sum(y), then pack.c's float step. Plain
 * AVX2 in every build, so each ISA gives the scalar kernel's bits. */
static inline __attribute__((always_inline)) void gemm8_q5_0_n(
        int64_t n, float *s, int64_t s_stride, const void *vx, const void *vy,
        size_t y_stride, const int n_y) {
    const block_q5_0x8 *x = vx;
    const block_q8_0p *y[4];
    __m256 acc[4];
    for (int a = 0; a < n_y; a++) {
        y[a] = (const block_q8_0p *)((const uint8_t *)vy + a * y_stride);
        acc[a] = _mm256_setzero_ps();
    }
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < n / QK5_0; b++) {
        prefetch_span(&x[b], sizeof x[b]);
        __m256i w[8];
        q5_0x8_weights(&x[b], w);
        const __m256 dw = _mm256_cvtph_ps(load128(x[b].d));
        for (int a = 0; a < n_y; a++) {
            const block_q8_0p *yb = &y[a][b];
            __m256i lo = _mm256_maddubs_epi16(w[0], bcast4(yb->qs));
            __m256i hi = _mm256_maddubs_epi16(w[4], bcast4(yb->qs + 16));
            for (int k = 1; k < 4; k++) {
                lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(w[k], bcast4(yb->qs + 4 * k)));
                hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(w[k + 4], bcast4(yb->qs + 16 + 4 * k)));
            }
            const __m256i dot = _mm256_sub_epi32(
                _mm256_add_epi32(_mm256_madd_epi16(lo, ones), _mm256_madd_epi16(hi, ones)),
                _mm256_set1_epi32(16 * yb->sum));
            acc[a] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw, _mm256_set1_ps(yb->d)),
                                     acc[a]);
        }
    }
    for (int a = 0; a < n_y; a++) _mm256_storeu_ps(s + a * s_stride, acc[a]);
}

BY_ROWS(gemm8_q5_0, void)

/* Packed Q4_1 against n_y (1..4) Q8_1P rows: the eight products of at most
 * 2 * 15 * 127 per row add up in int16, then pack.c's float steps. */
static inline __attribute__((always_inline)) void gemm8_q4_1_n(
        int64_t n, float *s, int64_t s_stride, const void *vx, const void *vy,
        size_t y_stride, const int n_y) {
    const block_q4_1x8 *x = vx;
    const block_q8_1p *y[4];
    __m256 acc[4], acc_m[4];
    for (int a = 0; a < n_y; a++) {
        y[a] = (const block_q8_1p *)((const uint8_t *)vy + a * y_stride);
        acc[a] = acc_m[a] = _mm256_setzero_ps();
    }
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < n / QK4_1; b++) {
        prefetch_span(&x[b], sizeof x[b]);
        __m256i w[8];
        packed_nibbles(x[b].qs, w);
        const __m256 dw = _mm256_cvtph_ps(load128(x[b].d)), mw = _mm256_cvtph_ps(load128(x[b].m));
        for (int a = 0; a < n_y; a++) {
            const block_q8_1p *yb = &y[a][b];
            __m256i p = _mm256_maddubs_epi16(w[0], bcast4(yb->qs));
            for (int k = 1; k < 8; k++)
                p = _mm256_add_epi16(p, _mm256_maddubs_epi16(w[k], bcast4(yb->qs + 4 * k)));
            const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
            acc[a] = _mm256_fmadd_ps(dot, _mm256_mul_ps(dw, _mm256_set1_ps(yb->d)), acc[a]);
            acc_m[a] = _mm256_fmadd_ps(mw, _mm256_set1_ps(yb->s), acc_m[a]);
        }
    }
    for (int a = 0; a < n_y; a++) _mm256_storeu_ps(s + a * s_stride, _mm256_add_ps(acc[a], acc_m[a]));
}

BY_ROWS(gemm8_q4_1, void)

/* A packed Q4_K block's scales and mins, spread for the kernel below:
 * sc[sb] holds row r's scale of sub-block sb in both int16 of lane r (the
 * madd multiplier of that row's pair sums); mp[p] holds row r's mins of
 * sub-blocks 2p and 2p + 1 as the int16 pair of lane r. */
static inline void q4_Kx8_scales(const block_q4_Kx8 *x, __m256i sc[8], __m256i mp[4]) {
    const __m256i six = _mm256_set1_epi8(63), m15 = _mm256_set1_epi8(0x0f);
    const __m256i top = _mm256_set1_epi8(0x30);
    const __m256i sm0 = load256(x->sm), sm1 = load256(x->sm + 32), lo = load256(x->m_lo);
    const __m256i m0 = _mm256_or_si256(_mm256_and_si256(lo, m15),
                                       _mm256_and_si256(_mm256_srli_epi16(sm0, 2), top));
    const __m256i m1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lo, 4), m15),
                                       _mm256_and_si256(_mm256_srli_epi16(sm1, 2), top));
    mp[0] = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(m0));
    mp[1] = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(m0, 1));
    mp[2] = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(m1));
    mp[3] = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(m1, 1));
    /* each lane: 4 rows' scale bytes, each as int16 twice */
    const __m256i spread = _mm256_setr_epi8(0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1,
                                            4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1);
    const __m256i s[2] = { _mm256_and_si256(sm0, six), _mm256_and_si256(sm1, six) };
    for (int sb = 0; sb < 8; sb++) {
        /* sub-block sb's 8 scale bytes (qword sb % 4 of s[sb / 4]) in both lanes */
        const int q = sb % 4;
        const __m256i both = _mm256_permutevar8x32_epi32(
            s[sb / 4], _mm256_setr_epi32(2 * q, 2 * q + 1, 2 * q, 2 * q + 1,
                                         2 * q, 2 * q + 1, 2 * q, 2 * q + 1));
        sc[sb] = _mm256_shuffle_epi8(both, spread);
    }
}

/* Packed Q4_K against n_y (1..4) Q8_K rows. Per row and sub-block of 32:
 * eight products of at most 2 * 15 * 127 add up in int16, then madd with the
 * scale; the mins meet the activations' sums of 32 (Q8_K's bsums in pairs).
 * Then pack.c's float steps for both. */
static inline __attribute__((always_inline)) void gemm8_q4_K_n(
        int64_t n, float *s, int64_t s_stride, const void *vx, const void *vy,
        size_t y_stride, const int n_y) {
    const block_q4_Kx8 *x = vx;
    const block_q8_K *y[4];
    __m256 acc[4], acc_m[4];
    for (int a = 0; a < n_y; a++) {
        y[a] = (const block_q8_K *)((const uint8_t *)vy + a * y_stride);
        acc[a] = acc_m[a] = _mm256_setzero_ps();
    }
    const __m256i m15 = _mm256_set1_epi8(0x0f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_span(&x[b], sizeof x[b]);
        __m256i sc[8], mp[4];
        q4_Kx8_scales(&x[b], sc, mp);
        __m256i dot[4], mins[4];
        for (int a = 0; a < n_y; a++) {
            /* the sums of 32: int16 0..3 of lane 0 = sub-blocks 0..3, of lane 1 = 4..7 */
            const __m256i bs = load256(y[a][b].bsums);
            const __m256i s32 = _mm256_hadd_epi16(bs, bs);
            mins[a] = _mm256_setzero_si256();
            for (int p = 0; p < 4; p++) {
                const int at = p % 2 + 4 * (p / 2);
                mins[a] = _mm256_add_epi32(mins[a], _mm256_madd_epi16(
                    mp[p], _mm256_permutevar8x32_epi32(s32, _mm256_set1_epi32(at))));
            }
            dot[a] = _mm256_setzero_si256();
        }
        for (int sb = 0; sb < 8; sb++) {
            __m256i part[4];
            for (int a = 0; a < n_y; a++) part[a] = _mm256_setzero_si256();
            for (int k = 0; k < 8; k++) {
                const __m256i q = load256(x[b].qs[sb / 2][k]);
                const __m256i w = _mm256_and_si256(sb % 2 ? _mm256_srli_epi16(q, 4) : q, m15);
                for (int a = 0; a < n_y; a++)
                    part[a] = _mm256_add_epi16(part[a], _mm256_maddubs_epi16(
                        w, bcast4(y[a][b].qs + 32 * sb + 4 * k)));
            }
            for (int a = 0; a < n_y; a++)
                dot[a] = _mm256_add_epi32(dot[a], _mm256_madd_epi16(part[a], sc[sb]));
        }
        const __m256 dw = _mm256_cvtph_ps(load128(x[b].d)), dmw = _mm256_cvtph_ps(load128(x[b].dmin));
        for (int a = 0; a < n_y; a++) {
            const __m256 dy = _mm256_set1_ps(y[a][b].d);
            acc[a] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[a]), _mm256_mul_ps(dw, dy), acc[a]);
            acc_m[a] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mins[a]), _mm256_mul_ps(dmw, dy), acc_m[a]);
        }
    }
    for (int a = 0; a < n_y; a++) _mm256_storeu_ps(s + a * s_stride, _mm256_sub_ps(acc[a], acc_m[a]));
}

BY_ROWS(gemm8_q4_K, void)

/* ---- k-quants against Q8_K ------------------------------------------------------- */

/* Q2_K: w = d * (sc & 15) * q - dmin * (sc >> 4), q in 0..3, sub-blocks of 16.
 * The min term is dmin * sum(min * bsum). */
static void dot_q2_K(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q2_K *x = vx;
    const block_q8_K *y = vy;
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        prefetch_span(&x[i], sizeof *x);
        const float d = y[i].d * h2f(x[i].d);
        const float dmin = y[i].d * h2f(x[i].dmin);
        const __m128i packed = load128(x[i].scales);
        const __m256i scales = _mm256_cvtepu8_epi16(_mm_and_si128(packed, _mm_set1_epi8(0x0f)));
        const __m128i mins8 = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0f));
        const __m256i mins = _mm256_cvtepu8_epi16(mins8);
        const __m256i msum = _mm256_madd_epi16(mins, load256(y[i].bsums));
        const int8_t *q8 = y[i].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i sc = h ? dup_hi(scales) : dup_lo(scales);
            const __m256i bits = load256(x[i].qs + 32 * h);
            for (int j = 0; j < 4; j++, q8 += 32) {
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3);
                sumi = add_scaled(sumi, scale_pair(sc, j), q, q8);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        acc = _mm256_fnmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(msum), acc);
    }
    *s = hsum_ps(acc);
}

/* Q3_K's 16 six-bit scales (stored + 32) as int16 [s0..s7 | s8..s15] */
static inline __m256i q3_K_scales(const uint8_t *sc) {
    uint32_t a, b, c;
    memcpy(&a, sc, 4);
    memcpy(&b, sc + 4, 4);
    memcpy(&c, sc + 8, 4);
    const uint32_t lo = 0x0f0f0f0f, hi = 0x03030303;
    const __m128i s = _mm_setr_epi32((int)((a & lo) | ((c & hi) << 4)),
                                     (int)((b & lo) | (((c >> 2) & hi) << 4)),
                                     (int)(((a >> 4) & lo) | (((c >> 4) & hi) << 4)),
                                     (int)(((b >> 4) & lo) | (((c >> 6) & hi) << 4)));
    return _mm256_cvtepi8_epi16(_mm_sub_epi8(s, _mm_set1_epi8(32)));
}

/* Q3_K: w = d * sc * (q - 4), q = low 2 bits | high bit << 2 (0..7), sub-blocks
 * of 16. sum(sc * (q - 4) * y) = sum(sc * q * y) - 4 * sum(sc * bsum). */
static void dot_q3_K(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q3_K *x = vx;
    const block_q8_K *y = vy;
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        prefetch_span(&x[i], sizeof *x);
        const float d = y[i].d * h2f(x[i].d);
        const __m256i scales = q3_K_scales(x[i].scales);
        const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(scales, load256(y[i].bsums)), 2);
        const __m256i hmask = load256(x[i].hmask);
        const int8_t *q8 = y[i].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i sc = h ? dup_hi(scales) : dup_lo(scales);
            const __m256i bits = load256(x[i].qs + 32 * h);
            /* the high bit for (h, j) is bit 4h + j; move it to bit 2 */
            __m256i hb = h ? _mm256_srli_epi16(hmask, 2) : _mm256_slli_epi16(hmask, 2);
            for (int j = 0; j < 4; j++, q8 += 32) {
                const __m256i q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3),
                                                  _mm256_and_si256(hb, m4));
                sumi = add_scaled(sumi, scale_pair(sc, j), q, q8);
                hb = _mm256_srli_epi16(hb, 1);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi, offset)), acc);
    }
    *s = hsum_ps(acc);
}

/* Q4_K / Q5_K's 8 six-bit scales and 8 mins as bytes [sc0..sc7, m0..m7] */
static inline __m128i k4_scales_mins(const uint8_t *sc) {
    uint32_t a, b, c;
    memcpy(&a, sc, 4);
    memcpy(&b, sc + 4, 4);
    memcpy(&c, sc + 8, 4);
    const uint32_t six = 0x3f3f3f3f, lo = 0x0f0f0f0f, top = 0x03030303;
    return _mm_setr_epi32((int)(a & six), (int)((c & lo) | (((a >> 6) & top) << 4)),
                          (int)(b & six), (int)(((c >> 4) & lo) | (((b >> 6) & top) << 4)));
}

/* sum(min_j * sum of sub-block j's activations) for 8 sub-blocks of 32, as 4 int32 */
static inline __m128i k4_min_sums(__m256i mins_scales16, const int16_t *bsums) {
    const __m256i bs = load256(bsums);
    const __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    return _mm_madd_epi16(_mm256_extracti128_si256(mins_scales16, 1), pairs);
}

/* Q4_K: w = d * sc * q - dmin * m, q in 0..15, sub-blocks of 32. */
static void dot_q4_K(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_K *x = vx;
    const block_q8_K *y = vy;
    const __m256i m15 = _mm256_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        prefetch_span(&x[i], sizeof *x);
        const float d = y[i].d * h2f(x[i].d);
        const float dmin = y[i].d * h2f(x[i].dmin);
        const __m256i sm = _mm256_cvtepu8_epi16(k4_scales_mins(x[i].scales));
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k4_min_sums(sm, y[i].bsums)), acc_m);
        const __m256i sc = dup_lo(sm);
        const int8_t *q8 = y[i].qs;
        __m256i sum0 = _mm256_setzero_si256(), sum1 = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++, q8 += 64) {
            const __m256i bits = load256(x[i].qs + 32 * j);
            const __m256i lo = _mm256_and_si256(bits, m15);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m15);
            sum0 = add_scaled(sum0, scale_word(sc, 2 * j), lo, q8);
            sum1 = add_scaled(sum1, scale_word(sc, 2 * j + 1), hi, q8 + 32);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_add_epi32(sum0, sum1)), acc);
    }
    *s = hsum_ps(acc) - hsum_ps128(acc_m);
}

/* The four activation rows of a 4-row dot, y_stride bytes apart. */
static inline void act_rows_4(const void *vy, size_t y_stride, const block_q8_K *y[4]) {
    for (int r = 0; r < 4; r++) y[r] = (const block_q8_K *)((const uint8_t *)vy + r * y_stride);
}

/* dot_q4_K for four activation rows (see LEGACY_DOT4): the scales, the
 * shuffles that spread them and the nibbles are made once per block for the
 * four; each row's arithmetic is dot_q4_K's. */
static void dot4_q4_K(int64_t n, float *s, int64_t s_stride, const void *vx, const void *vy,
                      size_t y_stride) {
    const block_q4_K *x = vx;
    const block_q8_K *y[4];
    act_rows_4(vy, y_stride, y);
    const __m256i m15 = _mm256_set1_epi8(0x0f);
    __m256 acc[4];
    __m128 acc_m[4];
    for (int r = 0; r < 4; r++) {
        acc[r] = _mm256_setzero_ps();
        acc_m[r] = _mm_setzero_ps();
    }
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float xd = h2f(x[i].d), xdmin = h2f(x[i].dmin);
        const __m256i sm = _mm256_cvtepu8_epi16(k4_scales_mins(x[i].scales));
        const __m256i sc = dup_lo(sm);
        __m256i sum0[4], sum1[4];
        for (int r = 0; r < 4; r++) sum0[r] = sum1[r] = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            const __m256i bits = load256(x[i].qs + 32 * j);
            const __m256i lo = _mm256_and_si256(bits, m15);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m15);
            const __m256i s0 = scale_word(sc, 2 * j), s1 = scale_word(sc, 2 * j + 1);
            for (int r = 0; r < 4; r++) {
                sum0[r] = add_scaled(sum0[r], s0, lo, y[r][i].qs + 64 * j);
                sum1[r] = add_scaled(sum1[r], s1, hi, y[r][i].qs + 64 * j + 32);
            }
        }
        for (int r = 0; r < 4; r++) {
            const float d = y[r][i].d * xd, dmin = y[r][i].d * xdmin;
            acc_m[r] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k4_min_sums(sm, y[r][i].bsums)),
                                    acc_m[r]);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_add_epi32(sum0[r], sum1[r])),
                                     acc[r]);
        }
    }
    for (int r = 0; r < 4; r++) s[r * s_stride] = hsum_ps(acc[r]) - hsum_ps128(acc_m[r]);
}

/* Q5_K: as Q4_K with a fifth bit from qh: bit 2j of qh[l] for the low
 * nibbles of chunk j, bit 2j + 1 for the high ones. */
static void dot_q5_K(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_K *x = vx;
    const block_q8_K *y = vy;
    const __m256i m15 = _mm256_set1_epi8(0x0f), m16 = _mm256_set1_epi8(0x10);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        prefetch_span(&x[i], sizeof *x);
        const float d = y[i].d * h2f(x[i].d);
        const float dmin = y[i].d * h2f(x[i].dmin);
        const __m256i sm = _mm256_cvtepu8_epi16(k4_scales_mins(x[i].scales));
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k4_min_sums(sm, y[i].bsums)), acc_m);
        const __m256i sc = dup_lo(sm);
        /* shifted right by 2 per chunk: the bits that enter a byte from its
         * neighbour reach bit 1 only after four shifts, one more than we use */
        __m256i hb = load256(x[i].qh);
        const int8_t *q8 = y[i].qs;
        __m256i sum0 = _mm256_setzero_si256(), sum1 = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++, q8 += 64) {
            const __m256i bits = load256(x[i].qs + 32 * j);
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(bits, m15),
                                               _mm256_and_si256(_mm256_slli_epi16(hb, 4), m16));
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m15),
                                               _mm256_and_si256(_mm256_slli_epi16(hb, 3), m16));
            hb = _mm256_srli_epi16(hb, 2);
            sum0 = add_scaled(sum0, scale_word(sc, 2 * j), lo, q8);
            sum1 = add_scaled(sum1, scale_word(sc, 2 * j + 1), hi, q8 + 32);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_add_epi32(sum0, sum1)), acc);
    }
    *s = hsum_ps(acc) - hsum_ps128(acc_m);
}

/* Q6_K's 128 unsigned 6-bit quants of half h (0..63) as 4 x 32 bytes, in
 * element order: 4 low bits from ql, 2 high bits from qh */
static inline void q6_K_quants(const block_q6_K *x, int h, __m256i q[4]) {
    const __m256i m15 = _mm256_set1_epi8(0x0f);
    const __m256i la = load256(x->ql + 64 * h), lb = load256(x->ql + 64 * h + 32);
    const __m256i qh = load256(x->qh + 32 * h);
    const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x03)), 4);
    const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x0c)), 2);
    const __m256i h2 = _mm256_and_si256(qh, _mm256_set1_epi8(0x30));
    const __m256i h3 = _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8((char)0xc0)), 2);
    q[0] = _mm256_or_si256(_mm256_and_si256(la, m15), h0);
    q[1] = _mm256_or_si256(_mm256_and_si256(lb, m15), h1);
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(la, 4), m15), h2);
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lb, 4), m15), h3);
}

/* Q6_K: w = d * sc * (q - 32), q = 4 low bits (ql) | 2 high bits (qh) << 4,
 * sub-blocks of 16 with int8 scales. sum(sc * (q - 32) * y) =
 * sum(sc * q * y) - 32 * sum(sc * bsum). */
static void dot_q6_K(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q6_K *x = vx;
    const block_q8_K *y = vy;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        prefetch_span(&x[i], sizeof *x);
        const float d = y[i].d * h2f(x[i].d);
        const __m256i scales = _mm256_cvtepi8_epi16(load128(x[i].scales));
        const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(scales, load256(y[i].bsums)), 5);
        const int8_t *q8 = y[i].qs;
        __m256i sum0 = _mm256_setzero_si256(), sum1 = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++, q8 += 128) {
            const __m256i sc = h ? dup_hi(scales) : dup_lo(scales);
            __m256i q[4];
            q6_K_quants(&x[i], h, q);
            sum0 = add_scaled(sum0, scale_pair(sc, 0), q[0], q8);
            sum1 = add_scaled(sum1, scale_pair(sc, 1), q[1], q8 + 32);
            sum0 = add_scaled(sum0, scale_pair(sc, 2), q[2], q8 + 64);
            sum1 = add_scaled(sum1, scale_pair(sc, 3), q[3], q8 + 96);
        }
        const __m256i sumi = _mm256_sub_epi32(_mm256_add_epi32(sum0, sum1), offset);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc);
}

/* dot_q6_K for four activation rows (see dot4_q4_K). */
static void dot4_q6_K(int64_t n, float *s, int64_t s_stride, const void *vx, const void *vy,
                      size_t y_stride) {
    const block_q6_K *x = vx;
    const block_q8_K *y[4];
    act_rows_4(vy, y_stride, y);
    __m256 acc[4];
    for (int r = 0; r < 4; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float xd = h2f(x[i].d);
        const __m256i scales = _mm256_cvtepi8_epi16(load128(x[i].scales));
        __m256i sum0[4], sum1[4];
        for (int r = 0; r < 4; r++) sum0[r] = sum1[r] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i sc = h ? dup_hi(scales) : dup_lo(scales);
            const __m256i p0 = scale_pair(sc, 0), p1 = scale_pair(sc, 1);
            const __m256i p2 = scale_pair(sc, 2), p3 = scale_pair(sc, 3);
            __m256i q[4];
            q6_K_quants(&x[i], h, q);
            for (int r = 0; r < 4; r++) {
                const int8_t *q8 = y[r][i].qs + 128 * h;
                sum0[r] = add_scaled(sum0[r], p0, q[0], q8);
                sum1[r] = add_scaled(sum1[r], p1, q[1], q8 + 32);
                sum0[r] = add_scaled(sum0[r], p2, q[2], q8 + 64);
                sum1[r] = add_scaled(sum1[r], p3, q[3], q8 + 96);
            }
        }
        for (int r = 0; r < 4; r++) {
            const float d = y[r][i].d * xd;
            const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(scales, load256(y[r][i].bsums)), 5);
            const __m256i sumi = _mm256_sub_epi32(_mm256_add_epi32(sum0[r], sum1[r]), offset);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    for (int r = 0; r < 4; r++) s[r * s_stride] = hsum_ps(acc[r]);
}

/* IQ4_XS's 8 six-bit scales minus 32 as int16 [s0..s7 | s0..s7]: the low
 * nibbles from scales_l, the high 2 bits from scales_h */
static inline __m256i iq4_xs_scales(const block_iq4_xs *x) {
    uint32_t l;
    memcpy(&l, x->scales_l, 4);
    const __m128i v = _mm_cvtsi32_si128((int)l);
    const __m128i m15 = _mm_set1_epi8(0x0f);
    const __m128i low = _mm_unpacklo_epi8(_mm_and_si128(v, m15), _mm_and_si128(_mm_srli_epi16(v, 4), m15));
    const __m256i high = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(x->scales_h), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
        _mm256_set1_epi32(3));
    const __m128i high16 = _mm_packs_epi32(_mm256_castsi256_si128(high), _mm256_extracti128_si256(high, 1));
    const __m128i ls6 = _mm_or_si128(_mm_cvtepu8_epi16(low), _mm_slli_epi16(high16, 4));
    const __m128i ls = _mm_sub_epi16(ls6, _mm_set1_epi16(32));
    return _mm256_broadcastsi128_si256(ls);
}

/* IQ4_XS: w = d * (ls - 32) * kvalues[q], sub-blocks of 32 laid out as IQ4_NL's. */
static void dot_iq4_xs(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_xs *x = vx;
    const block_q8_K *y = vy;
    const __m256i table = _mm256_broadcastsi128_si256(load128(ll_iq4nl_values));
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        prefetch_span(&x[i], sizeof *x);
        const __m256i sc = iq4_xs_scales(&x[i]);
        __m256i sum0 = _mm256_setzero_si256(), sum1 = _mm256_setzero_si256();
        for (int j = 0; j < 8; j += 2) {
            const __m256i w0 = _mm256_shuffle_epi8(table, nibbles_32(x[i].qs + 16 * j));
            const __m256i w1 = _mm256_shuffle_epi8(table, nibbles_32(x[i].qs + 16 * j + 16));
            const int8_t *q8 = y[i].qs + 32 * j;
            const __m256i p0 = mul_i8_i8(w0, load256(q8)), p1 = mul_i8_i8(w1, load256(q8 + 32));
            sum0 = add_madd(sum0, scale_word(sc, j), p0);
            sum1 = add_madd(sum1, scale_word(sc, j + 1), p1);
        }
        const __m256 sumf = _mm256_cvtepi32_ps(_mm256_add_epi32(sum0, sum1));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x[i].d) * y[i].d), sumf, acc);
    }
    *s = hsum_ps(acc);
}

/* ---- dequantizers (bit-identical to the scalar ones) ------------------------------ */

/* F16C converts signalling NaNs to quiet ones; the scalar conversion keeps
 * the payload as it is, so NaN lanes get their quiet bit back from the input. */
static void to_float_f16(const void *vx, float *y, int64_t n) {
    const ll_half *x = vx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = load128(x + i);
        const __m256 f = _mm256_cvtph_ps(h);
        const __m256 nan = _mm256_cmp_ps(f, f, _CMP_UNORD_Q);
        const __m256i h32 = _mm256_cvtepu16_epi32(h);
        const __m256i quiet_in = _mm256_slli_epi32(_mm256_and_si256(h32, _mm256_set1_epi32(0x200)), 13);
        const __m256i quiet_off = _mm256_andnot_si256(_mm256_set1_epi32(0x00400000), _mm256_castps_si256(f));
        const __m256i fixed = _mm256_or_si256(quiet_off, quiet_in);
        _mm256_storeu_ps(y + i, _mm256_blendv_ps(f, _mm256_castsi256_ps(fixed), nan));
    }
    for (; i < n; i++) y[i] = ll_half_to_f32(x[i]);
}

static void to_float_bf16(const void *vx, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, load8_bf16(vx, i));
    for (; i < n; i++) y[i] = ll_bf16_to_f32(((const uint16_t *)vx)[i]);
}

/* 32 signed bytes times d, in element order */
static inline void store_scaled_i8(__m256i q, __m256 d, float *y) {
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int k = 0; k < 4; k++)
        _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[k])), d));
}

static void to_float_q4_0(const void *vx, float *y, int64_t n) {
    const block_q4_0 *x = vx;
    for (int64_t b = 0; b < n / QK4_0; b++) {
        const __m256i q = _mm256_sub_epi8(nibbles_32(x[b].qs), _mm256_set1_epi8(8));
        store_scaled_i8(q, _mm256_set1_ps(h2f(x[b].d)), y + b * QK4_0);
    }
}

static void to_float_q8_0(const void *vx, float *y, int64_t n) {
    const block_q8_0 *x = vx;
    for (int64_t b = 0; b < n / QK8_0; b++)
        store_scaled_i8(load256(x[b].qs), _mm256_set1_ps(h2f(x[b].d)), y + b * QK8_0);
}

/* 32 unsigned bytes q -> d * q - m, in element order */
static inline void store_affine_u8(__m256i q, __m256 d, __m256 m, float *y) {
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int k = 0; k < 4; k++) {
        const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[k]));
        _mm256_storeu_ps(y + 8 * k, _mm256_sub_ps(_mm256_mul_ps(d, f), m));
    }
}

/* y = (d * sc) * q - (dmin * m) per sub-block of 32, as the scalar code groups it */
static void to_float_q4_K(const void *vx, float *y, int64_t n) {
    const block_q4_K *x = vx;
    const __m256i m15 = _mm256_set1_epi8(0x0f);
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K) {
        const float d = h2f(x[i].d), dmin = h2f(x[i].dmin);
        uint8_t sm[16];
        _mm_storeu_si128((__m128i *)sm, k4_scales_mins(x[i].scales));
        for (int j = 0; j < 4; j++) {
            const __m256i bits = load256(x[i].qs + 32 * j);
            const __m256i lo = _mm256_and_si256(bits, m15);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m15);
            store_affine_u8(lo, _mm256_set1_ps(d * sm[2 * j]), _mm256_set1_ps(dmin * sm[8 + 2 * j]),
                            y + 64 * j);
            store_affine_u8(hi, _mm256_set1_ps(d * sm[2 * j + 1]), _mm256_set1_ps(dmin * sm[9 + 2 * j]),
                            y + 64 * j + 32);
        }
    }
}

/* 16 signed bytes q -> ds * q, in element order */
static inline void store_scaled_16(__m128i q, __m256 ds, float *y) {
    const __m128i halves[2] = {q, _mm_srli_si128(q, 8)};
    for (int k = 0; k < 2; k++)
        _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(ds, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(halves[k]))));
}

/* y = (d * sc) * (q - 32) per sub-block of 16 */
static void to_float_q6_K(const void *vx, float *y, int64_t n) {
    const block_q6_K *x = vx;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = h2f(x[i].d);
        for (int h = 0; h < 2; h++, y += 128) {
            __m256i q[4];
            q6_K_quants(&x[i], h, q);
            const int8_t *sc = x[i].scales + 8 * h;
            for (int g = 0; g < 4; g++) {
                const __m256i v = _mm256_sub_epi8(q[g], _mm256_set1_epi8(32));
                store_scaled_16(_mm256_castsi256_si128(v), _mm256_set1_ps(d * sc[2 * g]), y + 32 * g);
                store_scaled_16(_mm256_extracti128_si256(v, 1), _mm256_set1_ps(d * sc[2 * g + 1]),
                                y + 32 * g + 16);
            }
        }
    }
}

/* ---- the feed-forward's gated activations ------------------------------------------- */

/* e^x for 8 floats, within 2 ulp: x = n ln 2 + r with |r| <= ln 2 / 2 (ln 2
 * in two parts so that n ln 2 is exact), e^r by its Taylor series to r^7
 * (the next term is below 1e-8 relative), times 2^n built in the exponent
 * bits. x is clamped to [-87.3, 88.3], where 2^n stays a normal float: e^x
 * saturates at about 1e-38 and 2e38 beyond, which the activations below
 * turn into the same 0 or x as the true values. */
static inline __m256 exp_ps(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.4286068203094173e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    static const float inv_factorial[] = { 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f };
    for (int k = 0; k < 7; k++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(inv_factorial[k]));
    const __m256i two_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(two_n));
}

/* x * sigmoid(t) * up = x / (1 + e^-t) * up */
static inline __m256 sigmoid_gate(__m256 x, __m256 t, __m256 up) {
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), t));
    return _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), up);
}

static void glu_silu(float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(gate + i);
        _mm256_storeu_ps(gate + i, sigmoid_gate(x, x, _mm256_loadu_ps(up + i)));
    }
    ll_glu_silu(gate + i, up + i, n - i);
}

/* GELU's tanh form: 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) */
static void glu_gelu_tanh(float *gate, const float *up, int64_t n) {
    const __m256 c1 = _mm256_set1_ps(2 * 0.7978845608028654f), c3 = _mm256_set1_ps(0.044715f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(gate + i);
        const __m256 t = _mm256_mul_ps(_mm256_mul_ps(c1, x), _mm256_fmadd_ps(_mm256_mul_ps(c3, x), x,
                                                                            _mm256_set1_ps(1.0f)));
        _mm256_storeu_ps(gate + i, sigmoid_gate(x, t, _mm256_loadu_ps(up + i)));
    }
    ll_glu_gelu_tanh(gate + i, up + i, n - i);
}

/* ---- the table ---------------------------------------------------------------------- */

#if defined(LL_AVX512)
static void fill_vnni_kernels(ll_kernels *k) { /* ll_kernels_fill_avx512 starts from these */
#elif defined(LL_AVXVNNI)
void ll_kernels_fill_avxvnni(ll_kernels *k) {
#else
void ll_kernels_fill_avx2(ll_kernels *k) {
#endif
    k->quantize_act[LL_TYPE_Q8_0] = quantize_q8_0;
    k->quantize_act[LL_TYPE_Q8_1] = quantize_q8_1;
    k->quantize_act[LL_TYPE_Q8_K] = quantize_q8_K;
    k->quantize_act[LL_TYPE_Q8_0P] = quantize_q8_0p;
    k->quantize_act[LL_TYPE_Q8_1P] = quantize_q8_1p;

    k->vec_dot[LL_TYPE_F32] = dot_f32;
    k->vec_dot[LL_TYPE_F16] = dot_f16;
    k->vec_dot[LL_TYPE_BF16] = dot_bf16;
    k->vec_dot[LL_TYPE_Q4_0] = dot_q4_0;
    k->vec_dot[LL_TYPE_Q5_0] = dot_q5_0;
    k->vec_dot[LL_TYPE_Q8_0] = dot_q8_0;
    k->vec_dot[LL_TYPE_IQ4_NL] = dot_iq4_nl;
    k->vec_dot[LL_TYPE_Q4_1] = dot_q4_1;
    k->vec_dot[LL_TYPE_Q5_1] = dot_q5_1;
    k->vec_dot[LL_TYPE_Q2_K] = dot_q2_K;
    k->vec_dot[LL_TYPE_Q3_K] = dot_q3_K;
    k->vec_dot[LL_TYPE_Q4_K] = dot_q4_K;
    k->vec_dot[LL_TYPE_Q5_K] = dot_q5_K;
    k->vec_dot[LL_TYPE_Q6_K] = dot_q6_K;
    k->vec_dot[LL_TYPE_IQ4_XS] = dot_iq4_xs;

    k->vec_dot4[LL_TYPE_Q4_0] = dot4_q4_0;
    k->vec_dot4[LL_TYPE_Q5_0] = dot4_q5_0;
    k->vec_dot4[LL_TYPE_Q8_0] = dot4_q8_0;
    k->vec_dot4[LL_TYPE_IQ4_NL] = dot4_iq4_nl;
    k->vec_dot4[LL_TYPE_Q4_1] = dot4_q4_1;
    k->vec_dot4[LL_TYPE_Q5_1] = dot4_q5_1;
    k->vec_dot4[LL_TYPE_Q4_K] = dot4_q4_K;
    k->vec_dot4[LL_TYPE_Q6_K] = dot4_q6_K;

    k->dot_rows[LL_TYPE_F32] = dot_rows_f32;
    k->dot_rows[LL_TYPE_F16] = dot_rows_f16;
    k->glu[LL_ACT_SILU] = glu_silu;
    k->glu[LL_ACT_GELU_TANH] = glu_gelu_tanh;

    k->gemm8[LL_TYPE_Q5_0] = gemm8_q5_0;
    k->pack_faster[LL_TYPE_Q5_0] = 1;
    k->gemm8[LL_TYPE_Q4_1] = gemm8_q4_1;
    k->pack_faster[LL_TYPE_Q4_1] = 1;
    k->gemm8[LL_TYPE_Q4_K] = gemm8_q4_K;
    k->pack_faster[LL_TYPE_Q4_K] = 1;

    k->to_float[LL_TYPE_F16] = to_float_f16;
    k->to_float[LL_TYPE_BF16] = to_float_bf16;
    k->to_float[LL_TYPE_Q4_0] = to_float_q4_0;
    k->to_float[LL_TYPE_Q8_0] = to_float_q8_0;
    k->to_float[LL_TYPE_Q4_K] = to_float_q4_K;
    k->to_float[LL_TYPE_Q6_K] = to_float_q6_K;
}
