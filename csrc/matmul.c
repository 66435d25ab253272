/* matmul.c: Y[n, rows] = X[n, cols] . W[rows, cols]^T for any weight type.
 *
 * The recipe: each row of X is quantized once to W's vec_dot type (8-bit
 * blocks for the quantized types), then every output is one integer-block dot
 * product. Threads first share the activation rows, meet at a barrier, then
 * share the weight rows. One thread computes each output, in a fixed order,
 * so the result is the same for any thread count.
 *
 * Where the time goes: streaming W from memory. Each weight row is read once
 * and used against all n activation rows while it sits in L1. */
#include "quants.h"
#include "threads.h"

typedef struct {
    ll_vec_dot_fn dot;
    ll_from_float_fn quantize;   /* NULL when activations stay float32 */
    const uint8_t *w;
    int64_t rows, cols, n;
    const float *x;
    float *y;
    uint8_t *xq;
    int64_t w_row_bytes, x_row_bytes;
    ll_pool *pool;
} matmul_task;

int64_t ll_matmul_work_size(int wtype, int64_t cols, int64_t n) {
    if (wtype < 0 || wtype >= LL_TYPE_COUNT || !ll_traits[wtype].name || n <= 0) return -1;
    int vdt = ll_traits[wtype].vec_dot_type;
    if (vdt == LL_TYPE_F32) return 0; /* float activations are used in place */
    int64_t rb = ll_row_bytes(vdt, cols);
    if (rb <= 0 || n > INT64_MAX / rb) return -1;
    return rb * n;
}

/* a * b bytes, or -1 if it overflows int64 (a, b > 0) */
static int64_t mul_bytes(int64_t a, int64_t b) { return a > INT64_MAX / b ? -1 : a * b; }

static void matmul_run(void *arg, int ith, int nth) {
    matmul_task *t = arg;
    if (t->quantize) {
        for (int64_t j = ith; j < t->n; j += nth)
            t->quantize(t->x + j * t->cols, t->xq + j * t->x_row_bytes, t->cols);
        ll_pool_barrier(t->pool);
    }
    const uint8_t *xq = t->quantize ? t->xq : (const uint8_t *)t->x;
    int64_t per = (t->rows + nth - 1) / nth;
    int64_t r0 = per * ith, r1 = r0 + per < t->rows ? r0 + per : t->rows;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *wr = t->w + r * t->w_row_bytes;
        for (int64_t j = 0; j < t->n; j++)
            t->dot(t->cols, &t->y[j * t->rows + r], wr, xq + j * t->x_row_bytes);
    }
}

int ll_matmul(ll_pool *pool, int wtype, const void *w, size_t w_bytes,
              int64_t rows, int64_t cols, const float *x, size_t x_bytes, int64_t n,
              float *y, size_t y_bytes, void *work, size_t work_bytes) {
    if (wtype < 0 || wtype >= LL_TYPE_COUNT || !ll_traits[wtype].name || !ll_active->vec_dot[wtype])
        return ll_error(LL_ERR_UNSUPPORTED, "no matmul for weight type %d", wtype);
    const ll_type_traits *t = &ll_traits[wtype];
    if (rows <= 0 || cols <= 0 || n <= 0)
        return ll_error(LL_ERR_ARG, "matmul shape must be positive: rows=%lld cols=%lld n=%lld",
                        (long long)rows, (long long)cols, (long long)n);
    const int vdt = t->vec_dot_type;
    const int64_t wrb = ll_row_bytes(wtype, cols), xrb = ll_row_bytes(vdt, cols);
    if (wrb < 0 || xrb < 0) return LL_ERR_ARG; /* the error names the block size */
    const int64_t w_need = mul_bytes(rows, wrb);
    const int64_t x_need = mul_bytes(n, mul_bytes(cols, (int64_t)sizeof(float)));
    const int64_t y_need = mul_bytes(n, mul_bytes(rows, (int64_t)sizeof(float)));
    if (w_need < 0 || x_need < 0 || y_need < 0)
        return ll_error(LL_ERR_ARG, "matmul of %lld x %lld by %lld rows overflows a 64-bit size",
                        (long long)rows, (long long)cols, (long long)n);
    if ((uint64_t)w_need != (uint64_t)w_bytes)
        return ll_error(LL_ERR_ARG, "weights hold %zu bytes, %lld x %lld %s needs %lld",
                        w_bytes, (long long)rows, (long long)cols, t->name, (long long)w_need);
    if ((uint64_t)x_need > (uint64_t)x_bytes || (uint64_t)y_need > (uint64_t)y_bytes)
        return ll_error(LL_ERR_ARG, "x holds %zu bytes and y %zu; %lld rows need %lld and %lld",
                        x_bytes, y_bytes, (long long)n, (long long)x_need, (long long)y_need);
    int64_t need = ll_matmul_work_size(wtype, cols, n);
    if (need < 0 || (uint64_t)need > (uint64_t)work_bytes)
        return ll_error(LL_ERR_ARG, "work buffer holds %zu bytes, matmul needs %lld",
                        work_bytes, (long long)need);
    matmul_task task = {
        .dot = ll_active->vec_dot[wtype],
        .quantize = vdt == LL_TYPE_F32 ? NULL : ll_active->quantize_act[vdt],
        .w = w, .rows = rows, .cols = cols, .n = n, .x = x, .y = y, .xq = work,
        .w_row_bytes = wrb,
        .x_row_bytes = xrb,
        .pool = pool,
    };
    ll_pool_run(pool, matmul_run, &task);
    return LL_OK;
}
