/* llamalite.h: the whole C API of llamalite's core.
 *
 * This file is also the cffi cdef: llamalite/_native.py drops the lines that
 * start with '#' and hands the rest to cffi, so declarations here stay plain C
 * (no macros inside declarations, no inline code).
 *
 * Conventions: every function that can fail returns 0 on success and a
 * negative LL_ERR_* code otherwise; ll_last_error() then says why (per thread).
 * Every buffer that holds encoded data (weights, quantized activations, work
 * space) and every matmul operand comes with its byte length, checked against
 * the element counts before use, with overflow-checked size arithmetic. A
 * float32 output of a conversion (dst below) must hold n floats: n is the
 * count just validated against the encoded buffer. C never prints, never
 * aborts and never opens files.
 */
#ifndef LLAMALITE_H
#define LLAMALITE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ggml's type ids, so GGUF tensor types map 1:1 */
enum ll_type {
    LL_TYPE_F32 = 0,
    LL_TYPE_F16 = 1,
    LL_TYPE_Q4_0 = 2,
    LL_TYPE_Q4_1 = 3,
    LL_TYPE_Q5_0 = 6,
    LL_TYPE_Q5_1 = 7,
    LL_TYPE_Q8_0 = 8,
    LL_TYPE_Q8_1 = 9,
    LL_TYPE_Q2_K = 10,
    LL_TYPE_Q3_K = 11,
    LL_TYPE_Q4_K = 12,
    LL_TYPE_Q5_K = 13,
    LL_TYPE_Q6_K = 14,
    LL_TYPE_Q8_K = 15,
    LL_TYPE_IQ4_NL = 20,
    LL_TYPE_IQ4_XS = 23,
    LL_TYPE_BF16 = 30,
    LL_TYPE_COUNT = 40
};

enum ll_err {
    LL_OK = 0,
    LL_ERR_ARG = -1,       /* a bad argument: unknown type, size mismatch, ... */
    LL_ERR_UNSUPPORTED = -2, /* a type or ISA this build cannot run */
    LL_ERR_NOMEM = -3
};

const char *ll_last_error(void);

/* ---- types ---------------------------------------------------------------- */

/* Block size (elements) and block bytes of a type; LL_ERR_UNSUPPORTED if we don't run it. */
int ll_type_info(int type, int64_t *block_size, int64_t *type_size, int *vec_dot_type);

/* Scalar reference conversions, the definition of each format.
 * n is the element count, a multiple of the block size; src_bytes/dst_bytes
 * are the buffers' lengths and must match exactly what n elements need. */
int ll_dequantize(int type, const void *src, size_t src_bytes, float *dst, int64_t n);
int ll_quantize(int type, const float *src, int64_t n, void *dst, size_t dst_bytes);

/* ---- kernels and ISA -------------------------------------------------------- */

/* "scalar", "avx2" or "neon". ll_isa_available() is 1 when this CPU and build can run it. */
int ll_isa_available(const char *isa);
int ll_set_isa(const char *isa);
const char *ll_get_isa(void);

/* Dequantize with the current ISA's kernel (equal to ll_dequantize, faster). */
int ll_to_float(int type, const void *src, size_t src_bytes, float *dst, int64_t n);

/* Quantize an activation vector to the given (vec_dot) type with the current
 * ISA's kernel: what matmul does to each row of X. */
int ll_quantize_act(int type, const float *x, int64_t n, void *dst, size_t dst_bytes);

/* Dot product of one weight row (type wtype, n elements) with an activation
 * row already in wtype's vec_dot type, with the current ISA's kernel. The
 * activation row must come from ll_quantize_act (kernels rely on its ranges,
 * e.g. Q8_K's bsums, as llama.cpp's do). */
int ll_vec_dot(int wtype, int64_t n, const void *w, size_t w_bytes,
               const void *x, size_t x_bytes, float *out);

/* ---- threads ---------------------------------------------------------------- */

typedef struct ll_pool ll_pool;

/* A persistent pool of n_threads workers (the caller counts as one). */
ll_pool *ll_pool_new(int n_threads);
void ll_pool_free(ll_pool *pool);
int ll_pool_size(const ll_pool *pool);

/* ---- matmul ----------------------------------------------------------------- */

/* Scratch bytes ll_matmul needs for n rows of `cols` activations against wtype. */
int64_t ll_matmul_work_size(int wtype, int64_t cols, int64_t n);

/* Y[n, rows] = X[n, cols] . W[rows, cols]^T.
 * W is rows*cols elements of wtype in w_bytes bytes; X (x_bytes) and Y
 * (y_bytes) float32, row-major. work is at least ll_matmul_work_size() bytes.
 * Each output element is summed by one thread in a fixed order: results do
 * not depend on the thread count. */
int ll_matmul(ll_pool *pool, int wtype, const void *w, size_t w_bytes,
              int64_t rows, int64_t cols, const float *x, size_t x_bytes, int64_t n,
              float *y, size_t y_bytes, void *work, size_t work_bytes);

/* ---- measurement -------------------------------------------------------------- */

/* Read `bytes` of buf once with every thread of the pool (each its own slice)
 * and return a checksum, so the reads cannot be optimized away: the memory
 * read bandwidth that GEMV speeds are compared with. */
uint64_t ll_mem_read(ll_pool *pool, const void *buf, size_t bytes);

#ifdef __cplusplus
}
#endif

#endif
