/* neon_check.c: the NEON kernels against the scalar reference, through the
 * public C API. tests/test_neon_qemu.py cross-compiles it for aarch64 with
 * the library's sources and runs it under qemu-aarch64, once on a CPU model
 * with the dotprod extension and once on one without.
 *
 *   neon_check dotprod|nodotprod    (which kernel set the CPU should select)
 *
 * Checks, each on seeded random data with extreme scales, zeros, subnormals,
 * exact rounding ties (and NaNs for the quantizers):
 *   quantize_act  Q8_0, Q8_1, Q8_K bytes equal
 *   vec_dot       every weight type within 1e-6 of the sum of |terms|
 *   to_float      every type's floats equal to the bit
 *   matmul        n = 1 and 3, 1 and 2 threads: within 1e-6 of scalar, equal
 *                 to NEON's own vec_dot, and the same for any thread count
 *   dot_rows      attention's F32 / F16 dots: 1..4 rows at once equal each
 *                 row alone, within 1e-6 of scalar
 * One line per check; exit status 1 when any fails. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "llamalite.h"
#include "quants.h" /* ll_neon_dotprod and the half helpers */

/* ---- reporting -------------------------------------------------------------- */

static int n_checks, n_failed;

static void report(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    n_checks++;
    if (!ok) n_failed++;
}

static void must(int rc, const char *what) {
    if (rc == LL_OK) return;
    printf("FAIL %s: %s\n", what, ll_last_error());
    exit(1);
}

/* ---- seeded random data ------------------------------------------------------ */

static uint64_t rng = 0x5eed;

static uint64_t next_u64(void) { /* splitmix64 */
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float uniform(void) { return (float)(next_u64() >> 40) / (float)(1 << 24) * 2.0f - 1.0f; }
static int below(int n) { return (int)(next_u64() % (uint64_t)n); }

enum { ACT_NORMAL, ACT_EXTREME, ACT_TIES, ACT_SIGNS, ACT_NAN, ACT_COUNT };
static const char *act_names[ACT_COUNT] = {"normal", "extreme", "ties", "signs", "nan"};

/* One block of activations in the style of `pattern`. */
static void fill_act_block(float *x, int len, int pattern) {
    switch (pattern) {
    case ACT_NORMAL: {
        float scale = powf(10.0f, 3.0f * uniform());
        for (int i = 0; i < len; i++) x[i] = scale * uniform();
        break;
    }
    case ACT_EXTREME: {
        /* zeros, huge, tiny (incl. float subnormals), one spike among small values */
        static const float scales[] = {0.0f, 1e4f, 1e-4f, 1e-20f, 1e-30f, 3e-39f, 1.0f};
        float scale = scales[below(7)];
        for (int i = 0; i < len; i++) x[i] = scale * uniform();
        if (scale == 1.0f) x[below(len)] = 1e6f;
        break;
    }
    case ACT_TIES:
        /* amax 127: the scale is exactly 1, so k + 0.5 is an exact rounding tie */
        for (int i = 0; i < len; i++) x[i] = (float)(below(253) - 126) + (below(2) ? 0.5f : 0.0f);
        x[below(len)] = below(2) ? 127.0f : -127.0f;
        break;
    case ACT_SIGNS:
        /* +a and -a both present: Q8_K takes the sign of the first */
        for (int i = 0; i < len; i++) x[i] = uniform();
        int i = below(len), j = below(len);
        x[i] = 2.0f;
        if (j != i) x[j] = -2.0f;
        break;
    case ACT_NAN:
        /* a NaN among ordinary values: the references' max skips it */
        for (int i = 0; i < len; i++) x[i] = uniform();
        x[below(len)] = NAN;
        break;
    }
}

static void fill_activations(float *x, int64_t n, int pattern) {
    for (int64_t i = 0; i < n; i += 32) fill_act_block(x + i, n - i < 32 ? (int)(n - i) : 32, pattern);
    if (pattern == ACT_EXTREME && n >= 512) {
        /* whole super-blocks of zeros and of subnormals (Q8_K's scale overflows) */
        int64_t zero = 256 * below((int)(n / 256)), tiny = (zero + 256) % (n / 256 * 256);
        memset(x + zero, 0, 256 * sizeof(float));
        for (int i = 0; i < 256; i++) x[tiny + i] = 3e-39f * uniform();
    }
}

/* a half scale: ordinary, zero, the largest finite, the smallest subnormal */
static ll_half random_scale(void) {
    switch (below(8)) {
    case 0: return 0;
    case 1: return 0x7bff;
    case 2: return 0x0001 | (below(2) << 15);
    default: return ll_f32_to_half(powf(2.0f, (float)(below(20) - 14)) * (0.5f + 0.5f * uniform()));
    }
}

/* ---- the types ------------------------------------------------------------- */

typedef struct {
    int type;
    const char *name;
    int n_scales;           /* half scale fields of a block ... */
    int scale_offset[2];    /* ... at these byte offsets */
} wtype;

static const wtype wtypes[] = {
    {LL_TYPE_F32, "F32", 0, {0}},
    {LL_TYPE_F16, "F16", 0, {0}},
    {LL_TYPE_BF16, "BF16", 0, {0}},
    {LL_TYPE_Q4_0, "Q4_0", 1, {0}},
    {LL_TYPE_Q4_1, "Q4_1", 2, {0, 2}},
    {LL_TYPE_Q5_0, "Q5_0", 1, {0}},
    {LL_TYPE_Q5_1, "Q5_1", 2, {0, 2}},
    {LL_TYPE_Q8_0, "Q8_0", 1, {0}},
    {LL_TYPE_IQ4_NL, "IQ4_NL", 1, {0}},
    {LL_TYPE_Q2_K, "Q2_K", 2, {80, 82}},
    {LL_TYPE_Q3_K, "Q3_K", 1, {108}},
    {LL_TYPE_Q4_K, "Q4_K", 2, {0, 2}},
    {LL_TYPE_Q5_K, "Q5_K", 2, {0, 2}},
    {LL_TYPE_Q6_K, "Q6_K", 1, {208}},
    {LL_TYPE_IQ4_XS, "IQ4_XS", 1, {0}},
};
enum { N_WTYPES = sizeof wtypes / sizeof wtypes[0] };

static const char *type_name(int type) {
    switch (type) {
    case LL_TYPE_Q8_0: return "Q8_0";
    case LL_TYPE_Q8_1: return "Q8_1";
    case LL_TYPE_Q8_K: return "Q8_K";
    case LL_TYPE_F32: return "F32";
    default: return "?";
    }
}

static size_t bytes_of(int type, int64_t n) {
    int64_t bs, ts;
    int vdt;
    must(ll_type_info(type, &bs, &ts, &vdt), "ll_type_info");
    return (size_t)(n / bs * ts);
}

static int vec_dot_type(int type) {
    int64_t bs, ts;
    int vdt;
    must(ll_type_info(type, &bs, &ts, &vdt), "ll_type_info");
    return vdt;
}

/* Weights of n elements as random bits with chosen scales (every bit pattern
 * the kernels may meet in a file), or the reference quantizer's output. */
static void make_weights(const wtype *t, int64_t n, uint8_t *w, int quantized) {
    size_t bytes = bytes_of(t->type, n);
    if (quantized) {
        float *x = malloc((size_t)n * sizeof(float));
        fill_activations(x, n, ACT_NORMAL);
        memset(w, 0, bytes);
        must(ll_quantize(t->type, x, n, w, bytes), "ll_quantize");
        free(x);
        return;
    }
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)next_u64();
    if (t->type == LL_TYPE_F32) {
        float *f = (float *)w;
        for (int64_t i = 0; i < n; i++) f[i] = powf(10.0f, 4.0f * uniform()) * uniform();
    } else if (t->type == LL_TYPE_F16) {
        ll_half *h = (ll_half *)w;
        for (int64_t i = 0; i < n; i++)
            if ((h[i] & 0x7c00) == 0x7c00) h[i] &= 0xbfff; /* finite: no inf or NaN */
    } else if (t->type == LL_TYPE_BF16) {
        uint16_t *h = (uint16_t *)w;
        for (int64_t i = 0; i < n; i++) h[i] = (h[i] & 0x807f) | (uint16_t)((97 + below(60)) << 7);
    } else {
        int64_t bs, ts;
        int vdt;
        must(ll_type_info(t->type, &bs, &ts, &vdt), "ll_type_info");
        for (int64_t b = 0; b < n / bs; b++)
            for (int k = 0; k < t->n_scales; k++) {
                ll_half h = random_scale();
                memcpy(w + b * ts + t->scale_offset[k], &h, sizeof h);
            }
    }
}

/* ---- comparisons --------------------------------------------------------------- */

/* sum of |w_i a_i| over the dequantized rows (float64): the scale of the
 * rounding budget, so cancellation in the dot does not shrink it */
static double magnitude(int wtype, const void *w, int act_type, const void *a, int64_t n) {
    float *wf = malloc((size_t)n * sizeof(float)), *af = malloc((size_t)n * sizeof(float));
    must(ll_dequantize(wtype, w, bytes_of(wtype, n), wf, n), "ll_dequantize weights");
    must(ll_dequantize(act_type, a, bytes_of(act_type, n), af, n), "ll_dequantize activations");
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m += fabs((double)wf[i] * (double)af[i]);
    free(wf);
    free(af);
    return m;
}

/* 1e-6 of the magnitude, plus a few subnormal steps per block for sums that
 * round in the subnormal range */
static int close_enough(float a, float b, double mag, int64_t n) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    if (a == b) return 1;
    return fabs((double)a - (double)b) <= 1e-6 * mag + 1e-44 * (double)(n / 32 + 1);
}

static void set_isa(const char *isa) { must(ll_set_isa(isa), isa); }

/* ---- the checks ------------------------------------------------------------------- */

static void check_quantize_act(int act_type, int64_t n) {
    float *x = malloc((size_t)n * sizeof(float));
    size_t bytes = bytes_of(act_type, n);
    uint8_t *qs = malloc(bytes), *qn = malloc(bytes);
    for (int p = 0; p < ACT_COUNT; p++) {
        fill_activations(x, n, p);
        memset(qs, 0xa5, bytes);
        memset(qn, 0xa5, bytes);
        set_isa("scalar");
        must(ll_quantize_act(act_type, x, n, qs, bytes), "quantize_act scalar");
        set_isa("neon");
        must(ll_quantize_act(act_type, x, n, qn, bytes), "quantize_act neon");
        size_t diff = 0;
        while (diff < bytes && qs[diff] == qn[diff]) diff++;
        if (diff == bytes) report(1, "quantize_act %s %s: %zu bytes equal", type_name(act_type), act_names[p], bytes);
        else report(0, "quantize_act %s %s: first difference at byte %zu (scalar %02x, neon %02x)",
                    type_name(act_type), act_names[p], diff, qs[diff], qn[diff]);
    }
    free(x);
    free(qs);
    free(qn);
}

/* the activation row for weight type wt, quantized by `isa` */
static void *make_act_row(const char *isa, int wt, const float *x, int64_t n) {
    int at = vec_dot_type(wt);
    size_t bytes = bytes_of(at, n);
    void *a = malloc(bytes);
    set_isa(isa);
    must(ll_quantize_act(at, x, n, a, bytes), "quantize_act");
    return a;
}

static void check_vec_dot(const wtype *t, int64_t n, int quantized) {
    const int rows = 8;
    size_t wb = bytes_of(t->type, n);
    int at = vec_dot_type(t->type);
    uint8_t *w = malloc(wb * rows);
    float *x = malloc((size_t)n * sizeof(float));
    double worst = 0.0;
    int bad = 0;
    for (int r = 0; r < rows; r++) {
        make_weights(t, n, w + r * wb, quantized);
        fill_activations(x, n, r % ACT_NAN); /* the finite patterns */
        void *a = make_act_row("scalar", t->type, x, n); /* the quantizers are checked apart */
        size_t ab = bytes_of(at, n);
        float ys, yn;
        set_isa("scalar");
        must(ll_vec_dot(t->type, n, w + r * wb, wb, a, ab, &ys), "vec_dot scalar");
        set_isa("neon");
        must(ll_vec_dot(t->type, n, w + r * wb, wb, a, ab, &yn), "vec_dot neon");
        double mag = magnitude(t->type, w + r * wb, at, a, n);
        if (!close_enough(ys, yn, mag, n)) {
            if (!bad) printf("     row %d: scalar %.9g neon %.9g (budget 1e-6 x %.6g)\n", r, ys, yn, mag);
            bad++;
        } else if (mag > 0 && isfinite(ys) && ys != yn) {
            double rel = fabs((double)ys - (double)yn) / mag;
            if (rel > worst) worst = rel;
        }
        free(a);
    }
    report(!bad, "vec_dot %s n=%lld %s: %d rows, worst difference %.2g of sum|terms|",
           t->name, (long long)n, quantized ? "quantized" : "random bits", rows - bad, worst);
    free(w);
    free(x);
}

/* Attention's dots: a cache row (F32 or F16) against 1..4 float rows at once
 * gives each row the bits it gets alone, within 1e-6 of the scalar sum. */
static void check_dot_rows(int type, int64_t n) {
    const size_t elt = type == LL_TYPE_F16 ? 2 : 4;
    uint8_t *row = malloc((size_t)n * elt);
    float *y = malloc((size_t)(4 * n) * sizeof(float)), *f = malloc((size_t)n * sizeof(float));
    fill_activations(f, n, ACT_NORMAL);
    for (int64_t i = 0; i < n; i++) {
        if (type == LL_TYPE_F16) ((ll_half *)row)[i] = ll_f32_to_half(f[i]);
        else ((float *)row)[i] = f[i];
    }
    for (int a = 0; a < 4; a++) fill_activations(y + a * n, n, a % 2 ? ACT_TIES : ACT_NORMAL);
    int bad = 0;
    for (int n_y = 1; n_y <= 4; n_y++) {
        float together[4], alone, ref;
        set_isa("neon");
        ll_active->dot_rows[type](n, together, 1, row, y, (size_t)n * sizeof(float), n_y);
        for (int a = 0; a < n_y; a++) {
            ll_active->dot_rows[type](n, &alone, 1, row, y + a * n, 0, 1);
            set_isa("scalar");
            ll_active->dot_rows[type](n, &ref, 1, row, y + a * n, 0, 1);
            set_isa("neon");
            double mag = 0.0;
            for (int64_t i = 0; i < n; i++) {
                const float v = type == LL_TYPE_F16 ? ll_half_to_f32(((ll_half *)row)[i])
                                                    : ((float *)row)[i];
                mag += fabs((double)v * y[a * n + i]);
            }
            if (memcmp(&alone, &together[a], sizeof alone) || fabs((double)alone - ref) > 1e-6 * mag)
                bad++;
        }
    }
    report(!bad, "dot_rows %s n=%lld: 1..4 rows at once equal to each alone, close to scalar",
           type == LL_TYPE_F16 ? "F16" : "F32", (long long)n);
    free(row);
    free(y);
    free(f);
}

static void check_to_float(const wtype *t, int64_t n) {
    size_t wb = bytes_of(t->type, n);
    uint8_t *w = malloc(wb);
    float *ys = malloc((size_t)n * sizeof(float)), *yn = malloc((size_t)n * sizeof(float));
    make_weights(t, n, w, 0);
    if (t->type == LL_TYPE_F16) /* every bit pattern, NaN payloads included */
        for (int64_t i = 0; i < n; i++) ((ll_half *)w)[i] = (ll_half)i;
    set_isa("scalar");
    must(ll_to_float(t->type, w, wb, ys, n), "to_float scalar");
    set_isa("neon");
    must(ll_to_float(t->type, w, wb, yn, n), "to_float neon");
    int64_t diff = 0;
    while (diff < n && memcmp(&ys[diff], &yn[diff], sizeof(float)) == 0) diff++;
    if (diff == n) report(1, "to_float %s n=%lld: bits equal", t->name, (long long)n);
    else report(0, "to_float %s n=%lld: element %lld scalar %.9g (%08x) neon %.9g (%08x)",
                t->name, (long long)n, (long long)diff, ys[diff], ll_f32_to_bits(ys[diff]),
                yn[diff], ll_f32_to_bits(yn[diff]));
    free(w);
    free(ys);
    free(yn);
}

static void matmul_with(const char *isa, ll_pool *pool, const wtype *t, const void *w, size_t wb,
                        int64_t rows, int64_t cols, const float *x, int64_t n, float *y) {
    set_isa(isa);
    int64_t need = ll_matmul_work_size(t->type, LL_LAYOUT_ROWS, cols, n);
    void *work = malloc(need > 0 ? (size_t)need : 1);
    must(ll_matmul(pool, t->type, LL_LAYOUT_ROWS, w, wb, rows, cols, x, (size_t)(n * cols) * sizeof(float), n,
                   y, (size_t)(n * rows) * sizeof(float), work, (size_t)need), "ll_matmul");
    free(work);
}

static void check_matmul(const wtype *t, int64_t cols, int64_t n, ll_pool *pools[2]) {
    const int64_t rows = 5; /* odd: the threads' shares differ */
    size_t rb = bytes_of(t->type, cols), wb = rb * rows;
    int at = vec_dot_type(t->type);
    size_t ab = bytes_of(at, cols);
    uint8_t *w = malloc(wb);
    float *x = malloc((size_t)(n * cols) * sizeof(float));
    float *ys = malloc((size_t)(n * rows) * sizeof(float));
    float *yn[2] = {malloc((size_t)(n * rows) * sizeof(float)), malloc((size_t)(n * rows) * sizeof(float))};
    for (int64_t r = 0; r < rows; r++) make_weights(t, cols, w + r * rb, r % 2);
    for (int64_t j = 0; j < n; j++) fill_activations(x + j * cols, cols, (int)j % ACT_NAN);

    matmul_with("scalar", pools[0], t, w, wb, rows, cols, x, n, ys);
    for (int p = 0; p < 2; p++) matmul_with("neon", pools[p], t, w, wb, rows, cols, x, n, yn[p]);

    int vs_scalar = 1, vs_dot = 1;
    for (int64_t j = 0; j < n; j++) {
        void *a = make_act_row("neon", t->type, x + j * cols, cols);
        for (int64_t r = 0; r < rows; r++) {
            float d;
            must(ll_vec_dot(t->type, cols, w + r * rb, rb, a, ab, &d), "vec_dot");
            double mag = magnitude(t->type, w + r * rb, at, a, cols);
            float got = yn[0][j * rows + r];
            vs_scalar &= close_enough(ys[j * rows + r], got, mag, cols);
            vs_dot &= memcmp(&d, &got, sizeof d) == 0;
        }
        free(a);
    }
    int threads_equal = memcmp(yn[0], yn[1], (size_t)(n * rows) * sizeof(float)) == 0;
    report(vs_scalar && vs_dot && threads_equal,
           "matmul %s %lldx%lld n=%lld: vs scalar %s, vs own vec_dot %s, 1 vs 2 threads %s",
           t->name, (long long)rows, (long long)cols, (long long)n, vs_scalar ? "close" : "DIFFERENT",
           vs_dot ? "equal" : "DIFFERENT", threads_equal ? "equal" : "DIFFERENT");
    free(w);
    free(x);
    free(ys);
    free(yn[0]);
    free(yn[1]);
}

int main(int argc, char **argv) {
    if (argc != 2 || (strcmp(argv[1], "dotprod") && strcmp(argv[1], "nodotprod"))) {
        fprintf(stderr, "usage: %s dotprod|nodotprod\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* each line out before a crash */
    must(ll_set_isa("neon"), "select neon");
    int want = strcmp(argv[1], "dotprod") == 0;
    report(ll_neon_dotprod() == want, "kernel set: %s (expected %s)",
           ll_neon_dotprod() ? "dotprod" : "plain NEON", want ? "dotprod" : "plain NEON");

    const int act_types[] = {LL_TYPE_Q8_0, LL_TYPE_Q8_1, LL_TYPE_Q8_K};
    for (int i = 0; i < 3; i++) check_quantize_act(act_types[i], 1024);

    for (int i = 0; i < N_WTYPES; i++) {
        const wtype *t = &wtypes[i];
        int64_t bs, ts;
        int vdt;
        must(ll_type_info(t->type, &bs, &ts, &vdt), "ll_type_info");
        if (bs == 1) { /* float rows: lengths with vector tails */
            check_vec_dot(t, 35, 0);
            check_vec_dot(t, 1000, 0);
        } else {
            check_vec_dot(t, bs == 32 ? 160 : 768, 0);
            check_vec_dot(t, 1024, 0);
            check_vec_dot(t, 1024, 1);
        }
        check_to_float(t, t->type == LL_TYPE_F16 ? 65536 : bs == 1 ? 1003 : 1024);
    }

    for (int i = 0; i < 2; i++) {
        check_dot_rows(i ? LL_TYPE_F16 : LL_TYPE_F32, 256);
        check_dot_rows(i ? LL_TYPE_F16 : LL_TYPE_F32, 83);
    }

    ll_pool *pools[2] = {ll_pool_new(1), ll_pool_new(2)};
    if (!pools[0] || !pools[1]) must(LL_ERR_NOMEM, "ll_pool_new");
    for (int i = 0; i < N_WTYPES; i++) {
        int64_t bs, ts;
        int vdt;
        must(ll_type_info(wtypes[i].type, &bs, &ts, &vdt), "ll_type_info");
        int64_t cols = bs == 1 ? 67 : 512;
        check_matmul(&wtypes[i], cols, 1, pools);
        check_matmul(&wtypes[i], cols, 3, pools);
    }
    ll_pool_free(pools[0]);
    ll_pool_free(pools[1]);

    if (n_failed) {
        printf("FAILED: %d of %d checks (%s kernels)\n", n_failed, n_checks, argv[1]);
        return 1;
    }
    printf("all checks passed: %d checks (%s kernels)\n", n_checks, argv[1]);
    return 0;
}
