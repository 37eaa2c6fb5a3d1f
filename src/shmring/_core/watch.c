/*
 * watch.c - waiting outside the blocking calls (include/shmring/watch.h),
 * for shmring.aio: the announce/read/withdraw steps on a handle's side
 * (watch_begin, watch_value, watch_end), and WaitSet, whose wait() sleeps
 * on many handles' futex words and a private control word at once.
 *
 * Only the kernel touches a word while the GIL is released: wait() takes
 * the words' addresses from open handles with the GIL held, and a handle
 * closed meanwhile makes the sleep end (EFAULT) or leaves it on a word
 * nobody bumps until the control word or the slice ends it.  Nothing here
 * reads the mapping without the GIL.
 */
#include "core.h"

/* The watch of `side` of `obj` (0: wait to receive/get/acquire; 1: wait to
 * send/put), with its handle checked open: 0, or -1 with an exception. */
static int watch_of(PyObject *obj, int side, shmring_watch *w)
{
    if (side != 0 && side != 1) {
        PyErr_Format(PyExc_ValueError, "side must be 0 (receive) or 1 (send), not %d", side);
        return -1;
    }
    if (PyObject_TypeCheck(obj, &ChannelType)) {
        ChannelObject *ch = (ChannelObject *)obj;
        int role = side ? ROLE_PRODUCER : ROLE_CONSUMER;
        if (ch->mapping == NULL || ch->closed || (ch->gate.state & GATE_CLOSING)) {
            raise_closed_meanwhile("channel", channel_name(ch), "handle");
            return -1;
        }
        if (ch->generation != fork_generation || !(ch->roles & role)) {
            PyErr_Format(PyExc_ValueError, "channel %R: this handle does not hold the %s end", channel_name(ch),
                         side ? "producer" : "consumer");
            return -1;
        }
        *w = shmring_channel_watch(&ch->ch, side);
        return 0;
    }
    if (PyObject_TypeCheck(obj, &QueueType)) {
        QueueObject *q = (QueueObject *)obj;
        if (queue_usable(q) < 0)
            return -1;
        *w = shmring_queue_watch(q->ctrl, side);
        return 0;
    }
    if (PyObject_TypeCheck(obj, &TopicEndType)) {
        TopicEndObject *t = (TopicEndObject *)obj;
        if (topic_usable(t, -1) < 0)
            return -1;
        *w = shmring_topic_watch(&t->t, t->role == TOPIC_PUBLISHER);
        return 0;
    }
    if (PyObject_TypeCheck(obj, &SemaphoreType) || PyObject_TypeCheck(obj, &EventType)) {
        PrimitiveObject *p = (PrimitiveObject *)obj;
        if (primitive_ok(p) < 0)
            return -1;
        if (PyObject_TypeCheck(obj, &SemaphoreType))
            *w = shmring_sem_watch((shmring_sem *)p->ptr);
        else
            *w = shmring_event_watch((shmring_event *)p->ptr);
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "cannot wait on a %.200s", Py_TYPE(obj)->tp_name);
    return -1;
}

static PyObject *watch_begin(PyObject *module, PyObject *args)
{
    PyObject *obj;
    int side, unfenced;
    shmring_watch w;
    (void)module;
    if (!PyArg_ParseTuple(args, "Oi:watch_begin", &obj, &side) || watch_of(obj, side, &w) < 0)
        return NULL;
    unfenced = shmring_watch_begin(&w);
    return PyBool_FromLong(unfenced);
}

static PyObject *watch_value(PyObject *module, PyObject *args)
{
    PyObject *obj;
    int side;
    shmring_watch w;
    (void)module;
    if (!PyArg_ParseTuple(args, "Oi:watch_value", &obj, &side) || watch_of(obj, side, &w) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(shmring_watch_value(&w));
}

/* A handle closed meanwhile has nothing to withdraw from: its mapping is
 * gone (the count it raised stays one too high: a spare wake call). */
static PyObject *watch_end(PyObject *module, PyObject *args)
{
    PyObject *obj;
    int side, pass_wake;
    shmring_watch w;
    (void)module;
    if (!PyArg_ParseTuple(args, "Oip:watch_end", &obj, &side, &pass_wake))
        return NULL;
    if (watch_of(obj, side, &w) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError) && !PyErr_ExceptionMatches(closed_error))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    shmring_watch_end(&w, pass_wake);
    Py_RETURN_NONE;
}

/* Whether this kernel has futex_waitv and lets us call it: a call with no
 * words says EINVAL when it does (ENOSYS before Linux 5.16; EPERM from a
 * seccomp filter that does not know the call). */
static PyObject *futex_waitv_available(PyObject *module, PyObject *ignored)
{
    long rc;
    (void)module;
    (void)ignored;
    rc = syscall(SYS_futex_waitv, NULL, 0, 0, NULL, CLOCK_MONOTONIC);
    return PyBool_FromLong(rc >= 0 || errno == EINVAL);
}

PyMethodDef watch_functions[] = {
    {"watch_begin", watch_begin, METH_VARARGS,
     "watch_begin(handle, side) -> bool: announce a waiter outside the blocking calls on side 0 (receive) or 1 "
     "(send) of a Channel, Queue, TopicEnd, Semaphore or Event (include/shmring/watch.h).  True when the "
     "announcement could not be fenced (then sleep in short slices)."},
    {"watch_value", watch_value, METH_VARARGS,
     "watch_value(handle, side) -> int: the side's futex word, read before re-checking the condition."},
    {"watch_end", watch_end, METH_VARARGS,
     "watch_end(handle, side, pass_wake) -> None: withdraw the announcement; pass_wake passes on a wake "
     "taken and not used.  Nothing for a handle closed meanwhile."},
    {"futex_waitv_available", futex_waitv_available, METH_NOARGS,
     "futex_waitv_available() -> bool: whether the kernel sleeps on many futex words at once (Linux 5.16)."},
    {NULL, NULL, 0, NULL},
};

/* -- WaitSet ------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    uint32_t control; /* private futex word: bumped by interrupt() */
    int use_waitv;    /* 0: one word per wait (no futex_waitv, or forced) */
} WaitSetObject;

static int waitset_init(WaitSetObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"use_waitv", NULL};
    int use_waitv = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p:WaitSet", kwlist, &use_waitv))
        return -1;
    self->use_waitv = use_waitv;
    return 0;
}

static PyObject *waitset_get_control(WaitSetObject *self, void *closure)
{
    (void)closure;
    /* acquire: pairs with interrupt()'s release bump. */
    return PyLong_FromUnsignedLong(__atomic_load_n(&self->control, __ATOMIC_ACQUIRE));
}

static PyObject *waitset_get_use_waitv(WaitSetObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->use_waitv);
}

static PyObject *waitset_interrupt(WaitSetObject *self, PyObject *ignored)
{
    (void)ignored;
    /* release: pairs with the acquire of `control`; the sleeper compares
     * the word with the value it read before it looked at its entries. */
    __atomic_fetch_add(&self->control, 1u, __ATOMIC_RELEASE);
    syscall(SYS_futex, &self->control, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    Py_RETURN_NONE;
}

/* One entry (handle, side, expected) into `e`: 0; 1 when its handle is not
 * usable any more (the caller does not sleep); -1 with an exception. */
static int waitset_entry(PyObject *item, shmring_waitv_entry *e)
{
    PyObject *obj;
    int side;
    unsigned long expected;
    shmring_watch w;
    if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "Oik:WaitSet.wait entry", &obj, &side, &expected)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "WaitSet.wait entries are (handle, side, expected) tuples");
        return -1;
    }
    if (watch_of(obj, side, &w) < 0) {
        if (PyErr_ExceptionMatches(PyExc_TypeError))
            return -1;
        PyErr_Clear();
        return 1;
    }
    shmring_waitv_set(e, w.word, (uint32_t)expected, 0);
    return 0;
}

/* The sleep itself, without the GIL: SHMRING_OK, SHMRING_TIMEOUT or
 * SHMRING_ERR_SYS with errno.  Without futex_waitv, one word only: the
 * entry's (with the control word seen at the next slice), else the
 * control word's. */
static int waitset_sleep(WaitSetObject *self, shmring_waitv_entry *v, unsigned n, uint64_t deadline)
{
    uint64_t now;
    shmring_waitv_entry *one;
    if (self->use_waitv)
        return shmring_futex_waitv(v, n, deadline);
    if (n > 2) {
        errno = ENOSYS;
        return SHMRING_ERR_SYS;
    }
    one = n == 2 ? &v[1] : &v[0];
    now = shmring_now_ns();
    if (deadline == 0 || deadline > now + SHMRING_WAIT_SLICE_NS)
        deadline = now + SHMRING_WAIT_SLICE_NS; /* the control word is looked at between slices */
    /* acquire: pairs with interrupt()'s release bump (a change of the
     * entries made before it is seen by the next look). */
    if (n == 2 && __atomic_load_n(&self->control, __ATOMIC_ACQUIRE) != (uint32_t)v[0].val)
        return SHMRING_OK;
    if (n == 1) {
        /* The control word alone: a private futex, as interrupt() wakes it
         * (a shared wait would be another futex, woken only by the slice). */
        struct timespec ts;
        ts.tv_sec = (time_t)((deadline - now) / 1000000000u);
        ts.tv_nsec = (long)((deadline - now) % 1000000000u);
        if (syscall(SYS_futex, &self->control, FUTEX_WAIT_PRIVATE, (uint32_t)v[0].val, &ts, NULL, 0) == 0 ||
            errno == EAGAIN || errno == EINTR)
            return SHMRING_OK;
        return errno == ETIMEDOUT ? SHMRING_TIMEOUT : SHMRING_ERR_SYS;
    }
    return shmring_futex_wait_until((uint32_t *)(uintptr_t)one->uaddr, (uint32_t)one->val, deadline);
}

static PyObject *waitset_wait(WaitSetObject *self, PyObject *args)
{
    PyObject *entries, *seq, *timeout = Py_None;
    unsigned long control;
    shmring_waitv_entry v[SHMRING_WAITV_MAX];
    Py_ssize_t i, n;
    uint64_t deadline;
    int rc, r, saved;
    if (!PyArg_ParseTuple(args, "Ok|O:WaitSet.wait", &entries, &control, &timeout) ||
        parse_timeout(timeout, &deadline) < 0)
        return NULL;
    seq = PySequence_Fast(entries, "WaitSet.wait entries must be a sequence");
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n > (Py_ssize_t)SHMRING_WAITV_MAX - 1) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "WaitSet.wait takes at most %u entries", SHMRING_WAITV_MAX - 1);
        return NULL;
    }
    shmring_waitv_set(&v[0], &self->control, (uint32_t)control, 1);
    for (i = 0; i < n; i++) {
        r = waitset_entry(PySequence_Fast_GET_ITEM(seq, i), &v[i + 1]);
        if (r != 0) {
            Py_DECREF(seq);
            return r < 0 ? NULL : Py_NewRef(Py_True);
        }
    }
    /* The handles stay referenced by `seq` while the kernel holds their
     * words' addresses. */
    Py_BEGIN_ALLOW_THREADS
    rc = waitset_sleep(self, v, (unsigned)n + 1, deadline);
    saved = errno;
    Py_END_ALLOW_THREADS
    Py_DECREF(seq);
    if (rc == SHMRING_TIMEOUT)
        Py_RETURN_FALSE;
    if (rc == SHMRING_ERR_SYS && saved != EINTR && saved != EFAULT) {
        errno = saved;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_TRUE;
}

static PyMethodDef waitset_methods[] = {
    {"wait", (PyCFunction)waitset_wait, METH_VARARGS,
     "wait(entries, control, timeout=None) -> bool: sleep, without the GIL, while each entry's word "
     "(entries: (handle, side, expected) tuples, at most 127) holds its expected value and the control "
     "word holds `control`.  True when woken (or a word had changed, or a handle is closed), False at the "
     "timeout.  Without futex_waitv (use_waitv=False), one entry at most, in slices of 50 ms; OSError "
     "ENOSYS for more."},
    {"interrupt", (PyCFunction)waitset_interrupt, METH_NOARGS,
     "interrupt() -> None: bump the control word and wake the sleeper."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef waitset_getset[] = {
    {"control", (getter)waitset_get_control, NULL, "the control word's value, read before the entries", NULL},
    {"use_waitv", (getter)waitset_get_use_waitv, NULL, "whether wait() sleeps on many words at once", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject WaitSetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmring._core.WaitSet",
    .tp_doc = "The sleep of one waiter thread on many handles' futex words (shmring.aio).",
    .tp_basicsize = sizeof(WaitSetObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)waitset_init,
    .tp_methods = waitset_methods,
    .tp_getset = waitset_getset,
};
