/*
 * shmring/sync.h - process-shared synchronisation primitives: a counting
 * semaphore, a spin lock, a robust mutex, an event and a condition
 * variable, each a small struct at an 8-byte aligned offset of any shared
 * mapping (docs/PROTOCOL.md section 4).
 */
#ifndef SHMRING_SYNC_H
#define SHMRING_SYNC_H

#include "base.h"
#include "atomics.h"
#include "os.h"
#include "wait.h"
#include "watch.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Process-shared synchronisation primitives                                 */
/* ------------------------------------------------------------------------ */

/* Each primitive is a small struct that lives at an 8-byte aligned offset of
 * any shared mapping, next to the data it guards.  Blocking is a futex wait
 * on one of its 32-bit words; callers pass an absolute CLOCK_MONOTONIC
 * deadline (0 = none) and get SHMRING_OK when the condition may hold (they
 * retry), SHMRING_TIMEOUT, or SHMRING_ERR_SYS with errno EINTR.  A waiter
 * announces itself in `waiters` before it re-checks and sleeps, and a waker
 * looks at `waiters` after it publishes: seq_cst operations on both sides
 * (Dekker), so that no wake-up is lost and an uncontended release makes no
 * system call.  Owners are process tokens (shmring_token_make), so a dead
 * holder is told from a live one. */

/* Which primitive a named sync segment holds at payload offset 0, in the
 * header's object_type (shmring_segment_set_object_type), so that the tools
 * can show it; 0 = not recorded. */
enum shmring_sync_type {
    SHMRING_SYNC_ATOMIC64 = 1,  /* int64_t */
    SHMRING_SYNC_ATOMIC32 = 2,  /* int32_t */
    SHMRING_SYNC_FLAG = 3,      /* uint32_t, 0 clear / 1 set */
    SHMRING_SYNC_SEMAPHORE = 4, /* shmring_sem */
    SHMRING_SYNC_SPINLOCK = 5,  /* shmring_spinlock */
    SHMRING_SYNC_MUTEX = 6,     /* shmring_mutex */
    SHMRING_SYNC_EVENT = 7      /* shmring_event (a condition lives beside its mutex: never named) */
};
#define SHMRING_SYNC_TYPE_MAX 7u

/* -- counting semaphore (8 bytes) ------------------------------------------ */

typedef struct shmring_sem {
    uint32_t count;   /* permits; the futex word */
    uint32_t waiters; /* processes/threads about to sleep or sleeping [Y1] */
} shmring_sem;
SHMRING_STATIC_ASSERT(sizeof(shmring_sem) == 8, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_sem, waiters) == 4, "layout");

#define SHMRING_SEM_MAX 0x7fffffffu

static inline void shmring_sem_init(shmring_sem *s, uint32_t value)
{
    /* relaxed: the memory is published with its segment [S1]. */
    shmring_store_relaxed(&s->count, value);
    shmring_store_relaxed(&s->waiters, 0u);
}

/* Take a permit if there is one.  Returns 1 or 0. */
static inline int shmring_sem_try_acquire(shmring_sem *s)
{
    /* relaxed: only a first guess for the CAS. */
    uint32_t c = shmring_load_relaxed(&s->count);
    while (c > 0) {
        /* A count no release can produce was written by a hostile or broken
         * peer: take it as one post and reset it, rather than never sleeping
         * again (shmring_sem_wait sleeps only on 0). */
        uint32_t next = c <= SHMRING_SEM_MAX ? c - 1 : 0;
        /* acquire [Y2]: pairs with the release of shmring_sem_release, so
         * what the releaser did before posting is visible to us. */
        if (shmring_cas_weak_acquire(&s->count, &c, next))
            return 1;
    }
    return 0;
}

/* Sleep until a permit may be available (then retry try_acquire). */
static inline int shmring_sem_wait(shmring_sem *s, uint64_t deadline_ns)
{
    int rc = SHMRING_OK;
    /* seq_cst [Y1]: announce before re-checking; pairs with the releaser's
     * seq_cst add-then-load in shmring_sem_release. */
    shmring_fetch_add_seq_cst(&s->waiters, 1u);
    if (shmring_load_seq_cst(&s->count) == 0)
        rc = shmring_futex_wait_until(&s->count, 0, deadline_ns);
    /* relaxed: a hint for releasers; a stale count costs one wake call. */
    shmring_fetch_sub_relaxed(&s->waiters, 1u);
    return rc;
}

/* The words of shmring_sem_wait for a waiter outside the blocking calls
 * (shmring/watch.h): the count itself, announced in waiters [Y1].  A
 * release wakes as many sleepers as it adds permits: a wake taken and not
 * used is passed on (without touching the count). */
static inline shmring_watch shmring_sem_watch(shmring_sem *s)
{
    return shmring_watch_make(&s->count, &s->waiters, 0, 1, 1);
}

/* Add n permits and wake up to n sleepers.  SHMRING_ERR_ARG if the count
 * would pass SHMRING_SEM_MAX. */
static inline int shmring_sem_release(shmring_sem *s, uint32_t n)
{
    uint32_t c = shmring_load_relaxed(&s->count);
    do {
        if (n > SHMRING_SEM_MAX || c > SHMRING_SEM_MAX - n)
            return SHMRING_ERR_ARG;
        /* seq_cst [Y1][Y2]: release for the acquirer's CAS; seq_cst so that
         * the load of waiters below cannot miss an announced sleeper. */
    } while (!shmring_cas_weak_seq_cst_relaxed(&s->count, &c, c + n));
    if (shmring_load_seq_cst(&s->waiters) != 0)
        shmring_futex_wake(&s->count, n > (uint32_t)INT_MAX ? INT_MAX : (int)n);
    return SHMRING_OK;
}

/* Make the semaphore's count 1 (a "something happened" signal that does not
 * accumulate) and wake a sleeper.  The exchange is unconditional: a waiter
 * that takes this post synchronises with it, and so sees what the poster
 * published before it [Y2]. */
static inline void shmring_sem_signal(shmring_sem *s)
{
    /* seq_cst [Y1][Y2]: release for the taker; ordered before the load of
     * waiters. */
    if (shmring_exchange_seq_cst(&s->count, 1u) == 0 &&
        shmring_load_seq_cst(&s->waiters) != 0)
        shmring_futex_wake(&s->count, 1);
}

/* -- spin lock (16 bytes) ----------------------------------------------------- */

typedef struct shmring_spinlock {
    uint64_t owner;    /* process token of the holder, 0 = free [Y3] */
    uint64_t reserved; /* zero */
} shmring_spinlock;
SHMRING_STATIC_ASSERT(sizeof(shmring_spinlock) == 16, "layout");

/* One attempt.  SHMRING_OK (taken), SHMRING_AGAIN (held by a live process),
 * SHMRING_OWNER_DIED (taken from a dead holder: repair the data). */
static inline int shmring_spin_try_acquire(shmring_spinlock *l, uint64_t token, int check_holder)
{
    uint64_t cur = 0;
    /* acquire [Y3]: pairs with the release store of shmring_spin_release:
     * the previous holder's writes to the guarded data are visible. */
    if (shmring_cas_acquire(&l->owner, &cur, token))
        return SHMRING_OK;
    /* acquire [Y3]: the dead holder's writes are as visible as they will
     * ever be; the CAS fails if anyone else took the lock over first. */
    if (check_holder && cur != token && !shmring_token_alive(cur) &&
        shmring_cas_acquire(&l->owner, &cur, token))
        return SHMRING_OWNER_DIED;
    return SHMRING_AGAIN;
}

/* The steps of shmring_spin_acquire's wait (shmring/wait.h).  A spin lock
 * never sleeps: its "sleep" spins, test-and-test-and-set with the pause
 * hint and bounded exponential backoff, until the lock looks free or the
 * slice (1 ms) ends; after a whole slice held, the next look checks the
 * holder's liveness. */
typedef struct shmring_spin_wait_ {
    shmring_spinlock *l;
    uint64_t token;
    unsigned backoff;
    int check; /* a whole slice went by held: look at the holder */
} shmring_spin_wait_;

static inline int shmring_spin_ready_(void *ctx, int last)
{
    shmring_spin_wait_ *w = (shmring_spin_wait_ *)ctx;
    (void)last;
    if (w->check) {
        w->check = 0;
        return shmring_spin_try_acquire(w->l, w->token, 1);
    }
    /* relaxed: test before test-and-set, so waiters spin on a shared
     * copy of the line instead of bouncing it with failed CASes. */
    if (shmring_load_relaxed(&w->l->owner) == 0)
        return shmring_spin_try_acquire(w->l, w->token, 0);
    return SHMRING_AGAIN;
}

static inline int shmring_spin_sleep_(void *ctx, uint64_t until_ns)
{
    shmring_spin_wait_ *w = (shmring_spin_wait_ *)ctx;
    for (;;) {
        unsigned i;
        /* relaxed: as in shmring_spin_ready_. */
        if (shmring_load_relaxed(&w->l->owner) == 0)
            return SHMRING_OK;
        for (i = 0; i < w->backoff; i++)
            shmring_cpu_relax();
        if (w->backoff < 1024)
            w->backoff <<= 1;
        else if (shmring_now_ns() >= until_ns) {
            w->check = 1;
            return SHMRING_TIMEOUT;
        }
    }
}

/* Spin until the lock is taken or deadline_ns (0 = none), looking at the
 * holder's liveness about every millisecond; `hooks` (may be NULL) run
 * around each millisecond of spinning and between them (shmring/wait.h).
 * Returns as shmring_spin_try_acquire, SHMRING_TIMEOUT, or what a hook
 * ended the wait with. */
static inline int shmring_spin_acquire_hooked(shmring_spinlock *l, uint64_t token, uint64_t deadline_ns,
                                              const shmring_wait_hooks *hooks)
{
    shmring_spin_wait_ w;
    w.l = l;
    w.token = token;
    w.backoff = 1;
    w.check = 0;
    return shmring_wait_for(&w, shmring_spin_ready_, shmring_spin_sleep_, 1000000u, hooks, deadline_ns);
}

/* shmring_spin_acquire_hooked without hooks. */
static inline int shmring_spin_acquire(shmring_spinlock *l, uint64_t token, uint64_t deadline_ns)
{
    return shmring_spin_acquire_hooked(l, token, deadline_ns, NULL);
}

static inline int shmring_spin_release(shmring_spinlock *l, uint64_t token)
{
    uint64_t cur = token;
    /* release [Y3]: pairs with the acquire CAS of the next holder. */
    if (!shmring_cas_release(&l->owner, &cur, 0))
        return SHMRING_NOT_OWNER;
    return SHMRING_OK;
}

/* Give up a spin lock taken with SHMRING_OWNER_DIED without repairing the
 * data: it passes to a holder that names no process, so the next acquirer
 * takes it over as from a dead holder and is told SHMRING_OWNER_DIED again
 * (a spin lock has no state word to keep "owner died" in).  Waiters take it
 * over within their next liveness check (about 1 ms). */
static inline int shmring_spin_abandon(shmring_spinlock *l, uint64_t token)
{
    uint64_t cur = token;
    /* release [Y3]: pairs with the acquire CAS of the take-over. */
    if (!shmring_cas_release(&l->owner, &cur, SHMRING_TOKEN_ABANDONED))
        return SHMRING_NOT_OWNER;
    return SHMRING_OK;
}

/* -- robust mutex (24 bytes) ------------------------------------------------- */

/* A 0/1/2 lock over two words.  The lock itself is the 64-bit owner token,
 * so that a dead holder is told from a live one (a 32-bit lock word set
 * apart from the owner would stay held by nobody if its taker died between
 * the two stores); the futex word says whether a waiter may sleep:
 *
 *   unlocked                    owner 0
 *   locked                      owner T, word 0
 *   locked, waiters may sleep   owner T, word SHMRING_MUTEX_SLEEPERS (2)
 *
 * A waiter sets the word to 2 (exchange) before it looks at the owner and
 * sleeps only while the word is 2; a release clears it (exchange to 0) and
 * wakes one sleeper, which sets it to 2 again before it takes the lock, so
 * that its own release wakes the next.  No count of sleepers is kept: a
 * waiter killed asleep leaves a 2 that costs the next release one spare
 * wake, and that release clears it (the word heals itself). */
#define SHMRING_MUTEX_CONSISTENT 0u
#define SHMRING_MUTEX_OWNER_DIED 1u      /* held; the data may be inconsistent */
#define SHMRING_MUTEX_NOT_RECOVERABLE 2u /* released while inconsistent: unusable */

#define SHMRING_MUTEX_SLEEPERS 2u /* word: locked, and a waiter may sleep [Y5] */

typedef struct shmring_mutex {
    uint64_t owner;     /* process token of the holder, 0 = free [Y4] */
    uint32_t word;      /* futex word: 0 or SHMRING_MUTEX_SLEEPERS [Y5] */
    uint32_t reserved0; /* zero (layout 2 counted sleepers here) */
    uint32_t state;     /* SHMRING_MUTEX_*; written by the holder only */
    uint32_t reserved;
} shmring_mutex;
SHMRING_STATIC_ASSERT(sizeof(shmring_mutex) == 24, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_mutex, word) == 8, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_mutex, reserved0) == 12, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_mutex, state) == 16, "layout");

/* After the owner CAS succeeded: report the lock's state to the new holder. */
static inline int shmring_mutex_granted(shmring_mutex *m, int took_from_dead)
{
    /* relaxed: state is written only by holders, ordered by [Y4]. */
    uint32_t state = shmring_load_relaxed(&m->state);
    /* A state that is none of the three was written by no holder: the
     * lock (and so its data) cannot be trusted, as if not recoverable. */
    if (state >= SHMRING_MUTEX_NOT_RECOVERABLE) {
        /* release [Y4]: give it back untouched; everyone gets the error. */
        shmring_store_release(&m->owner, 0);
        return SHMRING_NOT_RECOVERABLE;
    }
    if (took_from_dead) {
        /* relaxed: only holders write state; published by the release of
         * owner [Y4] to the next holder. */
        shmring_store_relaxed(&m->state, SHMRING_MUTEX_OWNER_DIED);
        return SHMRING_OWNER_DIED;
    }
    return state == SHMRING_MUTEX_OWNER_DIED ? SHMRING_OWNER_DIED : SHMRING_OK;
}

/* One attempt.  SHMRING_OK, SHMRING_AGAIN, SHMRING_OWNER_DIED (granted; call
 * shmring_mutex_consistent once the data is repaired) or
 * SHMRING_NOT_RECOVERABLE. */
static inline int shmring_mutex_try_acquire(shmring_mutex *m, uint64_t token, int check_holder)
{
    uint64_t cur = 0;
    /* acquire [Y4]: pairs with the release store of owner = 0 in
     * shmring_mutex_release: the last holder's writes are visible. */
    if (shmring_cas_acquire(&m->owner, &cur, token))
        return shmring_mutex_granted(m, 0);
    /* acquire [Y4]: take over a dead holder's lock; the CAS fails if anyone
     * else took it over first, so only one process is told OwnerDied. */
    if (check_holder && cur != token && !shmring_token_alive(cur) &&
        shmring_cas_acquire(&m->owner, &cur, token))
        return shmring_mutex_granted(m, 1);
    /* relaxed: an early answer; a racing holder's state is re-read later. */
    if (shmring_load_relaxed(&m->state) >= SHMRING_MUTEX_NOT_RECOVERABLE)
        return SHMRING_NOT_RECOVERABLE;
    return SHMRING_AGAIN;
}

/* Before sleeping: spin for up to `spin_ns` while the mutex is held, trying
 * again whenever it looks free (test-and-test-and-set).  Critical sections
 * are usually shorter than a wake-up (tens of microseconds on a VM), and a
 * spinning waiter does not mark the word, so the holder's release makes no
 * system call.  Returns as shmring_mutex_try_acquire (without the liveness
 * check). */
static inline int shmring_mutex_spin_acquire(shmring_mutex *m, uint64_t token, uint64_t spin_ns)
{
    uint64_t until = shmring_now_ns() + spin_ns;
    unsigned i;
    for (i = 1;; i++) {
        /* relaxed: a hint; the CAS in try_acquire is the acquire [Y4]. */
        if (shmring_load_relaxed(&m->owner) == 0) {
            int rc = shmring_mutex_try_acquire(m, token, 0);
            if (rc != SHMRING_AGAIN)
                return rc;
        }
        shmring_cpu_relax();
        if ((i & 63u) == 0 && shmring_now_ns() >= until)
            return SHMRING_AGAIN;
    }
}

/* A waiter's try: mark the word "waiters may sleep", then try the lock
 * (looking at the holder's liveness if `check_holder`).  Returns as
 * shmring_mutex_try_acquire; SHMRING_AGAIN: sleep on the word while it is
 * SHMRING_MUTEX_SLEEPERS.  Taken here, the lock keeps the mark (its release
 * wakes the next waiter, or makes one spare wake). */
static inline int shmring_mutex_mark_and_try_(shmring_mutex *m, uint64_t token, int check_holder)
{
    /* seq_cst [Y5]: mark, then read owner (in the CAS); pairs with the
     * releaser's store of owner then load of the word: either it sees the
     * mark and wakes, or we see the lock free. */
    shmring_exchange_seq_cst(&m->word, SHMRING_MUTEX_SLEEPERS);
    return shmring_mutex_try_acquire(m, token, check_holder);
}

/* After owner was cleared: if a waiter marked the word, clear it and wake
 * `n` sleepers (the woken one marks it again before taking the lock). */
static inline void shmring_mutex_wake_(shmring_mutex *m, int n)
{
    /* seq_cst [Y5]: after the store of owner; pairs with the waiter's
     * exchange then read of owner.  The exchange: of two racing releasers
     * only one wakes for a mark.  Any other value (a stray write) is
     * cleared the same way. */
    if (shmring_load_seq_cst(&m->word) != 0 && shmring_exchange_seq_cst(&m->word, 0u) != 0)
        shmring_futex_wake(&m->word, n);
}

/* Sleep until the mutex may be free, looking at the holder first: a dead
 * holder's lock is taken over here.  Returns as try_acquire (SHMRING_AGAIN:
 * retry), or SHMRING_TIMEOUT / SHMRING_ERR_SYS (EINTR).  Woken, it marks
 * the word and tries once more before it returns: the release that woke
 * it cleared the mark, and a lock taken without marking it again would
 * not wake the other sleepers when released. */
static inline int shmring_mutex_wait(shmring_mutex *m, uint64_t token, uint64_t deadline_ns)
{
    int rc = shmring_mutex_mark_and_try_(m, token, 1);
    if (rc == SHMRING_AGAIN) {
        rc = shmring_futex_wait_until(&m->word, SHMRING_MUTEX_SLEEPERS, deadline_ns);
        if (rc == SHMRING_OK)
            rc = shmring_mutex_mark_and_try_(m, token, 0);
    }
    return rc;
}

/* Mark the data repaired after SHMRING_OWNER_DIED. */
static inline int shmring_mutex_consistent(shmring_mutex *m, uint64_t token)
{
    /* relaxed: we hold the lock; owner is ours to read. */
    if (shmring_load_relaxed(&m->owner) != token ||
        shmring_load_relaxed(&m->state) != SHMRING_MUTEX_OWNER_DIED)
        return SHMRING_ERR_ARG;
    shmring_store_relaxed(&m->state, SHMRING_MUTEX_CONSISTENT);
    return SHMRING_OK;
}

static inline int shmring_mutex_release(shmring_mutex *m, uint64_t token)
{
    int all = 0;
    /* relaxed: we hold the lock (checked right below). */
    if (shmring_load_relaxed(&m->owner) != token)
        return SHMRING_NOT_OWNER;
    if (shmring_load_relaxed(&m->state) == SHMRING_MUTEX_OWNER_DIED) {
        /* Released without repair: nobody may trust the data again. */
        shmring_store_relaxed(&m->state, SHMRING_MUTEX_NOT_RECOVERABLE);
        all = 1;
    }
    /* seq_cst [Y4][Y5]: release for the next holder's acquire CAS; seq_cst
     * so that the load of the word cannot miss a waiter's mark. */
    shmring_store_seq_cst(&m->owner, 0);
    shmring_mutex_wake_(m, all ? INT_MAX : 1);
    return SHMRING_OK;
}

/* Release after SHMRING_OWNER_DIED without repairing, for a reason that may
 * pass (out of memory or descriptors): the state stays "owner died", so the
 * next holder is told and tries the repair again.  (shmring_mutex_release
 * would make the lock unusable for good.) */
static inline int shmring_mutex_abandon(shmring_mutex *m, uint64_t token)
{
    /* relaxed: we hold the lock (checked right below). */
    if (shmring_load_relaxed(&m->owner) != token)
        return SHMRING_NOT_OWNER;
    /* seq_cst [Y4][Y5]: as in shmring_mutex_release. */
    shmring_store_seq_cst(&m->owner, 0);
    shmring_mutex_wake_(m, 1);
    return SHMRING_OK;
}

/* The steps of shmring_mutex_lock's wait (shmring/wait.h): mark the word
 * and try the lock; sleep on the word while it is marked, for a slice
 * (check_ns) at most; after a whole slice without the lock, the next try
 * looks at the holder's liveness (a dead holder's lock is taken over). */
typedef struct shmring_mutex_wait_ {
    shmring_mutex *m;
    uint64_t token;
    int check; /* a whole slice went by without the lock: look at the holder */
    int slept; /* a sleep ended: we may have taken the wake of a release */
} shmring_mutex_wait_;

static inline int shmring_mutex_lock_ready_(void *ctx, int last)
{
    shmring_mutex_wait_ *w = (shmring_mutex_wait_ *)ctx;
    int rc = shmring_mutex_mark_and_try_(w->m, w->token, w->check);
    (void)last; /* the mark needs no undoing: at most one spare wake */
    w->check = 0;
    return rc;
}

static inline int shmring_mutex_lock_sleep_(void *ctx, uint64_t until_ns)
{
    shmring_mutex_wait_ *w = (shmring_mutex_wait_ *)ctx;
    int rc = shmring_futex_wait_until(&w->m->word, SHMRING_MUTEX_SLEEPERS, until_ns);
    w->slept = 1;
    /* A whole slice without the lock: is its holder alive? */
    w->check = rc == SHMRING_TIMEOUT;
    return rc; /* SHMRING_ERR_SYS (EINTR) ends the wait: the caller sees the signal at once */
}

/* Take a robust mutex: spin `spin_ns`, then sleep, checking the holder's
 * liveness every `check_ns` (the slice of the wait, shmring/wait.h, whose
 * `hooks` may be NULL).  Returns as shmring_mutex_try_acquire, or
 * SHMRING_TIMEOUT / SHMRING_ERR_SYS (EINTR: a signal; call again) / what a
 * hook ended the wait with.  A waiter that gives up after a sleep passes
 * on the wake it may have taken. */
static inline int shmring_mutex_lock_hooked(shmring_mutex *m, uint64_t token, uint64_t spin_ns, uint64_t check_ns,
                                            uint64_t deadline_ns, const shmring_wait_hooks *hooks)
{
    shmring_mutex_wait_ w;
    int rc = shmring_mutex_try_acquire(m, token, 0);
    if (rc != SHMRING_AGAIN)
        return rc;
    rc = shmring_mutex_spin_acquire(m, token, spin_ns);
    if (rc != SHMRING_AGAIN)
        return rc;
    w.m = m;
    w.token = token;
    w.check = 0;
    w.slept = 0;
    rc = shmring_wait_for(&w, shmring_mutex_lock_ready_, shmring_mutex_lock_sleep_, check_ns, hooks, deadline_ns);
    if (w.slept && rc != SHMRING_OK && rc != SHMRING_OWNER_DIED && rc != SHMRING_NOT_RECOVERABLE) {
        int saved = errno;
        shmring_mutex_wake_(m, 1);
        errno = saved;
    }
    return rc;
}

/* shmring_mutex_lock_hooked without hooks. */
static inline int shmring_mutex_lock(shmring_mutex *m, uint64_t token, uint64_t spin_ns, uint64_t check_ns,
                                     uint64_t deadline_ns)
{
    return shmring_mutex_lock_hooked(m, token, spin_ns, check_ns, deadline_ns, NULL);
}

/* -- event (16 bytes) ---------------------------------------------------------- */

typedef struct shmring_event {
    uint32_t flag;     /* 0 clear, 1 set [Y6] */
    uint32_t waiters;  /* [Y6] */
    uint32_t gen;      /* futex word: bumped by every set, so that a set
                          followed at once by a clear still wakes the
                          waiters of that moment [Y6] */
    uint32_t reserved;
} shmring_event;
SHMRING_STATIC_ASSERT(sizeof(shmring_event) == 16, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_event, gen) == 8, "layout");

static inline int shmring_event_is_set(shmring_event *e)
{
    /* acquire [Y6]: pairs with the release in shmring_event_set. */
    return shmring_load_acquire(&e->flag) != 0;
}

/* A waiter's starting point: its wait ends when the event is set or when
 * the generation moves on from this value. */
static inline uint32_t shmring_event_generation(shmring_event *e)
{
    /* acquire [Y6]: pairs with the bump in shmring_event_set. */
    return shmring_load_acquire(&e->gen);
}

static inline void shmring_event_set(shmring_event *e)
{
    /* seq_cst [Y6]: release for is_set; then bump the generation and look
     * for announced sleepers (seq_cst, so none is missed). */
    shmring_store_seq_cst(&e->flag, 1u);
    shmring_fetch_add_seq_cst(&e->gen, 1u);
    if (shmring_load_seq_cst(&e->waiters) != 0)
        shmring_futex_wake(&e->gen, INT_MAX);
}

static inline void shmring_event_clear(shmring_event *e)
{
    /* relaxed: clearing publishes nothing. */
    shmring_store_relaxed(&e->flag, 0u);
}

/* Sleep while the event is clear and the generation is still `gen`. */
static inline int shmring_event_wait(shmring_event *e, uint32_t gen, uint64_t deadline_ns)
{
    int rc = SHMRING_OK;
    /* seq_cst [Y6]: announce, then re-check. */
    shmring_fetch_add_seq_cst(&e->waiters, 1u);
    if (shmring_load_seq_cst(&e->flag) == 0 && shmring_load_seq_cst(&e->gen) == gen)
        rc = shmring_futex_wait_until(&e->gen, gen, deadline_ns);
    /* relaxed: a hint for setters. */
    shmring_fetch_sub_relaxed(&e->waiters, 1u);
    return rc;
}

/* The words of shmring_event_wait for a waiter outside the blocking calls
 * (shmring/watch.h): the generation, announced in waiters [Y6]. */
static inline shmring_watch shmring_event_watch(shmring_event *e)
{
    return shmring_watch_make(&e->gen, &e->waiters, 0, 0, 0);
}

/* -- condition variable over a shmring_mutex (16 bytes) ------------------------ */

typedef struct shmring_cond {
    uint32_t seq;     /* futex word: bumped by every notify [Y7] */
    uint32_t waiters; /* registered waiters [Y7] */
    uint32_t wakeups; /* notifications not yet taken, at most `waiters` [Y7] */
    uint32_t reserved;
} shmring_cond;
SHMRING_STATIC_ASSERT(sizeof(shmring_cond) == 16, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_cond, wakeups) == 8, "layout");

/* Step 1 of a wait, with the mutex held: register, and return the
 * generation (seq) at registration.  Then release the mutex, wait with
 * shmring_cond_take / shmring_cond_sleep until a notification is taken (or
 * the deadline), call shmring_cond_done, take the mutex again. */
static inline uint32_t shmring_cond_prepare(shmring_cond *c)
{
    /* seq_cst [Y7]: a notify after this point counts us in `waiters`. */
    shmring_fetch_add_seq_cst(&c->waiters, 1u);
    return shmring_load_seq_cst(&c->seq);
}

/* Take one pending notification, if one was made after this waiter
 * registered (`current` is the seq just read, `registered` the one
 * shmring_cond_prepare returned): a waiter that arrives after a notify
 * cannot take it from the waiters it was meant for.  Returns 1 or 0. */
static inline int shmring_cond_take(shmring_cond *c, uint32_t registered, uint32_t current)
{
    uint32_t w;
    if (current == registered)
        return 0;
    /* seq_cst [Y7]: first guess for the CAS below, ordered after the read
     * of seq (shmring_cond_seq). */
    w = shmring_load_seq_cst(&c->wakeups);
    while (w > 0) {
        /* seq_cst [Y7]: pairs with the notifier's add to wakeups. */
        if (shmring_cas_weak_seq_cst(&c->wakeups, &w, w - 1))
            return 1;
    }
    return 0;
}

/* The value to sleep on: read it BEFORE shmring_cond_take, so that a
 * notification the take just missed has changed it. */
static inline uint32_t shmring_cond_seq(shmring_cond *c)
{
    /* seq_cst [Y7]: ordered before the take that follows. */
    return shmring_load_seq_cst(&c->seq);
}

static inline int shmring_cond_sleep(shmring_cond *c, uint32_t seq, uint64_t deadline_ns)
{
    return shmring_futex_wait_until(&c->seq, seq, deadline_ns);
}

/* Unregister (after a take, a timeout or an error).  Notifications beyond
 * the remaining waiters are dropped, so a late waiter cannot take a stale one. */
static inline void shmring_cond_done(shmring_cond *c)
{
    /* seq_cst [Y7]: unregister, then clamp wakeups to the waiters left
     * (pairs with the notifier's reads of waiters and wakeups). */
    uint32_t left = (shmring_fetch_sub_seq_cst(&c->waiters, 1u) - 1u);
    uint32_t w = shmring_load_seq_cst(&c->wakeups);
    while (w > left && !shmring_cas_weak_seq_cst(&c->wakeups, &w, left))
        ;
}

/* Wake up to n of the registered waiters. */
static inline void shmring_cond_notify(shmring_cond *c, int n)
{
    uint32_t waiters = shmring_load_seq_cst(&c->waiters);
    uint32_t w = shmring_load_seq_cst(&c->wakeups), next;
    do {
        uint64_t want = (uint64_t)w + (uint64_t)(n > 0 ? n : 0);
        next = want > waiters ? (w > waiters ? w : waiters) : (uint32_t)want;
        if (next == w)
            return; /* every registered waiter already has one (or none waits) */
        /* seq_cst [Y7]: the wakeups before the seq bump, so that a waiter
         * whose take missed them sees seq change. */
    } while (!shmring_cas_weak_seq_cst(&c->wakeups, &w, next));
    shmring_fetch_add_seq_cst(&c->seq, 1u);
    shmring_futex_wake(&c->seq, n);
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_SYNC_H */
