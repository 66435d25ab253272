/* vocab.c: a vocabulary's token texts looked up by their bytes, and
 * SentencePiece tokenization as llama.cpp does it.
 *
 * Python keeps the token texts (it needs them as strings anyway); this holds
 * one copy of their bytes, back to back, an open-addressing hash table from
 * text to id (4 bytes a slot) and the scores. A 262k-token vocabulary takes
 * ~5 MB here, where a Python dict of it and sentencepiece's model took ~70 MB
 * of the process. A BPE vocabulary's merges are held the same way.
 *
 * Merging (llama.cpp's llm_tokenizer_spm_session and _bpe_session): the text is
 * cut into symbols, one UTF-8 character each (by its lead byte's length,
 * clamped to the text's end). Two neighbours are queued when they may merge:
 * for SentencePiece when their joined text is a token, by its score, the
 * highest first; for byte-level BPE when "left right" is one of the merges,
 * by its rank, the lowest first; the leftmost first on ties. Popping a pair
 * whose two symbols are unchanged merges them and queues the merged symbol
 * with its new neighbours. Each final symbol is its token, or when it is
 * none (a character missing from the vocabulary) a token per byte.
 */
#include <stdlib.h>
#include <string.h>

#include "llamalite.h"
#include "quants.h"

/* Texts back to back, and an open-addressing hash table over them. */
typedef struct {
    int32_t n;
    uint8_t *text;       /* every text's bytes, back to back */
    size_t *start;       /* n + 1 offsets into text */
    uint32_t *slot;      /* mask + 1 slots: index + 1, or 0 when empty */
    size_t mask;
} text_set;

struct ll_vocab {
    text_set tokens;
    float *score;        /* n */
    text_set merges;     /* "left right", by rank; empty without merges */
};

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull ^ n;   /* FNV-1a, seeded with the length */
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static size_t text_len(const text_set *t, int32_t i) { return t->start[i + 1] - t->start[i]; }

/* The index of the text equal to the n bytes at p, or -1; with slot_out, the
 * slot where it is or would go. */
static int32_t set_find(const text_set *t, const uint8_t *p, size_t n, size_t *slot_out) {
    if (!t->slot) return -1;
    size_t i = hash_bytes(p, n) & t->mask;
    for (;; i = (i + 1) & t->mask) {
        uint32_t s = t->slot[i];
        if (!s) break;
        int32_t id = (int32_t)(s - 1);
        if (text_len(t, id) == n && memcmp(t->text + t->start[id], p, n) == 0) {
            if (slot_out) *slot_out = i;
            return id;
        }
    }
    if (slot_out) *slot_out = i;
    return -1;
}

static void set_free(text_set *t) {
    free(t->text);
    free(t->start);
    free(t->slot);
    memset(t, 0, sizeof *t);
}

/* Copies n texts (what names them in errors) and indexes them. A repeated
 * text is an error when unique, else only its first index is found. */
static int set_init(text_set *t, const char *what, const char *texts, size_t size,
                    const uint64_t *offsets, int32_t n, int unique) {
    memset(t, 0, sizeof *t);
    if (n < 1 || n > (1 << 30))
        return ll_error(LL_ERR_ARG, "%d %s (expected 1 to 2^30)", (int)n, what);
    if (!offsets || (!texts && size)) return ll_error(LL_ERR_ARG, "no %s given", what);
    if (offsets[0] != 0)
        return ll_error(LL_ERR_ARG, "the first of the %s starts at byte %llu, not 0", what,
                        (unsigned long long)offsets[0]);
    for (int32_t i = 0; i < n; i++)
        if (offsets[i + 1] < offsets[i] || offsets[i + 1] > size)
            return ll_error(LL_ERR_ARG, "%s %d ends at byte %llu, outside the %zu bytes given "
                            "(or before it starts)", what, (int)i,
                            (unsigned long long)offsets[i + 1], size);
    size_t cap = 1;
    while (cap < 2 * (size_t)n) cap <<= 1;
    t->n = n;
    t->mask = cap - 1;
    t->text = malloc(size ? size : 1);
    t->start = malloc(((size_t)n + 1) * sizeof *t->start);
    t->slot = calloc(cap, sizeof *t->slot);
    if (!t->text || !t->start || !t->slot) {
        set_free(t);
        return ll_error(LL_ERR_NOMEM, "out of memory for %d %s", (int)n, what);
    }
    if (size) memcpy(t->text, texts, size);
    for (int32_t i = 0; i <= n; i++) t->start[i] = (size_t)offsets[i];
    for (int32_t i = 0; i < n; i++) {
        size_t slot;
        int32_t other = set_find(t, t->text + t->start[i], text_len(t, i), &slot);
        if (other < 0) {
            t->slot[slot] = (uint32_t)i + 1;
        } else if (unique) {
            set_free(t);
            return ll_error(LL_ERR_ARG, "%s: %d duplicates %d", what, (int)i, (int)other);
        }
    }
    return LL_OK;
}

int32_t ll_vocab_find(const ll_vocab *v, const char *text, size_t n) {
    if (!v || (!text && n)) return -1;
    return set_find(&v->tokens, (const uint8_t *)text, n, NULL);
}

void ll_vocab_free(ll_vocab *v) {
    if (!v) return;
    set_free(&v->tokens);
    set_free(&v->merges);
    free(v->score);
    free(v);
}

int ll_vocab_new(const char *texts, size_t size, const uint64_t *offsets, const float *scores,
                 int32_t n, ll_vocab **out) {
    if (!out) return ll_error(LL_ERR_ARG, "ll_vocab_new: no place for the result");
    *out = NULL;
    ll_vocab *v = calloc(1, sizeof *v);
    if (!v) return ll_error(LL_ERR_NOMEM, "out of memory for a vocabulary");
    int rc = set_init(&v->tokens, "token texts", texts, size, offsets, n, 1);
    if (rc != LL_OK) {
        free(v);
        return rc;
    }
    v->score = malloc((size_t)n * sizeof *v->score);
    if (!v->score) {
        ll_vocab_free(v);
        return ll_error(LL_ERR_NOMEM, "out of memory for a vocabulary of %d tokens", (int)n);
    }
    for (int32_t i = 0; i < n; i++) v->score[i] = scores ? scores[i] : 0.0f;
    *out = v;
    return LL_OK;
}

int ll_vocab_set_merges(ll_vocab *v, const char *texts, size_t size, const uint64_t *offsets,
                        int32_t n) {
    if (!v) return ll_error(LL_ERR_ARG, "ll_vocab_set_merges: no vocabulary");
    text_set merges;
    int rc = set_init(&merges, "merges", texts, size, offsets, n, 0);
    if (rc != LL_OK) return rc;
    set_free(&v->merges);
    v->merges = merges;
    return LL_OK;
}

int32_t ll_vocab_size(const ll_vocab *v) { return v ? v->tokens.n : 0; }

/* ---- merging ------------------------------------------------------------------ */

typedef struct {
    size_t start, n;       /* the symbol's bytes in the text; n 0 once merged away */
    int64_t prev, next;    /* neighbours, -1 at either end */
} symbol;

typedef struct {
    double key;            /* higher first: a score, or minus a rank */
    int64_t left, right;
    size_t size;
} pair;

/* a before b in the queue: the higher key, then the lower left index */
static int comes_first(const pair *a, const pair *b) {
    return a->key > b->key || (a->key == b->key && a->left < b->left);
}

typedef struct {
    const ll_vocab *v;
    const uint8_t *text;
    symbol *sym;
    pair *items;           /* a binary heap */
    size_t len;
    int by_rank;           /* byte-level BPE: merges by rank; else SentencePiece scores */
    uint8_t *scratch;      /* by_rank: room for "left right" */
} merger;

static void queue_push(merger *m, pair b) {
    size_t i = m->len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!comes_first(&b, &m->items[parent])) break;
        m->items[i] = m->items[parent];
        i = parent;
    }
    m->items[i] = b;
}

static pair queue_pop(merger *m) {
    pair top = m->items[0], last = m->items[--m->len];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= m->len) break;
        if (child + 1 < m->len && comes_first(&m->items[child + 1], &m->items[child])) child++;
        if (!comes_first(&m->items[child], &last)) break;
        m->items[i] = m->items[child];
        i = child;
    }
    if (m->len) m->items[i] = last;
    return top;
}

/* Queue the two neighbours left and right if they may merge: SentencePiece
 * when their joined text is a token (by its score), BPE when "left right" is
 * a merge (by its rank, the lowest first). */
static void try_pair(merger *m, int64_t left, int64_t right) {
    if (left < 0 || right < 0) return;
    const symbol *l = &m->sym[left], *r = &m->sym[right];
    double key;
    if (m->by_rank) {
        memcpy(m->scratch, m->text + l->start, l->n);
        m->scratch[l->n] = ' ';
        memcpy(m->scratch + l->n + 1, m->text + r->start, r->n);
        int32_t rank = set_find(&m->v->merges, m->scratch, l->n + 1 + r->n, NULL);
        if (rank < 0) return;
        key = -(double)rank;
    } else {
        int32_t id = set_find(&m->v->tokens, m->text + l->start, l->n + r->n, NULL);
        if (id < 0) return;
        key = m->v->score[id];
    }
    queue_push(m, (pair){key, left, right, l->n + r->n});
}

/* Cut text into characters (by the lead byte's length, clamped to the end),
 * merge them, and write each final symbol's token, or when it is no token
 * byte_ids[b] for each of its bytes (-1: none). */
static int merge_text(const ll_vocab *v, int by_rank, int whole, const char *text, size_t n,
                      const int32_t *byte_ids, int32_t *out, size_t out_len, size_t *n_out) {
    static const uint8_t utf8_len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    if (!v || !n_out || !byte_ids || (!text && n))
        return ll_error(LL_ERR_ARG, "tokenize: a NULL argument");
    *n_out = 0;
    for (int b = 0; b < 256; b++)
        if (byte_ids[b] < -1 || byte_ids[b] >= v->tokens.n)
            return ll_error(LL_ERR_ARG, "the token for byte 0x%02X is %d, outside the "
                            "vocabulary", b, (int)byte_ids[b]);
    if (out_len < n) return ll_error(LL_ERR_ARG, "room for %zu tokens, but %zu bytes of text "
                                     "can give up to %zu", out_len, n, n);
    if (n == 0) return LL_OK;
    const uint8_t *p = (const uint8_t *)text;
    if (whole) {
        int32_t id = set_find(&v->tokens, p, n, NULL);
        if (id >= 0) {
            out[0] = id;
            *n_out = 1;
            return LL_OK;
        }
    }
    /* each merge queues at most two pairs: n - 1 at first, 2 (n - 1) more */
    if (n > SIZE_MAX / (3 * sizeof(pair) + sizeof(symbol) + 2))
        return ll_error(LL_ERR_NOMEM, "a text of %zu bytes is too long to tokenize", n);
    merger m = {v, p, malloc(n * sizeof(symbol)), malloc(3 * n * sizeof(pair)), 0, by_rank,
                by_rank ? malloc(n + 1) : NULL};
    if (!m.sym || !m.items || (by_rank && !m.scratch)) {
        free(m.sym);
        free(m.items);
        free(m.scratch);
        return ll_error(LL_ERR_NOMEM, "out of memory to tokenize %zu bytes", n);
    }
    size_t count = 0;
    for (size_t at = 0; at < n; count++) {
        size_t len = utf8_len[p[at] >> 4];
        if (len > n - at) len = n - at;
        m.sym[count] = (symbol){at, len, (int64_t)count - 1, -1};
        if (count) m.sym[count - 1].next = (int64_t)count;
        at += len;
    }
    for (size_t i = 1; i < count; i++) try_pair(&m, (int64_t)i - 1, (int64_t)i);
    while (m.len) {
        pair b = queue_pop(&m);
        symbol *l = &m.sym[b.left], *r = &m.sym[b.right];
        /* a side that changed since grew, or was merged away */
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) m.sym[r->next].prev = b.left;
        try_pair(&m, l->prev, b.left);
        try_pair(&m, b.left, l->next);
    }
    size_t k = 0;
    for (int64_t i = 0; i >= 0; i = m.sym[i].next) {
        const symbol *s = &m.sym[i];
        int32_t id = set_find(&v->tokens, p + s->start, s->n, NULL);
        if (id >= 0) {
            out[k++] = id;
            continue;
        }
        for (size_t j = 0; j < s->n; j++)
            if (byte_ids[p[s->start + j]] >= 0) out[k++] = byte_ids[p[s->start + j]];
    }
    free(m.sym);
    free(m.items);
    free(m.scratch);
    *n_out = k;
    return LL_OK;
}

int ll_vocab_spm(const ll_vocab *v, const char *text, size_t n, const int32_t *byte_ids,
                 int32_t *out, size_t out_len, size_t *n_out) {
    return merge_text(v, 0, 0, text, n, byte_ids, out, out_len, n_out);
}

int ll_vocab_bpe(const ll_vocab *v, const char *word, size_t n, int whole_word,
                 const int32_t *byte_ids, int32_t *out, size_t out_len, size_t *n_out) {
    return merge_text(v, 1, whole_word, word, n, byte_ids, out, out_len, n_out);
}

/* ---- GGUF string arrays ----------------------------------------------------- */

int ll_string_array(const void *buf, size_t size, size_t pos, uint64_t count, size_t *end,
                    char *joined, size_t joined_len) {
    if (!buf || !end) return ll_error(LL_ERR_ARG, "ll_string_array: a NULL argument");
    const uint8_t *p = buf;
    size_t at = pos, out = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (at > size || size - at < 8)
            return ll_error(LL_ERR_ARG, "string %llu's length runs past the end",
                            (unsigned long long)i);
        uint64_t n;
        memcpy(&n, p + at, 8);   /* GGUF is little-endian, as every target here */
        at += 8;
        if (n > size - at)
            return ll_error(LL_ERR_ARG, "string %llu runs past the end", (unsigned long long)i);
        if (joined) {
            if (joined_len - out < 1 + n)
                return ll_error(LL_ERR_ARG, "room for %zu joined bytes is too little",
                                joined_len);
            joined[out] = 0;
            memcpy(joined + out + 1, p + at, (size_t)n);
        }
        out += 1 + (size_t)n;
        at += (size_t)n;
    }
    if (joined && out != joined_len)
        return ll_error(LL_ERR_ARG, "room for %zu joined bytes, but the strings take %zu",
                        joined_len, out);
    *end = at;
    return LL_OK;
}
