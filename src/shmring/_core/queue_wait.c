/*
 * queue_wait.c - how a Queue's calls wait: the queue lock (a robust mutex,
 * repaired after a holder died), the blocking run of one put or get
 * (queue_run: the lock, the operation, the spin_ns poll, the sleep on the
 * side's word [Q2]), and join().  Every wait is a shmring_wait_sliced with
 * the GIL hooks (gil.c); a handle closed by another thread of ours ends
 * them [Q5].
 */
#include "core.h"

/* Release the queue lock (and let the garbage collector run again). */
void queue_unlock(QueueObject *self)
{
    shmring_queue_unlock(self->ctrl, self->token);
    if (self->gc_was_enabled)
        PyGC_Enable();
}

/* Take the queue lock.  0, or -1 with an exception; 1 on timeout.  While
 * it is held the garbage collector is off: an error raised under the lock
 * allocates, and a collection could run a finalizer that uses this queue
 * and would wait for a lock its own process holds. */
int queue_lock(QueueObject *self, uint64_t deadline)
{
    int rc, r = lock_robust(&self->ctrl->lock, self->token, deadline, &rc);
    if (r != 0)
        return r;
    self->gc_was_enabled = PyGC_Disable();
    if (rc == SHMRING_NOT_RECOVERABLE) {
        if (self->gc_was_enabled)
            PyGC_Enable();
        queue_corrupt(self, "lock (abandoned in an inconsistent state)");
        return -1;
    }
    if (rc == SHMRING_OWNER_DIED) {
        /* The last holder died holding it: every change it made is either
         * committed by its single store or invisible; only the counters may
         * lag.  Recount, then go on. */
        int repaired = queue_recount(self);
        if (repaired < 0) {
            /* A system error (out of memory or descriptors) may pass: leave
             * the lock to be repaired by the next holder.  Corruption stays. */
            if (repaired == -2)
                shmring_mutex_abandon(&self->ctrl->lock, self->token);
            else
                shmring_queue_unlock(self->ctrl, self->token); /* unrepaired: unusable for all */
            if (self->gc_was_enabled)
                PyGC_Enable();
            return -1;
        }
        shmring_mutex_consistent(&self->ctrl->lock, self->token);
    }
    return 0;
}


/* The GIL hooks' `closing`: this handle's close() ran [Q5]. */
static int queue_closing(void *handle)
{
    return queue_handle_closed((QueueObject *)handle);
}

/* -- one put or get, until it is done ------------------------------------------ */

/* The steps of queue_run (shmring_wait_sliced).  ready (GIL held): take the
 * lock, run the operation; done, or give up at the deadline, or prepare
 * the next sleep: the spin_ns poll first (the lock released,
 * nothing registered), then the sleep on the side's word, registered under
 * the lock [Q2] and counted in `waiting` with the GIL held [Q5].  sleep
 * (GIL released): the poll, or the futex sleep then the unregistration. */
typedef struct {
    QueueObject *self;
    QueueOp *op;
    int is_put;
    uint64_t deadline;
    uint32_t *seq, *waiters; /* the sleep word of our side, and its sleepers */
    uint32_t my_seq;         /* the word's value when we registered */
    uint64_t mark;           /* the poll's: the other side's counter when it began */
    int poll, polled;        /* the next sleep is the poll; the last one was */
    int counted;             /* counted in self->waiting (GIL held) */
    int slept;               /* a futex sleep happened: we may have taken a wake */
} QueueWait;

static void queue_wait_uncount(QueueWait *w)
{
    if (w->counted) {
        w->self->waiting--;
        w->counted = 0;
    }
}

/* Done (lock held): read who sleeps, release the lock, wake them [Q2]. */
static void queue_done_wake(QueueObject *self, QueueOp *op)
{
    shmring_queue_ctrl *c = self->ctrl;
    /* relaxed [Q2]: read under the lock, after the change. */
    uint32_t wake_items = shmring_load_relaxed(&c->items_waiters);
    uint32_t wake_room = shmring_load_relaxed(&c->room_waiters);
    uint64_t count = shmring_load_relaxed(&c->count);
    queue_unlock(self);
    if (op->put != NULL) {
        shmring_queue_wake(&c->items_seq, wake_items, (int)(op->put->n < INT_MAX ? op->put->n : INT_MAX));
        /* Room left and producers asleep: pass it on [Q2]. */
        if (!self->config.maxsize || count < self->config.maxsize)
            shmring_queue_wake(&c->room_seq, wake_room, 1);
    } else {
        shmring_queue_wake(&c->room_seq, wake_room, (int)(op->get->n < INT_MAX ? op->get->n : INT_MAX));
        if (count > 0)
            shmring_queue_wake(&c->items_seq, wake_items, 1);
    }
}

/* Take the lock and run the operation (GIL held).  SHMRING_OK: done (the
 * lock released, the sleepers woken); SHMRING_AGAIN: no room or no item
 * now, the lock still held; SHMRING_TIMEOUT: the lock was not taken in
 * time; WAIT_CLOSING: this handle is closed; WAIT_RAISED: an exception
 * (the lock released). */
static int queue_attempt(QueueWait *w)
{
    QueueObject *self = w->self;
    int r, lr;
    if (queue_handle_closed(self))
        return WAIT_CLOSING; /* by another thread of ours, while this one waited */
    lr = queue_lock(self, w->deadline);
    if (lr != 0)
        return lr < 0 ? WAIT_RAISED : (int)SHMRING_TIMEOUT;
    r = w->is_put ? queue_put_locked(self, w->op->put) : queue_get_locked(self, w->op->get, w->op->max);
    if (r == QUEUE_DONE) {
        queue_done_wake(self, w->op);
        return SHMRING_OK;
    }
    if (r == QUEUE_ERROR) {
        queue_unlock(self);
        return WAIT_RAISED;
    }
    return SHMRING_AGAIN;
}

static int queue_wait_ready(void *ctx, int last)
{
    QueueWait *w = (QueueWait *)ctx;
    QueueObject *self = w->self;
    int rc;
    queue_wait_uncount(w);
    rc = queue_attempt(w);
    if (rc != SHMRING_AGAIN)
        return rc;
    if (last || (w->deadline && shmring_now_ns() >= w->deadline)) {
        queue_unlock(self);
        return SHMRING_TIMEOUT;
    }
    w->poll = !w->polled && self->config.spin_ns;
    w->polled = w->poll;
    if (w->poll) {
        /* relaxed: a mark to compare with while polling. */
        w->mark = shmring_load_relaxed(w->is_put ? &self->ctrl->gets : &self->ctrl->puts);
        queue_unlock(self);
        return SHMRING_AGAIN;
    }
    w->my_seq = shmring_queue_register(w->seq, w->waiters);
    queue_unlock(self);
    /* [Q5]: counted and checked with the GIL held, which close() holds too:
     * either close() ran before the check below, or it sees `waiting` and
     * bumps the word this thread sleeps on. */
    self->waiting++;
    w->counted = 1;
    if (queue_handle_closed(self)) {
        shmring_queue_unregister(w->waiters);
        return WAIT_CLOSING;
    }
    return SHMRING_AGAIN;
}

/* The poll, before sleeping: a futex wake and sleep per item cost more than
 * the item (4 producers on a full queue ran at 0.5M items/s sleeping, 1.2M
 * polling).  It yields while polling: with more processes than CPUs the
 * peer we wait for needs our CPU. */
static void queue_poll(QueueWait *w, uint64_t until)
{
    shmring_queue_ctrl *c = w->self->ctrl;
    uint64_t spin_until = shmring_now_ns() + w->self->config.spin_ns;
    unsigned i;
    if (spin_until > until)
        spin_until = until;
    for (i = 1;; i++) {
        /* relaxed: a hint; the lock's acquire orders the real check. */
        if (shmring_load_relaxed(w->is_put ? &c->gets : &c->puts) != w->mark || queue_handle_closed(w->self))
            break;
        if (i & 7u)
            shmring_cpu_relax();
        else if (sched_yield(), shmring_now_ns() >= spin_until)
            break;
    }
}

static int queue_wait_sleep(void *ctx, uint64_t until)
{
    QueueWait *w = (QueueWait *)ctx;
    if (w->poll) {
        queue_poll(w, until);
        return SHMRING_AGAIN;
    }
    shmring_futex_wait_until(w->seq, w->my_seq, until);
    shmring_queue_unregister(w->waiters);
    w->slept = 1;
    return SHMRING_AGAIN; /* woken, timed out or interrupted: look again */
}

int queue_run(QueueObject *self, QueueOp *op, int block, uint64_t deadline)
{
    shmring_queue_ctrl *c = self->ctrl;
    QueueWait w;
    int rc;
    memset(&w, 0, sizeof w);
    w.self = self;
    w.op = op;
    w.is_put = op->put != NULL;
    /* A non-blocking call waits for a held lock SHMRING_NOWAIT_LOCK_NS at
     * most, then reports Empty / Full (deadline 0 would wait for ever). */
    w.deadline = block ? deadline : shmring_now_ns() + SHMRING_NOWAIT_LOCK_NS;
    w.seq = w.is_put ? &c->room_seq : &c->items_seq;
    w.waiters = w.is_put ? &c->room_waiters : &c->items_waiters;
    /* The common case without setting up the wait (nor reading the clock):
     * done at once.  Else the wait tries again, then polls or sleeps. */
    rc = queue_attempt(&w);
    if (rc == SHMRING_AGAIN) {
        queue_unlock(self);
        rc = block ? gil_wait_sliced(&w, queue_wait_ready, queue_wait_sleep, queue_closing, self, deadline)
                   : (int)SHMRING_TIMEOUT;
    }
    queue_wait_uncount(&w);
    if (rc == SHMRING_OK)
        return 0;
    if (rc == WAIT_SIGNALLED && w.slept)
        shmring_queue_wake(w.seq, 1, 1); /* we may have taken a wake meant for someone: pass it on */
    if (rc != SHMRING_TIMEOUT && rc != WAIT_CLOSING)
        return -1; /* an exception is set */
    /* A wake-up taken just before the deadline (or the close) must not be
     * lost to the others (relaxed: a hint; a spare wake is harmless). */
    if (w.slept)
        shmring_queue_wake(w.seq, shmring_load_relaxed(w.waiters), 1);
    if (queue_handle_closed(self))
        raise_queue_closed(self);
    else
        PyErr_SetNone(w.is_put ? queue_full_error : queue_empty_error);
    return -1;
}

/* -- join ------------------------------------------------------------------------- */

/* The steps of join's wait (shmring_wait_sliced): ready announces in
 * done_waiters [Q3] and looks at the unfinished count; sleep sleeps on
 * done_seq, then withdraws the announcement. */
typedef struct {
    QueueObject *self;
    uint32_t seq;
    int counted; /* counted in self->waiting (GIL held) [Q5] */
} JoinWait;

static int join_wait_ready(void *ctx, int last)
{
    JoinWait *w = (JoinWait *)ctx;
    QueueObject *self = w->self;
    shmring_queue_ctrl *c = self->ctrl;
    int rc;
    if (w->counted) {
        self->waiting--;
        w->counted = 0;
    }
    /* seq_cst [Q3]: announce, read seq, then re-read done and puts; pairs
     * with task_done's bump and load of done_waiters. */
    shmring_fetch_add_seq_cst(&c->done_waiters, 1u);
    w->seq = shmring_load_seq_cst(&c->done_seq);
    rc = shmring_queue_unfinished(c) == 0 ? (int)SHMRING_OK : last ? (int)SHMRING_TIMEOUT : (int)SHMRING_AGAIN;
    if (rc == SHMRING_AGAIN) {
        self->waiting++; /* [Q5], as in queue_run */
        w->counted = 1;
        if (!queue_handle_closed(self))
            return rc; /* announced: the sleep withdraws it */
        rc = WAIT_CLOSING;
    }
    /* relaxed: a hint for task_done. */
    shmring_fetch_sub_relaxed(&c->done_waiters, 1u);
    return rc;
}

static int join_wait_sleep(void *ctx, uint64_t until)
{
    JoinWait *w = (JoinWait *)ctx;
    shmring_queue_ctrl *c = w->self->ctrl;
    shmring_futex_wait_until(&c->done_seq, w->seq, until);
    /* relaxed: a hint for task_done. */
    shmring_fetch_sub_relaxed(&c->done_waiters, 1u);
    return SHMRING_AGAIN;
}

PyObject *queue_join(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[1];
    uint64_t deadline;
    JoinWait w;
    int rc;
    if (parse_args_timeout("join", args, nargs, kwnames, ARGS_TIMEOUT, 0, 1, a, &deadline) < 0 ||
        queue_usable(self) < 0)
        return NULL;
    w.self = self;
    w.seq = 0;
    w.counted = 0;
    rc = gil_wait_sliced(&w, join_wait_ready, join_wait_sleep, queue_closing, self, deadline);
    if (w.counted)
        self->waiting--;
    if (rc == SHMRING_OK)
        Py_RETURN_NONE;
    if (rc == SHMRING_TIMEOUT)
        return PyErr_Format(timeout_error, "queue %R: join() timed out with unfinished tasks", queue_name(self));
    if (rc == WAIT_CLOSING)
        return raise_queue_closed(self); /* by another thread of ours */
    return NULL;
}
