/* kernels_avx512.c: the "avx512" ISA. kernels_avx2.c built a third time
 * (LL_AVX512: the VNNI kernels with EVEX-encoded dots), then 512-bit dots for
 * the legacy Q4_0 blocks, where the 256-bit loop runs out of vector ports
 * rather than memory bandwidth.
 *
 * Two 32-element blocks share a 512-bit register, so the integer dot, the
 * conversion and the fma run once per two blocks (a zmm vpdpbusd measured as
 * fast as a ymm one here, a zmm fma ~25% slower). The float16 scales of eight
 * blocks are gathered with word permutes from plain loads (vpermt2w) and
 * converted together; they still cost about a fifth of the loop. Masked
 * (fault-free) 64-byte loads of a block pair were slower than the two
 * broadcast loads and an insert used here, which never read past a block. */
#define LL_AVXVNNI 1
#define LL_AVX512 1
#include "kernels_avx2.c"

static inline __m512i load512(const void *p) { return _mm512_loadu_si512(p); }

/* word index vector: word j reads the float16 at byte (j - at) * stride */
static inline __m512i half_index(int stride, int at) {
    const __m512i iota = _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
                                          15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    return _mm512_mullo_epi16(_mm512_sub_epi16(iota, _mm512_set1_epi16((short)at)),
                              _mm512_set1_epi16((short)(stride / 2)));
}

/* Word at + k of the result is the float16 at p + k * stride (bytes), for
 * every k with k * stride + 2 <= 128: two 64-byte loads hold them, and one
 * two-table word permute picks them out. */
static inline __m512i halves_at(const uint8_t *p, int stride, int at) {
    return _mm512_permutex2var_epi16(load512(p), half_index(stride, at), load512(p + 64));
}

/* d_x * d_y for eight blocks (strides xs, ys bytes; both even), in lanes 0..7 */
static inline __m512 block_scales_8(const uint8_t *x, int xs, const uint8_t *y, int ys) {
    __m512i h = 7 * xs + 2 <= 128 ? halves_at(x, xs, 0)
                                  : _mm512_mask_blend_epi16(0x00f0, halves_at(x, xs, 0), halves_at(x + 4 * xs, xs, 4));
    h = _mm512_mask_blend_epi16(0x0f00, h, halves_at(y, ys, 8));
    h = _mm512_mask_blend_epi16(0xf000, h, halves_at(y + 4 * ys, ys, 12));
    const __m512 f = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    return _mm512_mul_ps(f, _mm512_shuffle_f32x4(f, f, 0xee));
}

/* [d_k x 8 | d_k+1 x 8] from lanes k, k + 1 */
static inline __m512 scale_pair_512(__m512 d, int k) {
    const __m512i idx = _mm512_inserti64x4(_mm512_set1_epi32(k), _mm256_set1_epi32(k + 1), 1);
    return _mm512_permutexvar_ps(idx, d);
}

/* Q4_0 blocks b, b + 1 against their activations: 16 int32 sums, the upper
 * 128-bit lane of each block's half 16 times too large (nibbles_x16_32) */
static inline __m512i pair_dot_q4_0(const block_q4_0 *x, const block_q8_0 *y) {
    /* each block's 16 bytes of nibbles in two lanes: broadcast loads, one insert */
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_broadcastsi128_si256(load128(x[0].qs))),
                                            _mm256_broadcastsi128_si256(load128(x[1].qs)), 1);
    const __m512i mask = _mm512_broadcast_i64x4(_mm256_setr_m128i(_mm_set1_epi8(0x0f), _mm_set1_epi8((char)0xf0)));
    const __m512i q = _mm512_and_si512(both, mask);
    const __m512i offset = _mm512_broadcast_i64x4(_mm256_setr_m128i(_mm_set1_epi8(8), _mm_set1_epi8((char)128)));
    const __m512i yq = _mm512_inserti64x4(_mm512_castsi256_si512(load256(y[0].qs)), load256(y[1].qs), 1);
    const __m512i zero = _mm512_setzero_si512();
    return _mm512_sub_epi32(_mm512_dpbusd_epi32(zero, q, yq), _mm512_dpbusd_epi32(zero, offset, yq));
}

static void dot_q4_0_512(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_0 *x = vx;
    const block_q8_0 *y = vy;
    const int64_t nb = n / QK4_0;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        prefetch_span(&x[b], 8 * sizeof *x);
        const __m512 d = block_scales_8((const uint8_t *)&x[b], sizeof *x, (const uint8_t *)&y[b], sizeof *y);
        for (int k = 0; k < 4; k++) {
            const __m512 p = _mm512_cvtepi32_ps(pair_dot_q4_0(&x[b + 2 * k], &y[b + 2 * k]));
            acc[k] = _mm512_fmadd_ps(scale_pair_512(d, 2 * k), p, acc[k]);
        }
    }
    __m256 tail = _mm256_setzero_ps();
    for (; b < nb; b++) {
        const float d = h2f(x[b].d) * h2f(y[b].d);
        tail = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(dot_w_q4_0(w_q4_0(&x[b]), y[b].qs)), tail);
    }
    const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    const __m256 halves = _mm256_add_ps(_mm512_castps512_ps256(sum), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sum), 1)));
    *s = hsum_ps(scale_hi_lane(_mm256_add_ps(halves, tail)));
}

void ll_kernels_fill_avx512(ll_kernels *k) {
    fill_vnni_kernels(k);
    k->vec_dot[LL_TYPE_Q4_0] = dot_q4_0_512;
    k->vec_dot4[LL_TYPE_Q4_0] = NULL;   /* the 256-bit one would not give dot_q4_0_512's bits */
}
