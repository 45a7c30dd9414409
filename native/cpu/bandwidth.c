/* The memory read test behind `mtprun bench`'s bandwidth figure: the pool's threads stream through a
 * buffer larger than the caches, as a decode step streams its weights. Parts are taken from a shared
 * counter, like a graph step's; the sum is returned so that no load can be optimised away. */
#include <stdlib.h>

#include "mtp.h"

#define READ_PART (1 << 20)  /* bytes a part: long runs for the hardware prefetchers */

typedef struct {
    mtp_pool *pool;
    const uint64_t *words;
    int64_t n_words, n_parts;
    atomic_int claimed, finished;
    _Atomic uint64_t sum;
} read_job;

static uint64_t sum_words(const uint64_t *w, int64_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;  /* independent chains: the loop stays load-bound */
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a += w[i];
        b += w[i + 1];
        c += w[i + 2];
        d += w[i + 3];
    }
    for (; i < n; i++)
        a += w[i];
    return a + b + c + d;
}

static void read_task(void *arg, int ith, int nth) {
    read_job *j = arg;
    const int64_t per = READ_PART / 8;
    (void)nth;
    for (int part; (part = atomic_fetch_add(&j->claimed, 1)) < j->n_parts;) {
        int64_t lo = part * per, hi = lo + per < j->n_words ? lo + per : j->n_words;
        atomic_fetch_add(&j->sum, sum_words(j->words + lo, hi - lo));
        int done = atomic_fetch_add(&j->finished, 1) + 1;
        if (done == j->n_parts)
            mtp_publish(j->pool, &j->finished, done);
    }
    if (ith == 0)  /* the caller returns only when every part is read */
        for (int seen; (seen = atomic_load(&j->finished)) < j->n_parts;)
            mtp_wait_above(j->pool, &j->finished, seen);
}

uint64_t mtp_pool_read_sum(mtp_pool *p, const void *buf, int64_t nbytes) {
    read_job j = {.pool = p, .words = buf, .n_words = nbytes / 8};
    j.n_parts = (j.n_words + READ_PART / 8 - 1) / (READ_PART / 8);
    atomic_init(&j.claimed, 0);
    atomic_init(&j.finished, 0);
    atomic_init(&j.sum, 0);
    mtp_pool_run(p, read_task, &j);
    mtp_pool_quiesce(p);  /* no worker still inside read_task once `j` goes out of scope */
    return atomic_load(&j.sum);
}
