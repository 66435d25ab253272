/* threads.c: a persistent thread pool.
 *
 * Workers are created once. Between tasks they spin on the task counter for a
 * short while (a token's matmuls come back to back, and a wake-up through the
 * kernel costs tens of microseconds), then sleep on a condition variable.
 * Spinning is kept short (~0.1 ms): on a machine shared with other work, a
 * long spin steals the very cycles the other threads are waiting for.
 *
 * One task runs at a time: callers on different threads take turns (run_mu),
 * since a task's context and the barrier belong to the whole pool. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "threads.h"
#include "quants.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

enum { SPIN_ROUNDS = 4096 };

struct ll_pool {
    int n;                       /* threads including the caller */
    pthread_t *workers;          /* n - 1 of them */
    pthread_mutex_t mu;
    pthread_mutex_t run_mu;      /* held by the caller of ll_pool_run */
    pthread_cond_t wake;
    atomic_uint task_seq;        /* bumped once per task */
    atomic_int busy;             /* workers still running the current task */
    atomic_int sleepers;         /* workers blocked on `wake` */
    atomic_int stop;
    ll_task_fn fn;
    void *ctx;
    /* barrier: arrivals count up to n, then `phase` flips */
    atomic_int bar_count;
    atomic_uint bar_phase;
};

typedef struct { ll_pool *pool; int ith; } worker_arg;

static unsigned wait_for_task(ll_pool *p, unsigned seen) {
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        unsigned s = atomic_load_explicit(&p->task_seq, memory_order_acquire);
        if (s != seen || atomic_load(&p->stop)) return s;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    unsigned s;
    while ((s = atomic_load(&p->task_seq)) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->wake, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
    return s;
}

static void *worker_main(void *arg) {
    worker_arg a = *(worker_arg *)arg;
    free(arg);
    ll_pool *p = a.pool;
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_task(p, seen);
        if (atomic_load(&p->stop)) break;
        p->fn(p->ctx, a.ith, p->n);
        atomic_fetch_sub_explicit(&p->busy, 1, memory_order_release);
    }
    return NULL;
}

ll_pool *ll_pool_new(int n_threads) {
    if (n_threads < 1 || n_threads > 1024) {
        ll_error(LL_ERR_ARG, "n_threads must be in 1..1024, got %d", n_threads);
        return NULL;
    }
    ll_pool *p = calloc(1, sizeof *p);
    if (!p) { ll_error(LL_ERR_NOMEM, "out of memory for the thread pool"); return NULL; }
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->run_mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->workers = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!p->workers) { free(p); ll_error(LL_ERR_NOMEM, "out of memory for the thread pool"); return NULL; }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (a) { a->pool = p; a->ith = i; }
        if (!a || pthread_create(&p->workers[i - 1], NULL, worker_main, a) != 0) {
            free(a);
            p->n = i; /* workers 1..i-1 exist: stop them */
            ll_pool_free(p);
            ll_error(LL_ERR_NOMEM, "could not start thread %d of %d", i, n_threads);
            return NULL;
        }
    }
    return p;
}

void ll_pool_free(ll_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->workers[i - 1], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->run_mu);
    free(p->workers);
    free(p);
}

int ll_pool_size(const ll_pool *p) { return p ? p->n : 1; }

void ll_pool_run(ll_pool *p, ll_task_fn fn, void *ctx) {
    if (!p || p->n == 1) { fn(ctx, 0, 1); return; }
    pthread_mutex_lock(&p->run_mu);
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->busy, p->n - 1);
    /* seq_cst: pairs with the sleeper count taken before a worker's last look */
    atomic_fetch_add(&p->task_seq, 1);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    fn(ctx, 0, p->n);
    for (int i = 0; atomic_load_explicit(&p->busy, memory_order_acquire) > 0; i++) {
        if (i < SPIN_ROUNDS) cpu_relax(); else sched_yield();
    }
    pthread_mutex_unlock(&p->run_mu);
}

void ll_pool_barrier(ll_pool *p) {
    if (!p || p->n == 1) return;
    unsigned phase = atomic_load_explicit(&p->bar_phase, memory_order_acquire);
    if (atomic_fetch_add(&p->bar_count, 1) == p->n - 1) {
        atomic_store(&p->bar_count, 0);
        atomic_fetch_add_explicit(&p->bar_phase, 1, memory_order_release);
        return;
    }
    for (int i = 0; atomic_load_explicit(&p->bar_phase, memory_order_acquire) == phase; i++) {
        if (i < SPIN_ROUNDS) cpu_relax(); else sched_yield();
    }
}

/* ---- memory read bandwidth ------------------------------------------------------ */

typedef struct {
    const uint64_t *words;
    size_t n_words;
    uint64_t sums[1024];
} mem_read_task;

static void mem_read_run(void *arg, int ith, int nth) {
    mem_read_task *t = arg;
    size_t per = (t->n_words + (size_t)nth - 1) / (size_t)nth;
    size_t i0 = per * (size_t)ith, i1 = i0 + per < t->n_words ? i0 + per : t->n_words;
    /* eight independent chains keep enough loads in flight to saturate memory */
    uint64_t a[8] = {0};
    size_t i = i0;
    for (; i + 8 <= i1; i += 8)
        for (int k = 0; k < 8; k++) a[k] += t->words[i + k];
    for (; i < i1; i++) a[0] += t->words[i];
    t->sums[ith] = a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
}

uint64_t ll_mem_read(ll_pool *pool, const void *buf, size_t bytes) {
    mem_read_task t = { .words = buf, .n_words = bytes / sizeof(uint64_t) };
    ll_pool_run(pool, mem_read_run, &t);
    uint64_t s = 0;
    for (int i = 0; i < ll_pool_size(pool); i++) s ^= t.sums[i];
    return s;
}
