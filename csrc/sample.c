/* sample.c: the sampler's candidate selection (llamalite/sampling.py holds
 * the rest of the chain: it is policy, and works on the few candidates kept
 * here).
 *
 * top-k reads every logit of the vocabulary once per token, which numpy
 * needs a partition and several index searches for. Here it is one pass: the
 * k best so far are kept sorted, and a logit that does not beat the current
 * k-th (almost all of them, after the first few thousand) costs one compare
 * in a vectorized block test. Inserting is O(k); for logits in random order
 * about k ln(n / k) of them get inserted.
 */
#include <math.h>

#include "llamalite.h"
#include "quants.h"

/* Logits tested at once before any is looked at one by one. */
#define LL_TOPK_BLOCK 32

/* Put (id, v) into the best-first list of m entries (room for cap), after
 * every entry >= v: an equal logit seen later has the higher id and goes
 * after. A full list drops its last entry. Returns the new length. */
static int64_t insert_best_first(int32_t *ids, float *vals, int64_t m, int64_t cap,
                                 int32_t id, float v) {
    int64_t i = m < cap ? m : cap - 1;
    for (; i > 0 && vals[i - 1] < v; i--) {
        vals[i] = vals[i - 1];
        ids[i] = ids[i - 1];
    }
    vals[i] = v;
    ids[i] = id;
    return m < cap ? m + 1 : m;
}

/* 1 if any of the n logits is above bar or NaN (!(x <= bar) is both). */
static int any_above_or_nan(const float *x, int64_t n, float bar) {
    int hit = 0;
    for (int64_t j = 0; j < n; j++) hit |= !(x[j] <= bar);
    return hit;
}

static int nan_error(int64_t i) {
    return ll_error(LL_ERR_ARG, "ll_top_k: logit %lld is NaN", (long long)i);
}

int ll_top_k(const float *logits, int64_t n, int64_t k, int32_t *ids, float *vals,
             int64_t out_len) {
    if (!logits || !ids || !vals) return ll_error(LL_ERR_ARG, "ll_top_k: NULL buffer");
    if (n < 1 || n > INT32_MAX)
        return ll_error(LL_ERR_ARG, "ll_top_k: %lld logits (1..2^31-1 allowed)", (long long)n);
    if (k < 1) return ll_error(LL_ERR_ARG, "ll_top_k: k = %lld (>= 1 needed)", (long long)k);
    int64_t keep = k < n ? k : n;
    if (out_len < keep)
        return ll_error(LL_ERR_ARG, "ll_top_k: room for %lld results, %lld needed",
                        (long long)out_len, (long long)keep);
    int64_t m = 0, i = 0;
    for (; i < keep; i++) {
        if (isnan(logits[i])) return nan_error(i);
        m = insert_best_first(ids, vals, m, keep, (int32_t)i, logits[i]);
    }
    while (i < n) {
        int64_t end = n - i < LL_TOPK_BLOCK ? n : i + LL_TOPK_BLOCK;
        if (any_above_or_nan(logits + i, end - i, vals[keep - 1])) {
            for (int64_t j = i; j < end; j++) {
                if (isnan(logits[j])) return nan_error(j);
                if (logits[j] > vals[keep - 1])
                    insert_best_first(ids, vals, keep, keep, (int32_t)j, logits[j]);
            }
        }
        i = end;
    }
    return LL_OK;
}
