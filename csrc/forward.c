/* forward.c: one transformer forward pass over a batch of tokens, with a KV cache.
 *
 * Every model we run has this shape; the flags of ll_hparams switch the
 * bracketed parts on:
 *
 *   x = token_embd[token] * embd_scale
 *   for each layer:
 *       h = rmsnorm(x) * attn_norm
 *       q, k, v = h.Wq^T [+ bq], h.Wk^T [+ bk], h.Wv^T [+ bv]    split into heads
 *       [q, k = rmsnorm(q) * q_norm, rmsnorm(k) * k_norm]         per head
 *       q, k = rope(q, pos), rope(k, pos); the cache keeps k, v at pos
 *       a = softmax(q.K^T * attn_scale, mask) . V                  per query head (GQA: a
 *                                                                  group shares a K/V head)
 *       o = a.Wo^T   [o = rmsnorm(o) * attn_post_norm]
 *       x = x + o
 *       h = rmsnorm(x) * ffn_norm
 *       f = (act(h.Wgate^T) * h.Wup^T).Wdown^T   [f = rmsnorm(f) * ffn_post_norm]
 *       x = x + f
 *   logits = (rmsnorm(x) * output_norm).Wout^T   [c * tanh(logits / c)]
 *
 * The mask is causal; a sliding layer also hides keys n_swa or more positions back.
 *
 * Where the time goes: the matmuls, that is streaming the weights from
 * memory (ll_matmul reads each weight row once per batch, whatever the batch
 * size); then attention, which grows with the context: per query head, one
 * dot over head_dim per visible position, and one dot over the visible
 * positions per value dim. Norms, rope and activations are O(n_embd) per
 * token and run on the calling thread.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "matmul.h"
#include "quants.h"
#include "threads.h"

/* Bounds that keep every size product below 2^62 */
enum { MAX_DIM = 1 << 22, MAX_LAYERS = 4096, MAX_CTX = 1 << 24, MAX_THREADS = 1024 };

/* One layer: matrices point into the caller's weights (the mapped file);
 * vectors are float32 copies owned by the model, NULL where absent. */
typedef struct {
    ll_tensor wq, wk, wv, wo, ffn_gate, ffn_up, ffn_down;
    const float *attn_norm, *bq, *bk, *bv, *q_norm, *k_norm, *attn_post_norm;
    const float *ffn_norm, *ffn_post_norm;
    int sliding;
} layer;

enum { ROPE_GLOBAL = 0, ROPE_SLIDING = 1 };

struct ll_model {
    ll_hparams hp;
    ll_tensor token_embd, output;   /* output is token_embd when tied */
    const float *output_norm;
    layer *layers;
    double *freq[2];                /* [ROPE_GLOBAL / ROPE_SLIDING][head_dim_k / 2]:
                                       each pair's angle per position */
    float *vectors;                 /* the one block holding every float vector */
};

struct ll_context {
    const ll_model *m;
    int32_t n_ctx, n_batch, n_threads, kv_type;
    int32_t n_past;
    /* F16 (Python's default, as llama.cpp's) halves the cache's memory and the
     * bytes attention streams per position, for ~3 significant digits per
     * value (3e-5 of the logits on the test models); F32 keeps them exact. */
    size_t kv_elt;                  /* bytes per cached value */
    uint8_t *k_cache;               /* [layer][pos][n_head_kv * head_dim_k] */
    uint8_t *v_cache;               /* [layer][n_head_kv * head_dim_v][n_ctx]: transposed, so each
                                       output dim is one dot over the positions */
    float *x;                       /* [n_batch][n_embd] the residual stream */
    float *xn;                      /* [n_batch][n_embd] a sublayer's normed input */
    float *q, *k, *v;               /* [n_batch][heads * head_dim] */
    float *att;                     /* [n_batch][n_head * head_dim_v] attention output */
    float *out;                     /* [n_batch][n_embd] output of wo, ffn_down */
    float *gate, *up;               /* [n_batch][n_ff] */
    float *scores;                  /* [n_threads][heads per KV head][n_ctx] attention weights */
    float *rope;                    /* [2][n_batch][head_dim_k / 2][cos, sin] */
    void *work;                     /* activations quantized by ll_matmul */
    size_t work_bytes;
};

/* ---- checking what the caller hands over ------------------------------------------- */

static void tensor_name(char *buf, size_t size, int l, const char *what) {
    if (l < 0) snprintf(buf, size, "%s", what);
    else snprintf(buf, size, "blk.%d.%s", l, what);
}

static int valid_type(int type) {
    return type >= 0 && type < LL_TYPE_COUNT && ll_traits[type].name;
}

/* Rows are GGUF's layout; packed weights need a packed kernel for their
 * type and whole groups of 8 rows, and only matrices that are multiplied
 * with (never token_embd, whose rows are looked up) may be packed. */
static int check_layout(const ll_tensor *t, const char *name, int may_pack) {
    if (t->layout == LL_LAYOUT_ROWS) return LL_OK;
    if (t->layout != LL_LAYOUT_PACKED8)
        return ll_error(LL_ERR_ARG, "%s has an unknown layout %d", name, t->layout);
    if (!may_pack) return ll_error(LL_ERR_ARG, "%s cannot be packed", name);
    if (!ll_active->gemm8[t->type])
        return ll_error(LL_ERR_ARG, "%s: %s has no packed layout", name, ll_traits[t->type].name);
    if (t->rows % 8)
        return ll_error(LL_ERR_ARG, "%s is packed, but its %lld rows are not groups of 8", name,
                        (long long)t->rows);
    return LL_OK;
}

static int check_bytes(const ll_tensor *t, const char *name, int64_t rows, int64_t cols,
                       int may_pack) {
    int rc = check_layout(t, name, may_pack);
    if (rc) return rc;
    if (t->rows != rows || t->cols != cols)
        return ll_error(LL_ERR_ARG, "%s is %lld x %lld, the hyperparameters need %lld x %lld",
                        name, (long long)t->rows, (long long)t->cols, (long long)rows,
                        (long long)cols);
    const ll_type_traits *tr = &ll_traits[t->type];
    if (cols % tr->blck_size)
        return ll_error(LL_ERR_ARG, "%s: row length %lld is not a multiple of %s's block size %lld",
                        name, (long long)cols, tr->name, (long long)tr->blck_size);
    int64_t need = rows * ll_row_bytes(t->type, cols);   /* rows, cols: bounded sizes */
    if ((uint64_t)need != (uint64_t)t->nbytes)
        return ll_error(LL_ERR_ARG, "%s holds %zu bytes, %lld x %lld %s take %lld", name,
                        t->nbytes, (long long)rows, (long long)cols, tr->name, (long long)need);
    return LL_OK;
}

/* A weight matrix: present, of a type we multiply with, rows x cols, exact
 * bytes; packed only where may_pack. */
static int check_matrix(const ll_tensor *t, int l, const char *what, int64_t rows, int64_t cols,
                        int may_pack) {
    char name[64];
    tensor_name(name, sizeof name, l, what);
    if (!t->data) return ll_error(LL_ERR_ARG, "%s is missing", name);
    if (!valid_type(t->type) || !ll_traits[t->type].vec_dot)
        return ll_error(LL_ERR_UNSUPPORTED, "%s has type %s, which llamalite cannot multiply with",
                        name, valid_type(t->type) ? ll_traits[t->type].name : "(unknown)");
    return check_bytes(t, name, rows, cols, may_pack);
}

/* A vector: absent unless `used`; then present, convertible, 1 x n, exact bytes. */
static int check_vector(const ll_tensor *t, int l, const char *what, int64_t n, int used) {
    char name[64];
    tensor_name(name, sizeof name, l, what);
    if (!used)
        return t->data ? ll_error(LL_ERR_ARG, "%s is given, but the hyperparameters do not use it",
                                  name) : LL_OK;
    if (!t->data) return ll_error(LL_ERR_ARG, "%s is missing", name);
    if (!valid_type(t->type))
        return ll_error(LL_ERR_UNSUPPORTED, "%s has type %d, which llamalite does not read",
                        name, t->type);
    return check_bytes(t, name, 1, n, 0);
}

static int finite_positive(float v) { return isfinite(v) && v > 0.0f; }

static int check_hparams(const ll_hparams *hp, int32_t n_layers) {
    if (hp->n_layer < 1 || hp->n_layer > MAX_LAYERS || n_layers != hp->n_layer)
        return ll_error(LL_ERR_ARG, "n_layer %d with %d layers given (1..%d)", hp->n_layer,
                        n_layers, MAX_LAYERS);
    const int32_t dims[] = { hp->n_embd, hp->n_ff, hp->n_vocab, hp->n_head, hp->n_head_kv,
                             hp->head_dim_k, hp->head_dim_v };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i] < 1 || dims[i] > MAX_DIM)
            return ll_error(LL_ERR_ARG, "a model size is %d, outside 1..%d "
                            "(n_embd %d, n_ff %d, n_vocab %d, heads %d/%d, head dims %d/%d)",
                            dims[i], MAX_DIM, hp->n_embd, hp->n_ff, hp->n_vocab, hp->n_head,
                            hp->n_head_kv, hp->head_dim_k, hp->head_dim_v);
    if ((int64_t)hp->n_head * hp->head_dim_k > MAX_DIM ||
        (int64_t)hp->n_head * hp->head_dim_v > MAX_DIM)
        return ll_error(LL_ERR_ARG, "%d heads of %d/%d dims exceed %d", hp->n_head,
                        hp->head_dim_k, hp->head_dim_v, MAX_DIM);
    if (hp->n_head % hp->n_head_kv)
        return ll_error(LL_ERR_ARG, "n_head %d is not a multiple of n_head_kv %d", hp->n_head,
                        hp->n_head_kv);
    if (hp->head_dim_k % 2)
        return ll_error(LL_ERR_ARG, "head_dim_k %d is odd: rope turns pairs", hp->head_dim_k);
    if (!isfinite(hp->norm_eps) || hp->norm_eps < 0.0f)
        return ll_error(LL_ERR_ARG, "norm_eps %g must be finite and >= 0", hp->norm_eps);
    if (hp->rope_style != LL_ROPE_NORMAL && hp->rope_style != LL_ROPE_NEOX)
        return ll_error(LL_ERR_ARG, "unknown rope style %d", hp->rope_style);
    if (hp->activation != LL_ACT_SILU && hp->activation != LL_ACT_GELU_TANH)
        return ll_error(LL_ERR_ARG, "unknown activation %d", hp->activation);
    if (!finite_positive(hp->rope_base) || !finite_positive(hp->rope_scale))
        return ll_error(LL_ERR_ARG, "rope base %g and scale %g must be finite and > 0",
                        hp->rope_base, hp->rope_scale);
    if (!isfinite(hp->embd_scale) || !finite_positive(hp->attn_scale))
        return ll_error(LL_ERR_ARG, "embd_scale %g must be finite, attn_scale %g finite and > 0",
                        hp->embd_scale, hp->attn_scale);
    if (!isfinite(hp->logit_softcap) || hp->logit_softcap < 0.0f)
        return ll_error(LL_ERR_ARG, "logit_softcap %g must be finite and >= 0", hp->logit_softcap);
    if (hp->n_swa < 0)
        return ll_error(LL_ERR_ARG, "sliding window %d is negative", hp->n_swa);
    const int32_t flags[] = { hp->qkv_bias, hp->qk_norm, hp->post_norms, hp->tied_output };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (flags[i] != 0 && flags[i] != 1)
            return ll_error(LL_ERR_ARG, "a flag is %d, not 0 or 1", flags[i]);
    return LL_OK;
}

static int check_sliding(const ll_hparams *hp, const ll_layer_tensors *layers) {
    for (int l = 0; l < hp->n_layer; l++) {
        if (layers[l].sliding != 0 && layers[l].sliding != 1)
            return ll_error(LL_ERR_ARG, "layer %d: sliding is %d, not 0 or 1", l,
                            layers[l].sliding);
        if (!layers[l].sliding) continue;
        if (hp->n_swa < 1)
            return ll_error(LL_ERR_ARG, "layer %d slides, but the window n_swa is %d", l,
                            hp->n_swa);
        if (!finite_positive(hp->rope_base_swa) || !finite_positive(hp->rope_scale_swa))
            return ll_error(LL_ERR_ARG, "sliding rope base %g and scale %g must be finite and > 0",
                            hp->rope_base_swa, hp->rope_scale_swa);
    }
    return LL_OK;
}

static int check_layer(const ll_hparams *hp, const ll_layer_tensors *t, int l) {
    const int64_t d = hp->n_embd, dq = (int64_t)hp->n_head * hp->head_dim_k;
    const int64_t dk = (int64_t)hp->n_head_kv * hp->head_dim_k;
    const int64_t dv = (int64_t)hp->n_head_kv * hp->head_dim_v;
    const int64_t da = (int64_t)hp->n_head * hp->head_dim_v;
    int rc;
    if ((rc = check_vector(&t->attn_norm, l, "attn_norm", d, 1)) ||
        (rc = check_matrix(&t->wq, l, "attn_q", dq, d, 1)) ||
        (rc = check_matrix(&t->wk, l, "attn_k", dk, d, 1)) ||
        (rc = check_matrix(&t->wv, l, "attn_v", dv, d, 1)) ||
        (rc = check_vector(&t->bq, l, "attn_q.bias", dq, hp->qkv_bias)) ||
        (rc = check_vector(&t->bk, l, "attn_k.bias", dk, hp->qkv_bias)) ||
        (rc = check_vector(&t->bv, l, "attn_v.bias", dv, hp->qkv_bias)) ||
        (rc = check_vector(&t->q_norm, l, "attn_q_norm", hp->head_dim_k, hp->qk_norm)) ||
        (rc = check_vector(&t->k_norm, l, "attn_k_norm", hp->head_dim_k, hp->qk_norm)) ||
        (rc = check_matrix(&t->wo, l, "attn_output", d, da, 1)) ||
        (rc = check_vector(&t->attn_post_norm, l, "post_attention_norm", d, hp->post_norms)) ||
        (rc = check_vector(&t->ffn_norm, l, "ffn_norm", d, 1)) ||
        (rc = check_matrix(&t->ffn_gate, l, "ffn_gate", hp->n_ff, d, 1)) ||
        (rc = check_matrix(&t->ffn_up, l, "ffn_up", hp->n_ff, d, 1)) ||
        (rc = check_matrix(&t->ffn_down, l, "ffn_down", d, hp->n_ff, 1)) ||
        (rc = check_vector(&t->ffn_post_norm, l, "post_ffw_norm", d, hp->post_norms)))
        return rc;
    return LL_OK;
}

static int check_globals(const ll_hparams *hp, const ll_model_tensors *t) {
    int rc;
    const ll_tensor *e = &t->token_embd;
    if (hp->tied_output) {
        if ((rc = check_matrix(e, -1, "token_embd", hp->n_vocab, hp->n_embd, 0))) return rc;
    } else {
        if (!e->data) return ll_error(LL_ERR_ARG, "token_embd is missing");
        if (!valid_type(e->type))
            return ll_error(LL_ERR_UNSUPPORTED, "token_embd has type %d, which llamalite does "
                            "not read", e->type);
        if ((rc = check_bytes(e, "token_embd", hp->n_vocab, hp->n_embd, 0)) ||
            (rc = check_matrix(&t->output, -1, "output", hp->n_vocab, hp->n_embd, 1)))
            return rc;
    }
    if (hp->tied_output && t->output.data)
        return ll_error(LL_ERR_ARG, "output is given, but the output is tied to token_embd");
    if ((rc = check_vector(&t->output_norm, -1, "output_norm", hp->n_embd, 1)) ||
        (rc = check_vector(&t->rope_freqs, -1, "rope_freqs", hp->head_dim_k / 2,
                           t->rope_freqs.data != NULL)))
        return rc;
    return LL_OK;
}

/* ---- the model --------------------------------------------------------------------- */

/* Float copy of a vector tensor (NULL stays NULL), taken from the block at *next. */
static const float *take_vector(const ll_tensor *t, float **next) {
    if (!t->data) return NULL;
    float *v = *next;
    ll_traits[t->type].to_float(t->data, v, t->cols);
    *next += t->cols;
    return v;
}

static int64_t vector_floats(const ll_model_tensors *t, const ll_layer_tensors *layers,
                             int n_layer) {
    int64_t n = t->output_norm.cols + (t->rope_freqs.data ? t->rope_freqs.cols : 0);
    for (int l = 0; l < n_layer; l++) {
        const ll_tensor *v[] = { &layers[l].attn_norm, &layers[l].bq, &layers[l].bk,
                                 &layers[l].bv, &layers[l].q_norm, &layers[l].k_norm,
                                 &layers[l].attn_post_norm, &layers[l].ffn_norm,
                                 &layers[l].ffn_post_norm };
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
            if (v[i]->data) n += v[i]->cols;
    }
    return n;
}

/* Angle per position of each rope pair: scale * base^(-2i/d) / factor_i, in double
 * so that long contexts keep their precision. */
static void rope_freqs(double *f, int half, float base, float scale, const float *factors) {
    for (int i = 0; i < half; i++)
        f[i] = scale * pow(base, -(double)i / half) / (factors ? factors[i] : 1.0f);
}

void ll_model_free(ll_model *m) {
    if (!m) return;
    free(m->layers);
    free(m->vectors);
    free(m->freq[0]);
    free(m->freq[1]);
    free(m);
}

int ll_model_new(const ll_hparams *hp, const ll_model_tensors *t,
                 const ll_layer_tensors *layers, int32_t n_layers, ll_model **out) {
    if (!hp || !t || !layers || !out)
        return ll_error(LL_ERR_ARG, "ll_model_new: hyperparameters, tensors, layers and out "
                        "are required");
    *out = NULL;
    int rc;
    if ((rc = check_hparams(hp, n_layers)) || (rc = check_sliding(hp, layers)) ||
        (rc = check_globals(hp, t)))
        return rc;
    for (int l = 0; l < hp->n_layer; l++)
        if ((rc = check_layer(hp, &layers[l], l))) return rc;

    ll_model *m = calloc(1, sizeof *m);
    int half = hp->head_dim_k / 2;
    if (m) {
        m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
        m->vectors = malloc((size_t)vector_floats(t, layers, hp->n_layer) * sizeof(float));
        m->freq[0] = malloc((size_t)half * sizeof(double));
        m->freq[1] = malloc((size_t)half * sizeof(double));
    }
    if (!m || !m->layers || !m->vectors || !m->freq[0] || !m->freq[1]) {
        ll_model_free(m);
        return ll_error(LL_ERR_NOMEM, "out of memory for the model's description");
    }
    m->hp = *hp;
    m->token_embd = t->token_embd;
    m->output = hp->tied_output ? t->token_embd : t->output;
    float *next = m->vectors;
    m->output_norm = take_vector(&t->output_norm, &next);
    const float *factors = take_vector(&t->rope_freqs, &next);
    for (int i = 0; factors && i < half; i++)
        if (!finite_positive(factors[i])) {
            ll_model_free(m);
            return ll_error(LL_ERR_ARG, "rope_freqs[%d] is %g; rope frequency factors must be > 0",
                            i, factors[i]);
        }
    rope_freqs(m->freq[ROPE_GLOBAL], half, hp->rope_base, hp->rope_scale, factors);
    rope_freqs(m->freq[ROPE_SLIDING], half, hp->rope_base_swa, hp->rope_scale_swa, NULL);
    for (int l = 0; l < hp->n_layer; l++) {
        const ll_layer_tensors *s = &layers[l];
        layer *L = &m->layers[l];
        L->wq = s->wq; L->wk = s->wk; L->wv = s->wv; L->wo = s->wo;
        L->ffn_gate = s->ffn_gate; L->ffn_up = s->ffn_up; L->ffn_down = s->ffn_down;
        L->attn_norm = take_vector(&s->attn_norm, &next);
        L->bq = take_vector(&s->bq, &next);
        L->bk = take_vector(&s->bk, &next);
        L->bv = take_vector(&s->bv, &next);
        L->q_norm = take_vector(&s->q_norm, &next);
        L->k_norm = take_vector(&s->k_norm, &next);
        L->attn_post_norm = take_vector(&s->attn_post_norm, &next);
        L->ffn_norm = take_vector(&s->ffn_norm, &next);
        L->ffn_post_norm = take_vector(&s->ffn_post_norm, &next);
        L->sliding = s->sliding;
    }
    *out = m;
    return LL_OK;
}

/* ---- the context: KV cache and scratch ----------------------------------------------- */

void ll_context_free(ll_context *c) {
    if (!c) return;
    void *bufs[] = { c->k_cache, c->v_cache, c->x, c->xn, c->q, c->k, c->v, c->att, c->out,
                     c->gate, c->up, c->scores, c->rope, c->work };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(c);
}

/* Scratch bytes a group of weights that read the same input needs (-1 if invalid). */
static int64_t group_work(const ll_tensor *const *mats, int count, int32_t n_batch) {
    int types[LL_MATMUL_MAX_OUTS], layouts[LL_MATMUL_MAX_OUTS];
    for (int i = 0; i < count; i++) {
        types[i] = mats[i]->type;
        layouts[i] = mats[i]->layout;
    }
    return ll_matmul_many_work_size(types, layouts, count, mats[0]->cols, n_batch);
}

/* Scratch bytes for the largest matmul input of a batch: Q/K/V and gate/up
 * each share one input, the rest read their own. */
static int64_t work_size(const ll_model *m, int32_t n_batch) {
    const ll_tensor *out = &m->output;
    int64_t most = group_work(&out, 1, n_batch);
    for (int l = 0; l < m->hp.n_layer && most >= 0; l++) {
        const layer *L = &m->layers[l];
        const ll_tensor *qkv[] = { &L->wq, &L->wk, &L->wv }, *gate_up[] = { &L->ffn_gate, &L->ffn_up };
        const ll_tensor *wo = &L->wo, *down = &L->ffn_down;
        const int64_t w[] = { group_work(qkv, 3, n_batch), group_work(gate_up, 2, n_batch),
                              group_work(&wo, 1, n_batch), group_work(&down, 1, n_batch) };
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
            most = w[i] < 0 ? -1 : w[i] > most ? w[i] : most;
    }
    return most;
}

int ll_context_new(const ll_model *m, int32_t n_ctx, int32_t n_batch, int32_t n_threads,
                   int32_t kv_type, ll_context **out) {
    if (!m || !out) return ll_error(LL_ERR_ARG, "ll_context_new: no model or no out");
    *out = NULL;
    if (n_ctx < 1 || n_ctx > MAX_CTX || n_batch < 1 || n_batch > n_ctx)
        return ll_error(LL_ERR_ARG, "n_ctx %d must be in 1..%d and n_batch %d in 1..n_ctx",
                        n_ctx, MAX_CTX, n_batch);
    if (n_threads < 1 || n_threads > MAX_THREADS)
        return ll_error(LL_ERR_ARG, "n_threads %d is outside 1..%d", n_threads, MAX_THREADS);
    if (kv_type != LL_TYPE_F16 && kv_type != LL_TYPE_F32)
        return ll_error(LL_ERR_UNSUPPORTED, "KV cache type %d: only F16 and F32 are supported",
                        kv_type);
    ll_context *c = calloc(1, sizeof *c);
    if (!c) return ll_error(LL_ERR_NOMEM, "out of memory for the context");
    const ll_hparams *hp = &m->hp;
    c->m = m;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    c->n_threads = n_threads;
    c->kv_type = kv_type;
    c->kv_elt = (size_t)ll_traits[kv_type].type_size;
    const size_t nb = (size_t)n_batch, f = sizeof(float);
    const size_t dq = (size_t)hp->n_head * hp->head_dim_k, da = (size_t)hp->n_head * hp->head_dim_v;
    const size_t dk = (size_t)hp->n_head_kv * hp->head_dim_k;
    const size_t dv = (size_t)hp->n_head_kv * hp->head_dim_v;
    const size_t per_layer = (size_t)n_ctx * c->kv_elt;
    c->k_cache = calloc((size_t)hp->n_layer * dk, per_layer);
    c->v_cache = calloc((size_t)hp->n_layer * dv, per_layer);
    c->x = malloc(nb * hp->n_embd * f);
    c->xn = malloc(nb * hp->n_embd * f);
    c->q = malloc(nb * dq * f);
    c->k = malloc(nb * dk * f);
    c->v = malloc(nb * dv * f);
    c->att = malloc(nb * da * f);
    c->out = malloc(nb * hp->n_embd * f);
    c->gate = malloc(nb * hp->n_ff * f);
    c->up = malloc(nb * hp->n_ff * f);
    c->scores = malloc((size_t)n_threads * (hp->n_head / hp->n_head_kv) * n_ctx * f);
    c->rope = malloc(2 * nb * hp->head_dim_k * f);
    int64_t work = work_size(m, n_batch);
    c->work_bytes = (size_t)(work > 0 ? work : 1);
    c->work = malloc(c->work_bytes);
    if (!c->k_cache || !c->v_cache || !c->x || !c->xn || !c->q || !c->k || !c->v || !c->att ||
        !c->out || !c->gate || !c->up || !c->scores || !c->rope || !c->work || work < 0) {
        ll_context_free(c);
        return ll_error(LL_ERR_NOMEM, "out of memory for a context of %d positions (KV cache "
                        "%llu bytes)", n_ctx,
                        (unsigned long long)(hp->n_layer * (dk + dv) * per_layer));
    }
    *out = c;
    return LL_OK;
}

int64_t ll_context_kv_bytes(const ll_context *c) {
    const ll_hparams *hp = &c->m->hp;
    return (int64_t)hp->n_layer * hp->n_head_kv * (hp->head_dim_k + hp->head_dim_v) *
           c->n_ctx * (int64_t)c->kv_elt;
}

int32_t ll_context_n_past(const ll_context *c) { return c->n_past; }

int ll_context_truncate(ll_context *c, int32_t n_keep) {
    if (n_keep < 0 || n_keep > c->n_past)
        return ll_error(LL_ERR_ARG, "cannot keep %d positions: the cache holds %d", n_keep,
                        c->n_past);
    c->n_past = n_keep;
    return LL_OK;
}

/* ---- the pieces of a layer ------------------------------------------------------------ */

/* out[r] = in[r] / sqrt(mean(in[r]^2) + eps) * w, for n rows of d (in place allowed) */
static void rmsnorm_rows(float *out, const float *in, const float *w, int64_t n, int64_t d,
                         float eps) {
    for (int64_t r = 0; r < n; r++) {
        const float *x = in + r * d;
        float *y = out + r * d;
        double ss = 0.0;
        for (int64_t i = 0; i < d; i++) ss += (double)x[i] * x[i];
        const float scale = 1.0f / sqrtf((float)(ss / d) + eps);
        for (int64_t i = 0; i < d; i++) y[i] = x[i] * scale * w[i];
    }
}

static void add_rows(float *x, const float *b, int64_t n, int64_t d) {
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < d; i++) x[r * d + i] += b[i];
}

static void add(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

/* Bytes of a [n_batch][width] scratch buffer: what every x and y below holds. */
static size_t scratch_bytes(const ll_context *c, int64_t width) {
    return (size_t)c->n_batch * (size_t)width * sizeof(float);
}

/* The output slot of a shared-input matmul: y = x.W^T into a scratch buffer. */
static ll_matmul_out into(const ll_context *c, const ll_tensor *w, float *y) {
    return (ll_matmul_out){ w->type, w->layout, w->data, w->nbytes, w->rows, y,
                            scratch_bytes(c, w->rows) };
}

/* Every y = x.W^T of `outs`, for n rows of x (a scratch buffer of cols floats). */
static int matmul_shared(ll_context *c, ll_pool *pool, const ll_matmul_out *outs, int n_outs,
                         int64_t cols, const float *x, int32_t n) {
    return ll_matmul_many(pool, outs, n_outs, cols, x, scratch_bytes(c, cols), n, c->work,
                          c->work_bytes);
}

/* y = x.W^T for n rows; x and y are scratch buffers (or y the caller's logits,
 * of y_bytes) */
static int matmul(ll_context *c, ll_pool *pool, const ll_tensor *w, const float *x, int32_t n,
                  float *y, size_t y_bytes) {
    return ll_matmul(pool, w->type, w->layout, w->data, w->nbytes, w->rows, w->cols, x,
                     scratch_bytes(c, w->cols), n, y, y_bytes, c->work, c->work_bytes);
}

/* cos and sin of every pair's angle at positions pos0..pos0+n-1, for both kinds of layer */
static void rope_tables(ll_context *c, int32_t pos0, int32_t n) {
    const int half = c->m->hp.head_dim_k / 2;
    for (int kind = ROPE_GLOBAL; kind <= ROPE_SLIDING; kind++) {
        const double *freq = c->m->freq[kind];
        float *cs = c->rope + (size_t)kind * c->n_batch * 2 * half;
        for (int32_t t = 0; t < n; t++)
            for (int i = 0; i < half; i++) {
                const double theta = (double)(pos0 + t) * freq[i];
                const size_t at = ((size_t)t * half + i) * 2;
                cs[at] = (float)cos(theta);
                cs[at + 1] = (float)sin(theta);
            }
    }
}

/* Rotate each head of n tokens by its token's angles: NORMAL turns (x[2i], x[2i+1]),
 * NEOX turns (x[i], x[i + d/2]). */
static void rope_rows(float *v, int32_t n, int heads, int d, int style, const float *table) {
    const int half = d / 2;
    const int stride = style == LL_ROPE_NEOX ? 1 : 2, other = style == LL_ROPE_NEOX ? half : 1;
    for (int32_t t = 0; t < n; t++) {
        const float *cs = table + (size_t)t * d;
        for (int h = 0; h < heads; h++) {
            float *x = v + ((size_t)t * heads + h) * d;
            for (int i = 0; i < half; i++) {
                float *a = x + i * stride, *b = a + other;
                const float x0 = *a, x1 = *b, co = cs[2 * i], si = cs[2 * i + 1];
                *a = x0 * co - x1 * si;
                *b = x0 * si + x1 * co;
            }
        }
    }
}

static uint8_t *k_at(const ll_context *c, int l, int32_t pos, int head) {
    const ll_hparams *hp = &c->m->hp;
    const size_t row = ((size_t)l * c->n_ctx + pos) * hp->n_head_kv + head;
    return c->k_cache + row * hp->head_dim_k * c->kv_elt;
}

/* row `dim` (of n_head_kv * head_dim_v) of layer l's transposed V, from position pos */
static uint8_t *v_at(const ll_context *c, int l, int64_t dim, int32_t pos) {
    const ll_hparams *hp = &c->m->hp;
    const size_t dv = (size_t)hp->n_head_kv * hp->head_dim_v;
    return c->v_cache + (((size_t)l * dv + dim) * c->n_ctx + pos) * c->kv_elt;
}

/* Cache the keys and values of the batch's tokens t0..t1-1 at positions pos0 + t */
static void store_kv(ll_context *c, int l, int32_t pos0, int32_t t0, int32_t t1) {
    const ll_hparams *hp = &c->m->hp;
    const int64_t dk = (int64_t)hp->n_head_kv * hp->head_dim_k;
    const int64_t dv = (int64_t)hp->n_head_kv * hp->head_dim_v;
    const ll_from_float_fn put = ll_traits[c->kv_type].from_float;
    for (int32_t t = t0; t < t1; t++) {
        put(c->k + t * dk, k_at(c, l, pos0 + t, 0), dk);
        for (int64_t i = 0; i < dv; i++) put(c->v + t * dv + i, v_at(c, l, i, pos0 + t), 1);
    }
}

typedef struct {
    ll_context *c;
    int l;
    int32_t pos0, n;
} attend_task;

/* The query heads that share key/value head kh, for one token: scores
 * against every visible key, softmax, then the weighted sums of the values
 * (each output dim a dot over positions). Each key and value row is read
 * once for all those heads (from L2 for a long prompt: the reads, not the
 * multiply-adds, are what attention costs), in fours by dot_rows. s holds
 * n_ctx scores per head. */
static void attend_group(const attend_task *t, int32_t i, int kh, float *s) {
    const ll_context *c = t->c;
    const ll_hparams *hp = &c->m->hp;
    const int32_t pos = t->pos0 + i;
    const int32_t first = c->m->layers[t->l].sliding && pos >= hp->n_swa ? pos - hp->n_swa + 1 : 0;
    const int32_t n_keys = pos - first + 1;
    const int group = hp->n_head / hp->n_head_kv, h0 = kh * group;
    const ll_dot_rows_fn dot = ll_active->dot_rows[c->kv_type];
    const float *q = c->q + ((size_t)i * hp->n_head + h0) * hp->head_dim_k;
    const uint8_t *k = k_at(c, t->l, first, kh);
    const size_t k_stride = (size_t)hp->n_head_kv * hp->head_dim_k * c->kv_elt;
    const size_t q_stride = (size_t)hp->head_dim_k * sizeof(float);
    for (int32_t j = 0; j < n_keys; j++)
        for (int g = 0; g < group; g += 4)
            dot(hp->head_dim_k, &s[(size_t)g * c->n_ctx + j], c->n_ctx, k + j * k_stride,
                q + (size_t)g * hp->head_dim_k, q_stride, group - g < 4 ? group - g : 4);
    for (int g = 0; g < group; g++) {
        float *sg = s + (size_t)g * c->n_ctx, max = -INFINITY, sum = 0.0f;
        for (int32_t j = 0; j < n_keys; j++) {
            sg[j] *= hp->attn_scale;
            if (sg[j] > max) max = sg[j];
        }
        for (int32_t j = 0; j < n_keys; j++) {
            sg[j] = expf(sg[j] - max);
            sum += sg[j];
        }
        const float inv = 1.0f / sum;
        for (int32_t j = 0; j < n_keys; j++) sg[j] *= inv;
    }
    float *out = c->att + ((size_t)i * hp->n_head + h0) * hp->head_dim_v;
    for (int d = 0; d < hp->head_dim_v; d++)
        for (int g = 0; g < group; g += 4)
            dot(n_keys, &out[(size_t)g * hp->head_dim_v + d], hp->head_dim_v,
                v_at(c, t->l, (int64_t)kh * hp->head_dim_v + d, first), s + (size_t)g * c->n_ctx,
                (size_t)c->n_ctx * sizeof(float), group - g < 4 ? group - g : 4);
}

/* Threads take (token, key/value head) pairs in turn; each pair is one
 * thread's, start to end. */
static void attend_run(void *arg, int ith, int nth) {
    const attend_task *t = arg;
    const ll_hparams *hp = &t->c->m->hp;
    const int n_kv = hp->n_head_kv;
    float *scores = t->c->scores + (size_t)ith * (hp->n_head / n_kv) * t->c->n_ctx;
    for (int64_t it = ith; it < (int64_t)t->n * n_kv; it += nth)
        attend_group(t, (int32_t)(it / n_kv), (int)(it % n_kv), scores);
}

/* ---- the per-token steps between the matmuls -------------------------------------------- */

/* A step over tokens t0..t1-1 of the batch (at positions pos0 + t) of layer l. */
typedef void (*token_step)(ll_context *c, int l, int32_t pos0, int32_t t0, int32_t t1);

typedef struct {
    ll_context *c;
    int l;
    int32_t pos0, n;
    token_step step;
} token_task;

static void token_run(void *arg, int ith, int nth) {
    const token_task *t = arg;
    const int32_t per = (t->n + nth - 1) / nth, t0 = per * ith;
    const int32_t t1 = t0 + per < t->n ? t0 + per : t->n;
    if (t0 < t1) t->step(t->c, t->l, t->pos0, t0, t1);
}

/* Below this many tokens a step runs on the calling thread: waking the pool
 * costs more than a generated token's norms and activations. */
#define TOKENS_PER_WAKE 8

/* `step` over the batch's n tokens, split among the pool's threads for a
 * prompt. Each token is one thread's, so the results do not depend on the split. */
static void for_tokens(ll_context *c, ll_pool *pool, int l, int32_t pos0, int32_t n,
                       token_step step) {
    if (n < TOKENS_PER_WAKE) {
        step(c, l, pos0, 0, n);
        return;
    }
    token_task task = { c, l, pos0, n, step };
    ll_pool_run(pool, token_run, &task);
}

/* x -> xn, the attention's input norm */
static void attn_norm_step(ll_context *c, int l, int32_t pos0, int32_t t0, int32_t t1) {
    (void)pos0;
    const ll_hparams *hp = &c->m->hp;
    const int64_t d = hp->n_embd;
    rmsnorm_rows(c->xn + t0 * d, c->x + t0 * d, c->m->layers[l].attn_norm, t1 - t0, d,
                 hp->norm_eps);
}

/* q, k, v as the attention reads them: biases, q/k norms, rope; k and v cached */
static void qkv_step(ll_context *c, int l, int32_t pos0, int32_t t0, int32_t t1) {
    const ll_hparams *hp = &c->m->hp;
    const layer *L = &c->m->layers[l];
    const int64_t dq = (int64_t)hp->n_head * hp->head_dim_k;
    const int64_t dk = (int64_t)hp->n_head_kv * hp->head_dim_k;
    const int64_t dv = (int64_t)hp->n_head_kv * hp->head_dim_v;
    const int32_t n = t1 - t0;
    float *q = c->q + t0 * dq, *k = c->k + t0 * dk;
    if (hp->qkv_bias) {
        add_rows(q, L->bq, n, dq);
        add_rows(k, L->bk, n, dk);
        add_rows(c->v + t0 * dv, L->bv, n, dv);
    }
    if (hp->qk_norm) {
        rmsnorm_rows(q, q, L->q_norm, (int64_t)n * hp->n_head, hp->head_dim_k, hp->norm_eps);
        rmsnorm_rows(k, k, L->k_norm, (int64_t)n * hp->n_head_kv, hp->head_dim_k, hp->norm_eps);
    }
    const int kind = L->sliding ? ROPE_SLIDING : ROPE_GLOBAL;
    const float *table = c->rope + ((size_t)kind * c->n_batch + t0) * hp->head_dim_k;
    rope_rows(q, n, hp->n_head, hp->head_dim_k, hp->rope_style, table);
    rope_rows(k, n, hp->n_head_kv, hp->head_dim_k, hp->rope_style, table);
    store_kv(c, l, pos0, t0, t1);
}

/* x += the attention's output (post-normed where the model does), then x ->
 * xn, the feed-forward's input norm */
static void attn_out_step(ll_context *c, int l, int32_t pos0, int32_t t0, int32_t t1) {
    (void)pos0;
    const ll_hparams *hp = &c->m->hp;
    const layer *L = &c->m->layers[l];
    const int64_t d = hp->n_embd, n = t1 - t0;
    float *out = c->out + t0 * d, *x = c->x + t0 * d;
    if (hp->post_norms) rmsnorm_rows(out, out, L->attn_post_norm, n, d, hp->norm_eps);
    add(x, out, n * d);
    rmsnorm_rows(c->xn + t0 * d, x, L->ffn_norm, n, d, hp->norm_eps);
}

/* gate = act(gate) * up */
static void activation_step(ll_context *c, int l, int32_t pos0, int32_t t0, int32_t t1) {
    (void)l, (void)pos0;
    const ll_hparams *hp = &c->m->hp;
    const int64_t from = t0 * hp->n_ff, to = t1 * hp->n_ff;
    ll_active->glu[hp->activation](c->gate + from, c->up + from, to - from);
}

/* x += the feed-forward's output (post-normed where the model does) */
static void ffn_out_step(ll_context *c, int l, int32_t pos0, int32_t t0, int32_t t1) {
    (void)pos0;
    const ll_hparams *hp = &c->m->hp;
    const int64_t d = hp->n_embd, n = t1 - t0;
    float *out = c->out + t0 * d;
    if (hp->post_norms) rmsnorm_rows(out, out, c->m->layers[l].ffn_post_norm, n, d, hp->norm_eps);
    add(c->x + t0 * d, out, n * d);
}

/* ---- a layer ------------------------------------------------------------------------------ */

/* The attention block: leaves x += attention(x) and xn = the feed-forward's input. */
static int attention(ll_context *c, ll_pool *pool, int l, int32_t pos0, int32_t n) {
    const ll_hparams *hp = &c->m->hp;
    const layer *L = &c->m->layers[l];
    int rc;
    for_tokens(c, pool, l, pos0, n, attn_norm_step);
    const ll_matmul_out qkv[] = { into(c, &L->wq, c->q), into(c, &L->wk, c->k),
                                  into(c, &L->wv, c->v) };
    if ((rc = matmul_shared(c, pool, qkv, 3, hp->n_embd, c->xn, n)))
        return rc;
    for_tokens(c, pool, l, pos0, n, qkv_step);

    attend_task task = { c, l, pos0, n };
    ll_pool_run(pool, attend_run, &task);

    if ((rc = matmul(c, pool, &L->wo, c->att, n, c->out, scratch_bytes(c, hp->n_embd))))
        return rc;
    for_tokens(c, pool, l, pos0, n, attn_out_step);
    return LL_OK;
}

/* The feed-forward block, from xn (left by attention): x += ffn(xn). */
static int feed_forward(ll_context *c, ll_pool *pool, int l, int32_t n) {
    const ll_hparams *hp = &c->m->hp;
    const layer *L = &c->m->layers[l];
    int rc;
    const ll_matmul_out gate_up[] = { into(c, &L->ffn_gate, c->gate), into(c, &L->ffn_up, c->up) };
    if ((rc = matmul_shared(c, pool, gate_up, 2, hp->n_embd, c->xn, n)))
        return rc;
    for_tokens(c, pool, l, 0, n, activation_step);
    if ((rc = matmul(c, pool, &L->ffn_down, c->gate, n, c->out, scratch_bytes(c, hp->n_embd))))
        return rc;
    for_tokens(c, pool, l, 0, n, ffn_out_step);
    return LL_OK;
}

/* ---- the whole pass --------------------------------------------------------------------- */

static void embed(ll_context *c, const int32_t *tokens, int32_t n) {
    const ll_model *m = c->m;
    const ll_tensor *e = &m->token_embd;
    const size_t row = (size_t)ll_row_bytes(e->type, e->cols);
    const int64_t d = m->hp.n_embd;
    for (int32_t t = 0; t < n; t++) {
        float *x = c->x + t * d;
        ll_active->to_float[e->type]((const uint8_t *)e->data + (size_t)tokens[t] * row, x, d);
        if (m->hp.embd_scale != 1.0f)
            for (int64_t i = 0; i < d; i++) x[i] *= m->hp.embd_scale;
    }
}

static int output(ll_context *c, ll_pool *pool, int32_t n, float *logits, size_t logits_bytes,
                  int all) {
    const ll_hparams *hp = &c->m->hp;
    const int32_t rows = all ? n : 1;
    const float *x = c->x + (int64_t)(n - rows) * hp->n_embd;
    rmsnorm_rows(c->xn, x, c->m->output_norm, rows, hp->n_embd, hp->norm_eps);
    int rc = matmul(c, pool, &c->m->output, c->xn, rows, logits, logits_bytes);
    if (rc) return rc;
    const float cap = hp->logit_softcap;
    if (cap > 0.0f)
        for (int64_t i = 0; i < (int64_t)rows * hp->n_vocab; i++)
            logits[i] = cap * tanhf(logits[i] / cap);
    return LL_OK;
}

static int check_batch(const ll_context *c, ll_pool *pool, const int32_t *tokens, int32_t n,
                       int32_t pos0, const float *logits, size_t logits_bytes, int all) {
    if (!c || !tokens) return ll_error(LL_ERR_ARG, "ll_forward: no context or no tokens");
    if (n < 1 || n > c->n_batch)
        return ll_error(LL_ERR_ARG, "a batch holds 1..%d tokens (n_batch), got %d", c->n_batch, n);
    if (pos0 < 0 || pos0 > c->n_past)
        return ll_error(LL_ERR_ARG, "a batch at position %d: the cache holds positions 0..%d, "
                        "so a batch starts at 0..%d", pos0, c->n_past - 1, c->n_past);
    if ((int64_t)pos0 + n > c->n_ctx)
        return ll_error(LL_ERR_ARG, "positions %d..%d do not fit the context of %d",
                        pos0, pos0 + n - 1, c->n_ctx);
    if (ll_pool_size(pool) > c->n_threads)
        return ll_error(LL_ERR_ARG, "a pool of %d threads; the context has scratch for %d",
                        ll_pool_size(pool), c->n_threads);
    for (int32_t t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= c->m->hp.n_vocab)
            return ll_error(LL_ERR_ARG, "token id %d (at %d) is out of range: the vocabulary "
                            "has %d tokens", tokens[t], t, c->m->hp.n_vocab);
    const uint64_t need = (uint64_t)(all ? n : 1) * c->m->hp.n_vocab * sizeof(float);
    if (logits && logits_bytes < need)
        return ll_error(LL_ERR_ARG, "the logits buffer holds %zu bytes, %llu needed",
                        logits_bytes, (unsigned long long)need);
    return LL_OK;
}

/* Every layer over a checked batch: leaves the residual stream in c->x. */
static int run_layers(ll_context *c, ll_pool *pool, const int32_t *tokens, int32_t n,
                      int32_t pos0) {
    int rc;
    c->n_past = pos0;   /* what the cache held from pos0 on is being replaced */
    embed(c, tokens, n);
    rope_tables(c, pos0, n);
    for (int l = 0; l < c->m->hp.n_layer; l++) {
        if ((rc = attention(c, pool, l, pos0, n))) return rc;
        if ((rc = feed_forward(c, pool, l, n))) return rc;
    }
    return LL_OK;
}

int ll_forward(ll_context *c, ll_pool *pool, const int32_t *tokens, int32_t n, int32_t pos0,
               float *logits, size_t logits_bytes, int32_t all_logits) {
    int rc = check_batch(c, pool, tokens, n, pos0, logits, logits_bytes, all_logits);
    if (rc || (rc = run_layers(c, pool, tokens, n, pos0))) return rc;
    if (logits && (rc = output(c, pool, n, logits, logits_bytes, all_logits))) return rc;
    c->n_past = pos0 + n;
    return LL_OK;
}

int ll_forward_hidden(ll_context *c, ll_pool *pool, const int32_t *tokens, int32_t n,
                      int32_t pos0, float *hidden, size_t hidden_bytes) {
    int rc = check_batch(c, pool, tokens, n, pos0, NULL, 0, 0);
    if (rc) return rc;
    const ll_hparams *hp = &c->m->hp;
    const uint64_t need = (uint64_t)n * hp->n_embd * sizeof(float);
    if (!hidden || hidden_bytes < need)
        return ll_error(LL_ERR_ARG, "the hidden-state buffer holds %zu bytes, %llu needed",
                        hidden ? hidden_bytes : 0, (unsigned long long)need);
    if ((rc = run_layers(c, pool, tokens, n, pos0))) return rc;
    rmsnorm_rows(hidden, c->x, c->m->output_norm, n, hp->n_embd, hp->norm_eps);
    c->n_past = pos0 + n;
    return LL_OK;
}

/* ---- saving and restoring the cache ------------------------------------------------------ */

/* The first n_pos positions, layer by layer: K as cached ([pos][n_head_kv * head_dim_k],
 * one block per layer), then V one row of n_pos values per dim (the cache keeps V
 * transposed, n_ctx apart). */
int64_t ll_context_state_bytes(const ll_context *c, int32_t n_pos) {
    const ll_hparams *hp = &c->m->hp;
    if (n_pos < 0 || n_pos > c->n_ctx) return -1;
    return (int64_t)hp->n_layer * hp->n_head_kv * (hp->head_dim_k + hp->head_dim_v) * n_pos *
           (int64_t)c->kv_elt;
}

static int check_state(const ll_context *c, int32_t n_pos, const void *buf, size_t bytes,
                       int32_t limit, const char *limit_name) {
    if (!c || !buf) return ll_error(LL_ERR_ARG, "the cache state: no context or no buffer");
    if (n_pos < 0 || n_pos > limit)
        return ll_error(LL_ERR_ARG, "the cache state of %d positions: %s is %d", n_pos,
                        limit_name, limit);
    const int64_t need = ll_context_state_bytes(c, n_pos);
    if ((uint64_t)need != (uint64_t)bytes)
        return ll_error(LL_ERR_ARG, "the cache state of %d positions takes %lld bytes, the "
                        "buffer holds %zu", n_pos, (long long)need, bytes);
    return LL_OK;
}

/* Copy positions [0, n_pos) out of the cache (to_state) or into it. */
static void copy_state(ll_context *c, int32_t n_pos, uint8_t *state, int to_state) {
    const ll_hparams *hp = &c->m->hp;
    const size_t k_block = (size_t)n_pos * hp->n_head_kv * hp->head_dim_k * c->kv_elt;
    const size_t v_row = (size_t)n_pos * c->kv_elt;
    const int64_t dv = (int64_t)hp->n_head_kv * hp->head_dim_v;
    for (int l = 0; l < hp->n_layer; l++) {
        uint8_t *k = k_at(c, l, 0, 0);
        if (to_state) memcpy(state, k, k_block);
        else memcpy(k, state, k_block);
        state += k_block;
        for (int64_t d = 0; d < dv; d++, state += v_row) {
            uint8_t *v = v_at(c, l, d, 0);
            if (to_state) memcpy(state, v, v_row);
            else memcpy(v, state, v_row);
        }
    }
}

int ll_context_state_get(ll_context *c, int32_t n_pos, void *dst, size_t dst_bytes) {
    int rc = check_state(c, n_pos, dst, dst_bytes, c ? c->n_past : 0, "n_past");
    if (rc) return rc;
    copy_state(c, n_pos, dst, 1);
    return LL_OK;
}

int ll_context_state_set(ll_context *c, int32_t n_pos, const void *src, size_t src_bytes) {
    int rc = check_state(c, n_pos, src, src_bytes, c ? c->n_ctx : 0, "n_ctx");
    if (rc) return rc;
    copy_state(c, n_pos, (uint8_t *)src, 0);
    c->n_past = n_pos;
    return LL_OK;
}
