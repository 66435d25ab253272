/* matmul.h: matmuls that share their activations, for the forward pass. */
#ifndef LLAMALITE_MATMUL_H
#define LLAMALITE_MATMUL_H

#include "llamalite.h"

#define LL_MATMUL_MAX_OUTS 4

/* One weight of a shared-input matmul, and where its result goes:
 * y[n, rows] (y_bytes) = X . W^T, W being rows x cols of `type` in w_bytes. */
typedef struct {
    int type;
    int layout;                  /* enum ll_layout */
    const void *w;
    size_t w_bytes;
    int64_t rows;
    float *y;
    size_t y_bytes;
} ll_matmul_out;

/* Scratch bytes for n rows of `cols` activations against these weight types
 * in these layouts: one quantized copy of X per distinct activation type; -1
 * if invalid. */
int64_t ll_matmul_many_work_size(const int *types, const int *layouts, int n_types,
                                 int64_t cols, int64_t n);

/* Every outs[i].y = X . outs[i].W^T for 1..LL_MATMUL_MAX_OUTS weights that
 * read the same X (n rows of cols floats, x_bytes): one parallel run, X
 * quantized once per vec_dot type, the weight rows of all outputs shared
 * among the threads by bytes. Each output element is summed by one thread in
 * a fixed order, as ll_matmul: the same results as separate calls, for any
 * thread count. */
int ll_matmul_many(ll_pool *pool, const ll_matmul_out *outs, int n_outs, int64_t cols,
                   const float *x, size_t x_bytes, int64_t n, void *work, size_t work_bytes);

#endif
