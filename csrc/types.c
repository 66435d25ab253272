/* types.c: the type table, the checked entry points over it, ISA selection,
 * and the per-thread error message. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "quants.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#define LL_X86 1
#include <cpuid.h>
#endif
#if defined(__aarch64__)
#define LL_ARM64 1
#endif

/* ---- errors ---------------------------------------------------------------- */

static _Thread_local char err_msg[256];

const char *ll_last_error(void) { return err_msg; }

int ll_error(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- memory ------------------------------------------------------------------ */

void ll_trim_heap(void) {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}

/* ---- the type table ----------------------------------------------------------- */

#define T(id, nm, bs, tsz, vdt, t, dot) \
    [id] = { nm, bs, tsz, vdt, ll_dequantize_row_##t, ll_quantize_row_##t##_ref, dot }

const ll_type_traits ll_traits[LL_TYPE_COUNT] = {
    T(LL_TYPE_F32, "F32", 1, 4, LL_TYPE_F32, f32, ll_vec_dot_f32_f32),
    T(LL_TYPE_F16, "F16", 1, 2, LL_TYPE_F32, f16, ll_vec_dot_f16_f32),
    T(LL_TYPE_BF16, "BF16", 1, 2, LL_TYPE_F32, bf16, ll_vec_dot_bf16_f32),
    T(LL_TYPE_Q8_0P, "Q8_0P", QK8_0, sizeof(block_q8_0p), LL_TYPE_Q8_0P, q8_0p, NULL),
    T(LL_TYPE_Q8_1P, "Q8_1P", QK8_1, sizeof(block_q8_1p), LL_TYPE_Q8_1P, q8_1p, NULL),
    T(LL_TYPE_Q4_0, "Q4_0", QK4_0, sizeof(block_q4_0), LL_TYPE_Q8_0, q4_0, ll_vec_dot_q4_0_q8_0),
    T(LL_TYPE_Q4_1, "Q4_1", QK4_1, sizeof(block_q4_1), LL_TYPE_Q8_1, q4_1, ll_vec_dot_q4_1_q8_1),
    T(LL_TYPE_Q5_0, "Q5_0", QK5_0, sizeof(block_q5_0), LL_TYPE_Q8_0, q5_0, ll_vec_dot_q5_0_q8_0),
    T(LL_TYPE_Q5_1, "Q5_1", QK5_1, sizeof(block_q5_1), LL_TYPE_Q8_1, q5_1, ll_vec_dot_q5_1_q8_1),
    T(LL_TYPE_Q8_0, "Q8_0", QK8_0, sizeof(block_q8_0), LL_TYPE_Q8_0, q8_0, ll_vec_dot_q8_0_q8_0),
    T(LL_TYPE_Q8_1, "Q8_1", QK8_1, sizeof(block_q8_1), LL_TYPE_Q8_1, q8_1, NULL),
    T(LL_TYPE_Q2_K, "Q2_K", QK_K, sizeof(block_q2_K), LL_TYPE_Q8_K, q2_K, ll_vec_dot_q2_K_q8_K),
    T(LL_TYPE_Q3_K, "Q3_K", QK_K, sizeof(block_q3_K), LL_TYPE_Q8_K, q3_K, ll_vec_dot_q3_K_q8_K),
    T(LL_TYPE_Q4_K, "Q4_K", QK_K, sizeof(block_q4_K), LL_TYPE_Q8_K, q4_K, ll_vec_dot_q4_K_q8_K),
    T(LL_TYPE_Q5_K, "Q5_K", QK_K, sizeof(block_q5_K), LL_TYPE_Q8_K, q5_K, ll_vec_dot_q5_K_q8_K),
    T(LL_TYPE_Q6_K, "Q6_K", QK_K, sizeof(block_q6_K), LL_TYPE_Q8_K, q6_K, ll_vec_dot_q6_K_q8_K),
    T(LL_TYPE_Q8_K, "Q8_K", QK_K, sizeof(block_q8_K), LL_TYPE_Q8_K, q8_K, NULL),
    T(LL_TYPE_IQ4_NL, "IQ4_NL", QK4_NL, sizeof(block_iq4_nl), LL_TYPE_Q8_0, iq4_nl, ll_vec_dot_iq4_nl_q8_0),
    T(LL_TYPE_IQ4_XS, "IQ4_XS", QK_K, sizeof(block_iq4_xs), LL_TYPE_Q8_K, iq4_xs, ll_vec_dot_iq4_xs_q8_K),
};

static const ll_type_traits *traits_of(int type) {
    if (type < 0 || type >= LL_TYPE_COUNT || ll_traits[type].name == NULL) return NULL;
    return &ll_traits[type];
}

int ll_type_info(int type, int64_t *block_size, int64_t *type_size, int *vec_dot_type) {
    const ll_type_traits *t = traits_of(type);
    if (!t) return ll_error(LL_ERR_UNSUPPORTED, "tensor type %d is not supported", type);
    *block_size = t->blck_size;
    *type_size = t->type_size;
    *vec_dot_type = t->vec_dot_type;
    return LL_OK;
}

/* Bytes that n elements of type t take, or -1 with the error set when n is
 * not a whole number of blocks or the size overflows. */
static int64_t checked_bytes(const ll_type_traits *t, int64_t n) {
    if (n < 0 || n % t->blck_size != 0) {
        ll_error(LL_ERR_ARG, "%lld elements is not a multiple of %s's block size %lld",
                 (long long)n, t->name, (long long)t->blck_size);
        return -1;
    }
    int64_t blocks = n / t->blck_size;
    if (blocks > INT64_MAX / t->type_size) {
        ll_error(LL_ERR_ARG, "%lld elements of %s overflow a 64-bit size", (long long)n, t->name);
        return -1;
    }
    return blocks * t->type_size;
}

int64_t ll_row_bytes(int type, int64_t n) {
    const ll_type_traits *t = traits_of(type);
    if (!t) { ll_error(LL_ERR_UNSUPPORTED, "tensor type %d is not supported", type); return -1; }
    return checked_bytes(t, n);
}

static int check_buffer(const ll_type_traits *t, int64_t n, size_t bytes, const char *what) {
    int64_t need = checked_bytes(t, n);
    if (need < 0) return LL_ERR_ARG;
    if ((uint64_t)need != (uint64_t)bytes)
        return ll_error(LL_ERR_ARG, "%s holds %zu bytes but %lld %s elements take %lld",
                        what, bytes, (long long)n, t->name, (long long)need);
    return LL_OK;
}

int ll_dequantize(int type, const void *src, size_t src_bytes, float *dst, int64_t n) {
    const ll_type_traits *t = traits_of(type);
    if (!t) return ll_error(LL_ERR_UNSUPPORTED, "tensor type %d is not supported", type);
    int rc = check_buffer(t, n, src_bytes, "source");
    if (rc) return rc;
    t->to_float(src, dst, n);
    return LL_OK;
}

int ll_quantize(int type, const float *src, int64_t n, void *dst, size_t dst_bytes) {
    const ll_type_traits *t = traits_of(type);
    if (!t) return ll_error(LL_ERR_UNSUPPORTED, "tensor type %d is not supported", type);
    int rc = check_buffer(t, n, dst_bytes, "destination");
    if (rc) return rc;
    t->from_float(src, dst, n);
    return LL_OK;
}

int ll_to_float(int type, const void *src, size_t src_bytes, float *dst, int64_t n) {
    const ll_type_traits *t = traits_of(type);
    if (!t) return ll_error(LL_ERR_UNSUPPORTED, "tensor type %d is not supported", type);
    int rc = check_buffer(t, n, src_bytes, "source");
    if (rc) return rc;
    ll_active->to_float[type](src, dst, n);
    return LL_OK;
}

int ll_quantize_act(int type, const float *x, int64_t n, void *dst, size_t dst_bytes) {
    const ll_type_traits *t = traits_of(type);
    if (!t || !ll_active->quantize_act[type])
        return ll_error(LL_ERR_UNSUPPORTED, "type %d is not an activation type", type);
    int rc = check_buffer(t, n, dst_bytes, "destination");
    if (rc) return rc;
    ll_active->quantize_act[type](x, dst, n);
    return LL_OK;
}

int ll_vec_dot(int wtype, int64_t n, const void *w, size_t w_bytes,
               const void *x, size_t x_bytes, float *out) {
    const ll_type_traits *t = traits_of(wtype);
    if (!t || !ll_active->vec_dot[wtype])
        return ll_error(LL_ERR_UNSUPPORTED, "no dot product for weight type %d", wtype);
    int rc = check_buffer(t, n, w_bytes, "weight row");
    if (rc) return rc;
    rc = check_buffer(&ll_traits[t->vec_dot_type], n, x_bytes, "activation row");
    if (rc) return rc;
    ll_active->vec_dot[wtype](n, out, w, x);
    return LL_OK;
}

int ll_glu(int activation, float *gate, const float *up, int64_t n) {
    if (activation != LL_ACT_SILU && activation != LL_ACT_GELU_TANH)
        return ll_error(LL_ERR_ARG, "unknown activation %d", activation);
    if (n < 0 || (n > 0 && (!gate || !up)))
        return ll_error(LL_ERR_ARG, "a gated activation of %lld values needs both rows",
                        (long long)n);
    ll_active->glu[activation](gate, up, n);
    return LL_OK;
}

/* ---- ISA selection ----------------------------------------------------------- */

static ll_kernels k_scalar, k_avx2, k_avxvnni, k_avx512, k_neon;
const ll_kernels *ll_active = &k_scalar;

static void fill_scalar(ll_kernels *k, const char *name) {
    memset(k, 0, sizeof *k);
    k->name = name;
    for (int i = 0; i < LL_TYPE_COUNT; i++) {
        if (!ll_traits[i].name) continue;
        k->vec_dot[i] = ll_traits[i].vec_dot;
        k->to_float[i] = ll_traits[i].to_float;
    }
    /* activations: each vec_dot type's reference quantizer (F32 is a copy) */
    k->quantize_act[LL_TYPE_F32] = ll_traits[LL_TYPE_F32].from_float;
    k->quantize_act[LL_TYPE_Q8_0] = ll_traits[LL_TYPE_Q8_0].from_float;
    k->quantize_act[LL_TYPE_Q8_1] = ll_traits[LL_TYPE_Q8_1].from_float;
    k->quantize_act[LL_TYPE_Q8_K] = ll_traits[LL_TYPE_Q8_K].from_float;
    k->quantize_act[LL_TYPE_Q8_0P] = ll_traits[LL_TYPE_Q8_0P].from_float;
    k->quantize_act[LL_TYPE_Q8_1P] = ll_traits[LL_TYPE_Q8_1P].from_float;
    ll_fill_packed_scalar(k);
    k->glu[LL_ACT_SILU] = ll_glu_silu;
    k->glu[LL_ACT_GELU_TANH] = ll_glu_gelu_tanh;
    k->dot_rows[LL_TYPE_F32] = ll_dot_rows_f32;
    k->dot_rows[LL_TYPE_F16] = ll_dot_rows_f16;
}

static int cpu_has_avx2(void) {
#ifdef LL_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

/* AVX-VNNI (the VEX-encoded vpdpbusd / vpdpwssd) is CPUID leaf 7, subleaf
 * 1, EAX bit 4; it uses the same YMM state AVX2 does. Read directly because
 * not every compiler's __builtin_cpu_supports knows its name. */
static int cpu_has_avxvnni(void) {
#ifdef LL_X86
    unsigned eax, ebx, ecx, edx;
    if (!cpu_has_avx2() || !__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return 0;
    return (eax >> 4) & 1;
#else
    return 0;
#endif
}

/* The avx512 kernels use AVX512 F, BW, VL, VNNI and VBMI (CPUID leaf 7: EBX
 * bits 16, 30, 31; ECX bits 11, 1) and need the OS to save the opmask and
 * all 32 ZMM registers on context switches: XCR0 bits 5-7, read with xgetbv
 * once cpuid says OSXSAVE (leaf 1 ECX bit 27), besides the SSE/AVX bits 1-2. */
static int cpu_has_avx512(void) {
#ifdef LL_X86
    unsigned eax, ebx, ecx, edx;
    if (!cpu_has_avx2() || !__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !((ecx >> 27) & 1)) return 0;
    unsigned xcr0_lo, xcr0_hi;
    __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & 0xe6) != 0xe6) return 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
    const unsigned ebx_need = (1u << 16) | (1u << 30) | (1u << 31), ecx_need = (1u << 1) | (1u << 11);
    return (ebx & ebx_need) == ebx_need && (ecx & ecx_need) == ecx_need;
#else
    return 0;
#endif
}

static int cpu_has_neon(void) {
#ifdef LL_ARM64
    return 1; /* Advanced SIMD is mandatory on arm64 */
#else
    return 0;
#endif
}

static int initialized;

static void init_kernels(void) {
    if (initialized) return;
    fill_scalar(&k_scalar, "scalar");
#ifdef LL_X86
    fill_scalar(&k_avx2, "avx2");
    ll_kernels_fill_avx2(&k_avx2);
    fill_scalar(&k_avxvnni, "avxvnni");
    ll_kernels_fill_avxvnni(&k_avxvnni);
    fill_scalar(&k_avx512, "avx512");
    ll_kernels_fill_avx512(&k_avx512);
#endif
#ifdef LL_ARM64
    fill_scalar(&k_neon, "neon");
    ll_kernels_fill_neon(&k_neon);
#endif
    initialized = 1;
}

int ll_isa_available(const char *isa) {
    if (!isa) return 0;
    if (strcmp(isa, "scalar") == 0) return 1;
    if (strcmp(isa, "avx2") == 0) return cpu_has_avx2();
    if (strcmp(isa, "avxvnni") == 0) return cpu_has_avxvnni();
    if (strcmp(isa, "avx512") == 0) return cpu_has_avx512();
    if (strcmp(isa, "neon") == 0) return cpu_has_neon();
    return 0;
}

int ll_set_isa(const char *isa) {
    init_kernels();
    if (!isa || !*isa) {
        /* best available */
        ll_active = cpu_has_avx512()    ? &k_avx512
                    : cpu_has_avxvnni() ? &k_avxvnni
                    : cpu_has_avx2()  ? &k_avx2
                    : cpu_has_neon()  ? &k_neon
                                      : &k_scalar;
        return LL_OK;
    }
    if (strcmp(isa, "scalar") && strcmp(isa, "avx2") && strcmp(isa, "avxvnni") && strcmp(isa, "avx512") &&
        strcmp(isa, "neon"))
        return ll_error(LL_ERR_ARG, "unknown ISA '%.32s' (expected scalar, avx2, avxvnni, avx512 or neon)", isa);
    if (!ll_isa_available(isa))
        return ll_error(LL_ERR_UNSUPPORTED, "ISA '%s' is not available on this CPU or build", isa);
    ll_active = strcmp(isa, "avx2") == 0      ? &k_avx2
                : strcmp(isa, "avxvnni") == 0 ? &k_avxvnni
                : strcmp(isa, "avx512") == 0  ? &k_avx512
                : strcmp(isa, "neon") == 0    ? &k_neon
                                              : &k_scalar;
    return LL_OK;
}

const char *ll_get_isa(void) {
    init_kernels();
    return ll_active->name;
}

/* the best ISA is in use from the moment the library is loaded */
__attribute__((constructor)) static void select_default_isa(void) { ll_set_isa(NULL); }
