/* matmul.c: Y[n, rows] = X[n, cols] . W[rows, cols]^T for any weight type.
 *
 * The recipe: each row of X is quantized once to W's vec_dot type (8-bit
 * blocks for the quantized types), then every output is one integer-block dot
 * product. Threads first share the activation rows, meet at a barrier, then
 * share the weight rows. One thread computes each output, in a fixed order,
 * so the result is the same for any thread count.
 *
 * Threads claim the weights in byte ranges as they go (dot_rows): big ranges
 * first, smaller ones as the weights run out, so that a thread slowed by the
 * machine (a shared VM's other work, an interrupt) leaves the rest to the
 * others instead of making them wait for its fixed share.
 *
 * Several weights that read the same X (a layer's Q, K and V; gate and up)
 * go in one run: one wake-up and one barrier instead of one per weight, and X
 * quantized once per vec_dot type instead of once per weight. For a token of
 * a small model those wake-ups are a visible share of the time.
 *
 * Where the time goes: for one row of X (generating a token), streaming W
 * from memory, each weight row read once. For many rows (a prompt), the
 * integer dots: X is taken in groups of rows that fit L1, each group against
 * the thread's weight rows, and the 4-row dots unpack each weight block once
 * for four rows of X. Packed weights (pack.c: groups of 8 interleaved rows)
 * are the faster form of both: a unit of work is then a group of 8 rows, and
 * its kernel multiplies each block with up to four rows of X. */
#include <stdatomic.h>
#include "matmul.h"
#include "quants.h"
#include "threads.h"

typedef struct {
    ll_vec_dot_fn dot;
    ll_vec_dot4_fn dot4;         /* NULL: dot row by row */
    ll_gemm8_fn gemm8;           /* packed weights: a unit is a group of 8 rows */
    const uint8_t *w;
    int64_t units, unit_bytes;   /* weight rows (or packed groups of 8) and their bytes */
    float *y;
    int64_t y_stride;            /* the weight's row count: Y's row length */
    int act;                     /* which entry of acts[] it reads */
} matmul_out;

typedef struct {
    int type;                    /* the vec_dot type */
    ll_from_float_fn quantize;   /* NULL when activations stay float32 */
    const uint8_t *xq;           /* the activations it reads: quantized, or X itself */
    int64_t row_bytes;
} matmul_act;

typedef struct {
    matmul_out outs[LL_MATMUL_MAX_OUTS];
    matmul_act acts[LL_MATMUL_MAX_OUTS];
    int n_outs, n_acts, quantizes;
    int64_t cols, n, total_bytes;
    const float *x;
    ll_pool *pool;
    atomic_llong claimed;        /* weight bytes handed out to threads so far */
} matmul_task;

static int valid_weight_type(int t) {
    return t >= 0 && t < LL_TYPE_COUNT && ll_traits[t].name && ll_active->vec_dot[t];
}

/* a * b bytes, or -1 if it overflows int64 (a, b > 0) */
static int64_t mul_bytes(int64_t a, int64_t b) { return a > INT64_MAX / b ? -1 : a * b; }

/* What activations a weight of this type and layout reads; -1 if none. */
static int act_type(int type, int layout) {
    if (type < 0 || type >= LL_TYPE_COUNT || !ll_traits[type].name) return -1;
    if (layout == LL_LAYOUT_ROWS) return ll_traits[type].vec_dot_type;
    return layout == LL_LAYOUT_PACKED8 ? ll_packed_act_type(type) : -1;
}

int64_t ll_matmul_many_work_size(const int *types, const int *layouts, int n_types,
                                 int64_t cols, int64_t n) {
    if (!types || !layouts || n_types < 1 || n_types > LL_MATMUL_MAX_OUTS || cols <= 0 || n <= 0)
        return -1;
    int seen[LL_MATMUL_MAX_OUTS], n_seen = 0;
    int64_t total = 0;
    for (int i = 0; i < n_types; i++) {
        const int vdt = act_type(types[i], layouts[i]);
        if (vdt < 0) return -1;
        int known = vdt == LL_TYPE_F32;   /* float activations are used in place */
        for (int k = 0; k < n_seen && !known; k++) known = seen[k] == vdt;
        if (known) continue;
        seen[n_seen++] = vdt;
        const int64_t rb = ll_row_bytes(vdt, cols);
        const int64_t bytes = rb > 0 ? mul_bytes(rb, n) : -1;
        if (bytes < 0 || total > INT64_MAX - bytes) return -1;
        total += bytes;
    }
    return total;
}

int64_t ll_matmul_work_size(int wtype, int layout, int64_t cols, int64_t n) {
    return ll_matmul_many_work_size(&wtype, &layout, 1, cols, n);
}

static void quantize_rows(const matmul_task *t, int ith, int nth) {
    for (int64_t it = ith; it < (int64_t)t->n_acts * t->n; it += nth) {
        const matmul_act *a = &t->acts[it / t->n];
        const int64_t j = it % t->n;
        if (a->quantize)
            a->quantize(t->x + j * t->cols, (uint8_t *)a->xq + j * a->row_bytes, t->cols);
    }
}

/* Activation bytes a thread keeps in L1 while it runs its weight rows
 * against them: with several activation rows (prompt processing) the rows
 * are taken in groups of about this size, each group against all of the
 * thread's weight rows, so that the activations are read from L1 and only
 * the weights stream from further out, once per group. */
#define ACT_GROUP_BYTES (16 * 1024)

/* How many activation rows go in a group: a multiple of 4, so that the
 * 4-row dots see the same rows together whatever the group size. */
static int64_t act_group_rows(int64_t row_bytes, int64_t n) {
    int64_t rows = ACT_GROUP_BYTES / (row_bytes > 0 ? row_bytes : 1) / 4 * 4;
    if (rows < 4) rows = 4;
    return rows < n ? rows : n;
}

/* Weight units r0..r1 of one output against activation rows j0..j1. */
static void dot_block(const matmul_task *t, const matmul_out *m, int64_t r0, int64_t r1,
                      int64_t j0, int64_t j1) {
    const matmul_act *a = &t->acts[m->act];
    const int64_t ys = m->y_stride;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *wr = m->w + r * m->unit_bytes;
        int64_t j = j0;
        if (m->gemm8) {
            for (; j < j1; j += 4)
                m->gemm8(t->cols, &m->y[j * ys + 8 * r], ys, wr, a->xq + j * a->row_bytes,
                         (size_t)a->row_bytes, j1 - j < 4 ? (int)(j1 - j) : 4);
            continue;
        }
        if (m->dot4)
            for (; j + 4 <= j1; j += 4)
                m->dot4(t->cols, &m->y[j * ys + r], ys, wr, a->xq + j * a->row_bytes,
                        (size_t)a->row_bytes);
        for (; j < j1; j++)
            m->dot(t->cols, &m->y[j * ys + r], wr, a->xq + j * a->row_bytes);
    }
}

/* The weight units whose first byte falls in [lo, hi) of all the weights'
 * bytes, every output's in turn. */
static void dot_range(const matmul_task *t, int64_t lo, int64_t hi) {
    int64_t base = 0;
    for (int o = 0; o < t->n_outs; o++) {
        const matmul_out *m = &t->outs[o];
        const int64_t span = m->units * m->unit_bytes;
        int64_t r0 = lo <= base ? 0 : (lo - base + m->unit_bytes - 1) / m->unit_bytes;
        int64_t r1 = hi <= base ? 0 : (hi - base + m->unit_bytes - 1) / m->unit_bytes;
        if (r1 > m->units) r1 = m->units;
        const int64_t group = act_group_rows(t->acts[m->act].row_bytes, t->n);
        for (int64_t j0 = 0; r0 < r1 && j0 < t->n; j0 += group)
            dot_block(t, m, r0, r1, j0, j0 + group < t->n ? j0 + group : t->n);
        base += span;
    }
}

/* The smallest range a thread claims: a few microseconds of streaming, so
 * that the threads finish within about that of each other. */
#define MIN_CLAIM_BYTES (16 * 1024)

/* Claim ranges of the weights until none are left: each a 1/(2 nth) share of
 * what is still unclaimed (at least MIN_CLAIM_BYTES). A matmul takes a few
 * claims per thread, each contiguous, as the memory prefetchers like. */
static void dot_rows(matmul_task *t, int nth) {
    if (nth == 1) {
        dot_range(t, 0, t->total_bytes);
        return;
    }
    for (;;) {
        int64_t lo = atomic_load_explicit(&t->claimed, memory_order_relaxed), hi;
        do {
            if (lo >= t->total_bytes) return;
            const int64_t share = (t->total_bytes - lo) / (2 * nth);
            hi = lo + (share > MIN_CLAIM_BYTES ? share : MIN_CLAIM_BYTES);
            if (hi > t->total_bytes) hi = t->total_bytes;
        } while (!atomic_compare_exchange_weak_explicit(&t->claimed, &lo, hi,
                                                        memory_order_relaxed,
                                                        memory_order_relaxed));
        dot_range(t, lo, hi);
    }
}

static void matmul_run(void *arg, int ith, int nth) {
    matmul_task *t = arg;
    if (t->quantizes) {
        quantize_rows(t, ith, nth);
        ll_pool_barrier(t->pool);
    }
    dot_rows(t, nth);
}

/* The index in t->acts of the activations of vec_dot type vdt, added if
 * new; quantized rows are laid out in work from *used on. */
static int act_for(matmul_task *t, int vdt, uint8_t *work, int64_t *used) {
    for (int k = 0; k < t->n_acts; k++)
        if (t->acts[k].type == vdt) return k;
    matmul_act *a = &t->acts[t->n_acts];
    a->type = vdt;
    if (vdt == LL_TYPE_F32) {
        a->quantize = NULL;
        a->xq = (const uint8_t *)t->x;
        a->row_bytes = t->cols * (int64_t)sizeof(float);
    } else {
        a->quantize = ll_active->quantize_act[vdt];
        a->row_bytes = ll_row_bytes(vdt, t->cols);
        a->xq = work + *used;
        *used += a->row_bytes * t->n;
        t->quantizes = 1;
    }
    return t->n_acts++;
}

static int check_out(const ll_matmul_out *o, int64_t cols, int64_t n, int64_t *w_need) {
    if (!valid_weight_type(o->type))
        return ll_error(LL_ERR_UNSUPPORTED, "no matmul for weight type %d", o->type);
    if (o->layout != LL_LAYOUT_ROWS && o->layout != LL_LAYOUT_PACKED8)
        return ll_error(LL_ERR_ARG, "unknown weight layout %d", o->layout);
    if (o->layout == LL_LAYOUT_PACKED8 && !ll_active->gemm8[o->type])
        return ll_error(LL_ERR_UNSUPPORTED, "no packed layout for weight type %s",
                        ll_traits[o->type].name);
    if (o->layout == LL_LAYOUT_PACKED8 && o->rows % 8)
        return ll_error(LL_ERR_ARG, "packed weights come in groups of 8 rows, not %lld",
                        (long long)o->rows);
    if (o->rows <= 0 || !o->w || !o->y)
        return ll_error(LL_ERR_ARG, "matmul shape must be positive: rows=%lld cols=%lld n=%lld",
                        (long long)o->rows, (long long)cols, (long long)n);
    const int64_t wrb = ll_row_bytes(o->type, cols);
    if (wrb < 0) return LL_ERR_ARG; /* the error names the block size */
    *w_need = mul_bytes(o->rows, wrb);
    const int64_t y_need = mul_bytes(n, mul_bytes(o->rows, (int64_t)sizeof(float)));
    if (*w_need < 0 || y_need < 0)
        return ll_error(LL_ERR_ARG, "matmul of %lld x %lld by %lld rows overflows a 64-bit size",
                        (long long)o->rows, (long long)cols, (long long)n);
    if ((uint64_t)*w_need != (uint64_t)o->w_bytes)
        return ll_error(LL_ERR_ARG, "weights hold %zu bytes, %lld x %lld %s needs %lld",
                        o->w_bytes, (long long)o->rows, (long long)cols, ll_traits[o->type].name,
                        (long long)*w_need);
    if ((uint64_t)y_need > (uint64_t)o->y_bytes)
        return ll_error(LL_ERR_ARG, "y holds %zu bytes; %lld rows of %lld need %lld",
                        o->y_bytes, (long long)n, (long long)o->rows, (long long)y_need);
    return LL_OK;
}

int ll_matmul_many(ll_pool *pool, const ll_matmul_out *outs, int n_outs, int64_t cols,
                   const float *x, size_t x_bytes, int64_t n, void *work, size_t work_bytes) {
    if (!outs || n_outs < 1 || n_outs > LL_MATMUL_MAX_OUTS)
        return ll_error(LL_ERR_ARG, "a shared-input matmul takes 1..%d weights, got %d",
                        LL_MATMUL_MAX_OUTS, n_outs);
    if (cols <= 0 || n <= 0 || !x)
        return ll_error(LL_ERR_ARG, "matmul shape must be positive: cols=%lld n=%lld",
                        (long long)cols, (long long)n);
    const int64_t x_need = mul_bytes(n, mul_bytes(cols, (int64_t)sizeof(float)));
    if (x_need < 0)
        return ll_error(LL_ERR_ARG, "%lld activation rows of %lld floats overflow a 64-bit "
                        "size", (long long)n, (long long)cols);
    if ((uint64_t)x_need > (uint64_t)x_bytes)
        return ll_error(LL_ERR_ARG, "x holds %zu bytes; %lld rows of %lld need %lld",
                        x_bytes, (long long)n, (long long)cols, (long long)x_need);
    matmul_task task = { .cols = cols, .n = n, .x = x, .pool = pool };
    atomic_init(&task.claimed, 0);
    int types[LL_MATMUL_MAX_OUTS], layouts[LL_MATMUL_MAX_OUTS];
    for (int i = 0; i < n_outs; i++) {
        int64_t w_need = 0;
        int rc = check_out(&outs[i], cols, n, &w_need);
        if (rc) return rc;
        if (task.total_bytes > INT64_MAX - w_need)
            return ll_error(LL_ERR_ARG, "the weights of one matmul overflow a 64-bit size");
        task.total_bytes += w_need;
        types[i] = outs[i].type;
        layouts[i] = outs[i].layout;
    }
    const int64_t need = ll_matmul_many_work_size(types, layouts, n_outs, cols, n);
    if (need < 0 || (uint64_t)need > (uint64_t)work_bytes || (need > 0 && !work))
        return ll_error(LL_ERR_ARG, "work buffer holds %zu bytes, matmul needs %lld",
                        work_bytes, (long long)need);
    int64_t used = 0;
    for (int i = 0; i < n_outs; i++) {
        const ll_matmul_out *o = &outs[i];
        const int packed = o->layout == LL_LAYOUT_PACKED8, per_unit = packed ? 8 : 1;
        task.outs[i] = (matmul_out){
            .dot = ll_active->vec_dot[o->type], .dot4 = ll_active->vec_dot4[o->type],
            .gemm8 = packed ? ll_active->gemm8[o->type] : NULL,
            .w = o->w, .units = o->rows / per_unit,
            .unit_bytes = per_unit * ll_row_bytes(o->type, cols), .y = o->y, .y_stride = o->rows,
            .act = act_for(&task, act_type(o->type, o->layout), work, &used),
        };
    }
    task.n_outs = n_outs;
    ll_pool_run(pool, matmul_run, &task);
    return LL_OK;
}

int ll_matmul(ll_pool *pool, int wtype, int layout, const void *w, size_t w_bytes,
              int64_t rows, int64_t cols, const float *x, size_t x_bytes, int64_t n,
              float *y, size_t y_bytes, void *work, size_t work_bytes) {
    if (rows <= 0 || cols <= 0 || n <= 0)
        return ll_error(LL_ERR_ARG, "matmul shape must be positive: rows=%lld cols=%lld n=%lld",
                        (long long)rows, (long long)cols, (long long)n);
    const ll_matmul_out out = { wtype, layout, w, w_bytes, rows, y, y_bytes };
    return ll_matmul_many(pool, &out, 1, cols, x, x_bytes, n, work, work_bytes);
}
