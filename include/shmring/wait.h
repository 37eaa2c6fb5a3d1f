/*
 * shmring/wait.h - the one wait loop of shmring: wait for a condition until
 * a deadline, sleeping in slices and looking, between slices, at what the
 * sleep cannot see (signals, a peer's liveness, a handle closed by another
 * thread).
 *
 * Every blocking call of the headers is this loop with its own two steps:
 *
 *   ready(ctx, last)   look at the condition (and try the operation)
 *   sleep(ctx, until)  sleep once, until a wake or `until` at the latest
 *
 * and a host (the CPython extension, a C program with its own signal flag)
 * may add what it needs around each sleep through shmring_wait_hooks:
 * release and re-take the GIL before and after the sleep, and check for
 * signals or a close() from another thread between slices.
 *
 *   for (;;) {
 *       last = deadline passed
 *       r = ready(ctx, last)         not SHMRING_AGAIN: return r
 *       if last: return SHMRING_TIMEOUT
 *       hooks.before_sleep           (e.g. release the GIL)
 *       s = sleep(ctx, min(now + slice, deadline))
 *       hooks.after_sleep            (e.g. take the GIL back)
 *       s not OK / TIMEOUT / AGAIN: return s
 *       b = hooks.between(ctx, s)    not SHMRING_OK: return b
 *   }
 *
 * Contracts:
 * - ready returns SHMRING_OK when the condition holds (the wait returns
 *   SHMRING_OK), SHMRING_AGAIN when it does not yet, anything else to end
 *   the wait with that result.  Unless `last`, a ready that says AGAIN may
 *   prepare the sleep (register as a sleeper, read the futex word into
 *   ctx): the next step is always the sleep, which undoes it.  With `last`
 *   (the deadline has passed: this is the final look) it prepares nothing.
 *   A ready may decide to give up itself (it holds a lock and sees the
 *   deadline pass): it returns SHMRING_TIMEOUT.
 * - sleep sleeps once, up to `until` (CLOCK_MONOTONIC ns, never 0).
 *   SHMRING_OK (woken), SHMRING_TIMEOUT (the slice ran out) or SHMRING_AGAIN
 *   (a spurious or interrupted sleep) go on with the next slice; anything
 *   else ends the wait with that result.  What a signal (EINTR) does is the
 *   operation's choice: most look again (the hooks' `between` sees the
 *   signal), shmring_mutex_lock returns SHMRING_ERR_SYS / EINTR at once.
 * - A hook may return a negative value of its own (the extension: -1, a
 *   Python exception is set); the wait returns it unchanged.  Shmring
 *   results are never negative.
 * - `slice_ns` bounds each sleep: how late the between-slices checks can
 *   come.  0 is SHMRING_WAIT_SLICE_NS (50 ms: a Ctrl-C is seen within it);
 *   waits that look at a holder's liveness use shorter slices (10 ms).
 */
#ifndef SHMRING_WAIT_H
#define SHMRING_WAIT_H

#include "base.h"
#include "os.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The longest sleep between two looks at signals and at peers: a blocked
 * call notices Ctrl-C (or a dead peer) within it. */
#define SHMRING_WAIT_SLICE_NS UINT64_C(50000000)

/* The longest poll a queue or topic may ask its waiters for (its spin_ns):
 * longer configurations are refused as corrupt. */
#define SHMRING_MAX_SPIN_NS 50000000u

/* The longest a non-blocking call (a queue's get_nowait, put_nowait,
 * get(block=False), get_many_nowait) waits for the lock it needs when a
 * peer holds it: a holder stopped (SIGSTOP, a debugger, a frozen cgroup) or
 * descheduled while holding it must not stall a call that promised not to
 * block.  Past it the call reports what it would without the item or the
 * room (Empty / Full).  It sleeps on the lock's futex word, spinning
 * 2 us at most. */
#define SHMRING_NOWAIT_LOCK_NS 1000000u

/* The operation being waited for: its two steps and its slice. */
typedef struct shmring_wait_op {
    void *ctx;
    int (*ready)(void *ctx, int last);
    int (*sleep)(void *ctx, uint64_t until_ns);
    uint64_t slice_ns; /* 0: SHMRING_WAIT_SLICE_NS */
} shmring_wait_op;

/* What the waiting thread's host does around each sleep; every member may
 * be NULL, and so may the whole struct. */
typedef struct shmring_wait_hooks {
    void *ctx;
    void (*before_sleep)(void *ctx); /* e.g. release the GIL */
    void (*after_sleep)(void *ctx);  /* e.g. take it back */
    /* After each sleep, before the next look: `slept` is the sleep's result
     * (SHMRING_OK: woken).  SHMRING_OK goes on; anything else ends the wait
     * with that result (a signal handler raised, the handle is closing). */
    int (*between)(void *ctx, int slept);
} shmring_wait_hooks;

/* Wait until op->ready says so, or until `deadline_ns` (CLOCK_MONOTONIC;
 * 0 = no limit).  Returns what ready returned (SHMRING_OK when the
 * condition holds), SHMRING_TIMEOUT, or what a sleep or a hook ended the
 * wait with. */
static inline int shmring_wait_sliced(const shmring_wait_op *op, const shmring_wait_hooks *hooks,
                                      uint64_t deadline_ns)
{
    uint64_t slice = op->slice_ns != 0 ? op->slice_ns : SHMRING_WAIT_SLICE_NS;
    for (;;) {
        uint64_t now = shmring_now_ns(), until;
        int last = deadline_ns != 0 && now >= deadline_ns;
        int rc = op->ready(op->ctx, last);
        if (rc != SHMRING_AGAIN)
            return rc;
        if (last)
            return SHMRING_TIMEOUT;
        until = deadline_ns != 0 && deadline_ns - now < slice ? deadline_ns : now + slice;
        if (hooks != NULL && hooks->before_sleep != NULL)
            hooks->before_sleep(hooks->ctx);
        rc = op->sleep(op->ctx, until);
        if (hooks != NULL && hooks->after_sleep != NULL)
            hooks->after_sleep(hooks->ctx);
        if (rc != SHMRING_OK && rc != SHMRING_TIMEOUT && rc != SHMRING_AGAIN)
            return rc;
        if (hooks != NULL && hooks->between != NULL) {
            int b = hooks->between(hooks->ctx, rc);
            if (b != SHMRING_OK)
                return b;
        }
    }
}

/* shmring_wait_sliced for the operation made of `ctx`, its two steps and
 * `slice_ns` (0: SHMRING_WAIT_SLICE_NS): what every blocking call of the
 * headers runs, with its own waiter as ctx. */
static inline int shmring_wait_for(void *ctx, int (*ready_step)(void *, int), int (*sleep_step)(void *, uint64_t),
                                   uint64_t slice_ns, const shmring_wait_hooks *hooks, uint64_t deadline_ns)
{
    shmring_wait_op op;
    op.ctx = ctx;
    op.ready = ready_step;
    op.sleep = sleep_step;
    op.slice_ns = slice_ns;
    return shmring_wait_sliced(&op, hooks, deadline_ns);
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_WAIT_H */
