/* shmring._core.TopicEnd: a publisher, a subscriber or an observer of a
 * broadcast topic (include/shmring.h, "Broadcast topic").
 *
 * Included by _core.c after _queue.c (it shares the queue's pickling and
 * argument helpers).  Publishers serialize outside the topic lock, copy in
 * under it; subscribers read without a lock and check their copy against
 * the reclaim point afterwards.
 */

static PyObject *lagged_error; /* shmring.Lagged */

#define TOPIC_PUBLISHER 0
#define TOPIC_SUBSCRIBER 1
#define TOPIC_OBSERVER 2

typedef struct {
    PyObject_HEAD
    PyObject *mapping;
    Py_buffer view;
    shmring_topic t;
    uint32_t spin_ns;
    int role;
    int slot;           /* subscriber: its entry in the table */
    uint64_t cursor;    /* subscriber: next byte to read */
    uint64_t next_seq;  /* subscriber: next message number expected */
    uint64_t token;
    unsigned long generation;
    int closed;         /* close() completed */
    Gate gate;          /* end 0: this publisher's or subscription's calls and its loan
                           (a reserve() holds the topic lock; a peek() the cursor) */
    PyObject *dict;
    PyObject *weakrefs;
} TopicEndObject;

#define TOPIC_END 0

static PyTypeObject TopicEndType;

static PyObject *topic_name(TopicEndObject *self)
{
    return ((MappingObject *)self->mapping)->name;
}

static PyObject *topic_corrupt(TopicEndObject *self, const char *what)
{
    return raise_corrupted("topic", topic_name(self), what);
}

/* Inherited through fork: a subscription, an open loan (and the topic lock
 * a reserve holds) and the calls of other threads are the parent's. */
static void topic_fork_reset(TopicEndObject *self)
{
    if (self->generation == fork_generation)
        return;
    self->generation = fork_generation;
    self->token = shmring_token_self();
    if (self->role == TOPIC_SUBSCRIBER) {
        self->closed = 1;
        self->gate.state |= GATE_CLOSING;
    }
    self->gate.state &= GATE_CLOSING;
    self->gate.waiters = 0;
    if (self->gate.loan[TOPIC_END] != NULL) {
        self->gate.loan[TOPIC_END]->state = LOAN_DONE;
        self->gate.loan[TOPIC_END] = NULL;
    }
}

static int topic_usable(TopicEndObject *self, int role)
{
    if (self->mapping == NULL) {
        PyErr_SetString(PyExc_ValueError, "topic handle is not initialised");
        return -1;
    }
    topic_fork_reset(self);
    if (self->closed || (self->gate.state & GATE_CLOSING)) {
        PyErr_Format(closed_error, "topic %R: this %s is closed", topic_name(self),
                     self->role == TOPIC_SUBSCRIBER ? "subscription (or one inherited through fork)" : "handle");
        return -1;
    }
    if (role >= 0 && self->role != role) {
        PyErr_Format(PyExc_TypeError, "topic %R: not a %s", topic_name(self),
                     role == TOPIC_PUBLISHER ? "publisher" : "subscription");
        return -1;
    }
    return 0;
}

/* Enter this end for one call (the caller leaves it with gate_leave when
 * *held): 0, or -1 with an exception (Timeout when another thread's call
 * or loan kept it past the deadline, or at once with a zero timeout). */
static int topic_enter(TopicEndObject *self, int role, int *held, uint64_t deadline, int no_wait)
{
    int r;
    if (topic_usable(self, role) < 0)
        return -1;
    if (gate_free(&self->gate, TOPIC_END)) {
        gate_take(&self->gate, TOPIC_END);
        *held = 1;
        return 0;
    }
    r = gate_enter_slow(&self->gate, TOPIC_END, "topic", topic_name(self),
                        role == TOPIC_PUBLISHER ? "publishing" : "receiving", deadline, no_wait);
    if (r > 0)
        PyErr_Format(timeout_error, "topic %R: another thread's call is running on this %s", topic_name(self),
                     role == TOPIC_PUBLISHER ? "publisher" : "subscription");
    if (r != 0)
        return -1;
    *held = 1;
    return 0;
}

/* A call that woke to find close() begun by another thread. */
static int topic_raise_closing(TopicEndObject *self)
{
    PyErr_Format(closed_error, "topic %R: this %s was closed by another thread", topic_name(self),
                 self->role == TOPIC_SUBSCRIBER ? "subscription" : "publisher");
    return -1;
}

/* Topic locks held by an open reserve(), and by which thread: the lock
 * belongs to the process, so a second lock by that thread (another
 * publisher's send, a subscribe, in the reserve block) would wait forever.
 * A topic is known by its object's identity (device, inode): each publisher
 * and subscription maps it at an address of its own. */
#define RESERVES_MAX 64
static struct {
    uint64_t dev, ino; /* ino 0: a free entry */
    pthread_t thread;
    unsigned long generation; /* fork_generation: a forked child holds none of them */
} open_reserves[RESERVES_MAX];

/* Note that `thread` holds (or no longer holds) the lock of `self`'s topic
 * for a reserve() loan.  The loan is completed by its thread, or by
 * another one (close(), garbage collection): hence the explicit thread. */
static void reserves_note(TopicEndObject *self, int held, pthread_t thread)
{
    const shmring_segment *seg = &((MappingObject *)self->mapping)->seg;
    int i;
    for (i = 0; i < RESERVES_MAX; i++) {
        if (held && (open_reserves[i].ino == 0 || open_reserves[i].generation != fork_generation)) {
            open_reserves[i].dev = seg->dev;
            open_reserves[i].ino = seg->ino;
            open_reserves[i].thread = thread;
            open_reserves[i].generation = fork_generation;
            return;
        }
        if (!held && open_reserves[i].ino == seg->ino && open_reserves[i].dev == seg->dev &&
            pthread_equal(open_reserves[i].thread, thread)) {
            open_reserves[i].ino = 0;
            return;
        }
    }
}

static int reserve_held_here(TopicEndObject *self)
{
    const shmring_segment *seg = &((MappingObject *)self->mapping)->seg;
    pthread_t me = pthread_self();
    int i;
    for (i = 0; i < RESERVES_MAX; i++)
        if (open_reserves[i].ino == seg->ino && open_reserves[i].dev == seg->dev &&
            pthread_equal(open_reserves[i].thread, me) && open_reserves[i].generation == fork_generation)
            return 1;
    return 0;
}

/* Take the topic lock; 0, 1 on timeout, -1 with an exception. */
static int topic_lock(TopicEndObject *self, uint64_t deadline)
{
    shmring_mutex *m = &self->t.ctrl->lock;
    int rc, r;
    if (reserve_held_here(self)) {
        PyErr_Format(PyExc_RuntimeError,
                     "topic %R: this thread holds the topic lock in an open reserve() block; finish it first",
                     topic_name(self));
        return -1;
    }
    r = lock_robust(m, self->token, deadline, &rc);
    if (r != 0)
        return r;
    if (rc == SHMRING_OWNER_DIED) {
        /* A publisher died holding it: a record it had not committed is past
         * tail and invisible; head only ever moved forward.  Nothing to repair. */
        shmring_mutex_consistent(m, self->token);
        return 0;
    }
    if (rc == SHMRING_NOT_RECOVERABLE) {
        topic_corrupt(self, "its lock was abandoned in an inconsistent state");
        return -1;
    }
    return 0;
}

static void topic_unlock(TopicEndObject *self)
{
    shmring_mutex_release(&self->t.ctrl->lock, self->token);
}

/* -- publishing ---------------------------------------------------------------- */

/* Lock and reserve `len` bytes, waiting for room under BLOCK
 * (shmring_topic_reserve_wait, in slices with the GIL released).  0 with
 * the lock held, -1 with an exception. */
static int topic_reserve_locked(TopicEndObject *self, uint32_t tag, uint64_t len, uint64_t deadline,
                                unsigned char **out, uint64_t *pos)
{
    if (reserve_held_here(self)) {
        PyErr_Format(PyExc_RuntimeError,
                     "topic %R: this thread holds the topic lock in an open reserve() block; finish it first",
                     topic_name(self));
        return -1;
    }
    /* The common case without giving the GIL away: the lock is free and
     * there is room. */
    if (shmring_mutex_try_acquire(&self->t.ctrl->lock, self->token, 0) == SHMRING_OK) {
        if (shmring_topic_reserve(&self->t, tag, len, 0, out, pos) == SHMRING_OK)
            return 0;
        topic_unlock(self); /* the slow path below says why */
    }
    for (;;) {
        uint64_t slice = shmring_now_ns() + SHMRING_WAIT_SLICE_NS;
        int rc;
        if (deadline && deadline < slice)
            slice = deadline;
        Py_BEGIN_ALLOW_THREADS
        rc = shmring_topic_reserve_wait(&self->t, self->token, tag, len, slice, out, pos);
        Py_END_ALLOW_THREADS
        if (self->gate.state & GATE_CLOSING) {
            if (rc == SHMRING_OK)
                topic_unlock(self); /* reserved, not committed: the record stays past tail */
            return topic_raise_closing(self);
        }
        if (rc == SHMRING_OK)
            return 0;
        if (rc == SHMRING_TIMEOUT || rc == SHMRING_ERR_SYS) {
            if (PyErr_CheckSignals() < 0)
                return -1;
            if (deadline && shmring_now_ns() >= deadline) {
                PyErr_Format(timeout_error,
                             "topic %R: no room for the message in time (a slow subscriber, or another "
                             "publisher holding the lock)",
                             topic_name(self));
                return -1;
            }
            continue;
        }
        if (rc == SHMRING_TOO_BIG)
            PyErr_Format(PyExc_ValueError, "topic %R: a message of %llu bytes can never fit its %llu-byte ring",
                         topic_name(self), (unsigned long long)len, (unsigned long long)self->t.capacity);
        else if (rc == SHMRING_NOT_RECOVERABLE)
            topic_corrupt(self, "its lock was abandoned in an inconsistent state");
        else
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

static PyObject *topic_publish_impl(TopicEndObject *self, int *held, PyObject *data, uint32_t tag,
                                    PyObject *timeout)
{
    Py_buffer buf;
    uint64_t deadline, pos;
    unsigned char *dst;
    int no_wait = parse_timeout(timeout, &deadline);
    if (no_wait < 0 || PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    if (topic_enter(self, TOPIC_PUBLISHER, held, deadline, no_wait) < 0 ||
        topic_reserve_locked(self, tag, (uint64_t)buf.len, deadline, &dst, &pos) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (buf.len > COPY_WITHOUT_GIL)
        copy_maybe_without_gil(dst, buf.buf, (size_t)buf.len);
    else
        memcpy(dst, buf.buf, (size_t)buf.len);
    topic_commit_unlock(self, pos);
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
}

static PyObject *topic_publish(TopicEndObject *self, PyObject *data, uint32_t tag, PyObject *timeout)
{
    int held = 0;
    PyObject *result = topic_publish_impl(self, &held, data, tag, timeout);
    if (held)
        gate_leave(&self->gate, TOPIC_END);
    return result;
}

static PyObject *topic_send(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    if (parse_args("send", args, nargs, kwnames, ARGS_DATA_TIMEOUT, 1, 2, a) < 0)
        return NULL;
    return topic_publish(self, a[0], SHMRING_REC_BYTES, a[1]);
}

static PyObject *topic_send_obj(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
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

static int topic_lagged(TopicEndObject *self);
static void topic_move_to(TopicEndObject *self, uint64_t cursor, uint64_t next_seq);

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
        reserves_note(self, 0, l->thread);
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

/* reserve(n, timeout=None) -> Loan: n zero-filled bytes in place; the topic
 * lock is held until the loan completes. */
static PyObject *topic_reserve_impl(TopicEndObject *self, int *held, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    static const char *const names[] = {"n", "timeout"};
    PyObject *a[2];
    LoanObject *loan;
    Py_ssize_t n;
    uint64_t deadline, pos;
    unsigned char *dst;
    int no_wait;
    if (parse_args("reserve", args, nargs, kwnames, names, 1, 2, a) < 0 ||
        (no_wait = parse_timeout(a[1], &deadline)) < 0)
        return NULL;
    n = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0)
        return PyErr_Format(PyExc_ValueError, "reserve() size must be >= 0, not %zd", n);
    if (topic_enter(self, TOPIC_PUBLISHER, held, deadline, no_wait) < 0 ||
        topic_reserve_locked(self, SHMRING_REC_BYTES, (uint64_t)n, deadline, &dst, &pos) < 0)
        return NULL;
    zero_maybe_without_gil(dst, (size_t)n);
    loan = loan_new((PyObject *)self, &self->gate, TOPIC_END, topic_loan_finish, topic_name(self), "topic", dst,
                    (uint64_t)n, 0);
    if (loan == NULL) {
        topic_unlock(self);
        return NULL;
    }
    loan->pos = pos;
    reserves_note(self, 1, loan->thread);
    return (PyObject *)loan;
}

static PyObject *topic_reserve(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int held = 0;
    PyObject *result = topic_reserve_impl(self, &held, args, nargs, kwnames);
    if (held)
        gate_leave(&self->gate, TOPIC_END);
    return result;
}

/* -- subscribing ------------------------------------------------------------------ */

/* Wait until tail moves past `cursor`.  0, or -1 with Timeout / a signal. */
static int topic_wait_data(TopicEndObject *self, uint64_t cursor, uint64_t deadline, int *polled)
{
    shmring_topic_ctrl *c = self->t.ctrl;
    uint32_t seq;
    if (!*polled && self->spin_ns) {
        uint64_t until = shmring_now_ns() + self->spin_ns;
        *polled = 1;
        Py_BEGIN_ALLOW_THREADS
        for (unsigned i = 1;; i++) {
            /* relaxed: a hint; shmring_topic_next does the acquire [T1]. */
            if (__atomic_load_n(&c->tail, __ATOMIC_RELAXED) != cursor)
                break;
            if (i & 7u)
                shmring_cpu_relax();
            else if (sched_yield(), shmring_now_ns() >= until || shmring_topic_interrupted(&self->t))
                break;
        }
        Py_END_ALLOW_THREADS
        if (self->gate.state & GATE_CLOSING)
            return topic_raise_closing(self);
        return 0;
    }
    *polled = 0;
    /* seq_cst [T4]: announce, read data_seq, re-read tail; pairs with the
     * publisher's seq_cst store of tail and load of data_waiters. */
    __atomic_fetch_add(&c->data_waiters, 1u, __ATOMIC_SEQ_CST);
    seq = __atomic_load_n(&c->data_seq, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&c->tail, __ATOMIC_SEQ_CST) == cursor) {
        uint64_t slice = shmring_now_ns() + SHMRING_WAIT_SLICE_NS;
        if (deadline && deadline < slice)
            slice = deadline;
        Py_BEGIN_ALLOW_THREADS
        if (!shmring_topic_interrupted(&self->t))
            shmring_futex_wait_until(&c->data_seq, seq, slice);
        Py_END_ALLOW_THREADS
    }
    /* relaxed: a hint for publishers. */
    __atomic_fetch_sub(&c->data_waiters, 1u, __ATOMIC_RELAXED);
    if (self->gate.state & GATE_CLOSING)
        return topic_raise_closing(self);
    if (PyErr_CheckSignals() < 0)
        return -1;
    if (deadline && shmring_now_ns() >= deadline &&
        __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE) == cursor) {
        PyErr_Format(timeout_error, "topic %R: no message in time", topic_name(self));
        return -1;
    }
    return 0;
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

static PyObject *topic_decode(uint32_t tag, PyObject *data, int raw)
{
    PyObject *obj;
    if (data == NULL || raw || tag == SHMRING_REC_BYTES)
        return data;
    obj = PyObject_CallOneArg(pickle_loads, data);
    Py_DECREF(data);
    return obj;
}

/* Next message for this subscriber: copied out and checked (its tag in
 * *tag_out, decoded by the caller).  With `latest`, skip to the newest one. */
static PyObject *topic_read_impl(TopicEndObject *self, int *held, PyObject *timeout, int latest, uint32_t *tag_out)
{
    uint64_t deadline;
    int polled = 0, no_wait = parse_timeout(timeout, &deadline);
    if (no_wait < 0 || topic_enter(self, TOPIC_SUBSCRIBER, held, deadline, no_wait) < 0)
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
            PyObject *data = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)len);
            if (data == NULL)
                return NULL;
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
        if (rc == SHMRING_LAGGED) {
            if (latest) {
                uint64_t pos, s;
                if (topic_resume_point(self, &pos, &s) < 0)
                    return NULL;
                topic_move_to(self, pos, s);
                continue;
            }
            if (topic_lagged(self) < 0)
                return NULL;
            continue;
        }
        if (rc != SHMRING_AGAIN)
            return topic_corrupt(self, "record header");
        if (cursor != self->cursor)
            topic_move_to(self, cursor, self->next_seq); /* skipped padding */
        if (topic_wait_data(self, cursor, deadline, &polled) < 0)
            return NULL;
    }
}

/* The call's way in and out: the gate is left before an object message is
 * unpickled (arbitrary code, which may use this subscription again). */
static PyObject *topic_read(TopicEndObject *self, PyObject *timeout, int raw, int latest)
{
    int held = 0;
    uint32_t tag = SHMRING_REC_BYTES;
    PyObject *data = topic_read_impl(self, &held, timeout, latest, &tag);
    if (held)
        gate_leave(&self->gate, TOPIC_END);
    return topic_decode(tag, data, raw);
}

static const char *const ARGS_TIMEOUT_ONLY[] = {"timeout"};

static PyObject *topic_recv(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[1];
    if (parse_args("recv", args, nargs, kwnames, ARGS_TIMEOUT_ONLY, 0, 1, a) < 0)
        return NULL;
    return topic_read(self, a[0], 0, 0);
}

static PyObject *topic_recv_bytes(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[1];
    if (parse_args("recv_bytes", args, nargs, kwnames, ARGS_TIMEOUT_ONLY, 0, 1, a) < 0)
        return NULL;
    return topic_read(self, a[0], 1, 0);
}

static PyObject *topic_latest_sub(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[1];
    if (parse_args("latest", args, nargs, kwnames, ARGS_TIMEOUT_ONLY, 0, 1, a) < 0)
        return NULL;
    return topic_read(self, a[0], 0, 1);
}

/* peek(timeout=None) -> Loan: the next message in place, read-only. */
static PyObject *topic_peek_impl(TopicEndObject *self, int *held, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    PyObject *a[1];
    uint64_t deadline;
    int polled = 0, no_wait;
    if (parse_args("peek", args, nargs, kwnames, ARGS_TIMEOUT_ONLY, 0, 1, a) < 0 ||
        (no_wait = parse_timeout(a[0], &deadline)) < 0 || topic_enter(self, TOPIC_SUBSCRIBER, held, deadline, no_wait) < 0)
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
        if (rc == SHMRING_LAGGED) {
            if (topic_lagged(self) < 0)
                return NULL;
            continue;
        }
        if (rc != SHMRING_AGAIN)
            return topic_corrupt(self, "record header");
        if (cursor != self->cursor)
            topic_move_to(self, cursor, self->next_seq);
        if (topic_wait_data(self, cursor, deadline, &polled) < 0)
            return NULL;
    }
}

static PyObject *topic_peek(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int held = 0;
    PyObject *result = topic_peek_impl(self, &held, args, nargs, kwnames);
    if (held)
        gate_leave(&self->gate, TOPIC_END);
    return result;
}

/* -- observer ------------------------------------------------------------------ */

/* latest() on the topic: the newest message, or None; no subscription.
 * None also when the newest message was reclaimed (an aborted reserve, or a
 * publisher that died mid-publish, freed its space). */
static PyObject *topic_latest_any(TopicEndObject *self, PyObject *Py_UNUSED(ignored))
{
    unsigned tries;
    if (topic_usable(self, -1) < 0)
        return NULL;
    for (tries = 0; tries < 1000; tries++) {
        /* acquire [T1]; last_pos was stored before tail. */
        uint64_t tail = __atomic_load_n(&self->t.ctrl->tail, __ATOMIC_ACQUIRE);
        uint64_t last = __atomic_load_n(&self->t.ctrl->last_pos, __ATOMIC_RELAXED), cursor = last;
        uint32_t tag;
        const unsigned char *p;
        uint64_t len, seq, size;
        int rc;
        PyObject *data;
        if (last == SHMRING_TOPIC_NO_RECORD)
            Py_RETURN_NONE;
        if (last >= tail) { /* a publish between its two stores: look again */
            if (tries & 7u)
                shmring_cpu_relax();
            else
                sched_yield();
            continue;
        }
        rc = shmring_topic_next(&self->t, &cursor, &tag, &p, &len, &seq, &size);
        if (rc == SHMRING_LAGGED) {
            /* relaxed: has anything been published since? */
            if (__atomic_load_n(&self->t.ctrl->tail, __ATOMIC_ACQUIRE) == tail)
                Py_RETURN_NONE; /* reclaimed and nothing newer */
            continue;
        }
        if (rc != SHMRING_OK || cursor != last)
            return topic_corrupt(self, "newest record");
        data = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)len);
        if (data == NULL)
            return NULL;
        if (shmring_topic_still_valid(&self->t, cursor) != SHMRING_OK) {
            Py_DECREF(data);
            continue;
        }
        return topic_decode(tag, data, 0);
    }
    Py_RETURN_NONE; /* last_pos never became valid: a publisher died between its stores */
}

/* -- the rest ------------------------------------------------------------------------ */

/* close(): from another thread, wake the call blocked on this end (it
 * raises Closed) and return once none is left; then complete the loan (a
 * reserve is dropped and the topic lock released) and free the
 * subscription's slot.  Nothing is ended for the other publishers and
 * subscribers. */
static PyObject *topic_close(TopicEndObject *self, PyObject *Py_UNUSED(ignored))
{
    Gate *g = &self->gate;
    if (self->mapping == NULL || self->closed)
        Py_RETURN_NONE;
    topic_fork_reset(self);
    if (self->closed) /* an inherited subscription: the slot is the parent's */
        Py_RETURN_NONE;
    if (gate_check_close_here(g, "topic", topic_name(self)) < 0)
        return NULL;
    if (!gate_begin_close(g) && (g->state & (1 << TOPIC_END)) && self->role != TOPIC_OBSERVER)
        shmring_topic_interrupt_waiters(&self->t, self->role == TOPIC_PUBLISHER);
    if (gate_wait_empty(g) < 0)
        return NULL;
    if (self->closed)
        Py_RETURN_NONE;
    if (g->loan[TOPIC_END] != NULL && loan_cancel(g->loan[TOPIC_END]) < 0)
        return NULL; /* views still alive: close() again once they are released */
    if (self->role == TOPIC_SUBSCRIBER)
        shmring_topic_unsubscribe(&self->t, self->slot, self->token);
    self->closed = 1;
    if (g->waiters)
        gate_wake(g);
    Py_RETURN_NONE;
}

static PyObject *topic_stats(TopicEndObject *self, PyObject *Py_UNUSED(ignored))
{
    shmring_topic_ctrl *c = self->t.ctrl;
    uint32_t i, subs = 0;
    if (self->mapping == NULL)
        return topic_usable(self, -1) < 0 ? NULL : NULL;
    for (i = 0; i < self->t.max_subscribers; i++)
        /* relaxed: a monitoring snapshot. */
        subs += __atomic_load_n(&self->t.subs[i].token, __ATOMIC_RELAXED) != 0;
    /* relaxed throughout: a monitoring snapshot. */
    return Py_BuildValue("{sKsKsKsKsIsIsK}", "capacity", (unsigned long long)self->t.capacity, "published",
                         (unsigned long long)__atomic_load_n(&c->next_seq, __ATOMIC_RELAXED), "tail",
                         (unsigned long long)__atomic_load_n(&c->tail, __ATOMIC_RELAXED), "head",
                         (unsigned long long)__atomic_load_n(&c->head, __ATOMIC_RELAXED), "subscribers", subs,
                         "max_subscribers", self->t.max_subscribers, "lagged",
                         (unsigned long long)(self->role == TOPIC_SUBSCRIBER
                                                  ? __atomic_load_n(&self->t.subs[self->slot].lagged, __ATOMIC_RELAXED)
                                                  : 0));
}

static int topic_init(TopicEndObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"mapping", "role", NULL};
    PyObject *mapping;
    int role;
    MappingObject *m;
    if (self->mapping != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "topic handle already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!i:TopicEnd", kwlist, &MappingType, &mapping, &role))
        return -1;
    m = (MappingObject *)mapping;
    if (mapping_check_open(m) < 0)
        return -1;
    if (role < TOPIC_PUBLISHER || role > TOPIC_OBSERVER) {
        PyErr_Format(PyExc_ValueError, "unknown topic role %d", role);
        return -1;
    }
    if (((const shmring_segment_header *)m->seg.base)->kind != SHMRING_KIND_TOPIC) {
        PyErr_Format(PyExc_ValueError, "segment %R is not a topic", m->name);
        return -1;
    }
    if (!m->seg.writable) {
        PyErr_Format(PyExc_ValueError, "segment %R is mapped read-only", m->name);
        return -1;
    }
    if (shmring_topic_attach(&self->t, shmring_segment_payload(&m->seg), shmring_segment_payload_size(&m->seg)) !=
        SHMRING_OK) {
        raise_code(SHMRING_ERR_CORRUPT, m->name);
        return -1;
    }
    if (PyObject_GetBuffer(mapping, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    self->t.interrupt = &self->gate.closing; /* close() from another thread ends the waits */
    Py_INCREF(mapping);
    self->mapping = mapping;
    self->role = role;
    /* relaxed: config, published with the segment. */
    self->spin_ns = __atomic_load_n(&self->t.ctrl->spin_ns, __ATOMIC_RELAXED);
    if (self->spin_ns > SHMRING_MAX_SPIN_NS) /* checked on attach; a peer may rewrite it */
        self->spin_ns = SHMRING_MAX_SPIN_NS;
    self->generation = fork_generation;
    self->token = shmring_token_self();
    if (role == TOPIC_SUBSCRIBER) {
        int lr = topic_lock(self, 0), slot;
        if (lr != 0) {
            if (lr > 0)
                PyErr_SetString(timeout_error, "topic lock");
            goto fail;
        }
        slot = shmring_topic_subscribe(&self->t, self->token);
        /* relaxed: read under the lock, with the slot. */
        self->cursor = __atomic_load_n(&self->t.subs[slot < 0 ? 0 : slot].cursor, __ATOMIC_RELAXED);
        self->next_seq = __atomic_load_n(&self->t.subs[slot < 0 ? 0 : slot].next_seq, __ATOMIC_RELAXED);
        topic_unlock(self);
        if (slot < 0) {
            PyErr_Format(PyExc_RuntimeError, "topic %R: all %u subscriber slots are taken by live subscribers",
                         m->name, self->t.max_subscribers);
            goto fail;
        }
        self->slot = slot;
    }
    return 0;
fail:
    PyBuffer_Release(&self->view);
    Py_CLEAR(self->mapping);
    return -1;
}

static void topic_dealloc(TopicEndObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->mapping != NULL) {
        /* Dropped without close(): no call is inside and no loan is out
         * (both hold a reference), so this frees the subscription's slot
         * and nothing more. */
        PyObject *r = topic_close(self, NULL);
        if (r == NULL)
            PyErr_WriteUnraisable((PyObject *)self);
        Py_XDECREF(r);
        PyBuffer_Release(&self->view);
    }
    Py_CLEAR(self->mapping);
    Py_CLEAR(self->dict);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int topic_traverse(TopicEndObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->mapping);
    Py_VISIT(self->dict);
    return 0;
}

static int topic_clear(TopicEndObject *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

static PyObject *topic_get_capacity(TopicEndObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->t.capacity);
}

static PyObject *topic_get_policy(TopicEndObject *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(self->t.policy == SHMRING_TOPIC_BLOCK ? "block" : "overwrite");
}

static PyObject *topic_get_closed(TopicEndObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed || self->mapping == NULL || (self->gate.state & GATE_CLOSING));
}

static PyObject *topic_get_lagged(TopicEndObject *self, void *Py_UNUSED(closure))
{
    if (self->mapping == NULL || self->role != TOPIC_SUBSCRIBER)
        return PyLong_FromLong(0);
    /* relaxed: statistics. */
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->t.subs[self->slot].lagged, __ATOMIC_RELAXED));
}

static PyObject *topic_get_mapping(TopicEndObject *self, void *Py_UNUSED(closure))
{
    if (self->mapping == NULL)
        Py_RETURN_NONE;
    Py_INCREF(self->mapping);
    return self->mapping;
}

static PyMethodDef topic_methods[] = {
    {"send", (PyCFunction)(void (*)(void))topic_send, FASTKW, "send(data, timeout=None)"},
    {"send_obj", (PyCFunction)(void (*)(void))topic_send_obj, FASTKW, "send_obj(obj, timeout=None)"},
    {"reserve", (PyCFunction)(void (*)(void))topic_reserve, FASTKW,
     "reserve(n, timeout=None) -> Loan: with-block lending n zero-filled bytes of the ring; published on "
     "normal exit (commit(k) to publish only the first k), dropped on an exception.  The topic lock is held "
     "for the block."},
    {"recv", (PyCFunction)(void (*)(void))topic_recv, FASTKW, "recv(timeout=None)"},
    {"recv_bytes", (PyCFunction)(void (*)(void))topic_recv_bytes, FASTKW, "recv_bytes(timeout=None) -> bytes"},
    {"_latest_unread", (PyCFunction)(void (*)(void))topic_latest_sub, FASTKW, "_latest_unread(timeout=None)"},
    {"peek", (PyCFunction)(void (*)(void))topic_peek, FASTKW,
     "peek(timeout=None) -> Loan: with-block lending the next message in place, read-only; released at exit "
     "(Lagged then if, under \"overwrite\", a publisher reclaimed it meanwhile)."},
    {"_latest_any", (PyCFunction)topic_latest_any, METH_NOARGS, "_latest_any() -> message or None"},
    {"close", (PyCFunction)topic_close, METH_NOARGS, "close()"},
    {"stats", (PyCFunction)topic_stats, METH_NOARGS, "stats() -> dict"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef topic_getset[] = {
    {"capacity", (getter)topic_get_capacity, NULL, "ring bytes", NULL},
    {"policy", (getter)topic_get_policy, NULL, "\"block\" or \"overwrite\"", NULL},
    {"closed", (getter)topic_get_closed, NULL, "whether this handle is closed", NULL},
    {"lagged", (getter)topic_get_lagged, NULL, "messages this subscription missed, in all", NULL},
    {"_mapping", (getter)topic_get_mapping, NULL, "the Mapping", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TopicEndType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmring._core.TopicEnd",
    .tp_basicsize = sizeof(TopicEndObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A publisher, subscription or observer of a topic segment (use shmring.Topic).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)topic_init,
    .tp_dealloc = (destructor)topic_dealloc,
    .tp_traverse = (traverseproc)topic_traverse,
    .tp_clear = (inquiry)topic_clear,
    .tp_methods = topic_methods,
    .tp_getset = topic_getset,
    .tp_dictoffset = offsetof(TopicEndObject, dict),
    .tp_weaklistoffset = offsetof(TopicEndObject, weakrefs),
};

static PyObject *core_create_topic(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    unsigned long long capacity;
    unsigned int policy, max_subs, spin_ns, mode;
    shmring_segment seg;
    int rc;
    if (!PyArg_ParseTuple(args, "O&KIIII:create_topic", name_converter, &name, &capacity, &policy, &max_subs,
                          &spin_ns, &mode))
        return NULL;
    if (capacity < SHMRING_TOPIC_MIN_CAPACITY || capacity > SHMRING_TOPIC_MAX_CAPACITY || (capacity & 15u) != 0)
        return PyErr_Format(PyExc_ValueError, "capacity must be a multiple of 16 between %u and %llu, not %llu",
                            SHMRING_TOPIC_MIN_CAPACITY, (unsigned long long)SHMRING_TOPIC_MAX_CAPACITY, capacity);
    if (policy != SHMRING_TOPIC_BLOCK && policy != SHMRING_TOPIC_OVERWRITE)
        return PyErr_Format(PyExc_ValueError, "unknown topic policy %u", policy);
    if (max_subs < 1 || max_subs > SHMRING_TOPIC_MAX_SUBSCRIBERS)
        return PyErr_Format(PyExc_ValueError, "max_subscribers must be between 1 and %u, not %u",
                            SHMRING_TOPIC_MAX_SUBSCRIBERS, max_subs);
    if (mode > 0777)
        return PyErr_Format(PyExc_ValueError, "bad mode");
    if (spin_ns > SHMRING_MAX_SPIN_NS)
        return PyErr_Format(PyExc_ValueError, "spin_ns must be at most %u", SHMRING_MAX_SPIN_NS);
    Py_BEGIN_ALLOW_THREADS
    rc = shmring_segment_create_unpublished(name.path, shmring_topic_payload_size(capacity, max_subs),
                                            SHMRING_KIND_TOPIC, (mode_t)mode, &seg);
    if (rc == SHMRING_OK) {
        shmring_topic_init(shmring_segment_payload(&seg), capacity, policy, max_subs, spin_ns);
        shmring_segment_publish(&seg);
    }
    Py_END_ALLOW_THREADS
    if (rc != SHMRING_OK)
        return raise_code(rc, name.obj);
    return (PyObject *)mapping_new(&seg, name.obj);
}

static int topic_module_init(PyObject *m)
{
    PyObject *errors = PyImport_ImportModule("shmring._errors");
    if (errors == NULL)
        return -1;
    lagged_error = PyObject_GetAttrString(errors, "Lagged");
    Py_DECREF(errors);
    if (lagged_error == NULL || PyType_Ready(&TopicEndType) < 0)
        return -1;
    Py_INCREF(&TopicEndType);
    if (PyModule_AddObject(m, "TopicEnd", (PyObject *)&TopicEndType) < 0 ||
        PyModule_AddIntConstant(m, "TOPIC_BLOCK", SHMRING_TOPIC_BLOCK) < 0 ||
        PyModule_AddIntConstant(m, "TOPIC_OVERWRITE", SHMRING_TOPIC_OVERWRITE) < 0 ||
        PyModule_AddIntConstant(m, "TOPIC_PUBLISHER", TOPIC_PUBLISHER) < 0 ||
        PyModule_AddIntConstant(m, "TOPIC_SUBSCRIBER", TOPIC_SUBSCRIBER) < 0 ||
        PyModule_AddIntConstant(m, "TOPIC_OBSERVER", TOPIC_OBSERVER) < 0)
        return -1;
    return 0;
}

/* topic_info(mapping): counters for `shmring inspect`, from a read-only
 * mapping (no lock taken; a snapshot). */
static PyObject *core_topic_info(PyObject *Py_UNUSED(module), PyObject *arg)
{
    MappingObject *m;
    shmring_topic t;
    uint32_t i, subs = 0;
    uint64_t tail, slowest;
    if (!PyObject_TypeCheck(arg, &MappingType))
        return PyErr_Format(PyExc_TypeError, "topic_info() needs a Mapping");
    m = (MappingObject *)arg;
    if (mapping_check_open(m) < 0)
        return NULL;
    if (((const shmring_segment_header *)m->seg.base)->kind != SHMRING_KIND_TOPIC ||
        shmring_topic_attach(&t, shmring_segment_payload(&m->seg), shmring_segment_payload_size(&m->seg)) !=
            SHMRING_OK)
        return raise_code(SHMRING_ERR_CORRUPT, m->name);
    /* relaxed throughout: a monitoring snapshot. */
    tail = __atomic_load_n(&t.ctrl->tail, __ATOMIC_RELAXED);
    slowest = tail;
    for (i = 0; i < t.max_subscribers; i++) {
        if (__atomic_load_n(&t.subs[i].token, __ATOMIC_RELAXED) != 0) {
            uint64_t cur = __atomic_load_n(&t.subs[i].cursor, __ATOMIC_RELAXED);
            subs++;
            if (cur < slowest)
                slowest = cur;
        }
    }
    return Py_BuildValue("{sKsssKsIsIsKsL}", "capacity", (unsigned long long)t.capacity, "policy",
                         t.policy == SHMRING_TOPIC_BLOCK ? "block" : "overwrite", "published",
                         (unsigned long long)__atomic_load_n(&t.ctrl->next_seq, __ATOMIC_RELAXED), "subscribers",
                         subs, "max_subscribers", t.max_subscribers, "slowest_behind_bytes",
                         (unsigned long long)(tail - slowest), "lock_holder_pid",
                         (long long)shmring_token_pid(__atomic_load_n(&t.ctrl->lock.owner, __ATOMIC_RELAXED)));
}
