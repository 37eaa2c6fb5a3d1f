/*
 * shmring/watch.h - waiting outside the blocking calls: one thread that
 * sleeps for many waiters at once (an event loop's waiter thread).
 *
 * Every object's blocking call sleeps the same way: announce itself where
 * the wakers look (a flag or a count), read the object's futex word,
 * re-check its condition, sleep while the word still has the value read,
 * withdraw.  A shmring_watch names those two words for one side of one
 * object (shmring_channel_watch, shmring_queue_watch, shmring_topic_watch,
 * shmring_sem_watch, shmring_event_watch build it), so that a waiter that is
 * not inside a blocking call can follow the same protocol
 * (docs/PROTOCOL.md 8):
 *
 *     shmring_watch_begin(&w);              announce, once
 *     for (;;) {
 *         v = shmring_watch_value(&w);      read the word ...
 *         if (try the operation) break;     ... then re-check
 *         sleep while *w.word == v          (shmring_futex_waitv: many words)
 *     }
 *     shmring_watch_end(&w, pass_wake);     withdraw
 *
 * The announcement may stay in place across many rounds.  A waiter that
 * was woken and then did not take what it was woken for (it gave up) passes
 * the wake on, for the objects whose wakers wake one sleeper only.
 */
#ifndef SHMRING_WATCH_H
#define SHMRING_WATCH_H

#include "base.h"
#include "atomics.h"
#include "os.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shmring_watch {
    uint32_t *word;          /* the futex word the wakers bump (or a semaphore's count) */
    uint32_t *announce;      /* where sleepers announce themselves */
    uint8_t announce_is_flag; /* 1: a channel's *_waiting flag; 0: a count of sleepers */
    uint8_t wakes_one;       /* its wakers wake one sleeper: a taken wake is passed on */
    uint8_t word_is_count;   /* the word is a semaphore's count: passing a wake does not bump it */
    uint8_t reserved;
} shmring_watch;

/* A watch from its parts (the objects' headers build theirs with it). */
static inline shmring_watch shmring_watch_make(uint32_t *word, uint32_t *announce, int announce_is_flag,
                                               int wakes_one, int word_is_count)
{
    shmring_watch w;
    w.word = word;
    w.announce = announce;
    w.announce_is_flag = (uint8_t)announce_is_flag;
    w.wakes_one = (uint8_t)wakes_one;
    w.word_is_count = (uint8_t)word_is_count;
    w.reserved = 0;
    return w;
}

/* Announce a waiter.  Returns 0, or 1 when the announcement could not be
 * fenced (no membarrier on a channel): then sleep at most
 * SHMRING_UNFENCED_SLEEP_NS at a time, as the channel's own waits do. */
static inline int shmring_watch_begin(const shmring_watch *w)
{
    if (w->announce_is_flag) {
        /* relaxed + heavy barrier [S6]/[S7]: pairs with the light barrier
         * between the other end's counter store and its load of the flag. */
        shmring_store_relaxed(w->announce, 1u);
        return shmring_heavy_barrier() != 0;
    }
    /* seq_cst [Q2][T4][T5][Y1][Y6]: pairs with the waker's load of the count
     * after its change (seq_cst, or under the queue's lock, which the
     * re-check that follows takes too). */
    shmring_fetch_add_seq_cst(w->announce, 1u);
    return 0;
}

/* The word's value, read before the condition is re-checked: a sleep on
 * it ends at once if a waker bumped it after this read. */
static inline uint32_t shmring_watch_value(const shmring_watch *w)
{
    /* seq_cst: pairs with the waker's bump (release or seq_cst) after it
     * changed the condition, and is ordered before the re-check's loads. */
    return shmring_load_seq_cst(w->word);
}

/* Withdraw the announcement.  `pass_wake`: this waiter may have taken a
 * wake meant for one sleeper without using it; give it to another. */
static inline void shmring_watch_end(const shmring_watch *w, int pass_wake)
{
    if (w->announce_is_flag)
        shmring_store_relaxed(w->announce, 0u); /* relaxed: only a hint; a stale 1 costs one wake */
    else
        shmring_fetch_sub_relaxed(w->announce, 1u); /* relaxed: a hint; a stale count costs a wake call */
    /* relaxed: any other sleeper announced itself before it slept. */
    if (pass_wake && w->wakes_one && shmring_load_relaxed(w->announce) != 0) {
        if (!w->word_is_count)
            shmring_fetch_add_release(w->word, 1u); /* release: as the waker's bump */
        shmring_futex_wake(w->word, 1);
    }
}

/* -- sleeping on many words at once ------------------------------------------- */

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449 /* the same number on every architecture (Linux 5.16) */
#endif
#define SHMRING_FUTEX2_SIZE_U32 0x02u
#define SHMRING_FUTEX2_PRIVATE 128u /* the word is in this process's private memory */
#define SHMRING_WAITV_MAX 128u

/* The kernel's struct futex_waitv, spelled here so that older headers do. */
typedef struct shmring_waitv_entry {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
} shmring_waitv_entry;

static inline void shmring_waitv_set(shmring_waitv_entry *e, uint32_t *word, uint32_t expected, int private_word)
{
    e->val = expected;
    e->uaddr = (uint64_t)(uintptr_t)word;
    e->flags = SHMRING_FUTEX2_SIZE_U32 | (private_word ? SHMRING_FUTEX2_PRIVATE : 0u);
    e->reserved = 0;
}

/* Sleep while every word of `v` (at most SHMRING_WAITV_MAX) holds its
 * value, until `deadline_ns` (CLOCK_MONOTONIC; 0 = no limit).  SHMRING_OK:
 * woken, or a word had changed already; SHMRING_TIMEOUT; SHMRING_ERR_SYS
 * with errno (ENOSYS before Linux 5.16, EINTR, EFAULT for a word no longer
 * mapped). */
static inline int shmring_futex_waitv(shmring_waitv_entry *v, unsigned n, uint64_t deadline_ns)
{
    struct timespec ts, *tsp = NULL;
    long rc;
    if (deadline_ns) {
        ts.tv_sec = (time_t)(deadline_ns / 1000000000u);
        ts.tv_nsec = (long)(deadline_ns % 1000000000u);
        tsp = &ts;
    }
    rc = syscall(SYS_futex_waitv, v, n, 0, tsp, CLOCK_MONOTONIC);
    if (rc >= 0 || errno == EAGAIN)
        return SHMRING_OK;
    return errno == ETIMEDOUT ? SHMRING_TIMEOUT : SHMRING_ERR_SYS;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_WATCH_H */
