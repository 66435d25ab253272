/* threads.h: the persistent pool's internal interface. */
#ifndef LLAMALITE_THREADS_H
#define LLAMALITE_THREADS_H

#include "llamalite.h"

/* A task runs on every thread of the pool at once: ith in [0, nth). */
typedef void (*ll_task_fn)(void *ctx, int ith, int nth);

/* Run fn on all threads (the caller is thread 0) and return when all are
 * done. pool may be NULL: then fn runs once on the caller with nth = 1. */
void ll_pool_run(ll_pool *pool, ll_task_fn fn, void *ctx);

/* Inside a task: wait until every thread of the pool has reached it. */
void ll_pool_barrier(ll_pool *pool);

#endif
