/*
 * shmring/queue_wait.h - blocking put and get for C and C++ programs that
 * share a queue with Python processes: the queue lock taken (and repaired
 * after a holder died), then the ring operation, waiting in slices
 * (shmring/wait.h) on the queue's sleep words [Q2] while there is no room
 * (or no item).
 *
 * They work on the main ring only, so they need a queue whose overflow
 * chain is empty: a bounded queue whose records fit its ring (while the
 * chain is not empty they return SHMRING_ERR_ARG and change nothing).
 */
#ifndef SHMRING_QUEUE_WAIT_H
#define SHMRING_QUEUE_WAIT_H

#include "base.h"
#include "atomics.h"
#include "os.h"
#include "wait.h"
#include "record.h"
#include "sync.h"
#include "queue.h"
#include "watch.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Take the lock for a plain C peer of queue `name`: after OWNER_DIED,
 * recount and mark the lock consistent.  Returns as shmring_queue_lock. */
static inline int shmring_queue_lock_repair(shmring_queue_ctrl *c, uint64_t capacity, const char *name,
                                            uint64_t token, uint64_t deadline_ns)
{
    int rc = shmring_queue_lock(c, token, 2000u, 10000000u, deadline_ns);
    if (rc == SHMRING_OWNER_DIED) {
        rc = shmring_queue_recount(c, capacity, name, NULL);
        if (rc == SHMRING_ERR_SYS) {
            int saved = errno;
            shmring_mutex_abandon(&c->lock, token); /* may pass: the next holder retries */
            errno = saved;
            return rc;
        }
        if (rc != SHMRING_OK) {
            shmring_queue_unlock(c, token); /* unrepaired: not recoverable, for everyone */
            return rc;
        }
        shmring_mutex_consistent(&c->lock, token);
    }
    return rc;
}

/* The words of a put's (room_seq, room_waiters) or a get's (items_seq,
 * items_waiters) sleep [Q2] for a waiter outside the blocking calls
 * (shmring/watch.h).  The count is taken outside the lock; the re-check
 * that follows takes the lock, so a put or get that the re-check does not
 * see reads the count after it.  Wakers wake one sleeper: a wake taken and
 * not used is passed on. */
static inline shmring_watch shmring_queue_watch(shmring_queue_ctrl *c, int is_put)
{
    return shmring_watch_make(is_put ? &c->room_seq : &c->items_seq, is_put ? &c->room_waiters : &c->items_waiters,
                              0, 1, 0);
}

/* One blocking put or get: its arguments and its state between slices. */
typedef struct shmring_queue_waiter_ {
    shmring_queue_ctrl *c;
    uint64_t capacity;
    const char *name;
    uint64_t token;
    uint64_t deadline_ns;
    int is_put;
    uint32_t tag;       /* put: the record's tag */
    const void *data;   /* put: its payload */
    uint64_t len;       /* put: its length */
    void *buf;          /* get: where the record goes */
    uint64_t cap;       /* get: how much fits there */
    uint64_t *len_out;  /* get: the record's length */
    uint32_t *tag_out;  /* get: its tag */
    uint32_t seq;       /* the sleep word, read under the lock [Q2] */
    int slept;
} shmring_queue_waiter_;

/* The put, the lock held.  SHMRING_OK: done, the lock released and the
 * sleepers woken.  Else the lock is still held: SHMRING_AGAIN (no room
 * now), SHMRING_ERR_ARG (the overflow chain is in use), SHMRING_TOO_BIG,
 * SHMRING_ERR_CORRUPT. */
static inline int shmring_queue_put_locked_(shmring_queue_waiter_ *w)
{
    shmring_queue_ctrl *c = w->c;
    shmring_queue_ring r;
    unsigned char *dst;
    uint32_t consumers, producers;
    /* relaxed: under the lock [Q1]. */
    uint64_t count = shmring_load_relaxed(&c->count);
    int rc;
    if (shmring_load_relaxed(&c->ovf_head) != shmring_load_relaxed(&c->ovf_tail))
        return SHMRING_ERR_ARG;
    if (c->maxsize && count >= c->maxsize)
        return SHMRING_AGAIN;
    shmring_queue_main_ring(c, w->capacity, &r, &rc);
    if (rc == SHMRING_OK)
        rc = shmring_queue_ring_reserve(&r, w->tag, w->len, &dst);
    if (rc != SHMRING_OK)
        return rc;
    memcpy(dst, w->data, (size_t)w->len);
    shmring_queue_ring_commit(&r);
    shmring_queue_count_add(c, 1, w->len);
    /* relaxed [Q2]: read under the lock, after the change. */
    consumers = shmring_load_relaxed(&c->items_waiters);
    producers = shmring_load_relaxed(&c->room_waiters);
    shmring_queue_unlock(c, w->token);
    shmring_queue_wake(&c->items_seq, consumers, 1);
    if (!c->maxsize || count + 1 < c->maxsize)
        shmring_queue_wake(&c->room_seq, producers, 1);
    return SHMRING_OK;
}

/* The get, the lock held: as shmring_queue_put_locked_ (SHMRING_TOO_BIG:
 * buf is too small, the record stays; *len_out says its size). */
static inline int shmring_queue_get_locked_(shmring_queue_waiter_ *w)
{
    shmring_queue_ctrl *c = w->c;
    shmring_queue_ring r;
    const unsigned char *src = NULL;
    uint32_t consumers, producers;
    int rc, more;
    shmring_queue_main_ring(c, w->capacity, &r, &rc);
    if (rc == SHMRING_OK)
        rc = shmring_queue_ring_take(&r, w->tag_out, &src, w->len_out);
    /* relaxed: under the lock [Q1]. */
    if (rc == SHMRING_AGAIN && shmring_load_relaxed(&c->ovf_head) != shmring_load_relaxed(&c->ovf_tail))
        return SHMRING_ERR_ARG;
    if (rc == SHMRING_OK && *w->len_out > w->cap)
        return SHMRING_TOO_BIG;
    if (rc != SHMRING_OK)
        return rc;
    memcpy(w->buf, src, (size_t)*w->len_out);
    shmring_queue_ring_commit(&r);
    if (shmring_queue_count_sub(c, 1, *w->len_out) != SHMRING_OK)
        return SHMRING_ERR_CORRUPT;
    /* relaxed [Q2]: read under the lock, after the change. */
    consumers = shmring_load_relaxed(&c->items_waiters);
    producers = shmring_load_relaxed(&c->room_waiters);
    more = shmring_load_relaxed(&c->count) != 0;
    shmring_queue_unlock(c, w->token);
    shmring_queue_wake(&c->room_seq, producers, 1);
    if (more)
        shmring_queue_wake(&c->items_seq, consumers, 1);
    return SHMRING_OK;
}

/* The steps of put's and get's sliced wait (shmring/wait.h).  ready: take
 * the lock, try; if there is no room (no item), register as a sleeper
 * under the lock [Q2] and release it, or give up at the deadline (passing
 * on a wake it may have taken).  sleep: on the word read when registering,
 * then unregister. */
static inline int shmring_queue_wait_ready_(void *ctx, int last)
{
    shmring_queue_waiter_ *w = (shmring_queue_waiter_ *)ctx;
    shmring_queue_ctrl *c = w->c;
    uint32_t *seq = w->is_put ? &c->room_seq : &c->items_seq;
    uint32_t *waiters = w->is_put ? &c->room_waiters : &c->items_waiters;
    int rc = shmring_queue_lock_repair(c, w->capacity, w->name, w->token, w->deadline_ns);
    if (rc != SHMRING_OK)
        return rc;
    rc = w->is_put ? shmring_queue_put_locked_(w) : shmring_queue_get_locked_(w);
    if (rc == SHMRING_OK)
        return rc;
    if (rc != SHMRING_AGAIN || last || (w->deadline_ns && shmring_now_ns() >= w->deadline_ns)) {
        /* relaxed [Q2]: read under the lock. */
        uint32_t seen = shmring_load_relaxed(waiters);
        shmring_queue_unlock(c, w->token);
        if (w->slept) /* a wake taken before giving up goes on to another sleeper of our side */
            shmring_queue_wake(seq, seen, 1);
        return rc == SHMRING_AGAIN ? (int)SHMRING_TIMEOUT : rc;
    }
    w->seq = shmring_queue_register(seq, waiters);
    shmring_queue_unlock(c, w->token);
    return SHMRING_AGAIN;
}

static inline int shmring_queue_wait_sleep_(void *ctx, uint64_t until_ns)
{
    shmring_queue_waiter_ *w = (shmring_queue_waiter_ *)ctx;
    shmring_queue_ctrl *c = w->c;
    shmring_futex_wait_until(w->is_put ? &c->room_seq : &c->items_seq, w->seq, until_ns);
    shmring_queue_unregister(w->is_put ? &c->room_waiters : &c->items_waiters);
    w->slept = 1;
    return SHMRING_AGAIN; /* woken, timed out or interrupted: look again */
}

/* A waiter for queue `name` holding the arguments put and get share; the
 * rest is zeroed for the caller to fill with its own. */
static inline void shmring_queue_waiter_init_(shmring_queue_waiter_ *w, shmring_queue_ctrl *c, uint64_t capacity,
                                              const char *name, uint64_t token, uint64_t deadline_ns)
{
    memset(w, 0, sizeof *w);
    w->c = c;
    w->capacity = capacity;
    w->name = name;
    w->token = token;
    w->deadline_ns = deadline_ns;
}

static inline int shmring_queue_wait_(shmring_queue_waiter_ *w)
{
    return shmring_wait_for(w, shmring_queue_wait_ready_, shmring_queue_wait_sleep_, SHMRING_WAIT_SLICE_NS, NULL,
                            w->deadline_ns);
}

/* Put a record of `len` bytes tagged `tag` (SHMRING_REC_BYTES, _OBJECT,
 * _VALUE in a queue with SHMRING_QUEUE_VALUES: shmring/value.h, or _OOB in
 * a queue with SHMRING_QUEUE_OOB: shmring/oob.h)
 * into queue `name`'s main ring, waiting for room until deadline_ns (0 =
 * forever).  SHMRING_OK, SHMRING_TOO_BIG, SHMRING_TIMEOUT, SHMRING_ERR_ARG
 * (the overflow chain is in use), lock errors. */
static inline int shmring_queue_put(shmring_queue_ctrl *c, uint64_t capacity, const char *name, uint64_t token,
                                    uint32_t tag, const void *data, uint64_t len, uint64_t deadline_ns)
{
    shmring_queue_waiter_ w;
    shmring_queue_waiter_init_(&w, c, capacity, name, token, deadline_ns);
    w.is_put = 1;
    w.tag = tag;
    w.data = data;
    w.len = len;
    return shmring_queue_wait_(&w);
}

/* Copy the next record into buf (`cap` bytes; *len gets its length, *tag
 * its tag), waiting for one until deadline_ns (0 = forever).  SHMRING_OK,
 * SHMRING_TOO_BIG (buf too small: the record stays), SHMRING_TIMEOUT,
 * SHMRING_ERR_CORRUPT, SHMRING_ERR_ARG (the overflow chain is in use), lock
 * errors. */
static inline int shmring_queue_get(shmring_queue_ctrl *c, uint64_t capacity, const char *name, uint64_t token,
                                    void *buf, uint64_t cap, uint64_t *len, uint32_t *tag, uint64_t deadline_ns)
{
    shmring_queue_waiter_ w;
    *len = 0;
    *tag = 0;
    shmring_queue_waiter_init_(&w, c, capacity, name, token, deadline_ns);
    w.buf = buf;
    w.cap = cap;
    w.len_out = len;
    w.tag_out = tag;
    return shmring_queue_wait_(&w);
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_QUEUE_WAIT_H */
