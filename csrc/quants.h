/* quants.h: the block formats (declared once, size-checked at compile time),
 * half/bfloat conversions, and the per-type / per-ISA function tables.
 *
 * Layouts are ggml's, so GGUF tensor data is used in place. */
#ifndef LLAMALITE_QUANTS_H
#define LLAMALITE_QUANTS_H

#include <stdint.h>
#include <string.h>
#include <assert.h>
#include "llamalite.h"

typedef uint16_t ll_half; /* IEEE binary16 bits */

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK4_NL 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef struct { ll_half d; uint8_t qs[QK4_0 / 2]; } block_q4_0;
typedef struct { ll_half d; ll_half m; uint8_t qs[QK4_1 / 2]; } block_q4_1;
typedef struct { ll_half d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;
typedef struct { ll_half d; ll_half m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;
typedef struct { ll_half d; int8_t qs[QK8_0]; } block_q8_0;
/* s = d * sum(qs), precomputed for the Q4_1/Q5_1 min term */
typedef struct { ll_half d; ll_half s; int8_t qs[QK8_1]; } block_q8_1;

/* 16 sub-blocks of 16: 4-bit scale | 4-bit min per sub-block, 2-bit quants */
typedef struct { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; ll_half d; ll_half dmin; } block_q2_K;
/* 16 sub-blocks of 16: 6-bit scales packed in 12 bytes, 2 low bits + 1 high bit (hmask) */
typedef struct { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; ll_half d; } block_q3_K;
/* 8 sub-blocks of 32: 6-bit scales and mins packed in 12 bytes, 4-bit quants */
typedef struct { ll_half d; ll_half dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; } block_q4_K;
typedef struct { ll_half d; ll_half dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; } block_q5_K;
/* 16 sub-blocks of 16: 8-bit scales, 4 low bits (ql) + 2 high bits (qh) */
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; ll_half d; } block_q6_K;
/* activations for the k-quants: float scale, bsums = sums of each 16 quants */
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K;
/* non-linear 4-bit: indices into ll_iq4nl_values */
typedef struct { ll_half d; uint8_t qs[QK4_NL / 2]; } block_iq4_nl;
typedef struct { ll_half d; uint16_t scales_h; uint8_t scales_l[QK_K / 64]; uint8_t qs[QK_K / 2]; } block_iq4_xs;

/* ---- packed weights (LL_LAYOUT_PACKED8) and their activations ---------------- */

/* Q8_0's quants with what the packed kernels need per block ready: the scale
 * as float32 (the value of Q8_0's float16 scale, exactly) and sum(qs). */
typedef struct { float d; int32_t sum; int8_t qs[QK8_0]; } block_q8_0p;
/* Q8_1's block with d and s (= d * sum(qs), before d is rounded) as float32 */
typedef struct { float d; float s; int8_t qs[QK8_1]; } block_q8_1p;

/* Block b of 8 Q5_0 rows: the same 8 x 22 bytes, rearranged so that one
 * 32-byte load holds 4 consecutive elements of each row. d[r] is row r's
 * scale; qs[j][4r + i] is row r's qs[4j + i] (low nibble: element 4j + i,
 * high nibble: element 4j + i + 16); bit k of qh[4r + i] is row r's fifth
 * bit of element 4k + i. */
typedef struct { ll_half d[8]; uint8_t qh[32]; uint8_t qs[4][32]; } block_q5_0x8;

/* Block b of 8 Q4_K rows, the same 8 x 144 bytes rearranged: the scales and
 * mins decoded from their 12-byte packing into an order the kernel spreads
 * cheaply, and qs[j][k][4r + i] = row r's qs[32j + 4k + i] (low nibbles:
 * element 64j + 4k + i of sub-block 2j; high: 32 further on, sub-block
 * 2j + 1). sm[8 sb + r] = row r's 6-bit scale of sub-block sb | the top 2
 * bits of min number v << 6, and m_lo holds the mins' low nibbles (v < 32
 * low, else high nibble of m_lo[v % 32]), where min number v = 16 p + 2 r + h
 * is row r's min of sub-block 2p + h. */
typedef struct {
    ll_half d[8], dmin[8];
    uint8_t sm[64];
    uint8_t m_lo[32];
    uint8_t qs[4][8][32];
} block_q4_Kx8;

/* Block b of 8 Q4_1 rows, the same 8 x 20 bytes rearranged: d[r] and m[r]
 * are row r's, qs as block_q5_0x8's */
typedef struct { ll_half d[8]; ll_half m[8]; uint8_t qs[4][32]; } block_q4_1x8;

static_assert(sizeof(block_q8_0p) == 40, "block_q8_0p size");
static_assert(sizeof(block_q8_1p) == 40, "block_q8_1p size");
static_assert(sizeof(block_q4_1x8) == 8 * 20, "block_q4_1x8 size");
static_assert(sizeof(block_q4_Kx8) == 8 * 144, "block_q4_Kx8 size");
static_assert(sizeof(block_q5_0x8) == 8 * 22, "block_q5_0x8 size");
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 size");
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 size");
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 size");
static_assert(sizeof(block_q5_1) == 24, "block_q5_1 size");
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 size");
static_assert(sizeof(block_q8_1) == 36, "block_q8_1 size");
static_assert(sizeof(block_q2_K) == 84, "block_q2_K size");
static_assert(sizeof(block_q3_K) == 110, "block_q3_K size");
static_assert(sizeof(block_q4_K) == 144, "block_q4_K size");
static_assert(sizeof(block_q5_K) == 176, "block_q5_K size");
static_assert(sizeof(block_q6_K) == 210, "block_q6_K size");
static_assert(sizeof(block_q8_K) == 292, "block_q8_K size");
static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl size");
static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs size");

/* the 16 levels of IQ4_NL / IQ4_XS */
extern const int8_t ll_iq4nl_values[16];

/* ---- half and bfloat16 (portable, round to nearest even) ------------------- */

static inline float ll_bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t ll_f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float ll_half_to_f32(ll_half h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return ll_bits_to_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in float */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return ll_bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static inline ll_half ll_f32_to_half(float f) {
    uint32_t u = ll_f32_to_bits(f);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (ll_half)(sign | 0x7e00); /* NaN */
    if (a >= 0x477ff000u) return (ll_half)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {
        /* subnormal half (or zero): round a * 2^24 to an integer, ties to even */
        float v = ll_bits_to_f32(a) * 16777216.0f;
        uint32_t m = (uint32_t)v;
        float rem = v - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1))) m++;
        return (ll_half)(sign | m);
    }
    /* normal: rebias the exponent, round the 13 dropped mantissa bits to even */
    uint32_t r = a - 0x38000000u;
    r += 0x0fffu + ((r >> 13) & 1);
    return (ll_half)(sign | (r >> 13));
}

static inline float ll_bf16_to_f32(uint16_t h) { return ll_bits_to_f32((uint32_t)h << 16); }

static inline uint16_t ll_f32_to_bf16(float f) {
    uint32_t u = ll_f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64); /* quiet NaN */
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

/* ---- helpers shared by the reference quantizers ------------------------------- */

/* Nearest integer, ties to even (ggml's nearest_int): adding 1.5 * 2^23 leaves
 * the rounded value in the low mantissa bits. Exact for |v| < 2^22; past that
 * it wraps as ggml's does, and a NaN gives 0, so even degenerate blocks stay
 * byte-identical to llama.cpp's. */
static inline int ll_round_nearest(float v) {
    return (int)(ll_f32_to_bits(v + 12582912.0f) & 0x007fffffu) - 0x00400000;
}

/* The element of largest magnitude (the first on ties), sign kept: symmetric
 * formats map it to their most negative level so that side's range is used. */
static inline float ll_signed_absmax(const float *v, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        const float a = v[j] < 0 ? -v[j] : v[j];
        if (a > amax) { amax = a; max = v[j]; }
    }
    return max;
}

/* ---- function tables ---------------------------------------------------------- */

typedef void (*ll_to_float_fn)(const void *x, float *y, int64_t n);
typedef void (*ll_from_float_fn)(const float *x, void *y, int64_t n);
/* *s = dot(weight row x, activation row y in the weight type's vec_dot_type), n elements */
typedef void (*ll_vec_dot_fn)(int64_t n, float *s, const void *x, const void *y);
/* s[r * s_stride] = dot(weight row x, activation row r at y + r * y_stride
 * bytes) for r = 0..3: for a matmul of several rows, bit for bit the results
 * of the ISA's vec_dot for the same type. */
typedef void (*ll_vec_dot4_fn)(int64_t n, float *s, int64_t s_stride, const void *x,
                               const void *y, size_t y_stride);

typedef struct {
    const char *name;
    int64_t blck_size;
    int64_t type_size;
    int vec_dot_type;             /* what activations are quantized to for vec_dot */
    ll_to_float_fn to_float;      /* scalar reference dequantizer */
    ll_from_float_fn from_float;  /* scalar reference quantizer (llama.cpp's _ref algorithm) */
    ll_vec_dot_fn vec_dot;        /* scalar reference dot */
} ll_type_traits;

/* NULL name = a type id we don't run */
extern const ll_type_traits ll_traits[LL_TYPE_COUNT];

/* What one ISA provides; entries it lacks are the scalar ones. */
/* Packed weights: s[a * s_stride + r] = dot(row r of the 8-row group at x,
 * activation row a at y + a * y_stride bytes) for r = 0..7, a = 0..n_y-1
 * (1 <= n_y <= 4). Each result is the same bits whatever n_y is and
 * whichever other rows come with it: per block, the exact integer dot, then
 * acc = fma(float(dot), d_w * d_y, acc), block after block (every ISA). */
typedef void (*ll_gemm8_fn)(int64_t n, float *s, int64_t s_stride, const void *x,
                            const void *y, size_t y_stride, int n_y);

/* Attention's dots: s[a * s_stride] = dot(row x of n elements of a KV cache
 * type, float row a at y + a * y_stride bytes) for a = 0..n_y-1 (1..4): a
 * key or value row read once for the query heads that share it. Each result
 * is the same bits whatever n_y is. */
typedef void (*ll_dot_rows_fn)(int64_t n, float *s, int64_t s_stride, const void *x,
                               const float *y, size_t y_stride, int n_y);

/* The feed-forward's gate: gate[i] = act(gate[i]) * up[i] for i < n. */
typedef void (*ll_glu_fn)(float *gate, const float *up, int64_t n);

typedef struct {
    const char *name;
    ll_vec_dot_fn vec_dot[LL_TYPE_COUNT];
    ll_vec_dot4_fn vec_dot4[LL_TYPE_COUNT];       /* NULL: vec_dot row by row */
    ll_from_float_fn quantize_act[LL_TYPE_COUNT]; /* for vec_dot types: Q8_0, Q8_1, Q8_K, F32 */
    ll_to_float_fn to_float[LL_TYPE_COUNT];
    ll_gemm8_fn gemm8[LL_TYPE_COUNT];             /* packed weights; NULL: not packable */
    unsigned char pack_faster[LL_TYPE_COUNT];     /* 1: gemm8 beats vec_dot4 on this ISA */
    ll_glu_fn glu[2];                             /* by enum ll_activation */
    ll_dot_rows_fn dot_rows[LL_TYPE_COUNT];       /* KV cache types: F32, F16 */
} ll_kernels;

/* The vec_dot type of packed weights of a type (Q5_0: Q8_0P), -1 if none. */
int ll_packed_act_type(int type);
/* the scalar packed kernels, every ISA's fallback */
void ll_fill_packed_scalar(ll_kernels *k);

/* the kernels in use now (set by ll_set_isa / at load time) */
extern const ll_kernels *ll_active;

void ll_kernels_fill_avx2(ll_kernels *k);
void ll_kernels_fill_avxvnni(ll_kernels *k);
void ll_kernels_fill_avx512(ll_kernels *k);
void ll_kernels_fill_neon(ll_kernels *k);
/* arm64 only: 1 when the NEON table uses the dotprod (SDOT) kernels */
int ll_neon_dotprod(void);

/* Bytes of n elements of a type; -1 (error set) if n is not a whole number of
 * blocks, is negative, or the size overflows int64. */
int64_t ll_row_bytes(int type, int64_t n);

/* per-thread error message; returns code for `return ll_error(...)` */
int ll_error(int code, const char *fmt, ...);

/* ---- scalar reference functions (quants.c: float + legacy + IQ4; quants_k.c: k-quants) ---- */

#define LL_DECLARE_TYPE(t) \
    void ll_dequantize_row_##t(const void *x, float *y, int64_t n); \
    void ll_quantize_row_##t##_ref(const float *x, void *y, int64_t n);

LL_DECLARE_TYPE(f32)
LL_DECLARE_TYPE(f16)
LL_DECLARE_TYPE(bf16)
LL_DECLARE_TYPE(q4_0)
LL_DECLARE_TYPE(q4_1)
LL_DECLARE_TYPE(q5_0)
LL_DECLARE_TYPE(q5_1)
LL_DECLARE_TYPE(q8_0)
LL_DECLARE_TYPE(q8_1)
LL_DECLARE_TYPE(q8_0p)
LL_DECLARE_TYPE(q8_1p)
LL_DECLARE_TYPE(q2_K)
LL_DECLARE_TYPE(q3_K)
LL_DECLARE_TYPE(q4_K)
LL_DECLARE_TYPE(q5_K)
LL_DECLARE_TYPE(q6_K)
LL_DECLARE_TYPE(q8_K)
LL_DECLARE_TYPE(iq4_nl)
LL_DECLARE_TYPE(iq4_xs)

/* Q4_K / Q5_K's scale and min of sub-block j from their 12 packed bytes */
void ll_k4_scale_min(const uint8_t s[12], int j, int *sc, int *m);

/* scalar attention dots (ll_dot_rows_fn) of F32 and F16 rows */
void ll_dot_rows_f32(int64_t n, float *s, int64_t s_stride, const void *x, const float *y,
                     size_t y_stride, int n_y);
void ll_dot_rows_f16(int64_t n, float *s, int64_t s_stride, const void *x, const float *y,
                     size_t y_stride, int n_y);

/* scalar gated activations: SiLU, and GELU's tanh form, times up */
void ll_glu_silu(float *gate, const float *up, int64_t n);
void ll_glu_gelu_tanh(float *gate, const float *up, int64_t n);

/* scalar dots: weight type . activation type */
void ll_vec_dot_f32_f32(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_f16_f32(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_bf16_f32(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_q4_0_q8_0(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_q4_1_q8_1(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_q5_0_q8_0(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_q5_1_q8_1(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_q8_0_q8_0(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_iq4_nl_q8_0(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_q2_K_q8_K(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_q3_K_q8_K(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_q4_K_q8_K(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_q5_K_q8_K(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_q6_K_q8_K(int64_t n, float *s, const void *x, const void *y);
void ll_vec_dot_iq4_xs_q8_K(int64_t n, float *s, const void *x, const void *y);

#endif
