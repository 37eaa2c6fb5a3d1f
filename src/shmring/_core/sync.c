/*
 * sync.c - what the synchronisation primitive types share: their place in
 * a mapping (checked at construction: the type's own size fits at that
 * offset, aligned), the check that the mapping is still open, the pin that
 * keeps it mapped while a call waits, and the blocking wait of the
 * primitives that sleep on a futex word.  One type per primitive:
 *
 *   Atomic     4 or 8 bytes  sync_atomic.c
 *   Semaphore  8 bytes       sync_semaphore.c
 *   SpinLock   16 bytes      sync_locks.c
 *   Mutex      24 bytes      sync_locks.c
 *   Event      16 bytes      sync_event.c
 *   Condition  16 bytes      sync_event.c
 *
 * (the layouts: include/shmring/sync.h).
 */
#include "core.h"

int primitive_place(PrimitiveObject *self, PyObject *mapping, Py_ssize_t offset, Py_ssize_t size,
                    Py_ssize_t align)
{
    MappingObject *m = (MappingObject *)mapping;
    if (self->mapping != NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s already initialised", Py_TYPE(self)->tp_name);
        return -1;
    }
    if (mapping_check_open(m) < 0)
        return -1;
    if (!m->seg.writable) {
        PyErr_Format(PyExc_ValueError, "segment %R is mapped read-only", m->name);
        return -1;
    }
    if (offset < 0 || offset > (Py_ssize_t)m->seg.map_size - size) {
        PyErr_Format(PyExc_ValueError, "offset %zd out of range: the %zd bytes of a %s do not fit in a mapping of %zu",
                     offset, size, Py_TYPE(self)->tp_name, m->seg.map_size);
        return -1;
    }
    if (((uintptr_t)(m->seg.base + offset) & (uintptr_t)(align - 1)) != 0) {
        PyErr_Format(PyExc_ValueError, "offset %zd is not %zd-byte aligned", offset, align);
        return -1;
    }
    Py_INCREF(m);
    self->mapping = m;
    self->offset = offset;
    self->size = size;
    self->ptr = m->seg.base + offset;
    return 0;
}

/* The size of each primitive of a fixed size (the table above; all are
 * 8-aligned). */
static const struct {
    PyTypeObject *type;
    Py_ssize_t size;
} PRIMITIVE_SIZES[] = {
    {&SemaphoreType, sizeof(shmring_sem)}, {&SpinLockType, sizeof(shmring_spinlock)},
    {&MutexType, sizeof(shmring_mutex)},   {&EventType, sizeof(shmring_event)},
    {&ConditionType, sizeof(shmring_cond)},
};

int primitive_init(PrimitiveObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"mapping", "offset", NULL};
    const char *type_name = strrchr(Py_TYPE(self)->tp_name, '.') + 1; /* tp_name: "shmring._core.<name>" */
    char fmt[32];
    PyObject *mapping;
    Py_ssize_t offset;
    size_t i;
    snprintf(fmt, sizeof fmt, "O!n:%s", type_name);
    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, kwlist, &MappingType, &mapping, &offset))
        return -1;
    for (i = 0; i < sizeof PRIMITIVE_SIZES / sizeof PRIMITIVE_SIZES[0]; i++)
        if (PRIMITIVE_SIZES[i].type == Py_TYPE(self))
            return primitive_place(self, mapping, offset, PRIMITIVE_SIZES[i].size, 8);
    PyErr_Format(PyExc_TypeError, "%s has no fixed size", Py_TYPE(self)->tp_name);
    return -1;
}

void primitive_dealloc(PrimitiveObject *self)
{
    Py_XDECREF(self->mapping);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

int primitive_ok(PrimitiveObject *self)
{
    if (self->mapping == NULL || self->mapping->seg.base == NULL) {
        PyErr_SetString(PyExc_ValueError, "the primitive's segment is closed");
        return -1;
    }
    return 0;
}

PyObject *primitive_word_snapshot(PrimitiveObject *self, size_t offset)
{
    if (primitive_ok(self) < 0)
        return NULL;
    /* relaxed: a snapshot for display. */
    return PyLong_FromUnsignedLong(shmring_load_relaxed((uint32_t *)(self->ptr + offset)));
}

int primitive_pin(PrimitiveObject *self, Py_buffer *pin)
{
    return PyObject_GetBuffer((PyObject *)self->mapping, pin, PyBUF_SIMPLE);
}

/* -- the blocking wait (shmring_wait_sliced) ----------------------------------- */

typedef struct {
    PrimitiveObject *self;
    void *arg;
    primitive_ready_fn ready;
    primitive_sleep_fn sleep;
} PrimitiveWait;

static int primitive_wait_ready(void *ctx, int last)
{
    PrimitiveWait *w = (PrimitiveWait *)ctx;
    int r = w->ready(w->self, w->arg);
    (void)last;
    return r > 0 ? (int)SHMRING_OK : r == 0 ? (int)SHMRING_AGAIN : WAIT_RAISED;
}

static int primitive_wait_sleep(void *ctx, uint64_t until)
{
    PrimitiveWait *w = (PrimitiveWait *)ctx;
    int rc = w->sleep(w->self, w->arg, until);
    /* A signal (the hooks run its handler) or a word that changed: look again. */
    if (rc == SHMRING_ERR_SYS && (errno == EINTR || errno == EAGAIN))
        return SHMRING_AGAIN;
    return rc;
}

/* `no_wait` and `deadline` come from parse_timeout, called by the caller
 * before primitive_ok (it may run Python code). */
int primitive_block(PrimitiveObject *self, void *arg, primitive_ready_fn ready, primitive_sleep_fn sleep,
                    int no_wait, uint64_t deadline)
{
    PrimitiveWait w;
    Py_buffer pin;
    int r;
    if ((r = ready(self, arg)) != 0)
        return r;
    if (no_wait)
        return 0;
    if (primitive_pin(self, &pin) < 0)
        return -1;
    w.self = self;
    w.arg = arg;
    w.ready = ready;
    w.sleep = sleep;
    r = gil_wait_sliced(&w, primitive_wait_ready, primitive_wait_sleep, NULL, NULL, deadline);
    if (r == SHMRING_ERR_SYS)
        PyErr_SetFromErrno(PyExc_OSError);
    PyBuffer_Release(&pin);
    return r == SHMRING_OK ? 1 : r == SHMRING_TIMEOUT ? 0 : -1;
}

/* -- shared by the locks and the semaphore -------------------------------------- */

int parse_acquire(PyObject *args, PyObject *kwds, const char *fname, int *blocking, int *no_wait,
                  uint64_t *deadline)
{
    static char *kwlist[] = {"blocking", "timeout", NULL};
    PyObject *timeout = Py_None;
    char fmt[64];
    *blocking = 1;
    *no_wait = 1;
    *deadline = 0;
    if (PyTuple_GET_SIZE(args) == 0 && (kwds == NULL || PyDict_GET_SIZE(kwds) == 0)) {
        *no_wait = 0; /* acquire(): block without a deadline, the common case */
        return 0;
    }
    snprintf(fmt, sizeof fmt, "|pO:%s", fname);
    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, kwlist, blocking, &timeout))
        return -1;
    /* As threading.Lock: a timeout with blocking=False is a ValueError;
     * None waits forever. */
    if (!*blocking) {
        if (timeout != Py_None) {
            PyErr_SetString(PyExc_ValueError, "can't specify timeout for non-blocking acquire");
            return -1;
        }
        return 0;
    }
    *no_wait = parse_timeout(timeout, deadline);
    return *no_wait < 0 ? -1 : 0;
}

uint64_t process_token_cached(void)
{
    static uint64_t token;
    static unsigned long generation;
    if (generation != fork_generation || token == 0) {
        token = shmring_token_self();
        generation = fork_generation;
    }
    return token;
}

static PyObject *core_fence(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    /* seq_cst: a full barrier, for user protocols built on relaxed atomics. */
    shmring_fence_seq_cst();
    Py_RETURN_NONE;
}

PyMethodDef sync_functions[] = {
    {"fence", core_fence, METH_NOARGS, "fence($module, /)\n--\n\nA sequentially consistent memory barrier."},
    {NULL, NULL, 0, NULL},
};
