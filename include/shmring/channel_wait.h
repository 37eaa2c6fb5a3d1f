/*
 * shmring/channel_wait.h - waiting on a channel, and the blocking calls for
 * C and C++ programs.
 *
 * shmring_channel_wait is one sleep of one side, the way the channel's
 * strategy says (spin, yield, futex after a spin, semaphore), up to a
 * deadline, without losing a wake-up ([S6]/[S7]/[S8], docs/PROTOCOL.md
 * 3.6).  shmring_channel_wait_sliced is the whole wait: those sleeps in
 * slices (shmring/wait.h), looking between slices at whether the other
 * end's process died.  shmring_channel_send / _recv are built on it.
 */
#ifndef SHMRING_CHANNEL_WAIT_H
#define SHMRING_CHANNEL_WAIT_H

#include "base.h"
#include "atomics.h"
#include "os.h"
#include "wait.h"
#include "segment.h"
#include "record.h"
#include "sync.h"
#include "channel.h"
#include "copy.h"
#include "watch.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* One sleep                                                                 */
/* ------------------------------------------------------------------------ */

/* The semaphore strategy [S8]: a post is sticky, so no announcement is
 * needed: take a post (acquire: pairs with the other side's exchange, so
 * its counter is visible), re-check, sleep while there is none. */
static inline int shmring_channel_sem_wait_(shmring_channel *ch, int writer, uint64_t need, uint64_t deadline_ns)
{
    shmring_sem *sem = writer ? &ch->ctrl->space_sem : &ch->ctrl->data_sem;
    int r;
    for (;;) {
        if (shmring_channel_interrupted(ch)) {
            errno = EINTR;
            return SHMRING_ERR_SYS;
        }
        if (shmring_sem_try_acquire(sem)) {
            if ((r = shmring_channel_ready(ch, writer, need)) != 0)
                return r > 0 ? SHMRING_OK : SHMRING_ERR_CORRUPT;
        } else {
            r = shmring_sem_wait(sem, deadline_ns);
            if (r != SHMRING_OK)
                return r;
        }
        if (deadline_ns && shmring_now_ns() >= deadline_ns)
            return SHMRING_TIMEOUT;
    }
}

/* The polling phase of the other strategies: spin (or yield) until
 * `spin_until`.  SHMRING_OK (ready), SHMRING_ERR_CORRUPT, SHMRING_ERR_SYS
 * (EINTR: interrupted), or SHMRING_AGAIN when the time is up. */
static inline int shmring_channel_poll_(shmring_channel *ch, int writer, uint64_t need, uint32_t strategy,
                                        uint64_t spin_until)
{
    uint64_t now = shmring_now_ns();
    unsigned i = 0;
    int r;
    while (now < spin_until) {
        if (strategy == SHMRING_WAIT_YIELD)
            sched_yield();
        else
            shmring_cpu_relax();
        if ((r = shmring_channel_ready(ch, writer, need)) != 0)
            return r > 0 ? SHMRING_OK : SHMRING_ERR_CORRUPT;
        if ((++i & 63u) == 0 || strategy == SHMRING_WAIT_YIELD) {
            if (shmring_channel_interrupted(ch)) {
                errno = EINTR;
                return SHMRING_ERR_SYS;
            }
            now = shmring_now_ns();
        }
    }
    return SHMRING_AGAIN;
}

/* One futex sleep [S6]/[S7]: announce in the side's *_waiting word, then
 * re-check and sleep.  SHMRING_OK (ready), SHMRING_ERR_CORRUPT,
 * SHMRING_ERR_SYS (EINTR), SHMRING_TIMEOUT, or SHMRING_AGAIN: woken without
 * the condition, or a bounded sleep over (sleep again). */
static inline int shmring_channel_futex_sleep_(shmring_channel *ch, int writer, uint64_t need, uint64_t deadline_ns)
{
    shmring_channel_ctrl *c = ch->ctrl;
    uint32_t *seq_word = writer ? &c->space_seq : &c->data_seq;
    uint32_t *waiting = writer ? &c->producer_waiting : &c->consumer_waiting;
    uint64_t *blocked = writer ? &c->producer_blocked : &c->consumer_blocked;
    struct timespec ts, *tsp = NULL;
    uint64_t sleep_until = deadline_ns, now;
    /* acquire [S6]/[S7]: read the futex word before announcing ourselves,
     * so that a bump after this point makes FUTEX_WAIT return at once. */
    uint32_t seq = shmring_load_acquire(seq_word);
    int r;
    /* relaxed + heavy barrier [S6]/[S7]: pairs with the light (or full)
     * barrier between the other side's counter store and its load of
     * our flag (publish / publish_head). */
    shmring_store_relaxed(waiting, 1u);
    if (shmring_heavy_barrier() != 0) {
        now = shmring_now_ns();
        if (!sleep_until || sleep_until > now + SHMRING_UNFENCED_SLEEP_NS)
            sleep_until = now + SHMRING_UNFENCED_SLEEP_NS;
    }
    r = shmring_channel_ready(ch, writer, need);
    if (r == 0 && shmring_channel_interrupted(ch)) {
        /* relaxed: withdraw the hint [S6]/[S7]. */
        shmring_store_relaxed(waiting, 0u);
        errno = EINTR;
        return SHMRING_ERR_SYS;
    }
    if (r == 0 && sleep_until) {
        now = shmring_now_ns();
        if (now >= sleep_until) {
            /* relaxed: withdraw the hint [S6]/[S7]; a stale 1 costs one wake. */
            shmring_store_relaxed(waiting, 0u);
            return deadline_ns && now >= deadline_ns ? (int)SHMRING_TIMEOUT : (int)SHMRING_AGAIN;
        }
        ts.tv_sec = (time_t)((sleep_until - now) / 1000000000u);
        ts.tv_nsec = (long)((sleep_until - now) % 1000000000u);
        tsp = &ts;
    }
    if (r == 0) {
        /* relaxed: statistics only, written by this side alone. */
        shmring_store_relaxed(blocked, shmring_load_relaxed(blocked) + 1);
        if (shmring_futex_wait(seq_word, seq, tsp) != SHMRING_OK && errno == EINTR) {
            shmring_store_relaxed(waiting, 0u);
            return SHMRING_ERR_SYS;
        }
        r = shmring_channel_ready(ch, writer, need);
    }
    /* relaxed: only a hint to the other side; a stale 1 costs one wake. */
    shmring_store_relaxed(waiting, 0u);
    if (r != 0)
        return r > 0 ? SHMRING_OK : SHMRING_ERR_CORRUPT;
    if (deadline_ns && shmring_now_ns() >= deadline_ns)
        return SHMRING_TIMEOUT;
    return SHMRING_AGAIN;
}

/* Wait until shmring_channel_ready(ch, writer, need) says yes, or until
 * `deadline_ns` (CLOCK_MONOTONIC; 0 = no limit).  `strategy` and `spin_ns`
 * choose how.  The consumer sleeps on data_seq announced by
 * consumer_waiting [S6] (or on data_sem [S8]); the producer on space_seq,
 * producer_waiting [S7] (or space_sem), after publishing what it committed
 * so that the consumer can make room.  Returns SHMRING_OK, SHMRING_TIMEOUT,
 * SHMRING_ERR_CORRUPT, or SHMRING_ERR_SYS with errno EINTR when a signal
 * arrived or ch->interrupt was set (the caller checks for both).  No slices,
 * no liveness checks: that is shmring_channel_wait_sliced. */
static inline int shmring_channel_wait(shmring_channel *ch, int writer, uint64_t need, uint32_t strategy,
                                       uint32_t spin_ns, uint64_t deadline_ns)
{
    uint64_t spin_until, now;
    int r;
    if (writer)
        shmring_channel_publish(ch);
    if ((r = shmring_channel_ready(ch, writer, need)) != 0)
        return r > 0 ? SHMRING_OK : SHMRING_ERR_CORRUPT;
    if (strategy == SHMRING_WAIT_SEMAPHORE)
        return shmring_channel_sem_wait_(ch, writer, need, deadline_ns);
    now = shmring_now_ns();
    if (strategy == SHMRING_WAIT_SPIN || strategy == SHMRING_WAIT_YIELD)
        spin_until = deadline_ns ? deadline_ns : UINT64_MAX;
    else if (strategy == SHMRING_WAIT_ADAPTIVE)
        spin_until = deadline_ns && deadline_ns < now + spin_ns ? deadline_ns : now + spin_ns;
    else
        spin_until = now;
    r = shmring_channel_poll_(ch, writer, need, strategy, spin_until);
    if (r != SHMRING_AGAIN)
        return r;
    if (strategy == SHMRING_WAIT_SPIN || strategy == SHMRING_WAIT_YIELD)
        return SHMRING_TIMEOUT;
    do
        r = shmring_channel_futex_sleep_(ch, writer, need, deadline_ns);
    while (r == SHMRING_AGAIN);
    return r;
}

/* The words of one side's sleep for a waiter outside the blocking calls
 * (shmring/watch.h): the consumer waits on data_seq, announced in
 * consumer_waiting [S6]; the producer on space_seq, producer_waiting [S7].
 * The one sleeper of a side is its end's owner, so no wake is passed on. */
static inline shmring_watch shmring_channel_watch(shmring_channel *ch, int writer)
{
    shmring_channel_ctrl *c = ch->ctrl;
    return shmring_watch_make(writer ? &c->space_seq : &c->data_seq,
                              writer ? &c->producer_waiting : &c->consumer_waiting, 1, 0, 0);
}

/* Wait for data or the end of the stream (see shmring_channel_wait). */
static inline int shmring_channel_wait_readable(shmring_channel *ch, uint32_t strategy, uint32_t spin_ns,
                                                uint64_t deadline_ns)
{
    return shmring_channel_wait(ch, 0, 0, strategy, spin_ns, deadline_ns);
}

/* Wait for `n` free bytes or a closed reader (see shmring_channel_wait). */
static inline int shmring_channel_wait_writable(shmring_channel *ch, uint64_t n, uint32_t strategy,
                                                uint32_t spin_ns, uint64_t deadline_ns)
{
    return shmring_channel_wait(ch, 1, n, strategy, spin_ns, deadline_ns);
}

/* ------------------------------------------------------------------------ */
/* The whole wait: slices, and the other end's liveness between them         */
/* ------------------------------------------------------------------------ */

/* Has the process at the other end died?  Its token, when it holds the end
 * and is dead (else 0). */
static inline uint64_t shmring_channel_dead_peer(const shmring_channel *ch, int writer)
{
    /* relaxed: a snapshot for a liveness check; claims are CAS'd. */
    uint64_t peer = shmring_load_relaxed(writer ? &ch->ctrl->consumer : &ch->ctrl->producer);
    return peer != 0 && !shmring_token_alive(peer) ? peer : 0;
}

/* The steps of shmring_channel_wait_sliced (shmring/wait.h). */
typedef struct shmring_channel_waiter_ {
    shmring_channel *ch;
    int writer;
    uint64_t need;
    uint32_t strategy, spin_ns;
    int check_peer; /* a slice ended without a wake: is the other end alive? */
} shmring_channel_waiter_;

static inline int shmring_channel_wait_ready_(void *ctx, int last)
{
    shmring_channel_waiter_ *w = (shmring_channel_waiter_ *)ctx;
    int r = shmring_channel_ready(w->ch, w->writer, w->need);
    if (r != 0)
        return r > 0 ? SHMRING_OK : SHMRING_ERR_CORRUPT;
    if (shmring_channel_interrupted(w->ch)) {
        errno = EINTR;
        return SHMRING_ERR_SYS;
    }
    if ((w->check_peer || last) && shmring_channel_dead_peer(w->ch, w->writer) != 0) {
        /* Dead: what it committed (a writer) is read first. */
        r = shmring_channel_ready(w->ch, w->writer, w->need);
        if (r != 0)
            return r > 0 ? SHMRING_OK : SHMRING_ERR_CORRUPT;
        return SHMRING_PEER_GONE;
    }
    w->check_peer = 0;
    return SHMRING_AGAIN;
}

static inline int shmring_channel_wait_sleep_(void *ctx, uint64_t until_ns)
{
    shmring_channel_waiter_ *w = (shmring_channel_waiter_ *)ctx;
    int rc = shmring_channel_wait(w->ch, w->writer, w->need, w->strategy, w->spin_ns, until_ns);
    w->spin_ns = 0; /* adaptive: the spin window is spent once per wait */
    if (rc == SHMRING_OK)
        return rc;
    if (rc == SHMRING_TIMEOUT || (rc == SHMRING_ERR_SYS && errno == EINTR)) {
        /* The slice ran out, or a signal or ch->interrupt (the next look
         * sees it): look at the peer then. */
        w->check_peer = 1;
        return rc == SHMRING_TIMEOUT ? (int)SHMRING_TIMEOUT : (int)SHMRING_AGAIN;
    }
    return rc;
}

/* Wait for data or the end of the stream (writer = 0), or for `need` free
 * bytes or a closed reader (writer = 1), until `deadline_ns` (0 = none), in
 * slices of SHMRING_WAIT_SLICE_NS, each one shmring_channel_wait with
 * `strategy` (spinning `spin_ns` in the first only); between slices (and
 * at the deadline) it looks at whether the other end's process died.
 * `hooks` (may be NULL) run around and between the slices.  Returns
 * SHMRING_OK (the condition holds), SHMRING_TIMEOUT, SHMRING_PEER_GONE (the
 * other end died, and, for a reader, everything it committed was read),
 * SHMRING_ERR_CORRUPT, SHMRING_ERR_SYS with EINTR when ch->interrupt was
 * set, or what a hook ended the wait with.  A signal (EINTR) alone goes
 * on. */
static inline int shmring_channel_wait_sliced(shmring_channel *ch, int writer, uint64_t need, uint32_t strategy,
                                              uint32_t spin_ns, uint64_t deadline_ns, const shmring_wait_hooks *hooks)
{
    shmring_channel_waiter_ w;
    w.ch = ch;
    w.writer = writer;
    w.need = need;
    w.strategy = strategy;
    w.spin_ns = spin_ns;
    w.check_peer = 0;
    return shmring_wait_for(&w, shmring_channel_wait_ready_, shmring_channel_wait_sleep_, SHMRING_WAIT_SLICE_NS,
                            hooks, deadline_ns);
}

/* ------------------------------------------------------------------------ */
/* Blocking channel calls for C and C++ programs                             */
/* ------------------------------------------------------------------------ */

/* These wrap the steps of shmring/channel.h the way the Python package
 * does: claim the end once, wait in slices (shmring_channel_wait_sliced),
 * and check between slices whether the other end's process died.  A
 * deadline of 0 waits without limit.  Interrupted waits (EINTR) simply
 * continue; check your own flags around the calls if you need to stop on a
 * signal. */

/* Attach `ch` to a mapped channel segment and claim one end (producer = 1
 * or consumer = 0) for this process.  One end per process and channel. */
static inline int shmring_channel_open_end(shmring_channel *ch, const shmring_segment *seg, int producer)
{
    const shmring_segment_header *h = (const shmring_segment_header *)seg->base;
    shmring_channel_ctrl *c;
    uint64_t token = shmring_token_self();
    int rc;
    if (h->kind != SHMRING_KIND_CHANNEL || !seg->writable)
        return SHMRING_ERR_ARG;
    rc = shmring_channel_attach(ch, shmring_segment_payload(seg), shmring_segment_payload_size(seg));
    if (rc != SHMRING_OK)
        return rc;
    c = ch->ctrl;
    rc = producer ? shmring_channel_claim(&c->producer, &c->producer_handle, token, 1)
                  : shmring_channel_claim(&c->consumer, &c->consumer_handle, token, 1);
    if (rc != SHMRING_OK)
        return rc;
    return producer ? shmring_channel_producer_start(ch) : shmring_channel_consumer_start(ch);
}

/* Give the end back, after publishing what it committed (producer) or
 * consumed (consumer), and mark it closed: a producer's close ends the
 * stream. */
static inline void shmring_channel_close_end_of(shmring_channel *ch, int producer)
{
    shmring_channel_ctrl *c = ch->ctrl;
    uint64_t token = shmring_token_self();
    if (producer) {
        shmring_channel_publish(ch);
        shmring_channel_mark_closed(ch, 1);
        shmring_channel_unclaim(c, 1, token, 1);
    } else {
        shmring_channel_publish_head(ch);
        shmring_channel_mark_closed(ch, 0);
        shmring_channel_unclaim(c, 0, token, 1);
    }
}

/* Copy a message in and publish it.  `strategy` 0 means the channel's
 * default (ch->wait).  Returns SHMRING_OK, SHMRING_TOO_BIG,
 * SHMRING_CLOSED (the reader closed), SHMRING_PEER_GONE, SHMRING_TIMEOUT or
 * SHMRING_ERR_CORRUPT. */
static inline int shmring_channel_send(shmring_channel *ch, const void *data, uint64_t len, uint32_t strategy,
                                       uint64_t deadline_ns)
{
    unsigned char *dst;
    if (strategy == 0)
        strategy = ch->wait;
    for (;;) {
        int rc;
        if (shmring_channel_reader_closed(ch))
            return SHMRING_CLOSED;
        rc = shmring_channel_reserve(ch, len, &dst);
        if (rc == SHMRING_OK)
            break;
        if (rc != SHMRING_AGAIN)
            return rc;
        rc = shmring_channel_wait_sliced(ch, 1, shmring_record_size(len), strategy, ch->spin_ns, deadline_ns, NULL);
        if (rc != SHMRING_OK)
            return rc;
    }
    if (shmring_copy_should_stream(ch->capacity, len))
        shmring_copy_streaming(dst, data, (size_t)len); /* fenced before the publish [S2] */
    else
        memcpy(dst, data, (size_t)len);
    shmring_channel_commit(ch, len);
    shmring_channel_publish(ch);
    return SHMRING_OK;
}

/* Copy the next message out into buf (of `cap` bytes); *len gets its size.
 * Returns SHMRING_OK, SHMRING_TOO_BIG (buf too small: *len says how big the
 * message is, and it stays in the ring), SHMRING_CLOSED (the writer closed
 * and everything was read), SHMRING_PEER_GONE (the writer died and
 * everything it committed was read), SHMRING_TIMEOUT or SHMRING_ERR_CORRUPT. */
static inline int shmring_channel_recv(shmring_channel *ch, void *buf, uint64_t cap, uint64_t *len,
                                       uint32_t strategy, uint64_t deadline_ns)
{
    const unsigned char *src;
    if (strategy == 0)
        strategy = ch->wait;
    for (;;) {
        int rc = shmring_channel_peek(ch, &src, len);
        if (rc == SHMRING_OK)
            break;
        if (rc != SHMRING_AGAIN)
            return rc;
        shmring_channel_publish_head(ch); /* padding skipped on the way */
        if (shmring_channel_writer_closed(ch)) {
            rc = shmring_channel_peek(ch, &src, len); /* published right before closing? */
            if (rc == SHMRING_OK)
                break;
            return rc == SHMRING_AGAIN ? (int)SHMRING_CLOSED : rc;
        }
        rc = shmring_channel_wait_sliced(ch, 0, 0, strategy, ch->spin_ns, deadline_ns, NULL);
        if (rc != SHMRING_OK)
            return rc;
    }
    if (*len > cap)
        return SHMRING_TOO_BIG;
    memcpy(buf, src, (size_t)*len);
    shmring_channel_consume(ch);
    shmring_channel_publish_head(ch);
    return SHMRING_OK;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_CHANNEL_WAIT_H */
