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
    /* not GGUF types: the activations of packed weights, Q8_0's and Q8_1's
     * quants with their float16 fields as float32 (and Q8_0P with the
     * block's integer sum): Q5_0 reads Q8_0P, Q4_1 reads Q8_1P */
    LL_TYPE_Q8_1P = 46,
    LL_TYPE_Q8_0P = 47,
    LL_TYPE_COUNT = 48
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

/* "scalar", "avx2", "avxvnni", "avx512" or "neon". ll_isa_available() is 1 when this CPU and build
 * can run it. */
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

/* The feed-forward's gated activation with the current ISA's kernel:
 * gate[i] = act(gate[i]) * up[i] for i < n, act an enum ll_activation. */
int ll_glu(int activation, float *gate, const float *up, int64_t n);

/* ---- threads ---------------------------------------------------------------- */

typedef struct ll_pool ll_pool;

/* A persistent pool of n_threads workers (the caller counts as one). */
ll_pool *ll_pool_new(int n_threads);
void ll_pool_free(ll_pool *pool);
int ll_pool_size(const ll_pool *pool);

/* ---- packed weights ----------------------------------------------------------- */

/* How a weight matrix's bytes are laid out: GGUF's rows one after another,
 * or packed: groups of 8 rows whose blocks are interleaved, block b of all 8
 * rows together (the same bytes in all, rearranged), so that a kernel
 * multiplies each activation with 8 rows at once. Prompt processing on
 * packed weights is several times faster per weight block; packing happens
 * once, at load. */
enum ll_layout {
    LL_LAYOUT_ROWS = 0,
    LL_LAYOUT_PACKED8 = 1
};

/* 1 when ll_pack packs rows x cols of type and the current ISA's kernels
 * are faster on the packed layout than on rows; 0 otherwise. */
int ll_pack_preferred(int type, int64_t rows, int64_t cols);

/* Pack rows x cols elements of type (nbytes at data, in GGUF's row layout)
 * in place into LL_LAYOUT_PACKED8. LL_ERR_UNSUPPORTED for a type without a
 * packed form, LL_ERR_ARG for rows not a multiple of 8 or a size mismatch. */
int ll_pack(int type, void *data, size_t nbytes, int64_t rows, int64_t cols);

/* ---- matmul ----------------------------------------------------------------- */

/* Scratch bytes ll_matmul needs for n rows of `cols` activations against wtype
 * in the given layout. */
int64_t ll_matmul_work_size(int wtype, int layout, int64_t cols, int64_t n);

/* Y[n, rows] = X[n, cols] . W[rows, cols]^T.
 * W is rows*cols elements of wtype in w_bytes bytes, laid out as `layout`
 * (enum ll_layout); X (x_bytes) and Y (y_bytes) float32, row-major. work is
 * at least ll_matmul_work_size() bytes. Each output element is summed by one
 * thread in a fixed order: results do not depend on the thread count, nor on
 * how many rows of X come in one call. */
int ll_matmul(ll_pool *pool, int wtype, int layout, const void *w, size_t w_bytes,
              int64_t rows, int64_t cols, const float *x, size_t x_bytes, int64_t n,
              float *y, size_t y_bytes, void *work, size_t work_bytes);

/* ---- the forward pass ------------------------------------------------------------ */

enum ll_rope_style {
    LL_ROPE_NORMAL = 0,   /* rotate adjacent pairs (x[2i], x[2i+1]): llama */
    LL_ROPE_NEOX = 1      /* rotate the halves' pairs (x[i], x[i + d/2]): qwen2, gemma3 */
};

enum ll_activation {
    LL_ACT_SILU = 0,       /* x * sigmoid(x) */
    LL_ACT_GELU_TANH = 1   /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
};

/* What tells one architecture from another: sizes, constants and flags.
 * A flag that is set makes its tensors required in every layer; one that is
 * clear requires them absent, so no tensor is ever silently ignored. */
typedef struct {
    int32_t n_layer, n_embd, n_ff, n_vocab;
    int32_t n_head, n_head_kv;          /* query heads; key/value heads (n_head is a multiple: GQA) */
    int32_t head_dim_k, head_dim_v;     /* per head; rope turns all head_dim_k dims of q and k */
    float norm_eps;                     /* RMSNorm: x / sqrt(mean(x^2) + eps) * weight */
    int32_t rope_style;                 /* enum ll_rope_style */
    /* angle of pair i at position p: p * scale * base^(-2i/head_dim_k) / factor_i
     * (factor_i from rope_freqs, global layers only; 1 without it) */
    float rope_base, rope_scale;        /* global layers */
    float rope_base_swa, rope_scale_swa; /* sliding-window layers */
    int32_t activation;                 /* enum ll_activation: FFN = down(act(gate(x)) * up(x)) */
    float embd_scale;                   /* token embeddings are multiplied by it (gemma: sqrt(n_embd)) */
    float attn_scale;                   /* scores = q.k * attn_scale (usually 1/sqrt(head_dim_k)) */
    float logit_softcap;                /* 0: none, else logits = c * tanh(logits / c) */
    int32_t n_swa;                      /* sliding window: a query sees its last n_swa positions */
    int32_t qkv_bias;                   /* 1: bq, bk, bv */
    int32_t qk_norm;                    /* 1: q_norm, k_norm (RMSNorm of each head before rope) */
    int32_t post_norms;                 /* 1: attn_post_norm, ffn_post_norm (before the residual adds) */
    int32_t tied_output;                /* 1: the output projection is token_embd (output absent) */
} ll_hparams;

/* A tensor handed to C: `nbytes` bytes at `data` (NULL: absent) holding
 * rows x cols (numpy order; a vector is 1 x cols) elements of `type`, laid
 * out as `layout` (enum ll_layout; only the layers' matrices and output may
 * be packed). */
typedef struct {
    const void *data;
    size_t nbytes;
    int32_t type;
    int32_t layout;
    int64_t rows, cols;
} ll_tensor;

/* One layer's tensors, by llama.cpp's names: attn_norm, attn_q/k/v (+ .bias),
 * attn_q_norm, attn_k_norm, attn_output, post_attention_norm, ffn_norm,
 * ffn_gate, ffn_up, ffn_down, post_ffw_norm. */
typedef struct {
    ll_tensor attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, attn_post_norm;
    ll_tensor ffn_norm, ffn_gate, ffn_up, ffn_down, ffn_post_norm;
    int32_t sliding;                    /* 1: attends within the window, with the _swa rope */
} ll_layer_tensors;

/* The tensors outside the layers; output absent when tied, rope_freqs
 * (head_dim_k / 2 divisors of the rope frequencies: llama 3 scaling) optional. */
typedef struct {
    ll_tensor token_embd, output_norm, output, rope_freqs;
} ll_model_tensors;

typedef struct ll_model ll_model;
typedef struct ll_context ll_context;

/* Check every shape, type and byte length against the hyperparameters and
 * keep the pointers in *model (the weights are not copied: they must outlive
 * the model; vectors such as norms are converted to float32 once). */
int ll_model_new(const ll_hparams *hp, const ll_model_tensors *tensors,
                 const ll_layer_tensors *layers, int32_t n_layers, ll_model **model);
void ll_model_free(ll_model *model);

/* A KV cache of n_ctx positions (kv_type LL_TYPE_F16 or LL_TYPE_F32) and all
 * scratch for batches of up to n_batch tokens run by pools of up to n_threads
 * threads, allocated here once, in *ctx. The model must outlive the context. */
int ll_context_new(const ll_model *model, int32_t n_ctx, int32_t n_batch,
                   int32_t n_threads, int32_t kv_type, ll_context **ctx);
void ll_context_free(ll_context *ctx);
/* Bytes the KV cache takes. */
int64_t ll_context_kv_bytes(const ll_context *ctx);

/* Positions 0..n_past-1 are in the cache. */
int32_t ll_context_n_past(const ll_context *ctx);
/* Forget every position from n_keep on (0 <= n_keep <= n_past). */
int ll_context_truncate(ll_context *ctx, int32_t n_keep);

/* Evaluate tokens[0..n_tokens) at positions pos0.. (pos0 <= n_past: what the
 * cache held from pos0 on is replaced; n_past becomes pos0 + n_tokens).
 * Logits: the last token's (n_vocab floats) or, with all_logits, every token's
 * (n_tokens x n_vocab); logits may be NULL to skip the output projection.
 * Each logit is computed by one thread in a fixed order: the result does not
 * depend on the pool's size, nor on which batch a token came in. */
int ll_forward(ll_context *ctx, ll_pool *pool, const int32_t *tokens, int32_t n_tokens,
               int32_t pos0, float *logits, size_t logits_bytes, int32_t all_logits);

/* As ll_forward, but instead of logits write every token's final hidden state
 * (after output_norm, before the output projection: llama.cpp's embeddings),
 * n_tokens x n_embd floats, into hidden (hidden_bytes at least that). */
int ll_forward_hidden(ll_context *ctx, ll_pool *pool, const int32_t *tokens, int32_t n_tokens,
                      int32_t pos0, float *hidden, size_t hidden_bytes);

/* The cache's first n_pos positions as bytes, to save and restore a context:
 * ll_context_state_bytes() says how many (-1 if n_pos is outside 0..n_ctx);
 * _get copies them out (n_pos <= n_past) into exactly that many bytes; _set
 * copies them back into a context of the same model, n_ctx and KV type, and
 * n_past becomes n_pos. */
int64_t ll_context_state_bytes(const ll_context *ctx, int32_t n_pos);
int ll_context_state_get(ll_context *ctx, int32_t n_pos, void *dst, size_t dst_bytes);
int ll_context_state_set(ll_context *ctx, int32_t n_pos, const void *src, size_t src_bytes);

/* ---- sampling ---------------------------------------------------------------- */

/* The min(k, n) largest of logits[0..n) (k >= 1), best first, equal logits in
 * ascending index order (the lower token id wins a tie): their indices into
 * ids and values into vals, each with room for out_len entries. -inf and +inf
 * are ordinary values; a NaN logit is an LL_ERR_ARG naming its index. One pass
 * over the logits, no allocation. */
int ll_top_k(const float *logits, int64_t n, int64_t k, int32_t *ids, float *vals,
             int64_t out_len);

/* ---- tokenizer vocabulary ------------------------------------------------------ */

/* A vocabulary: token i's text is texts[offsets[i] .. offsets[i + 1]) (n + 1
 * offsets, starting at 0, none past size), its score scores[i] (scores NULL:
 * all 0). Everything is copied. LL_ERR_ARG for offsets out of order or past
 * size, or two tokens with the same text (naming both). */
typedef struct ll_vocab ll_vocab;
int ll_vocab_new(const char *texts, size_t size, const uint64_t *offsets, const float *scores,
                 int32_t n, ll_vocab **out);
void ll_vocab_free(ll_vocab *vocab);
int32_t ll_vocab_size(const ll_vocab *vocab);
/* The id of the token whose text is the n bytes of text, or -1. */
int32_t ll_vocab_find(const ll_vocab *vocab, const char *text, size_t n);
/* A byte-level BPE vocabulary's merges, "left right" each, by rank (n of
 * them, as ll_vocab_new's texts; a repeated one keeps its first rank). */
int ll_vocab_set_merges(ll_vocab *vocab, const char *texts, size_t size,
                        const uint64_t *offsets, int32_t n);
/* SentencePiece tokens of the n bytes of text, merged as llama.cpp merges
 * them (by score, leftmost first on ties); a piece that is no token goes out
 * as byte_ids[b] for each of its bytes (256 ids: -1 for none, else in the
 * vocabulary). The caller adds any space prefix and turns spaces into
 * U+2581. Up to n tokens come out: out has room for out_len >= n; *n_out
 * says how many. */
int ll_vocab_spm(const ll_vocab *vocab, const char *text, size_t n, const int32_t *byte_ids,
                 int32_t *out, size_t out_len, size_t *n_out);
/* Byte-level BPE tokens of one pre-tokenized word (its bytes already mapped to
 * GPT-2's characters), merged by rank as llama.cpp does; with whole_word, a
 * word that is a token is that token unmerged. Otherwise as ll_vocab_spm
 * (without merges, one symbol per character). */
int ll_vocab_bpe(const ll_vocab *vocab, const char *word, size_t n, int whole_word,
                 const int32_t *byte_ids, int32_t *out, size_t out_len, size_t *n_out);

/* A GGUF array of count strings at byte pos of buf (size bytes): each a
 * little-endian uint64 length, then that many bytes. *end gets the byte after
 * the last string. With joined not NULL, each string is also written there
 * after a NUL: joined_len must be exactly *end - pos - 7 * count, which a first
 * call with joined NULL tells. LL_ERR_ARG, naming the string, when one runs
 * past size. */
int ll_string_array(const void *buf, size_t size, size_t pos, uint64_t count, size_t *end,
                    char *joined, size_t joined_len);

/* ---- memory ------------------------------------------------------------------- */

/* Give the C heap's free pages back to the system. A load's temporary
 * objects (the vocabulary's strings, joined and split) leave ~20 MB of freed
 * memory that glibc would otherwise keep mapped; a no-op elsewhere. */
void ll_trim_heap(void);

/* ---- measurement -------------------------------------------------------------- */

/* Read `bytes` of buf once with every thread of the pool (each its own slice)
 * and return a checksum, so the reads cannot be optimized away: the memory
 * read bandwidth that GEMV speeds are compared with. */
uint64_t ll_mem_read(ll_pool *pool, const void *buf, size_t bytes);

#ifdef __cplusplus
}
#endif

#endif
