/* One thread pool per backend. Workers spin a while, then sleep, between graph runs; during a run
 * every thread takes parts of the current step from shared counters (graph.c), so a thread that
 * loses its core (a busy machine) only means the others take its parts: nobody waits for a
 * particular thread. */
#include <pthread.h>
#include <stdlib.h>

#include "mtp.h"

#if defined(MTP_X86)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

#define SPINS 4000  /* pauses before sleeping: steps are microseconds apart */
/* Pauses a worker spins for the next graph run before it sleeps (~0.2 ms at 26 ns a pause, an EPYC;
 * twice that where a pause takes 140 cycles): a decode step's graphs come tens of microseconds apart
 * (the draft loop's Python between them), and waking a sleeping thread costs as much. Tinycoder on 2
 * threads decoded 10-17% faster at depths 0-2 (whole runs, paired) for ~4% more CPU time. */
#define IDLE_SPINS 8000

typedef struct {
    void *buf;
    size_t cap;
    char pad[64 - sizeof(void *) - sizeof(size_t)];  /* own cache line: threads grow them concurrently */
} scratch;

struct mtp_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, idle, changed;
    atomic_int generation;         /* written under mu, read by spinning workers */
    int stop, active;              /* under mu; active: workers inside a task */
    int closed;                    /* under mu; set by quiesce until the next run: no worker enters */
    mtp_task fn;
    void *arg;
    atomic_int sleepers;           /* threads blocked in mtp_wait_above */
    scratch *scratch;
};

static _Thread_local int thread_id;

typedef struct {
    mtp_pool *p;
    int ith;
} worker_arg;

static void *worker(void *raw) {
    worker_arg *wa = raw;
    mtp_pool *p = wa->p;
    int seen = 0;
    thread_id = wa->ith;
    free(wa);
    for (;;) {
        for (int spins = 0; spins < IDLE_SPINS && atomic_load(&p->generation) == seen; spins++)
            CPU_RELAX();
        pthread_mutex_lock(&p->mu);
        while (p->generation == seen && !p->stop)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        seen = p->generation;
        if (p->closed) {  /* woke too late: that run is over and the next one is being set up */
            pthread_mutex_unlock(&p->mu);
            continue;
        }
        mtp_task fn = p->fn;
        void *arg = p->arg;
        p->active++;
        pthread_mutex_unlock(&p->mu);
        fn(arg, thread_id, p->n);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0)
            pthread_cond_signal(&p->idle);
        pthread_mutex_unlock(&p->mu);
    }
}

mtp_pool *mtp_pool_create(int n_threads) {
    mtp_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = n_threads < 1 ? 1 : n_threads;
    p->scratch = calloc((size_t)p->n, sizeof(scratch));
    p->threads = calloc((size_t)p->n, sizeof(pthread_t));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->idle, NULL);
    pthread_cond_init(&p->changed, NULL);
    for (int i = 1; i < p->n; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        wa->p = p;
        wa->ith = i;
        if (pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
            free(wa);
            p->n = i;  /* run with the threads we got */
            break;
        }
    }
    return p;
}

void mtp_pool_free(mtp_pool *p) {
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    p->generation++;  /* ends a worker's spin */
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    for (int i = 0; i < p->n; i++)
        free(p->scratch[i].buf);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->changed);
    free(p->scratch);
    free(p->threads);
    free(p);
}

int mtp_pool_size(const mtp_pool *p) { return p->n; }

/* Also closes the pool: a worker that wakes late for the last run (after the caller finished it)
 * must not enter the shared state the caller is about to reset; mtp_pool_run reopens it. */
void mtp_pool_quiesce(mtp_pool *p) {
    pthread_mutex_lock(&p->mu);
    p->closed = 1;
    while (p->active > 0)
        pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void mtp_pool_run(mtp_pool *p, mtp_task fn, void *arg) {
    mtp_pool_quiesce(p);
    if (p->n > 1) {
        pthread_mutex_lock(&p->mu);
        p->fn = fn;
        p->arg = arg;
        p->closed = 0;
        p->generation++;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    thread_id = 0;
    fn(arg, 0, p->n);
}

/* Sequentially consistent on both sides: a waiter counts itself a sleeper then rechecks, a
 * publisher stores then checks for sleepers, so one of them always sees the other. */
void mtp_wait_above(mtp_pool *p, atomic_int *v, int value) {
    for (int spins = 0; spins < SPINS; spins++) {
        if (atomic_load(v) > value)
            return;
        CPU_RELAX();
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    while (atomic_load(v) <= value)
        pthread_cond_wait(&p->changed, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
}

void mtp_publish(mtp_pool *p, atomic_int *v, int value) {
    atomic_store(v, value);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->mu);
    }
}

void *mtp_scratch(mtp_pool *p, size_t bytes) {
    scratch *s = &p->scratch[thread_id];
    if (bytes > s->cap) {
        free(s->buf);
        size_t cap = bytes + bytes / 2 + 256;
        if (posix_memalign(&s->buf, 64, cap) != 0) {
            s->buf = NULL;
            s->cap = 0;
            return NULL;
        }
        s->cap = cap;
    }
    return s->buf;
}
