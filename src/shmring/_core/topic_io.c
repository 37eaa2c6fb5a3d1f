/*
 * topic_io.c - a TopicEnd's publishing (send, send_obj, reserve) and
 * subscribing (recv, recv_bytes, latest, peek).  Publishers serialize
 * outside the topic lock, copy in under it; subscribers read without a
 * lock and check their copy against the reclaim point afterwards.  Each
 * call holds the end's gate from topic_enter to its return.
 */
#include "core.h"

static int topic_lagged(TopicEndObject *self);
static void topic_move_to(TopicEndObject *self, uint64_t cursor, uint64_t next_seq);

/* topic_enter when another call or a loan has the end: 0 entered, or -1
 * with an exception (Timeout when it kept it past the deadline, or at once
 * with a zero timeout). */
static int topic_enter_slow(TopicEndObject *self, int role, uint64_t deadline, int no_wait)
{
    int r = gate_enter_slow(&self->gate, TOPIC_END, "topic", topic_name(self),
                            role == TOPIC_PUBLISHER ? "publishing" : "receiving", deadline, no_wait);
    if (r > 0)
        PyErr_Format(timeout_error, "topic %R: another thread's call is running on this %s", topic_name(self),
                     role == TOPIC_PUBLISHER ? "publisher" : "subscription");
    return r != 0 ? -1 : 0;
}

/* Enter this end for one call of `role` (its GATE_HOLD leaves it): 0, or -1
 * with an exception. */
static inline int topic_enter(TopicEndObject *self, int role, GateHold *hold, uint64_t deadline, int no_wait)
{
    if (topic_usable(self, role) < 0)
        return -1;
    if (gate_free(&self->gate, TOPIC_END))
        gate_take(&self->gate, TOPIC_END);
    else if (topic_enter_slow(self, role, deadline, no_wait) < 0)
        return -1;
    hold->held = 1;
    return 0;
}

/* -- publishing ---------------------------------------------------------------- */

/* The GIL hooks' `closing`: has another thread begun close()? */
static int topic_closing(void *handle)
{
    return (((TopicEndObject *)handle)->gate.state & GATE_CLOSING) != 0;
}

/* Lock and reserve `len` bytes: without giving the GIL away when the lock is
 * free and there is room; else shmring_topic_reserve_wait_hooked (the
 * lock's wait, then the wait for room under BLOCK, in slices with the GIL
 * released).  0 with the lock held, -1 with an exception. */
static int topic_reserve_locked(TopicEndObject *self, uint32_t tag, uint64_t len, uint64_t deadline,
                                unsigned char **out, uint64_t *pos)
{
    GilWait gil;
    if (topic_check_lock_not_held_here(self) < 0)
        return -1;
    if (shmring_mutex_try_acquire(&self->t.ctrl->lock, self->token, 0) == SHMRING_OK) {
        if (shmring_topic_reserve(&self->t, tag, len, 0, out, pos) == SHMRING_OK)
            return 0;
        topic_unlock(self); /* the slow path below says why */
    }
    gil_wait_init(&gil, topic_closing, self);
    for (;;) {
        int rc = shmring_topic_reserve_wait_hooked(&self->t, self->token, tag, len, deadline, out, pos, &gil.hooks);
        if (rc == WAIT_CLOSING || topic_closing(self)) {
            if (rc == SHMRING_OK)
                topic_unlock(self); /* reserved, not committed: the record stays past tail */
            return topic_raise_closing(self);
        }
        if (rc == SHMRING_OK)
            return 0;
        if (rc == SHMRING_ERR_SYS) {
            /* A signal cut the lock's wait short: run its handler, wait again. */
            if (PyErr_CheckSignals() < 0)
                return -1;
            continue;
        }
        if (rc == SHMRING_TIMEOUT)
            PyErr_Format(timeout_error,
                         "topic %R: no room for the message in time (a slow subscriber, or another "
                         "publisher holding the lock)",
                         topic_name(self));
        else if (rc == SHMRING_TOO_BIG)
            PyErr_Format(PyExc_ValueError, "topic %R: a message of %llu bytes can never fit its %llu-byte ring",
                         topic_name(self), (unsigned long long)len, (unsigned long long)self->t.capacity);
        else if (rc == SHMRING_NOT_RECOVERABLE)
            topic_corrupt(self, "lock (abandoned in an inconsistent state)");
        else if (rc >= 0)
            topic_corrupt(self, "ring counters");
        return -1;
    }
}

static void topic_commit_unlock(TopicEndObject *self, uint64_t pos)
{
    int wake = shmring_topic_commit(&self->t, pos);
    topic_unlock(self);
    if (wake)
        shmring_topic_wake_subscribers(&self->t);
}

/* Publish `data` as a record of `tag`: send() and send_obj(). */
static PyObject *topic_publish(TopicEndObject *self, PyObject *data, uint32_t tag, PyObject *timeout)
{
    GATE_HOLD(hold, &self->gate, TOPIC_END);
    Py_buffer buf;
    uint64_t deadline, pos;
    unsigned char *dst;
    int no_wait = parse_timeout(timeout, &deadline);
    if (no_wait < 0 || PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    if (topic_enter(self, TOPIC_PUBLISHER, &hold, deadline, no_wait) < 0 ||
        topic_reserve_locked(self, tag, (uint64_t)buf.len, deadline, &dst, &pos) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    copy_maybe_without_gil(dst, buf.buf, (size_t)buf.len);
    topic_commit_unlock(self, pos);
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
}

static const char *const ARGS_MISSED_TIMEOUT[] = {"missed", "timeout"};

/* send_gap(missed, timeout=None): a gap marker (shmring/topic.h) telling
 * every subscriber that `missed` messages were lost before they reached
 * this topic; it waits for room as send does. */
PyObject *topic_send_gap(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    GATE_HOLD(hold, &self->gate, TOPIC_END);
    Py_ssize_t missed;
    uint64_t deadline, pos, count, next_seq;
    unsigned char *dst;
    int no_wait = parse_count_timeout("send_gap", ARGS_MISSED_TIMEOUT, args, nargs, kwnames, 1,
                                      "missed must be at least 1, not %zd", &missed, &deadline);
    if (no_wait < 0 || topic_enter(self, TOPIC_PUBLISHER, &hold, deadline, no_wait) < 0 ||
        topic_reserve_locked(self, SHMRING_REC_GAP, sizeof(count), deadline, &dst, &pos) < 0)
        return NULL;
    count = (uint64_t)missed;
    /* relaxed: under the lock [T3]. */
    next_seq = __atomic_load_n(&self->t.ctrl->next_seq, __ATOMIC_RELAXED);
    if (count > UINT64_MAX - next_seq) {
        topic_unlock(self); /* reserved, not committed: nothing published */
        PyErr_Format(PyExc_ValueError, "topic %R: a gap of %zd messages would number them past 2**64 - 1",
                     topic_name(self), missed);
        return NULL;
    }
    shmring_topic_copy_in(dst, &count, sizeof(count)); /* lapped readers may read it */
    if (shmring_topic_commit_gap(&self->t, pos, count)) {
        topic_unlock(self);
        shmring_topic_wake_subscribers(&self->t);
    } else {
        topic_unlock(self);
    }
    Py_RETURN_NONE;
}

PyObject *topic_send(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    if (parse_args("send", args, nargs, kwnames, ARGS_DATA_TIMEOUT, 1, 2, a) < 0)
        return NULL;
    return topic_publish(self, a[0], SHMRING_REC_BYTES, a[1]);
}

PyObject *topic_send_obj(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"obj", "timeout"};
    PyObject *a[2], *data, *result, *pargs[2];
    if (parse_args("send_obj", args, nargs, kwnames, names, 1, 2, a) < 0)
        return NULL;
    pargs[0] = a[0];
    pargs[1] = pickle_protocol;
    data = PyObject_Vectorcall(pickle_dumps, pargs, 2, NULL);
    if (data == NULL)
        return NULL;
    result = topic_publish(self, data, SHMRING_REC_OBJECT, a[1]);
    Py_DECREF(data);
    return result;
}

/* Records per hold of the topic lock in send_many: other publishers get
 * their turn between runs. */
#define PUBLISH_MANY_RUN 64

/* Publish the checked batch `bufs` in order: runs of up to
 * PUBLISH_MANY_RUN records under one hold of the lock, each committed as
 * it is written, the subscribers woken once per run.  Returns how many were
 * published; fewer with an exception (Timeout: no room in time). */
static Py_ssize_t topic_publish_batch(TopicEndObject *self, const Py_buffer *bufs, Py_ssize_t n, uint64_t deadline)
{
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char *dst;
        uint64_t pos;
        int wake = 0, run = 0;
        if (topic_reserve_locked(self, SHMRING_REC_BYTES, (uint64_t)bufs[i].len, deadline, &dst, &pos) < 0)
            return i;
        for (;;) {
            copy_maybe_without_gil(dst, bufs[i].buf, (size_t)bufs[i].len);
            wake |= shmring_topic_commit(&self->t, pos);
            if (++i == n || ++run == PUBLISH_MANY_RUN ||
                shmring_topic_reserve(&self->t, SHMRING_REC_BYTES, (uint64_t)bufs[i].len, 0, &dst, &pos) != SHMRING_OK)
                break; /* no room without waiting: the lock is let go, topic_reserve_locked waits */
        }
        topic_unlock(self);
        if (wake)
            shmring_topic_wake_subscribers(&self->t);
    }
    return n;
}

/* send_many(buffers, timeout=None) -> int: every buffer checked first (a
 * bad one, or one that can never fit, sends nothing), then published in
 * order; a Timeout says in exc.sent how many went. */
PyObject *topic_send_many(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    GATE_HOLD(hold, &self->gate, TOPIC_END);
    PyObject *a[2], *seq, *result = NULL;
    Py_buffer *bufs;
    uint64_t deadline;
    Py_ssize_t n, got, sent;
    int no_wait = parse_args_timeout("send_many", args, nargs, kwnames, ARGS_BUFFERS_TIMEOUT, 1, 2, a, &deadline);
    /* A tuple of its own: getting an item's buffer may run Python code that
     * changes the caller's list. */
    if (no_wait < 0 || (seq = PySequence_Tuple(a[0])) == NULL)
        return NULL;
    n = PyTuple_GET_SIZE(seq);
    bufs = PyMem_New(Py_buffer, (size_t)(n ? n : 1));
    if (bufs == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (got = 0; got < n; got++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(seq, got), &bufs[got], PyBUF_SIMPLE) < 0)
            goto done;
        if (self->mapping != NULL &&
            shmring_topic_record_size((uint64_t)bufs[got].len) > self->t.capacity) {
            PyErr_Format(PyExc_ValueError,
                         "topic %R: message %zd of the batch has %zd bytes and can never fit its %llu-byte ring; "
                         "nothing was sent", topic_name(self), got, bufs[got].len,
                         (unsigned long long)self->t.capacity);
            got++;
            goto done;
        }
    }
    if (topic_enter(self, TOPIC_PUBLISHER, &hold, deadline, no_wait) < 0) {
        note_sent(0);
        goto done;
    }
    sent = topic_publish_batch(self, bufs, n, deadline);
    if (sent < n)
        note_sent(sent);
    else
        result = PyLong_FromSsize_t(sent);
done:
    while (got > 0)
        PyBuffer_Release(&bufs[--got]);
    PyMem_Free(bufs);
    Py_DECREF(seq);
    return result;
}

/* A loan of this topic completes: a reserve commits its first commit_len
 * bytes or is dropped, releasing the topic lock either way; a peek moves
 * the cursor past its message (Lagged if a publisher reclaimed it while it
 * was read: what was read may be torn) or leaves it unread. */
static int topic_loan_finish(LoanObject *l, int how)
{
    TopicEndObject *self = (TopicEndObject *)l->owner;
    topic_fork_reset(self); /* a loan inherited through fork is the parent's: dropped there */
    if (l->state == LOAN_DONE)
        return 0;
    if (!l->readonly) {
        topic_note_reserve(self, 0, l->thread);
        if (how == LOAN_COMPLETE) {
            shmring_topic_record *r = (shmring_topic_record *)(self->t.data + l->pos % self->t.capacity);
            r->len = (uint32_t)l->commit_len; /* shorter is fine: nothing follows it yet */
            topic_commit_unlock(self, l->pos);
        } else {
            topic_unlock(self); /* nothing committed: the record stays past tail */
        }
        return 0;
    }
    if (how != LOAN_COMPLETE)
        return 0;
    if (shmring_topic_still_valid(&self->t, l->pos) != SHMRING_OK)
        return topic_lagged(self) < 0 ? -1 : 0; /* the message looked at was reclaimed meanwhile */
    topic_move_to(self, l->pos + l->size, l->seq + 1);
    return 0;
}

/* reserve(n, timeout=None) -> Loan: n zero-filled bytes in place (or not:
 * _reserve_unzeroed, as channel_reserve_unzeroed); the topic lock is held
 * until the loan completes. */
static PyObject *topic_lend(TopicEndObject *self, const char *fname, int zero, PyObject *const *args,
                            Py_ssize_t nargs, PyObject *kwnames)
{
    GATE_HOLD(hold, &self->gate, TOPIC_END);
    PyObject *a[2];
    LoanObject *loan;
    Py_ssize_t n;
    uint64_t deadline, pos;
    unsigned char *dst;
    int no_wait;
    if ((no_wait = parse_args_timeout(fname, args, nargs, kwnames, ARGS_N_TIMEOUT, 1, 2, a, &deadline)) < 0)
        return NULL;
    if (parse_count(a[0], 0, "reserve() size must be >= 0, not %zd", &n) < 0)
        return NULL;
    if (topic_enter(self, TOPIC_PUBLISHER, &hold, deadline, no_wait) < 0 ||
        topic_reserve_locked(self, SHMRING_REC_BYTES, (uint64_t)n, deadline, &dst, &pos) < 0)
        return NULL;
    if (zero)
        zero_maybe_without_gil(dst, (size_t)n);
    loan = loan_new((PyObject *)self, &self->gate, TOPIC_END, topic_loan_finish, topic_name(self), "topic", dst,
                    (uint64_t)n, 0);
    if (loan == NULL) {
        topic_unlock(self);
        return NULL;
    }
    loan->pos = pos;
    topic_note_reserve(self, 1, loan->thread);
    return (PyObject *)loan;
}

PyObject *topic_reserve(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return topic_lend(self, "reserve", 1, args, nargs, kwnames);
}

PyObject *topic_reserve_unzeroed(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return topic_lend(self, "_reserve_unzeroed", 0, args, nargs, kwnames);
}

/* -- subscribing ------------------------------------------------------------------ */

/* The steps of topic_wait_data (shmring_wait_sliced).  ready (GIL held):
 * has tail moved past the cursor?  If not, prepare the sleep: the spin_ns
 * poll, and the futex sleep on data_seq after announcing in data_waiters
 * [T4], in turn.  sleep (GIL released): the poll, or the futex sleep, then
 * the announcement withdrawn. */
typedef struct {
    TopicEndObject *self;
    uint64_t cursor;
    int *polled;  /* of the call: the last sleep was the poll (the next is the futex sleep) */
    int poll;     /* this sleep is the poll */
    uint32_t seq; /* data_seq, read after announcing */
} DataWait;

static int data_wait_ready(void *ctx, int last)
{
    DataWait *w = (DataWait *)ctx;
    shmring_topic_ctrl *c = w->self->t.ctrl;
    /* acquire [T1]: pairs with the publisher's release of tail (the
     * record is read by shmring_topic_next, which acquires again). */
    if (shmring_load_acquire(&c->tail) != w->cursor)
        return SHMRING_OK;
    if (last)
        return SHMRING_TIMEOUT;
    /* relaxed: the handle's setting (topic_set_spin_ns). */
    w->poll = !*w->polled && shmring_load_relaxed(&w->self->spin_ns);
    *w->polled = w->poll;
    if (w->poll)
        return SHMRING_AGAIN;
    /* seq_cst [T4]: announce, read data_seq, re-read tail; pairs with the
     * publisher's seq_cst store of tail and load of data_waiters. */
    shmring_fetch_add_seq_cst(&c->data_waiters, 1u);
    w->seq = shmring_load_seq_cst(&c->data_seq);
    if (shmring_load_seq_cst(&c->tail) == w->cursor)
        return SHMRING_AGAIN; /* announced: the sleep withdraws it */
    /* relaxed: a hint for publishers. */
    shmring_fetch_sub_relaxed(&c->data_waiters, 1u);
    return SHMRING_OK;
}

/* The poll, before sleeping: a message that comes within spin_ns costs no
 * futex wake; it yields, as the queue's poll does. */
static void topic_poll(DataWait *w, uint64_t until)
{
    shmring_topic_ctrl *c = w->self->t.ctrl;
    /* relaxed: the handle's setting (topic_set_spin_ns). */
    uint64_t spin_until = shmring_now_ns() + shmring_load_relaxed(&w->self->spin_ns);
    unsigned i;
    if (spin_until > until)
        spin_until = until;
    for (i = 1;; i++) {
        /* relaxed: a hint; shmring_topic_next does the acquire [T1]. */
        if (shmring_load_relaxed(&c->tail) != w->cursor)
            break;
        if (i & 7u)
            shmring_cpu_relax();
        else if (sched_yield(), shmring_now_ns() >= spin_until || shmring_topic_interrupted(&w->self->t))
            break;
    }
}

static int data_wait_sleep(void *ctx, uint64_t until)
{
    DataWait *w = (DataWait *)ctx;
    shmring_topic_ctrl *c = w->self->t.ctrl;
    if (w->poll) {
        topic_poll(w, until);
        return SHMRING_AGAIN;
    }
    if (!shmring_topic_interrupted(&w->self->t))
        shmring_futex_wait_until(&c->data_seq, w->seq, until);
    /* relaxed: a hint for publishers. */
    shmring_fetch_sub_relaxed(&c->data_waiters, 1u);
    return SHMRING_AGAIN;
}

/* Wait until tail moves past `cursor`.  0, or -1 with an exception:
 * Timeout, Closed (another thread's close()), a signal handler's. */
static int topic_wait_data(TopicEndObject *self, uint64_t cursor, uint64_t deadline, int *polled)
{
    DataWait w;
    int rc;
    w.self = self;
    w.cursor = cursor;
    w.polled = polled;
    w.poll = 0;
    w.seq = 0;
    rc = gil_wait_sliced(&w, data_wait_ready, data_wait_sleep, topic_closing, self, deadline);
    if (rc == SHMRING_OK)
        return 0;
    if (rc == SHMRING_TIMEOUT)
        PyErr_Format(timeout_error, "topic %R: no message in time", topic_name(self));
    else if (rc == WAIT_CLOSING)
        topic_raise_closing(self);
    return -1;
}

static void topic_move_to(TopicEndObject *self, uint64_t cursor, uint64_t next_seq)
{
    self->cursor = cursor;
    self->next_seq = next_seq;
    if (shmring_topic_advance(&self->t, self->slot, cursor, next_seq))
        shmring_topic_wake_publishers(&self->t);
}

/* Where to resume after falling behind: the oldest message held. */
static int topic_resume_point(TopicEndObject *self, uint64_t *pos, uint64_t *seq)
{
    int rc = shmring_topic_oldest(&self->t, pos, seq);
    if (rc == SHMRING_AGAIN) {
        /* Nothing held: tail and next_seq, read together under the lock. */
        int lr = topic_lock(self, 0);
        if (lr != 0)
            return -1;
        /* relaxed: under the lock [T3]. */
        *pos = __atomic_load_n(&self->t.ctrl->tail, __ATOMIC_RELAXED);
        *seq = __atomic_load_n(&self->t.ctrl->next_seq, __ATOMIC_RELAXED);
        topic_unlock(self);
        rc = SHMRING_OK;
    }
    if (rc != SHMRING_OK) {
        topic_corrupt(self, "head and tail");
        return -1;
    }
    return 0;
}

/* The subscriber fell behind: resume at the oldest message held.  Returns 1
 * when no message was lost (only padding was reclaimed: read on), or NULL-
 * style -1 with Lagged(missed) raised. */
static int topic_lagged(TopicEndObject *self)
{
    uint64_t pos, seq, missed;
    PyObject *exc;
    if (topic_resume_point(self, &pos, &seq) < 0)
        return -1;
    missed = seq > self->next_seq ? seq - self->next_seq : 0;
    topic_move_to(self, pos, missed ? seq : self->next_seq);
    if (missed == 0)
        return 1;
    /* relaxed: statistics, written by this subscriber only. */
    __atomic_store_n(&self->t.subs[self->slot].lagged, self->t.subs[self->slot].lagged + missed, __ATOMIC_RELAXED);
    exc = PyObject_CallFunction(lagged_error, "K", (unsigned long long)missed);
    if (exc != NULL) {
        PyErr_SetObject(lagged_error, exc);
        Py_DECREF(exc);
    }
    return -1;
}

/* The gap marker at `cursor` (shmring_topic_next said SHMRING_GAP there):
 * the cursor moves past it and the message numbers past the lost ones;
 * with `report`, Lagged(missed) is raised (-1), as when the subscriber
 * falls behind.  0: look again (nothing raised); -1 with an exception. */
static int topic_gap(TopicEndObject *self, uint64_t cursor, int report)
{
    uint32_t tag;
    const unsigned char *p;
    uint64_t len, seq, size, missed, at = cursor;
    PyObject *exc;
    int rc = shmring_topic_next(&self->t, &at, &tag, &p, &len, &seq, &size);
    if (rc == SHMRING_GAP)
        rc = shmring_topic_gap_count(&self->t, at, p, seq, &missed);
    else if (rc != SHMRING_LAGGED)
        return 0; /* the ring changed under us (a hostile writer): the next look says what it is */
    if (rc == SHMRING_LAGGED)
        return topic_lagged(self) < 0 ? -1 : 0;
    if (rc != SHMRING_OK) {
        topic_corrupt(self, "gap marker");
        return -1;
    }
    topic_move_to(self, at + size, seq + missed);
    if (!report)
        return 0;
    /* relaxed: statistics, written by this subscriber only. */
    __atomic_store_n(&self->t.subs[self->slot].lagged, self->t.subs[self->slot].lagged + missed, __ATOMIC_RELAXED);
    exc = PyObject_CallFunction(lagged_error, "KO", (unsigned long long)missed, Py_True);
    if (exc != NULL) {
        PyErr_SetObject(lagged_error, exc);
        Py_DECREF(exc);
    }
    return -1;
}

/* No message at `cursor` (rc, from shmring_topic_next): catch up when
 * lagged, report a gap marker, else step past the padding read and wait
 * for the next message.  0: look again; -1 with an exception. */
static int topic_await_next(TopicEndObject *self, int rc, uint64_t cursor, uint64_t deadline, int *polled)
{
    if (rc == SHMRING_LAGGED)
        return topic_lagged(self) < 0 ? -1 : 0;
    if (rc == SHMRING_GAP)
        return topic_gap(self, cursor, 1);
    if (rc != SHMRING_AGAIN) {
        topic_corrupt(self, "record header");
        return -1;
    }
    if (cursor != self->cursor)
        topic_move_to(self, cursor, self->next_seq); /* skipped padding */
    return topic_wait_data(self, cursor, deadline, polled);
}

PyObject *topic_decode(uint32_t tag, PyObject *data, int raw)
{
    PyObject *obj;
    if (data == NULL || raw || tag == SHMRING_REC_BYTES)
        return data;
    obj = PyObject_CallOneArg(pickle_loads, data);
    Py_DECREF(data);
    return obj;
}

/* Next message for this subscriber: copied out and checked (its tag in
 * *tag_out, decoded by the caller once the gate is left).  With `latest`,
 * skip to the newest one. */
static PyObject *topic_read_bytes(TopicEndObject *self, PyObject *timeout, int latest, uint32_t *tag_out)
{
    GATE_HOLD(hold, &self->gate, TOPIC_END);
    uint64_t deadline;
    int polled = 0, no_wait = parse_timeout(timeout, &deadline);
    if (no_wait < 0 || topic_enter(self, TOPIC_SUBSCRIBER, &hold, deadline, no_wait) < 0)
        return NULL;
    for (;;) {
        uint32_t tag;
        const unsigned char *p;
        uint64_t len, seq, size, cursor = self->cursor;
        int rc;
        if (latest) {
            /* acquire [T1]: last_pos was stored before tail. */
            uint64_t tail = __atomic_load_n(&self->t.ctrl->tail, __ATOMIC_ACQUIRE);
            uint64_t last = __atomic_load_n(&self->t.ctrl->last_pos, __ATOMIC_RELAXED);
            if (tail != cursor && last != SHMRING_TOPIC_NO_RECORD && last >= cursor && last < tail)
                cursor = last;
        }
        rc = shmring_topic_next(&self->t, &cursor, &tag, &p, &len, &seq, &size);
        if (rc == SHMRING_OK) {
            PyObject *data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
            if (data == NULL)
                return NULL;
            shmring_topic_copy_subscribed(&self->t, PyBytes_AS_STRING(data), p, len); /* a publisher may lap us */
            if (shmring_topic_still_valid(&self->t, cursor) != SHMRING_OK) {
                Py_DECREF(data);
                if (latest)
                    continue; /* overwritten: there is a newer one */
                if (topic_lagged(self) < 0)
                    return NULL;
                continue;
            }
            topic_move_to(self, cursor + size, seq + 1);
            *tag_out = tag;
            return data;
        }
        if (rc == SHMRING_GAP && latest) {
            /* Conflation asks for the newest message, not for each loss: step over it. */
            if (topic_gap(self, cursor, 0) < 0)
                return NULL;
            continue;
        }
        if (rc == SHMRING_LAGGED && latest) {
            uint64_t pos, s;
            if (topic_resume_point(self, &pos, &s) < 0)
                return NULL;
            topic_move_to(self, pos, s);
            continue;
        }
        if (topic_await_next(self, rc, cursor, deadline, &polled) < 0)
            return NULL;
    }
}

/* recv(), recv_bytes() and _latest_unread() (`fname`, whose one argument
 * is the timeout): the gate is left before an object message is unpickled
 * (arbitrary code, which may use this subscription again). */
static PyObject *topic_read(TopicEndObject *self, const char *fname, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames, int raw, int latest)
{
    PyObject *a[1], *data;
    uint32_t tag = SHMRING_REC_BYTES;
    if (parse_args(fname, args, nargs, kwnames, ARGS_TIMEOUT, 0, 1, a) < 0)
        return NULL;
    data = topic_read_bytes(self, a[0], latest, &tag);
    return topic_decode(tag, data, raw);
}

PyObject *topic_recv(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return topic_read(self, "recv", args, nargs, kwnames, 0, 0);
}

PyObject *topic_recv_bytes(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return topic_read(self, "recv_bytes", args, nargs, kwnames, 1, 0);
}

PyObject *topic_latest_unread(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return topic_read(self, "latest", args, nargs, kwnames, 0, 1);
}

/* The messages of one recv_many, copied out: appended to `list`, their
 * tags in `tags`, and after message i the cursor and the next message
 * number in ends[i] and seqs[i].  The first is waited for as recv waits;
 * then those already published, up to `max`.  The cursor is not moved
 * here: topic_recv_many moves it past what it delivers.  A message lost to
 * a publisher meanwhile ("overwrite") ends the batch: the next call reports
 * it.  Returns how many, or -1 with an exception (and none taken).  The
 * caller holds the gate. */
typedef struct {
    PyObject *list;
    uint32_t *tags;
    uint64_t *ends, *seqs;
} TopicBatch;

static Py_ssize_t topic_read_batch(TopicEndObject *self, uint64_t deadline, Py_ssize_t max, TopicBatch *b)
{
    uint64_t cursor = self->cursor;
    Py_ssize_t n = 0;
    int polled = 0;
    while (n < max) {
        uint32_t tag;
        const unsigned char *p;
        uint64_t len, seq, size, at = cursor;
        PyObject *data;
        int rc = shmring_topic_next(&self->t, &at, &tag, &p, &len, &seq, &size);
        if (rc != SHMRING_OK) {
            if (n > 0)
                break; /* nothing more without waiting, or a loss for the next call to report */
            if (topic_await_next(self, rc, at, deadline, &polled) < 0)
                return -1;
            cursor = self->cursor; /* past padding, or where a lagging reader resumes */
            continue;
        }
        data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
        if (data == NULL)
            break; /* MemoryError: after those taken, if any */
        shmring_topic_copy_subscribed(&self->t, PyBytes_AS_STRING(data), p, len); /* a publisher may lap us */
        if (shmring_topic_still_valid(&self->t, at) != SHMRING_OK) {
            Py_DECREF(data);
            if (n > 0)
                break;
            if (topic_lagged(self) < 0)
                return -1;
            cursor = self->cursor;
            continue;
        }
        if (PyList_Append(b->list, data) < 0) {
            Py_DECREF(data);
            break;
        }
        Py_DECREF(data);
        b->tags[n] = tag;
        cursor = b->ends[n] = at + size;
        b->seqs[n++] = seq + 1;
    }
    if (n == 0)
        return -1;
    PyErr_Clear(); /* a MemoryError after some were taken: they are returned, the next call meets it again */
    return n;
}

/* Unpickle the object messages of a batch in place.  Returns how many of
 * them to deliver: all, or those before the first that failed (its error
 * set, the list cut there); 0 when the first failed. */
static Py_ssize_t topic_decode_batch(TopicBatch *b, Py_ssize_t n)
{
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        if (b->tags[i] != SHMRING_REC_BYTES) {
            PyObject *obj = topic_decode(b->tags[i], Py_NewRef(PyList_GET_ITEM(b->list, i)), 0);
            if (obj == NULL) {
                PyList_SetSlice(b->list, i, n, NULL); /* cannot fail: a shrink */
                return i;
            }
            PyList_SetItem(b->list, i, obj);
        }
    }
    return n;
}

/* recv_many(max_messages, timeout=None) -> list: as recv, for a batch.  The
 * gate stays held while the object messages are unpickled, so that the
 * cursor moves once, past what is delivered and no further: when message k
 * fails to unpickle, the messages before it are returned and k and those
 * after it stay unread (the next call meets k's error again, as get_many's
 * next get does: queue_pending.c); when the first fails, its error is
 * raised and only it is consumed, as recv's.  Unpickling code that uses
 * this subscription again meets the gate's RuntimeError (that message
 * fails, and is left for the next call). */
PyObject *topic_recv_many(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    GATE_HOLD(hold, &self->gate, TOPIC_END);
    PyObject *a[2];
    TopicBatch b = {NULL, NULL, NULL, NULL};
    uint64_t deadline;
    Py_ssize_t max, n, delivered;
    int no_wait;
    if (parse_args("recv_many", args, nargs, kwnames, ARGS_MAX_TIMEOUT, 1, 2, a) < 0 ||
        parse_count(a[0], 1, "max_messages must be at least 1, not %zd", &max) < 0 ||
        (no_wait = parse_timeout(a[1], &deadline)) < 0)
        return NULL;
    if (max > 65536)
        max = 65536; /* a batch at a time: the rest stays for the next call */
    b.tags = PyMem_New(uint32_t, (size_t)max);
    b.ends = PyMem_New(uint64_t, (size_t)max);
    b.seqs = PyMem_New(uint64_t, (size_t)max);
    b.list = b.tags == NULL || b.ends == NULL || b.seqs == NULL ? NULL : PyList_New(0);
    if (b.list == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (topic_enter(self, TOPIC_SUBSCRIBER, &hold, deadline, no_wait) < 0 ||
        (n = topic_read_batch(self, deadline, max, &b)) < 0) {
        Py_CLEAR(b.list);
        goto done;
    }
    delivered = topic_decode_batch(&b, n);
    /* One move, one look for blocked publishers: past the messages
     * returned, or past the first alone when it is the one that failed. */
    topic_move_to(self, b.ends[delivered > 0 ? delivered - 1 : 0], b.seqs[delivered > 0 ? delivered - 1 : 0]);
    if (delivered == 0)
        Py_CLEAR(b.list);
    else
        PyErr_Clear(); /* the failed message's error: the next call meets it again */
done:
    PyMem_Free(b.tags);
    PyMem_Free(b.ends);
    PyMem_Free(b.seqs);
    return b.list;
}

/* peek(timeout=None) -> Loan: the next message in place, read-only. */
PyObject *topic_peek(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    GATE_HOLD(hold, &self->gate, TOPIC_END);
    PyObject *a[1];
    uint64_t deadline;
    int polled = 0, no_wait;
    if ((no_wait = parse_args_timeout("peek", args, nargs, kwnames, ARGS_TIMEOUT, 0, 1, a, &deadline)) < 0 ||
        topic_enter(self, TOPIC_SUBSCRIBER, &hold, deadline, no_wait) < 0)
        return NULL;
    for (;;) {
        uint32_t tag;
        const unsigned char *p;
        uint64_t len, seq, size, cursor = self->cursor;
        int rc = shmring_topic_next(&self->t, &cursor, &tag, &p, &len, &seq, &size);
        if (rc == SHMRING_OK) {
            LoanObject *loan = loan_new((PyObject *)self, &self->gate, TOPIC_END, topic_loan_finish,
                                        topic_name(self), "topic", (unsigned char *)p, len, 1);
            if (loan != NULL) {
                loan->pos = cursor;
                loan->size = size;
                loan->seq = seq;
            }
            return (PyObject *)loan;
        }
        if (topic_await_next(self, rc, cursor, deadline, &polled) < 0)
            return NULL;
    }
}

