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

/* The state of one lock word holder for sync_info: its pid, and whether it
 * is alive (a dead holder's lock is taken over by the next acquirer). */
static PyObject *holder_fields(uint64_t token)
{
    return Py_BuildValue("{sLsO}", "holder_pid", (long long)(token ? shmring_token_pid(token) : 0), "holder_alive",
                         token && shmring_token_alive(token) ? Py_True : Py_False);
}

/* The fields of primitive `type` at `p` (`avail` bytes), for sync_info. */
static PyObject *sync_state(uint32_t type, void *p, uint64_t avail)
{
    static const uint64_t sizes[SHMRING_SYNC_TYPE_MAX + 1] = {
        0, 8, 4, 4, sizeof(shmring_sem), sizeof(shmring_spinlock), sizeof(shmring_mutex), sizeof(shmring_event)};
    /* relaxed throughout: a monitoring snapshot, not a synchronisation. */
    if (type == 0 || type > SHMRING_SYNC_TYPE_MAX || avail < sizes[type])
        return Py_BuildValue("{ss}", "primitive", "unknown");
    switch (type) {
    case SHMRING_SYNC_ATOMIC64:
        return Py_BuildValue("{sssL}", "primitive", "AtomicInt64", "value",
                             (long long)__atomic_load_n((int64_t *)p, __ATOMIC_RELAXED));
    case SHMRING_SYNC_ATOMIC32:
        return Py_BuildValue("{sssi}", "primitive", "AtomicInt32", "value",
                             (int)__atomic_load_n((int32_t *)p, __ATOMIC_RELAXED));
    case SHMRING_SYNC_FLAG:
        return Py_BuildValue("{sssO}", "primitive", "AtomicFlag", "set",
                             __atomic_load_n((uint32_t *)p, __ATOMIC_RELAXED) ? Py_True : Py_False);
    case SHMRING_SYNC_SEMAPHORE: {
        shmring_sem *s = (shmring_sem *)p;
        return Py_BuildValue("{sssIsI}", "primitive", "Semaphore", "value",
                             (unsigned)__atomic_load_n(&s->count, __ATOMIC_RELAXED), "waiters",
                             (unsigned)__atomic_load_n(&s->waiters, __ATOMIC_RELAXED));
    }
    case SHMRING_SYNC_EVENT: {
        shmring_event *e = (shmring_event *)p;
        return Py_BuildValue("{sssOsI}", "primitive", "Event", "set",
                             __atomic_load_n(&e->flag, __ATOMIC_RELAXED) ? Py_True : Py_False, "waiters",
                             (unsigned)__atomic_load_n(&e->waiters, __ATOMIC_RELAXED));
    }
    default:
        break;
    }
    {
        /* the two locks: who holds it, and whether it died holding it */
        uint64_t owner = __atomic_load_n((uint64_t *)p, __ATOMIC_RELAXED); /* both start with the owner token */
        PyObject *fields, *holder;
        const char *state = "consistent";
        int sleepers = 0;
        if (type == SHMRING_SYNC_MUTEX) {
            shmring_mutex *m = (shmring_mutex *)p;
            uint32_t st = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
            state = st == SHMRING_MUTEX_OWNER_DIED       ? "owner_died"
                    : st == SHMRING_MUTEX_NOT_RECOVERABLE ? "not_recoverable"
                    : st == SHMRING_MUTEX_CONSISTENT      ? "consistent"
                                                          : "unknown";
            sleepers = __atomic_load_n(&m->word, __ATOMIC_RELAXED) == SHMRING_MUTEX_SLEEPERS;
        }
        fields = Py_BuildValue("{sssssOsO}", "primitive", type == SHMRING_SYNC_MUTEX ? "Mutex" : "SpinLock", "state",
                               state, "owner_died_pending",
                               owner && !shmring_token_alive(owner) ? Py_True : Py_False, "sleepers",
                               sleepers ? Py_True : Py_False);
        holder = fields == NULL ? NULL : holder_fields(owner);
        if (holder == NULL || PyDict_Update(fields, holder) < 0) {
            Py_XDECREF(holder);
            Py_XDECREF(fields);
            return NULL;
        }
        Py_DECREF(holder);
        return fields;
    }
}

/* sync_info(mapping): which primitive a named sync segment holds and its
 * state, from a read-only mapping (no lock taken: a snapshot).  The type
 * comes from the header's object_type, which nobody trusts: an unknown one
 * is reported as such. */
static PyObject *core_sync_info(PyObject *Py_UNUSED(module), PyObject *arg)
{
    MappingObject *m = mapping_arg(arg, "sync_info");
    const shmring_segment_header *h;
    if (m == NULL)
        return NULL;
    h = (const shmring_segment_header *)m->seg.base;
    if (h->kind != SHMRING_KIND_SYNC)
        return PyErr_Format(PyExc_ValueError, "segment %R is not a named primitive", m->name);
    /* relaxed: written before the magic, whose release [S1] the mapping's
     * header check acquired; display only, checked by sync_state. */
    return sync_state(__atomic_load_n(&h->object_type, __ATOMIC_RELAXED), shmring_segment_payload(&m->seg),
                      shmring_segment_payload_size(&m->seg));
}

PyMethodDef sync_functions[] = {
    {"fence", core_fence, METH_NOARGS, "fence($module, /)\n--\n\nA sequentially consistent memory barrier."},
    {"sync_info", core_sync_info, METH_O,
     "sync_info($module, mapping, /)\n--\n\nWhich primitive a named sync segment holds, and its state (a "
     "snapshot), as a dict."},
    {NULL, NULL, 0, NULL},
};
