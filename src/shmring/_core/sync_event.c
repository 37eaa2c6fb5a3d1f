/*
 * sync_event.c - shmring._core.Event and shmring._core.Condition (16 bytes
 * each): the event and the condition variable of include/shmring/sync.h at
 * an offset of a mapping.
 */
#include "core.h"

/* -- Event ------------------------------------------------------------------------ */

/* wait's look: set, or set (and maybe cleared) since the generation
 * *(uint32_t *)gen was read. */
static int event_ready(PrimitiveObject *self, void *gen)
{
    shmring_event *e = (shmring_event *)self->ptr;
    return shmring_event_is_set(e) || shmring_event_generation(e) != *(uint32_t *)gen;
}

static int event_sleep(PrimitiveObject *self, void *gen, uint64_t until)
{
    return shmring_event_wait((shmring_event *)self->ptr, *(uint32_t *)gen, until);
}

static PyObject *event_set(PrimitiveObject *self, PyObject *Py_UNUSED(ignored))
{
    if (primitive_ok(self) < 0)
        return NULL;
    shmring_event_set((shmring_event *)self->ptr);
    Py_RETURN_NONE;
}

static PyObject *event_clear(PrimitiveObject *self, PyObject *Py_UNUSED(ignored))
{
    if (primitive_ok(self) < 0)
        return NULL;
    shmring_event_clear((shmring_event *)self->ptr);
    Py_RETURN_NONE;
}

static PyObject *event_is_set(PrimitiveObject *self, PyObject *Py_UNUSED(ignored))
{
    if (primitive_ok(self) < 0)
        return NULL;
    return PyBool_FromLong(shmring_event_is_set((shmring_event *)self->ptr));
}

static PyObject *event_wait(PrimitiveObject *self, PyObject *args)
{
    PyObject *timeout = Py_None;
    uint64_t deadline;
    uint32_t gen;
    int r, no_wait;
    if (!PyArg_ParseTuple(args, "|O:wait", &timeout) || (no_wait = parse_timeout(timeout, &deadline)) < 0 ||
        primitive_ok(self) < 0)
        return NULL;
    gen = shmring_event_generation((shmring_event *)self->ptr);
    r = primitive_block(self, &gen, event_ready, event_sleep, no_wait, deadline);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyMethodDef event_methods[] = {
    {"set", (PyCFunction)event_set, METH_NOARGS, "set($self, /)\n--\n\nSet the event and wake its waiters."},
    {"clear", (PyCFunction)event_clear, METH_NOARGS, "clear($self, /)\n--\n\nClear the event."},
    {"is_set", (PyCFunction)event_is_set, METH_NOARGS, "is_set($self, /)\n--\n\nIs the event set?"},
    {"wait", (PyCFunction)event_wait, METH_VARARGS,
     "wait($self, timeout=None, /)\n--\n\nSleep until the event is set: True, or False on timeout."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject EventType = FIXED_PRIMITIVE_TYPE(
    "Event", "An event (16 bytes, 8-aligned) at an offset of a Mapping.", event_methods);

/* -- Condition ----------------------------------------------------------------------- */

static PyObject *condition_prepare(PrimitiveObject *self, PyObject *Py_UNUSED(ignored))
{
    if (primitive_ok(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(shmring_cond_prepare((shmring_cond *)self->ptr));
}

/* The wait of sleep() (shmring_wait_sliced): ready reads seq, then takes a
 * notification made since `registered`; sleep sleeps on the seq it read. */
typedef struct {
    shmring_cond *c;
    uint32_t registered, seq;
} ConditionWait;

static int condition_wait_ready(void *ctx, int last)
{
    ConditionWait *w = (ConditionWait *)ctx;
    (void)last;
    w->seq = shmring_cond_seq(w->c); /* before the take: see shmring_cond_seq */
    return shmring_cond_take(w->c, w->registered, w->seq) ? (int)SHMRING_OK : (int)SHMRING_AGAIN;
}

static int condition_wait_sleep(void *ctx, uint64_t until)
{
    ConditionWait *w = (ConditionWait *)ctx;
    int rc = shmring_cond_sleep(w->c, w->seq, until);
    /* A signal (the hooks run its handler) or a word that changed: look again. */
    if (rc == SHMRING_ERR_SYS && (errno == EINTR || errno == EAGAIN))
        return SHMRING_AGAIN;
    return rc;
}

/* sleep(registered, timeout=None) -> bool: after prepare() (the mutex
 * released by the caller): wait until a notification is taken (True) or
 * the timeout passes (False), then unregister. */
static PyObject *condition_sleep(PrimitiveObject *self, PyObject *args)
{
    PyObject *timeout = Py_None, *result = NULL;
    unsigned long registered;
    uint64_t deadline;
    int no_wait, rc;
    ConditionWait w;
    Py_buffer pin;
    if (!PyArg_ParseTuple(args, "k|O:sleep", &registered, &timeout))
        return NULL;
    no_wait = parse_timeout(timeout, &deadline);
    if (primitive_ok(self) < 0)
        return NULL; /* the segment is gone: nothing to unregister from */
    w.c = (shmring_cond *)self->ptr;
    w.registered = (uint32_t)registered;
    if (no_wait < 0 || primitive_pin(self, &pin) < 0) {
        shmring_cond_done(w.c);
        return NULL;
    }
    if (no_wait)
        rc = condition_wait_ready(&w, 1) == SHMRING_OK ? (int)SHMRING_OK : (int)SHMRING_TIMEOUT;
    else
        rc = gil_wait_sliced(&w, condition_wait_ready, condition_wait_sleep, NULL, NULL, deadline);
    if (rc == SHMRING_OK || rc == SHMRING_TIMEOUT)
        result = rc == SHMRING_OK ? Py_True : Py_False;
    else if (rc == SHMRING_ERR_SYS)
        PyErr_SetFromErrno(PyExc_OSError);
    shmring_cond_done(w.c);
    PyBuffer_Release(&pin);
    Py_XINCREF(result);
    return result;
}

static PyObject *condition_notify(PrimitiveObject *self, PyObject *args)
{
    int n = 1;
    if (!PyArg_ParseTuple(args, "|i:notify", &n) || primitive_ok(self) < 0)
        return NULL;
    if (n < 1)
        return PyErr_Format(PyExc_ValueError, "n must be at least 1");
    shmring_cond_notify((shmring_cond *)self->ptr, n);
    Py_RETURN_NONE;
}

static PyMethodDef condition_methods[] = {
    {"prepare", (PyCFunction)condition_prepare, METH_NOARGS,
     "prepare($self, /)\n--\n\nRegister as a waiter (the mutex held): the generation to pass to sleep()."},
    {"sleep", (PyCFunction)condition_sleep, METH_VARARGS,
     "sleep($self, generation, timeout=None, /)\n--\n\n"
     "After prepare() and the mutex released: wait for a notification (True) or the timeout (False)."},
    {"notify", (PyCFunction)condition_notify, METH_VARARGS,
     "notify($self, n=1, /)\n--\n\nWake up to n of the registered waiters."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ConditionType = FIXED_PRIMITIVE_TYPE(
    "Condition", "A condition variable (16 bytes, 8-aligned) at an offset of a Mapping, used with a Mutex.",
    condition_methods);
