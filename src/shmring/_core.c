/*
 * shmring._core: the CPython boundary of include/shmring.h.
 *
 * This file does system calls right (GIL released while waiting, EINTR
 * retried, errors raised with the segment's name) and exports mappings
 * through the buffer protocol with export counting.  Naming, ownership and
 * pickling policy live in the Python modules.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "shmring.h"

#include <signal.h>

#include <pthread.h>

/* A blocking call gives the GIL away for one slice of the wait at most
 * (SHMRING_WAIT_SLICE_NS, shmring/wait.h): that bounds the delay before a
 * pending signal (Ctrl-C) is noticed. */

static PyObject *error_by_code; /* shmring._errors.ERROR_BY_CODE */
static PyObject *buffer_in_use_error;
static PyObject *corrupted_error;
static PyObject *timeout_error;
static PyObject *closed_error;
static PyObject *peer_gone_error;
static PyObject *role_taken_error;

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* Raise the Python exception for a shmring error code about `name`. */
static PyObject *raise_code(int code, PyObject *name)
{
    PyObject *key, *cls, *exc;
    if (code == SHMRING_ERR_SYS)
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
    if (code == SHMRING_ERR_ARG) {
        PyErr_Format(PyExc_ValueError, "invalid argument for segment %R", name);
        return NULL;
    }
    key = PyLong_FromLong(code);
    if (key == NULL)
        return NULL;
    cls = PyDict_GetItemWithError(error_by_code, key);
    Py_DECREF(key);
    if (cls == NULL) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_RuntimeError, "segment %R: %s", name, shmring_strerror(code));
        return NULL;
    }
    exc = PyObject_CallFunction(cls, "NO", PyUnicode_FromFormat("segment %R: %s", name, shmring_strerror(code)), name);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Mapping: one attachment to a segment, exported through the buffer protocol */
/* ------------------------------------------------------------------------ */

/* A Mapping is one attachment (include/shmring.h, "Segments"): it holds a
 * lease and a roster entry from its creation until it leaves, which happens
 * at close(), at leave(), when it is deallocated, or at process exit
 * (leave_all).  Leaving never unmaps by itself: close() and dealloc unmap,
 * once no exported buffer points into the memory. */
typedef struct MappingObject {
    PyObject_HEAD
    shmring_segment seg;
    PyObject *name;     /* str, without the leading '/' */
    Py_ssize_t exports; /* live Py_buffer views */
    struct MappingObject *prev, *next; /* attached mappings of this process (GIL) */
} MappingObject;

static PyTypeObject MappingType;

/* Every Mapping still attached, for leave_all (exit) and after_fork_child. */
static MappingObject *attached_mappings;

/* Set once the interpreter is exiting (leave_all ran): handles dropped from
 * then on keep what they claimed, as a process that died would. */
static int process_exiting;

static void mapping_link(MappingObject *m)
{
    m->prev = NULL;
    m->next = attached_mappings;
    if (attached_mappings != NULL)
        attached_mappings->prev = m;
    attached_mappings = m;
}

static void mapping_unlink(MappingObject *m)
{
    if (m->prev != NULL)
        m->prev->next = m->next;
    else if (attached_mappings == m)
        attached_mappings = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    m->prev = m->next = NULL;
}

static int mapping_check_open(MappingObject *self)
{
    if (self->seg.base == NULL) {
        PyErr_Format(PyExc_ValueError, "segment %R is closed", self->name);
        return -1;
    }
    return 0;
}

static int mapping_getbuffer(MappingObject *self, Py_buffer *view, int flags)
{
    if (mapping_check_open(self) < 0) {
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->seg.base, (Py_ssize_t)self->seg.map_size,
                          !self->seg.writable, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void mapping_releasebuffer(MappingObject *self, Py_buffer *view)
{
    (void)view;
    self->exports--;
}

static PyBufferProcs mapping_as_buffer = {
    (getbufferproc)mapping_getbuffer,
    (releasebufferproc)mapping_releasebuffer,
};

static MappingObject *mapping_new(shmring_segment *seg, PyObject *name)
{
    MappingObject *self = PyObject_New(MappingObject, &MappingType);
    if (self == NULL) {
        shmring_segment_close(seg);
        return NULL;
    }
    self->seg = *seg;
    Py_INCREF(name);
    self->name = name;
    self->exports = 0;
    self->prev = self->next = NULL;
    if (self->seg.lease_fd >= 0)
        mapping_link(self);
    return self;
}

/* End this attachment (the segment is removed if it was the last one and is
 * not persistent); the memory stays mapped. */
static void mapping_leave_now(MappingObject *self)
{
    shmring_segment seg;
    if (self->seg.lease_fd < 0)
        return;
    /* Leave with a copy, the mapping marked left first: another thread
     * (the GIL is given away below) finds nothing left to leave.  The
     * memory stays pinned meanwhile (an export: close() cannot unmap it). */
    mapping_unlink(self);
    seg = self->seg;
    self->seg.lease_fd = -1;
    self->seg.roster_slot = -1;
    self->exports++;
    Py_BEGIN_ALLOW_THREADS
    shmring_segment_leave(&seg); /* a failed removal is left to `shmring gc` */
    Py_END_ALLOW_THREADS
    self->exports--;
}

static void mapping_dealloc(MappingObject *self)
{
    /* No view can be alive here: each holds a reference to us. */
    mapping_leave_now(self);
    shmring_segment_close(&self->seg);
    Py_XDECREF(self->name);
    PyObject_Free(self);
}

static PyObject *mapping_close(MappingObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->seg.base == NULL)
        Py_RETURN_NONE;
    if (self->exports > 0) {
        PyErr_Format(buffer_in_use_error,
                     "cannot close segment %R: %zd exported buffer(s) (memoryview, ndarray, ...) "
                     "still point into it; release them first",
                     self->name, self->exports);
        return NULL;
    }
    mapping_leave_now(self);
    if (self->exports > 0) /* taken by another thread while we left */
        return PyErr_Format(buffer_in_use_error, "cannot close segment %R: a buffer of it was taken meanwhile",
                            self->name);
    if (shmring_segment_close(&self->seg) != SHMRING_OK)
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, self->name);
    Py_RETURN_NONE;
}

static PyObject *mapping_leave(MappingObject *self, PyObject *Py_UNUSED(ignored))
{
    mapping_leave_now(self);
    Py_RETURN_NONE;
}

static PyObject *mapping_header(MappingObject *self, PyObject *Py_UNUSED(ignored))
{
    const shmring_segment_header *h;
    if (mapping_check_open(self) < 0)
        return NULL;
    h = (const shmring_segment_header *)self->seg.base;
    /* relaxed: the mutable fields are a snapshot for display. */
    return Py_BuildValue(
        "{s:O,s:I,s:I,s:I,s:I,s:K,s:L,s:K,s:K,s:I,s:I,s:O,s:O,s:I}",
        "name", self->name,
        "version", (unsigned)h->version,
        "abi", (unsigned)h->abi,
        "kind", (unsigned)h->kind,
        "header_size", (unsigned)h->header_size,
        "total_size", (unsigned long long)h->total_size,
        "creator_pid", (long long)h->creator_pid,
        "creator_start", (unsigned long long)h->creator_start,
        "created_ns", (unsigned long long)h->created_ns,
        "creator_uid", (unsigned)h->creator_uid,
        "flags", (unsigned)h->flags,
        "removed", __atomic_load_n(&h->state, __ATOMIC_RELAXED) != SHMRING_STATE_LIVE ? Py_True : Py_False,
        "persistent", __atomic_load_n(&h->persistent, __ATOMIC_RELAXED) ? Py_True : Py_False,
        "roster_overflow", (unsigned)__atomic_load_n(&h->roster_overflow, __ATOMIC_RELAXED));
}

/* users() -> list of (pid, alive, attached_ns): the roster, one entry per
 * attachment (a process attached twice is listed twice). */
static PyObject *mapping_users(MappingObject *self, PyObject *Py_UNUSED(ignored))
{
    shmring_roster_entry *r;
    PyObject *list;
    unsigned i;
    if (mapping_check_open(self) < 0)
        return NULL;
    r = shmring_segment_roster(self->seg.base);
    list = PyList_New(0);
    for (i = 0; list != NULL && i < SHMRING_ROSTER_SLOTS; i++) {
        /* relaxed: a snapshot for display; a torn pair only mislabels a time. */
        uint64_t token = __atomic_load_n(&r[i].token, __ATOMIC_RELAXED);
        uint64_t since = __atomic_load_n(&r[i].attached_ns, __ATOMIC_RELAXED);
        PyObject *entry;
        if (token == 0)
            continue;
        entry = Py_BuildValue("(LOK)", (long long)shmring_token_pid(token),
                              shmring_token_alive(token) ? Py_True : Py_False, (unsigned long long)since);
        if (entry == NULL || PyList_Append(list, entry) < 0)
            Py_CLEAR(list);
        Py_XDECREF(entry);
    }
    return list;
}

/* duplicate(readonly=False) -> Mapping: a second, independent attachment. */
static PyObject *mapping_duplicate(MappingObject *self, PyObject *args)
{
    int readonly = !self->seg.writable, rc;
    shmring_segment seg;
    if (!PyArg_ParseTuple(args, "|p:duplicate", &readonly))
        return NULL;
    if (mapping_check_open(self) < 0)
        return NULL;
    if (self->seg.lease_fd < 0)
        return PyErr_Format(PyExc_ValueError, "segment %R: this mapping is not attached any more", self->name);
    Py_BEGIN_ALLOW_THREADS
    rc = shmring_segment_reopen(&self->seg,
                                SHMRING_OPEN_ALLOW_OTHER_OWNER | (readonly ? SHMRING_OPEN_READONLY : 0u), &seg);
    Py_END_ALLOW_THREADS
    if (rc != SHMRING_OK)
        return raise_code(rc, self->name);
    return (PyObject *)mapping_new(&seg, self->name);
}

static PyObject *mapping_get_size(MappingObject *self, void *Py_UNUSED(closure))
{
    if (mapping_check_open(self) < 0)
        return NULL;
    return PyLong_FromSize_t(self->seg.map_size);
}

static PyObject *mapping_get_closed(MappingObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->seg.base == NULL);
}

static PyObject *mapping_get_attached(MappingObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->seg.lease_fd >= 0);
}

static PyObject *mapping_get_lease_fd(MappingObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->seg.lease_fd);
}

static PyObject *mapping_get_readonly(MappingObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(!self->seg.writable);
}

static PyObject *mapping_get_exports(MappingObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->exports);
}

static PyObject *mapping_get_persistent(MappingObject *self, void *Py_UNUSED(closure))
{
    if (mapping_check_open(self) < 0)
        return NULL;
    /* relaxed: a snapshot. */
    return PyBool_FromLong(
        __atomic_load_n(&((shmring_segment_header *)self->seg.base)->persistent, __ATOMIC_RELAXED) != 0);
}

static int mapping_set_persistent(MappingObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    int on;
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "cannot delete persistent");
        return -1;
    }
    if ((on = PyObject_IsTrue(value)) < 0 || mapping_check_open(self) < 0)
        return -1;
    if (!self->seg.writable) {
        PyErr_Format(PyExc_ValueError, "segment %R is mapped read-only", self->name);
        return -1;
    }
    shmring_segment_set_persistent(&self->seg, on);
    return 0;
}

static PyObject *mapping_repr(MappingObject *self)
{
    if (self->seg.base == NULL)
        return PyUnicode_FromFormat("<shmring._core.Mapping %R closed>", self->name);
    return PyUnicode_FromFormat("<shmring._core.Mapping %R size=%zu%s>", self->name, self->seg.map_size,
                                self->seg.lease_fd >= 0 ? "" : " left");
}

static PyMethodDef mapping_methods[] = {
    {"close", (PyCFunction)mapping_close, METH_NOARGS,
     "close(): Leave and unmap; raises BufferInUseError while exported buffers are alive."},
    {"leave", (PyCFunction)mapping_leave, METH_NOARGS,
     "leave(): End this attachment (the last one out removes the segment); the memory stays mapped."},
    {"duplicate", (PyCFunction)mapping_duplicate, METH_VARARGS,
     "duplicate(readonly=False): A second, independent attachment to the same segment."},
    {"users", (PyCFunction)mapping_users, METH_NOARGS,
     "users(): The roster: (pid, alive, attached_ns) for each attachment listed."},
    {"header", (PyCFunction)mapping_header, METH_NOARGS, "header(): The segment header fields as a dict."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef mapping_getset[] = {
    {"size", (getter)mapping_get_size, NULL, "Bytes mapped (header + payload).", NULL},
    {"closed", (getter)mapping_get_closed, NULL, "True once unmapped.", NULL},
    {"attached", (getter)mapping_get_attached, NULL, "True until this attachment leaves.", NULL},
    {"lease_fd", (getter)mapping_get_lease_fd, NULL, "Descriptor holding the lease, or -1.", NULL},
    {"readonly", (getter)mapping_get_readonly, NULL, "True if mapped read-only.", NULL},
    {"exports", (getter)mapping_get_exports, NULL, "Number of live exported buffers.", NULL},
    {"persistent", (getter)mapping_get_persistent, (setter)mapping_set_persistent,
     "True: the last user to leave keeps the segment.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MappingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmring._core.Mapping",
    .tp_basicsize = sizeof(MappingObject),
    .tp_dealloc = (destructor)mapping_dealloc,
    .tp_repr = (reprfunc)mapping_repr,
    .tp_as_buffer = &mapping_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An attachment to a shmring segment (header + payload); made by create() or open().",
    .tp_methods = mapping_methods,
    .tp_getset = mapping_getset,
};

/* ------------------------------------------------------------------------ */
/* Module functions: segments                                                */
/* ------------------------------------------------------------------------ */

/* A segment name from Python: the user's spelling (no leading '/') and the
 * POSIX path given to shm_open ("/" + name). */
typedef struct {
    PyObject *obj;
    char path[NAME_MAX + 2];
} segment_name;

static int name_converter(PyObject *obj, void *out)
{
    segment_name *n = (segment_name *)out;
    const char *s;
    Py_ssize_t len;
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "segment name must be str, not %.100s", Py_TYPE(obj)->tp_name);
        return 0;
    }
    s = PyUnicode_AsUTF8AndSize(obj, &len);
    if (s == NULL)
        return 0;
    n->path[0] = '/';
    if (len < 1 || len > NAME_MAX - 1 || strlen(s) != (size_t)len) {
        PyErr_Format(PyExc_ValueError, "invalid segment name %R: 1 to %d characters", obj, NAME_MAX - 1);
        return 0;
    }
    memcpy(n->path + 1, s, (size_t)len + 1);
    if (shmring_name_check(n->path) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "invalid segment name %R: use letters, digits, '.', '_' and '-', not starting with '.'",
                     obj);
        return 0;
    }
    n->obj = obj;
    return 1;
}

static PyObject *core_create(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    unsigned long long payload;
    unsigned int kind, mode;
    shmring_segment seg;
    int rc;

    if (!PyArg_ParseTuple(args, "O&KII:create", name_converter, &name, &payload, &kind, &mode))
        return NULL;
    if (payload == 0 || payload > (unsigned long long)PY_SSIZE_T_MAX - SHMRING_HEADER_SIZE) {
        PyErr_Format(PyExc_ValueError, "segment size must be between 1 and %zd bytes",
                     (Py_ssize_t)(PY_SSIZE_T_MAX - SHMRING_HEADER_SIZE));
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = shmring_segment_create(name.path, payload, kind, (mode_t)mode, &seg);
    Py_END_ALLOW_THREADS
    if (rc != SHMRING_OK)
        return raise_code(rc, name.obj);
    return (PyObject *)mapping_new(&seg, name.obj);
}

static PyObject *core_open(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    int readonly, allow_other_owner, attach = 1;
    shmring_segment seg;
    unsigned flags = 0;
    int rc;

    if (!PyArg_ParseTuple(args, "O&pp|p:open", name_converter, &name, &readonly, &allow_other_owner, &attach))
        return NULL;
    if (readonly)
        flags |= SHMRING_OPEN_READONLY;
    if (allow_other_owner)
        flags |= SHMRING_OPEN_ALLOW_OTHER_OWNER;
    if (!attach)
        flags |= SHMRING_OPEN_NO_ATTACH;
    Py_BEGIN_ALLOW_THREADS
    rc = shmring_segment_open(name.path, flags, &seg);
    Py_END_ALLOW_THREADS
    if (rc != SHMRING_OK)
        return raise_code(rc, name.obj);
    return (PyObject *)mapping_new(&seg, name.obj);
}

/* open_fd(fd, name, readonly, allow_other_owner) -> Mapping: attach through
 * a descriptor of the object (one handed over by the parent process); the
 * descriptor becomes the lease (or is closed on failure). */
static PyObject *core_open_fd(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    int fd, readonly, allow_other_owner, rc;
    shmring_segment seg;
    if (!PyArg_ParseTuple(args, "iO&pp:open_fd", &fd, name_converter, &name, &readonly, &allow_other_owner))
        return NULL;
    if (fd < 0)
        return PyErr_Format(PyExc_ValueError, "bad descriptor %d", fd);
    Py_BEGIN_ALLOW_THREADS
    rc = shmring_segment_attach_fd(fd, name.path,
                                   (readonly ? SHMRING_OPEN_READONLY : 0u) |
                                       (allow_other_owner ? SHMRING_OPEN_ALLOW_OTHER_OWNER : 0u),
                                   &seg);
    Py_END_ALLOW_THREADS
    if (rc != SHMRING_OK)
        return raise_code(rc, name.obj);
    return (PyObject *)mapping_new(&seg, name.obj);
}

static PyObject *core_unlink(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    int rc;
    if (!PyArg_ParseTuple(args, "O&:unlink", name_converter, &name))
        return NULL;
    rc = shmring_segment_unlink(name.path);
    if (rc != SHMRING_OK)
        return raise_code(rc, name.obj);
    Py_RETURN_NONE;
}

/* in_use(name) -> bool: is any process attached (holding a lease)? */
static PyObject *core_in_use(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    int r;
    if (!PyArg_ParseTuple(args, "O&:in_use", name_converter, &name))
        return NULL;
    r = shmring_segment_in_use(name.path);
    if (r < 0)
        return raise_code(-r, name.obj);
    return PyBool_FromLong(r);
}

/* remove_unused(name, even_persistent=False) -> bool: remove the segment
 * (and what depends on it) if nobody is attached; False when it is kept. */
static PyObject *core_remove_unused(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    int even_persistent = 0, rc;
    if (!PyArg_ParseTuple(args, "O&|p:remove_unused", name_converter, &name, &even_persistent))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = shmring_segment_remove_unused(name.path, even_persistent);
    Py_END_ALLOW_THREADS
    if (rc == SHMRING_AGAIN)
        Py_RETURN_FALSE;
    if (rc != SHMRING_OK)
        return raise_code(rc, name.obj);
    Py_RETURN_TRUE;
}

/* chunk_name(queue, index) -> str: the name of a queue's overflow chunk. */
static PyObject *core_chunk_name(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    unsigned long long index;
    char out[NAME_MAX + 2];
    if (!PyArg_ParseTuple(args, "O&K:chunk_name", name_converter, &name, &index))
        return NULL;
    if (shmring_queue_chunk_name(name.path, (uint64_t)index, out) != SHMRING_OK)
        return PyErr_Format(PyExc_ValueError, "queue name %R is too long for its chunk names", name.obj);
    return PyUnicode_FromString(out + 1);
}

/* chunk_index(entry, queue) -> int | None: N if `entry` is named like chunk
 * N of `queue` (the name only: chunk_stamp says whose it really is). */
static PyObject *core_chunk_index(PyObject *Py_UNUSED(module), PyObject *args)
{
    const char *entry, *queue;
    uint64_t index;
    if (!PyArg_ParseTuple(args, "ss:chunk_index", &entry, &queue))
        return NULL;
    if (!shmring_queue_chunk_parse(entry, queue, &index))
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(index);
}

/* chunk_stamp(name) -> (queue_id, index, queue_dev, queue_ino) | None: whose
 * overflow chunk segment `name` is, from its header; None if it is not a
 * published chunk. */
static PyObject *core_chunk_stamp(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    shmring_chunk_stamp st;
    if (!PyArg_ParseTuple(args, "O&:chunk_stamp", name_converter, &name))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    st = shmring_queue_chunk_stamp(name.path);
    Py_END_ALLOW_THREADS
    if (st.queue_id == 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(KKKK)", (unsigned long long)st.queue_id, (unsigned long long)st.index,
                         (unsigned long long)st.queue_dev, (unsigned long long)st.queue_ino);
}

/* object_locked(dev, ino) -> bool | None: does any process hold a lease on
 * that object (whose name may be gone)?  None when /proc/locks cannot tell. */
static PyObject *core_object_locked(PyObject *Py_UNUSED(module), PyObject *args)
{
    unsigned long long dev, ino;
    int r;
    if (!PyArg_ParseTuple(args, "KK:object_locked", &dev, &ino))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    r = shmring_object_locked((uint64_t)dev, (uint64_t)ino);
    Py_END_ALLOW_THREADS
    if (r < 0)
        Py_RETURN_NONE;
    return PyBool_FromLong(r);
}

/* unpublished(name) -> bool: a shmring segment its maker never published. */
static PyObject *core_unpublished(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    if (!PyArg_ParseTuple(args, "O&:unpublished", name_converter, &name))
        return NULL;
    return PyBool_FromLong(shmring_segment_unpublished(name.path));
}

/* leave_all(): at exit, end every attachment of this process (the memory
 * stays mapped for whatever Python code still runs); handles dropped after
 * this keep their channel ends and locks, as a dead process's would. */
static PyObject *core_leave_all(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    process_exiting = 1;
    while (attached_mappings != NULL)
        mapping_leave_now(attached_mappings);
    Py_RETURN_NONE;
}

/* after_fork_child(): in a child made by os.fork, enter the child in the
 * roster of every segment it inherited an attachment to (the lease itself is
 * shared through the inherited descriptor). */
static PyObject *core_after_fork_child(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    MappingObject *m;
    process_exiting = 0;
    for (m = attached_mappings; m != NULL; m = m->next)
        shmring_segment_after_fork(&m->seg);
    Py_RETURN_NONE;
}

static PyObject *core_process_alive(PyObject *Py_UNUSED(module), PyObject *args)
{
    long long pid;
    unsigned long long start;
    if (!PyArg_ParseTuple(args, "LK:process_alive", &pid, &start))
        return NULL;
    return PyBool_FromLong(shmring_process_alive((int64_t)pid, (uint64_t)start));
}

static PyObject *core_process_start_time(PyObject *Py_UNUSED(module), PyObject *args)
{
    long long pid;
    uint64_t start = 0;
    if (!PyArg_ParseTuple(args, "L:process_start_time", &pid))
        return NULL;
    if (shmring_proc_stat((int64_t)pid, &start, NULL) != 0)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(start);
}

/* ------------------------------------------------------------------------ */
/* Threads: the gate of a Channel handle or a Topic end                      */
/* ------------------------------------------------------------------------ */

/* Bumped in a forked child: handles inherited from the parent hold no end
 * there (the claims belong to the parent's pid). */
static volatile unsigned long fork_generation = 1;
static uint64_t next_handle_id = 1;

static void after_fork_in_child(void)
{
    fork_generation++;
}

/* A handle may be shared by threads.  Its calls on one end are serialised:
 * the call inside holds the end (a bit of `state`, set and cleared with the
 * GIL held, so that the uncontended way in is a flag test); another call
 * waits for it, the GIL released, in slices, honouring its own timeout and
 * Ctrl-C.  A reserve()/peek() loan holds its end too, for the thread that
 * opened it: other threads wait until it completes, its own thread gets a
 * RuntimeError (it would wait for itself).  close() marks the gate closing,
 * wakes the calls inside (their waits watch `closing`) and the calls
 * waiting to enter (they raise Closed), waits until no call is inside, and
 * only then completes the loans and gives the ends and the mapping back. */

#define GATE_ENDS 2
#define GATE_CLOSING 4 /* in `state`; bits 1 << end: a call is inside that end */

typedef struct LoanObject LoanObject;

typedef struct {
    int state;
    int waiters;                 /* threads sleeping on `seq` (to enter, or to close) */
    pthread_t owner[GATE_ENDS];  /* the thread inside each end (valid while its bit is set) */
    LoanObject *loan[GATE_ENDS]; /* the loan lent from each end, or NULL; borrowed: a loan
                                    clears it when it completes, and holds its owner */
    uint32_t seq;                /* futex word, process-local: bumped when the gate changes and someone waits */
    uint32_t closing;            /* 1 once close() began: the `interrupt` word of the waits in shmring.h */
} Gate;

/* A loan's life: lent (NEW), inside its with block (ENTERED), its block
 * left while views of it were alive (PENDING: the next call on its end
 * completes it, or raises BufferInUseError again), completed (DONE). */
#define LOAN_NEW 0
#define LOAN_ENTERED 1
#define LOAN_PENDING 2
#define LOAN_DONE 3

/* How a loan completes: COMPLETE commits a reserve (commit_len bytes) or
 * consumes a peek; DISCARD drops a reserve or leaves a peek unread. */
#define LOAN_COMPLETE 0
#define LOAN_DISCARD 1

/* The owner's side of completing a loan (the memory work only: the gate
 * and the loan's state are handled by loan_complete).  0, or -1 with an
 * exception (the loan is complete all the same). */
typedef int (*loan_finish_fn)(LoanObject *loan, int how);

struct LoanObject {
    PyObject_HEAD
    PyObject *owner;       /* the Channel or TopicEnd that lent it */
    Gate *gate;            /* the owner's gate (inside `owner`) */
    int end;               /* the gate's end it holds */
    loan_finish_fn finish;
    PyObject *name;        /* the segment's name, for messages */
    const char *kind;      /* "channel" or "topic" */
    unsigned char *ptr;
    Py_ssize_t len;        /* bytes lent */
    Py_ssize_t commit_len; /* a reserve: bytes its message will have (commit(k)) */
    int readonly;          /* 1: a peek; 0: a reserve */
    int state;             /* LOAN_* */
    int cancelled;         /* a reserve dropped by the owner's close(): its exit raises Closed */
    pthread_t thread;      /* the thread that opened it */
    Py_ssize_t exports;    /* live Py_buffer views of it */
    PyObject *view;        /* memoryview of it, made on demand for the memoryview API */
    uint64_t pos, size, seq; /* the owner's bookkeeping (a topic record) */
};

static PyTypeObject LoanType;

static void gate_wake(Gate *g)
{
    /* relaxed: written with the GIL held; a sleeper read it before it let
     * the GIL go, so the GIL orders the two. */
    __atomic_fetch_add(&g->seq, 1u, __ATOMIC_RELAXED);
    shmring_futex_wake(&g->seq, INT_MAX);
}

/* The uncontended way in: nobody inside, no loan out, not closing. */
static inline int gate_free(const Gate *g, int end)
{
    return !(g->state & ((1 << end) | GATE_CLOSING)) && g->loan[end] == NULL;
}

static inline void gate_take(Gate *g, int end)
{
    g->state |= 1 << end;
    g->owner[end] = pthread_self();
}

static inline void gate_leave(Gate *g, int end)
{
    g->state &= ~(1 << end);
    if (g->waiters)
        gate_wake(g);
}

/* Forget the loan of `end` (it completed) and let waiters look again. */
static void gate_loan_gone(Gate *g, LoanObject *loan)
{
    if (g->loan[loan->end] == loan) {
        g->loan[loan->end] = NULL;
        if (g->waiters)
            gate_wake(g);
    }
}

/* Sleep until the gate changes, `deadline` or the end of a slice, then run
 * signal handlers.  0: look again; -1: a handler raised. */
static int gate_sleep(Gate *g, uint64_t deadline)
{
    uint64_t until = shmring_now_ns() + SHMRING_WAIT_SLICE_NS;
    /* relaxed: see gate_wake. */
    uint32_t seq = __atomic_load_n(&g->seq, __ATOMIC_RELAXED);
    if (deadline && deadline < until)
        until = deadline;
    g->waiters++;
    Py_BEGIN_ALLOW_THREADS
    shmring_futex_wait_until(&g->seq, seq, until);
    Py_END_ALLOW_THREADS
    g->waiters--;
    return PyErr_CheckSignals();
}

/* Mark the gate closing and wake its waiters; the owner wakes the calls
 * inside its waits (interrupt_waiters).  Returns whether it was already. */
static int gate_begin_close(Gate *g)
{
    if (g->state & GATE_CLOSING)
        return 1;
    g->state |= GATE_CLOSING;
    /* release: pairs with the acquire loads of shmring_channel_interrupted /
     * shmring_topic_interrupted in the waits of the calls inside. */
    __atomic_store_n(&g->closing, 1u, __ATOMIC_RELEASE);
    if (g->waiters)
        gate_wake(g);
    return 0;
}

/* close() from a call on this very handle, in this thread (a signal
 * handler, a finalizer, an iterator run by the call): it cannot wait for
 * the call it is inside of. */
static int gate_check_close_here(Gate *g, const char *kind, PyObject *name)
{
    pthread_t me = pthread_self();
    int e;
    for (e = 0; e < GATE_ENDS; e++)
        if ((g->state & (1 << e)) && pthread_equal(g->owner[e], me)) {
            PyErr_Format(PyExc_RuntimeError,
                         "%s %R: close() was called from inside a call on this handle in the same thread (a "
                         "signal handler, a finalizer or a callback of that call); close it from another thread, "
                         "or after the call returns",
                         kind, name);
            return -1;
        }
    return 0;
}

/* Wait until no call is inside the gate (close() does, after
 * gate_begin_close).  0, or -1 when a signal handler raised. */
static int gate_wait_empty(Gate *g)
{
    while (g->state & ((1 << GATE_ENDS) - 1))
        if (gate_sleep(g, 0) < 0)
            return -1;
    return 0;
}

static int loan_retry(LoanObject *loan);

/* The way in when gate_free said no: wait for the call inside and for a
 * loan of another thread; complete a pending loan; refuse what would wait
 * for itself.  0 entered; 1 busy and `no_wait`; -1 with an exception
 * (Closed, RuntimeError, Timeout, a signal handler's). */
static int gate_enter_slow(Gate *g, int end, const char *kind, PyObject *name, const char *end_name,
                           uint64_t deadline, int no_wait)
{
    pthread_t me = pthread_self();
    for (;;) {
        LoanObject *loan = g->loan[end];
        if (g->state & GATE_CLOSING) {
            PyErr_Format(closed_error, "%s %R: this handle is closed", kind, name);
            return -1;
        }
        if (g->state & (1 << end)) {
            if (pthread_equal(g->owner[end], me)) {
                PyErr_Format(PyExc_RuntimeError,
                             "%s %R: a %s call on this handle is already running in this thread (a signal "
                             "handler, a finalizer or a callback of that call called it again)",
                             kind, name, end_name);
                return -1;
            }
        } else if (loan != NULL) {
            if (loan->state == LOAN_PENDING) {
                if (loan_retry(loan) < 0)
                    return -1;
                continue;
            }
            if (pthread_equal(loan->thread, me)) {
                PyErr_Format(PyExc_RuntimeError, "%s %R: finish the %s() block first (its loan holds the %s end)",
                             kind, name, loan->readonly ? "peek" : "reserve", end_name);
                return -1;
            }
        } else {
            gate_take(g, end);
            return 0;
        }
        if (no_wait)
            return 1;
        if (deadline && shmring_now_ns() >= deadline) {
            PyErr_Format(timeout_error, "%s %R: timed out waiting for another thread's %s call on this handle",
                         kind, name, end_name);
            return -1;
        }
        if (gate_sleep(g, deadline) < 0)
            return -1;
    }
}

/* ------------------------------------------------------------------------ */
/* Loan: ring memory lent for a with block by reserve() or peek()            */
/* ------------------------------------------------------------------------ */

static LoanObject *loan_new(PyObject *owner, Gate *gate, int end, loan_finish_fn finish, PyObject *name,
                            const char *kind, unsigned char *ptr, uint64_t len, int readonly)
{
    LoanObject *l = PyObject_GC_New(LoanObject, &LoanType);
    if (l == NULL)
        return NULL;
    Py_INCREF(owner);
    l->owner = owner;
    l->gate = gate;
    l->end = end;
    l->finish = finish;
    Py_INCREF(name);
    l->name = name;
    l->kind = kind;
    l->ptr = ptr;
    l->len = l->commit_len = (Py_ssize_t)len;
    l->readonly = readonly;
    l->state = LOAN_NEW;
    l->cancelled = 0;
    l->thread = pthread_self();
    l->exports = 0;
    l->view = NULL;
    l->pos = l->size = l->seq = 0;
    PyObject_GC_Track(l);
    gate->loan[end] = l; /* borrowed: cleared by loan_complete */
    return l;
}

static const char *loan_label(LoanObject *l)
{
    return l->readonly ? "peek" : "reserve";
}

/* Complete the loan, the owner's way (`how`), and free its end. */
static int loan_complete(LoanObject *l, int how)
{
    int rc;
    if (l->state == LOAN_DONE)
        return 0;
    rc = l->finish(l, how);
    l->state = LOAN_DONE;
    gate_loan_gone(l->gate, l);
    return rc;
}

/* Release our memoryview; fails while views of the loan are alive. */
static int loan_drop_views(LoanObject *l)
{
    if (l->view != NULL) {
        PyObject *res = PyObject_CallMethod(l->view, "release", NULL);
        if (res == NULL) {
            PyErr_Clear();
        } else {
            Py_DECREF(res);
            Py_CLEAR(l->view);
        }
    }
    if (l->view != NULL || l->exports > 0) {
        PyErr_Format(buffer_in_use_error,
                     "%s %R: views of the %s message are still alive (a slice, an ndarray, a "
                     "memoryview(...) of it); release them before leaving the with block. The message "
                     "is kept until then",
                     l->kind, l->name, l->readonly ? "peeked" : "reserved");
        return -1;
    }
    return 0;
}

/* A loan whose block was left while views were alive, met by the next call
 * on its end: complete it now (a reserve is dropped, a peek consumed), or
 * BufferInUseError again. */
static int loan_retry(LoanObject *l)
{
    if (loan_drop_views(l) < 0)
        return -1;
    return loan_complete(l, l->readonly ? LOAN_COMPLETE : LOAN_DISCARD);
}

/* The owner's close(): drop a reserve (its exit then raises Closed), consume
 * a peek that was entered, leave an unentered one unread.  Errors of the
 * completion itself (a torn topic peek) are not close()'s: dropped. */
static int loan_cancel(LoanObject *l)
{
    int how;
    if (l->state == LOAN_DONE)
        return 0;
    if (l->state != LOAN_NEW && loan_drop_views(l) < 0)
        return -1;
    how = l->readonly && l->state != LOAN_NEW ? LOAN_COMPLETE : LOAN_DISCARD;
    l->cancelled = !l->readonly;
    if (loan_complete(l, how) < 0)
        PyErr_Clear();
    return 0;
}

/* The loan goes away without its block having completed it: an unentered
 * peek leaves its message unread and a reserve is dropped; a peek that was
 * read is consumed, unless views of it are still alive (then it is left
 * unread: they are garbage too). */
static void loan_abandon(LoanObject *l)
{
    int how;
    if (l->owner == NULL || l->state == LOAN_DONE)
        return;
    if (l->view != NULL) {
        PyObject *res = PyObject_CallMethod(l->view, "release", NULL);
        if (res == NULL)
            PyErr_Clear();
        Py_XDECREF(res);
        Py_CLEAR(l->view);
    }
    how = l->readonly && l->state != LOAN_NEW && l->exports == 0 ? LOAN_COMPLETE : LOAN_DISCARD;
    if (loan_complete(l, how) < 0)
        PyErr_Clear();
}

static int loan_traverse(LoanObject *l, visitproc visit, void *arg)
{
    Py_VISIT(l->owner);
    Py_VISIT(l->view);
    return 0;
}

static int loan_clear(LoanObject *l)
{
    loan_abandon(l);
    Py_CLEAR(l->view);
    Py_CLEAR(l->owner);
    return 0;
}

static void loan_dealloc(LoanObject *l)
{
    PyObject_GC_UnTrack(l);
    loan_clear(l);
    Py_CLEAR(l->name);
    PyObject_GC_Del(l);
}

static int loan_getbuffer(LoanObject *l, Py_buffer *view, int flags)
{
    if (l->state != LOAN_ENTERED) {
        PyErr_SetString(PyExc_ValueError,
                        l->state == LOAN_NEW ? "enter the with block before using the message's memory"
                                             : "this message's memory was already released: it may be reused");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)l, l->ptr, l->len, l->readonly, flags) < 0)
        return -1;
    l->exports++;
    return 0;
}

static void loan_releasebuffer(LoanObject *l, Py_buffer *Py_UNUSED(view))
{
    l->exports--;
}

static PyBufferProcs loan_as_buffer = {
    (getbufferproc)loan_getbuffer,
    (releasebufferproc)loan_releasebuffer,
};

/* Our memoryview of the loan, for the memoryview API (borrowed). */
static PyObject *loan_view(LoanObject *l)
{
    if (l->view == NULL) {
        if (l->state != LOAN_ENTERED) {
            Py_buffer probe;
            loan_getbuffer(l, &probe, PyBUF_SIMPLE); /* raises the ValueError */
            return NULL;
        }
        l->view = PyMemoryView_FromObject((PyObject *)l);
    }
    return l->view;
}

static int loan_check_thread(LoanObject *l)
{
    if (!pthread_equal(l->thread, pthread_self())) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s %R: a %s() block belongs to the thread that opened it", l->kind, l->name, loan_label(l));
        return -1;
    }
    return 0;
}

static PyObject *loan_enter(LoanObject *l, PyObject *Py_UNUSED(ignored))
{
    if (loan_check_thread(l) < 0)
        return NULL;
    if (l->state != LOAN_NEW)
        return PyErr_Format(PyExc_RuntimeError, "a %s() block can be entered only once", loan_label(l));
    l->state = LOAN_ENTERED;
    Py_INCREF(l);
    return (PyObject *)l;
}

static PyObject *loan_exit(LoanObject *l, PyObject *const *args, Py_ssize_t nargs)
{
    int failed = nargs > 0 && args[0] != Py_None;
    if (l->state == LOAN_DONE) {
        if (l->cancelled) {
            l->cancelled = 0;
            return PyErr_Format(closed_error,
                                "%s %R: the handle was closed while the reserve() block was open: the message "
                                "was not sent",
                                l->kind, l->name);
        }
        Py_RETURN_FALSE;
    }
    if (loan_check_thread(l) < 0)
        return NULL;
    if (l->state == LOAN_PENDING)
        Py_RETURN_FALSE;
    if (l->state == LOAN_ENTERED && loan_drop_views(l) < 0) {
        l->state = LOAN_PENDING; /* no longer holds its end for other threads */
        if (l->gate->waiters)
            gate_wake(l->gate);
        return NULL;
    }
    /* A reserve left by an exception (or never entered) is dropped; a peek
     * left by an exception still consumes its message (it was read). */
    if (loan_complete(l, l->state == LOAN_NEW || (failed && !l->readonly) ? LOAN_DISCARD : LOAN_COMPLETE) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

static PyObject *loan_commit(LoanObject *l, PyObject *arg)
{
    Py_ssize_t k;
    if (l->readonly)
        return PyErr_Format(PyExc_TypeError, "%s %R: a peek() lends a message read-only: there is nothing to commit",
                            l->kind, l->name);
    k = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (k == -1 && PyErr_Occurred())
        return NULL;
    if (loan_check_thread(l) < 0)
        return NULL;
    if (l->state > LOAN_ENTERED)
        return PyErr_Format(PyExc_ValueError, "%s %R: this reserve() block is over", l->kind, l->name);
    if (k < 0 || k > l->len)
        return PyErr_Format(PyExc_ValueError, "commit(%zd): 0 to %zd bytes were reserved", k, l->len);
    l->commit_len = k;
    Py_RETURN_NONE;
}

static PyObject *loan_release(LoanObject *l, PyObject *Py_UNUSED(ignored))
{
    if (l->view != NULL) {
        PyObject *res = PyObject_CallMethod(l->view, "release", NULL);
        if (res == NULL)
            return NULL;
        Py_DECREF(res);
        Py_CLEAR(l->view);
    }
    Py_RETURN_NONE;
}

static Py_ssize_t loan_length(LoanObject *l)
{
    return l->len;
}

static PyObject *loan_subscript(LoanObject *l, PyObject *key)
{
    PyObject *view = loan_view(l);
    return view == NULL ? NULL : PyObject_GetItem(view, key);
}

static int loan_ass_subscript(LoanObject *l, PyObject *key, PyObject *value)
{
    PyObject *view = loan_view(l);
    if (view == NULL)
        return -1;
    return value == NULL ? PyObject_DelItem(view, key) : PyObject_SetItem(view, key, value);
}

static PyObject *loan_iter(LoanObject *l)
{
    PyObject *view = loan_view(l);
    return view == NULL ? NULL : PyObject_GetIter(view);
}

static PyObject *loan_richcompare(LoanObject *l, PyObject *other, int op)
{
    PyObject *view;
    if (op != Py_EQ && op != Py_NE)
        Py_RETURN_NOTIMPLEMENTED;
    view = loan_view(l);
    return view == NULL ? NULL : PyObject_RichCompare(view, other, op);
}

/* Everything else of the memoryview API (cast, tobytes, hex, tolist,
 * format, itemsize, shape...): from our memoryview of the loan. */
static PyObject *loan_getattro(LoanObject *l, PyObject *name)
{
    PyObject *res = PyObject_GenericGetAttr((PyObject *)l, name), *view, *type, *value, *tb;
    int known;
    if (res != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return res;
    PyErr_Fetch(&type, &value, &tb);
    known = PyObject_HasAttr((PyObject *)&PyMemoryView_Type, name);
    if (!known) {
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    view = loan_view(l);
    return view == NULL ? NULL : PyObject_GetAttr(view, name);
}

static PyObject *loan_get_nbytes(LoanObject *l, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(l->len);
}

static PyObject *loan_get_readonly(LoanObject *l, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(l->readonly);
}

static PyObject *loan_get_committed(LoanObject *l, void *Py_UNUSED(closure))
{
    if (l->readonly)
        Py_RETURN_NONE;
    return PyLong_FromSsize_t(l->commit_len);
}

static PyObject *loan_repr(LoanObject *l)
{
    static const char *const states[] = {"lent", "entered", "pending", "done"};
    return PyUnicode_FromFormat("<shmring %s() loan of %zd bytes, %s, %s %R>", loan_label(l), l->len,
                                states[l->state], l->kind, l->name);
}

static PyMethodDef loan_methods[] = {
    {"__enter__", (PyCFunction)loan_enter, METH_NOARGS, "The loan itself: a buffer over the message's memory."},
    {"__exit__", (PyCFunction)(void (*)(void))loan_exit, METH_FASTCALL,
     "Commit (reserve) or release (peek) the message; a reserve left by an exception is dropped."},
    {"commit", (PyCFunction)loan_commit, METH_O,
     "commit(k): a reserve's message will be its first k bytes (0 <= k <= n; the last call wins). Without "
     "it, all n bytes are sent, zeros where nothing was written."},
    {"release", (PyCFunction)loan_release, METH_NOARGS,
     "Drop the memoryview behind the memoryview API (as memoryview.release()); the loan stays usable."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef loan_getset[] = {
    {"nbytes", (getter)loan_get_nbytes, NULL, "Size of the lent memory in bytes.", NULL},
    {"readonly", (getter)loan_get_readonly, NULL, "True for a peek().", NULL},
    {"committed", (getter)loan_get_committed, NULL,
     "Bytes a reserve's message will have (commit(k), else n); None for a peek().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods loan_as_sequence = {
    .sq_length = (lenfunc)loan_length,
};

static PyMappingMethods loan_as_mapping = {
    .mp_length = (lenfunc)loan_length,
    .mp_subscript = (binaryfunc)loan_subscript,
    .mp_ass_subscript = (objobjargproc)loan_ass_subscript,
};

static PyTypeObject LoanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmring._core.Loan",
    .tp_basicsize = sizeof(LoanObject),
    .tp_dealloc = (destructor)loan_dealloc,
    .tp_repr = (reprfunc)loan_repr,
    .tp_as_sequence = &loan_as_sequence,
    .tp_as_mapping = &loan_as_mapping,
    .tp_getattro = (getattrofunc)loan_getattro,
    .tp_as_buffer = &loan_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Ring memory lent for a with block by reserve() (writable, zero-filled) or peek() (read-only).\n\n"
              "A buffer (memoryview(x), numpy.frombuffer(x), f.readinto(x)), with len(), indexing, slicing and "
              "the rest of the memoryview API. reserve() loans have commit(k).",
    .tp_traverse = (traverseproc)loan_traverse,
    .tp_clear = (inquiry)loan_clear,
    .tp_richcompare = (richcmpfunc)loan_richcompare,
    .tp_iter = (getiterfunc)loan_iter,
    .tp_methods = loan_methods,
    .tp_getset = loan_getset,
};

/* Zero `n` bytes (a reserve: a message never carries bytes its sender did
 * not write). */
static void zero_maybe_without_gil(void *dst, size_t n)
{
    if (n >= 262144) {
        Py_BEGIN_ALLOW_THREADS
        memset(dst, 0, n);
        Py_END_ALLOW_THREADS
    } else {
        memset(dst, 0, n);
    }
}

/* ------------------------------------------------------------------------ */
/* Channel                                                                   */
/* ------------------------------------------------------------------------ */

/* While waiting, how long the GIL is kept and the ring polled before the
 * wait goes to the strategy's slow path with the GIL released. */
#define HOT_POLL_NS 20000u
/* Copies larger than this release the GIL. */
#define COPY_WITHOUT_GIL 262144

/* The gate's ends; ROLE_* are their bits (1 << end). */
#define END_PRODUCER 0
#define END_CONSUMER 1
#define ROLE_PRODUCER 1
#define ROLE_CONSUMER 2

typedef struct {
    PyObject_HEAD
    PyObject *mapping;  /* the MappingObject, kept mapped through `view` */
    Py_buffer view;
    shmring_channel ch;
    uint32_t wait, spin_ns;
    uint64_t handle_id;
    unsigned long generation; /* fork_generation when the roles were claimed */
    uint64_t token;           /* this process's token, valid with `generation` */
    int roles;
    uint64_t next_peer_check_ns; /* try_send/try_recv look at the peer this often */
    int closed;                  /* close() completed: ends and `view` given back */
    Gate gate;                   /* threads: the calls inside, the loans out, closing */
    PyObject *dict;
    PyObject *weakrefs;
} ChannelObject;

static PyTypeObject ChannelType;

static PyObject *channel_name(ChannelObject *self)
{
    return ((MappingObject *)self->mapping)->name;
}

static void raise_corrupt(ChannelObject *self, const char *what)
{
    PyObject *msg = PyUnicode_FromFormat(
        "channel %R: corrupted ring (%s): a counter or record header read from shared memory is impossible",
        channel_name(self), what);
    if (msg != NULL) {
        PyObject *exc = PyObject_CallFunctionObjArgs(corrupted_error, msg, channel_name(self), NULL);
        Py_DECREF(msg);
        if (exc != NULL) {
            PyErr_SetObject(corrupted_error, exc);
            Py_DECREF(exc);
        }
    }
}

/* A handle inherited through fork: the parent's claims, its threads' calls
 * and its loans are not the child's; drop them without touching shared
 * memory. */
static void channel_fork_reset(ChannelObject *self)
{
    int e;
    if (self->generation == fork_generation)
        return;
    self->roles = 0;
    self->gate.state &= GATE_CLOSING;
    self->gate.waiters = 0;
    for (e = 0; e < GATE_ENDS; e++) {
        if (self->gate.loan[e] != NULL) {
            self->gate.loan[e]->state = LOAN_DONE;
            self->gate.loan[e] = NULL;
        }
    }
    self->generation = fork_generation;
    self->token = shmring_token_self();
}

static int raise_closing(ChannelObject *self);

/* Wait (a slice at most, GIL released) for the other process holding
 * `role`'s end to give it back [S11].  0 to try again, -1 with an
 * exception (a signal, or the handle closed by another thread). */
static int channel_wait_for_end(ChannelObject *self, int role, uint64_t deadline)
{
    shmring_channel_ctrl *c = self->ch.ctrl;
    uint64_t *slot = role == ROLE_PRODUCER ? &c->producer : &c->consumer;
    uint64_t *handle = role == ROLE_PRODUCER ? &c->producer_handle : &c->consumer_handle;
    uint64_t slice = shmring_now_ns() + SHMRING_WAIT_SLICE_NS;
    uint32_t seq = shmring_channel_claim_wait_prepare(c);
    int rc = shmring_channel_claim(slot, handle, self->token, self->handle_id);
    if (rc == SHMRING_OK) {
        shmring_channel_claim_wait_done(c);
        return 0; /* claimed after all: channel_claim finds it ours */
    }
    if (deadline && deadline < slice)
        slice = deadline;
    Py_BEGIN_ALLOW_THREADS
    shmring_futex_wait_until(&c->claim_seq, seq, slice);
    Py_END_ALLOW_THREADS
    shmring_channel_claim_wait_done(c);
    if (PyErr_CheckSignals() < 0)
        return -1;
    /* acquire: pairs with close()'s release store (gate_begin_close). */
    if (__atomic_load_n(&self->gate.closing, __ATOMIC_ACQUIRE))
        return raise_closing(self);
    return 0;
}

/* Take an end of the channel for this handle, once.  While another live
 * process holds it, a blocking call waits for it to be given back (a
 * dropped or closed handle, a process that dies), up to its deadline; then,
 * or at once for a call that does not wait, RoleTaken. */
static int channel_claim(ChannelObject *self, int role, uint64_t deadline, int no_wait)
{
    shmring_channel_ctrl *c = self->ch.ctrl;
    uint64_t *slot = role == ROLE_PRODUCER ? &c->producer : &c->consumer;
    uint64_t *handle = role == ROLE_PRODUCER ? &c->producer_handle : &c->consumer_handle;
    const char *what = role == ROLE_PRODUCER ? "producer" : "consumer";
    int rc;
    for (;;) {
        uint64_t holder;
        rc = shmring_channel_claim(slot, handle, self->token, self->handle_id);
        if (rc != SHMRING_ROLE_TAKEN)
            break;
        /* relaxed: only to tell who holds it. */
        holder = __atomic_load_n(slot, __ATOMIC_RELAXED);
        if (holder == self->token) {
            /* Waiting would wait for ourselves. */
            PyErr_Format(role_taken_error, "channel %R: another handle in this process is already the %s; use that one",
                         channel_name(self), what);
            return -1;
        }
        if (no_wait || (deadline && shmring_now_ns() >= deadline)) {
            PyErr_Format(role_taken_error, "channel %R: the %s end is held by live process %lld%s", channel_name(self),
                         what, (long long)shmring_token_pid(holder),
                         no_wait ? "" : " (it did not give it back in time)");
            return -1;
        }
        if (channel_wait_for_end(self, role, deadline) < 0)
            return -1;
    }
    rc = role == ROLE_PRODUCER ? shmring_channel_producer_start(&self->ch) : shmring_channel_consumer_start(&self->ch);
    if (rc != SHMRING_OK) {
        shmring_channel_unclaim(c, role == ROLE_PRODUCER, self->token, self->handle_id);
        raise_corrupt(self, "counters");
        return -1;
    }
    self->roles |= role;
    return 0;
}

/* Enter an end for one call: 0 (then *held = 1: the entry point leaves the
 * end on return), 1 when another call has it and `no_wait`, -1 with an
 * exception.  The end is claimed on its first use. */
static inline int channel_enter(ChannelObject *self, int end, int *held, uint64_t deadline, int no_wait)
{
    int role = 1 << end;
    if (self->mapping == NULL) {
        PyErr_SetString(PyExc_ValueError, "channel is not initialised: use shmring.Channel.create or open");
        return -1;
    }
    if (self->generation != fork_generation)
        channel_fork_reset(self);
    if (gate_free(&self->gate, end)) {
        gate_take(&self->gate, end);
    } else {
        int r = gate_enter_slow(&self->gate, end, "channel", channel_name(self),
                                end == END_PRODUCER ? "sending" : "receiving", deadline, no_wait);
        if (r != 0)
            return r;
    }
    *held = 1;
    if (!(self->roles & role) && channel_claim(self, role, deadline, no_wait) < 0)
        return -1;
    return 0;
}

/* channel_enter for the calls that take a timeout: busy with a zero
 * timeout is a Timeout. */
static inline int channel_enter_timed(ChannelObject *self, int end, int *held, uint64_t deadline, int no_wait)
{
    int r = channel_enter(self, end, held, deadline, no_wait);
    if (r > 0) {
        PyErr_Format(timeout_error, "channel %R: another thread's %s call is running on this handle",
                     channel_name(self), end == END_PRODUCER ? "sending" : "receiving");
        return -1;
    }
    return r;
}

/* A call that woke to find close() begun by another thread. */
static int raise_closing(ChannelObject *self)
{
    PyErr_Format(closed_error, "channel %R: this handle was closed by another thread", channel_name(self));
    return -1;
}

/* Timeouts: None blocks forever (deadline 0); otherwise a non-negative number
 * of seconds, turned into a CLOCK_MONOTONIC deadline.  Returns -1 on error,
 * 1 when the timeout is zero (do not wait), else 0. */
static int parse_timeout(PyObject *obj, uint64_t *deadline)
{
    double t;
    *deadline = 0;
    if (obj == NULL || obj == Py_None)
        return 0;
    t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (!(t >= 0)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a non-negative number or None");
        return -1;
    }
    if (t > 1e9)
        return 0; /* ~31 years: the same as no limit */
    *deadline = shmring_now_ns() + (uint64_t)(t * 1e9);
    if (*deadline == 0)
        *deadline = 1;
    return t == 0 ? 1 : 0;
}

/* Parse a vectorcall: `names` lists the parameters (the first `nrequired`
 * required), given by position or keyword.  Missing optional ones are NULL. */
static int parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      const char *const *names, Py_ssize_t nrequired, Py_ssize_t ntotal, PyObject **out)
{
    Py_ssize_t i, j, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > ntotal) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments (%zd given)", fname, ntotal, nargs);
        return -1;
    }
    for (i = 0; i < ntotal; i++)
        out[i] = i < nargs ? args[i] : NULL;
    for (i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        for (j = 0; j < ntotal; j++)
            if (PyUnicode_CompareWithASCIIString(key, names[j]) == 0)
                break;
        if (j == ntotal || out[j] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got %s keyword argument %R", fname,
                         j == ntotal ? "an unexpected" : "a duplicate", key);
            return -1;
        }
        out[j] = args[nargs + i];
    }
    for (i = 0; i < nrequired; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
            return -1;
        }
    }
    return 0;
}

static const char *const ARGS_DATA_TIMEOUT[] = {"data", "timeout"};
static const char *const ARGS_BUFFERS_TIMEOUT[] = {"buffers", "timeout"};
static const char *const ARGS_TIMEOUT[] = {"timeout"};
static const char *const ARGS_BUFFER_TIMEOUT[] = {"buffer", "timeout"};
static const char *const ARGS_MAX_TIMEOUT[] = {"max_messages", "timeout"};
static const char *const ARGS_N_TIMEOUT[] = {"n", "timeout"};

/* Is the other end dead?  Returns 1 if the awaited condition holds after
 * all (drain what a dead writer committed first), -1 with PeerGone (or
 * CorruptedError) set when the peer died, 0 when it lives or is not there
 * yet. */
static int peer_check(ChannelObject *self, int writer, uint64_t need)
{
    shmring_channel *ch = &self->ch;
    /* relaxed: a snapshot for a liveness check; claims are CAS'd. */
    uint64_t peer = __atomic_load_n(writer ? &ch->ctrl->consumer : &ch->ctrl->producer, __ATOMIC_RELAXED);
    int r;
    if (peer == 0 || shmring_token_alive(peer))
        return 0;
    r = shmring_channel_ready(ch, writer, need);
    if (r > 0)
        return 1;
    if (r < 0)
        raise_corrupt(self, writer ? "head counter" : "tail counter");
    else
        PyErr_Format(peer_gone_error, "channel %R: the %s process %lld died", channel_name(self),
                     writer ? "consumer" : "producer", (long long)shmring_token_pid(peer));
    return -1;
}

/* For the non-blocking calls: a dead peer is reported (at most every slice,
 * since looking costs a read of /proc).  Same results as peer_check. */
static int peer_check_sometimes(ChannelObject *self, int writer, uint64_t need)
{
    uint64_t now = shmring_now_ns();
    if (now < self->next_peer_check_ns)
        return 0;
    self->next_peer_check_ns = now + SHMRING_WAIT_SLICE_NS;
    return peer_check(self, writer, need);
}

/* Wait for data (writer = 0) or for `need` free bytes (writer = 1), in
 * slices: the GIL is released during each slice, signals are checked and the
 * peer's liveness looked at between slices; close() from another thread
 * ends the wait (Closed).  Returns 0 when the condition may hold (the caller
 * re-checks), -1 with an exception set. */
static int channel_wait(ChannelObject *self, int writer, uint64_t need, uint64_t deadline, int no_wait)
{
    shmring_channel *ch = &self->ch;
    uint32_t strategy = self->wait, spin = self->spin_ns;
    uint64_t now, hot_ns;
    int rc, r;

    if (writer) {
        shmring_channel_publish(ch); /* let the consumer make room */
        if ((self->roles & ROLE_CONSUMER) && !(self->gate.state & ROLE_CONSUMER) &&
            self->gate.loan[END_CONSUMER] == NULL) {
            /* This handle is its own consumer and no call or loan uses that
             * end: nobody else will step over the padding record it may
             * have just written. */
            const unsigned char *p;
            uint64_t n;
            if (shmring_channel_peek(ch, &p, &n) == SHMRING_ERR_CORRUPT)
                goto corrupt;
            shmring_channel_publish_head(ch);
        }
    }
    if (no_wait) {
        if ((r = peer_check(self, writer, need)) != 0)
            return r > 0 ? 0 : -1;
        PyErr_Format(timeout_error, "channel %R: %s", channel_name(self), writer ? "full" : "empty");
        return -1;
    }
    /* Hot poll with the GIL held: a reply that comes within microseconds
     * costs neither a GIL hand-off nor a system call. */
    if (strategy != SHMRING_WAIT_BLOCK && strategy != SHMRING_WAIT_SEMAPHORE) {
        hot_ns = strategy == SHMRING_WAIT_ADAPTIVE && spin < HOT_POLL_NS ? spin : HOT_POLL_NS;
        if (strategy == SHMRING_WAIT_ADAPTIVE)
            spin -= (uint32_t)hot_ns;
        now = shmring_now_ns();
        for (unsigned i = 1; hot_ns > 0; i++) {
            r = shmring_channel_ready(ch, writer, need);
            if (r < 0)
                goto corrupt;
            if (r > 0)
                return 0;
            shmring_cpu_relax();
            if ((i & 31u) == 0) {
                uint64_t t = shmring_now_ns();
                if (t - now >= hot_ns || (deadline && t >= deadline))
                    break;
            }
        }
    }
    for (;;) {
        uint64_t slice_end;
        now = shmring_now_ns();
        if (deadline && now >= deadline) {
            if ((r = peer_check(self, writer, need)) != 0)
                return r > 0 ? 0 : -1;
            PyErr_Format(timeout_error, "channel %R: timed out waiting for %s", channel_name(self),
                         writer ? "room to send" : "a message");
            return -1;
        }
        slice_end = now + SHMRING_WAIT_SLICE_NS;
        if (deadline && deadline < slice_end)
            slice_end = deadline;
        Py_BEGIN_ALLOW_THREADS
        rc = shmring_channel_wait(ch, writer, need, strategy, spin, slice_end);
        Py_END_ALLOW_THREADS
        spin = 0; /* adaptive: the spin window is spent once per call */
        if (self->gate.state & GATE_CLOSING)
            return raise_closing(self);
        if (rc == SHMRING_OK)
            return 0;
        if (rc == SHMRING_ERR_CORRUPT)
            goto corrupt;
        if (PyErr_CheckSignals() < 0)
            return -1;
        if ((r = peer_check(self, writer, need)) != 0)
            return r > 0 ? 0 : -1;
    }
corrupt:
    raise_corrupt(self, writer ? "head counter" : "tail counter");
    return -1;
}

static int check_reader_open(ChannelObject *self)
{
    if (shmring_channel_reader_closed(&self->ch)) {
        PyErr_Format(closed_error, "channel %R: the reader closed the channel", channel_name(self));
        return -1;
    }
    if (shmring_channel_writer_closed(&self->ch)) {
        PyErr_Format(closed_error, "channel %R: the stream was already ended by a writer's close()",
                     channel_name(self));
        return -1;
    }
    return 0;
}

static PyObject *raise_too_big(ChannelObject *self, uint64_t len)
{
    return PyErr_Format(PyExc_ValueError,
                        "channel %R: a message of %llu bytes can never fit (the largest is %llu bytes for a "
                        "capacity of %llu)",
                        channel_name(self), (unsigned long long)len,
                        (unsigned long long)shmring_channel_max_message(self->ch.capacity),
                        (unsigned long long)self->ch.capacity);
}

/* Reserve room for `len` bytes, waiting as the timeout allows. */
static unsigned char *channel_reserve_wait(ChannelObject *self, uint64_t len, uint64_t deadline, int no_wait)
{
    unsigned char *dst;
    for (;;) {
        int rc = shmring_channel_reserve(&self->ch, len, &dst);
        if (rc == SHMRING_OK)
            return dst;
        if (rc == SHMRING_TOO_BIG) {
            raise_too_big(self, len);
            return NULL;
        }
        if (rc == SHMRING_ERR_CORRUPT) {
            raise_corrupt(self, "head counter");
            return NULL;
        }
        if (check_reader_open(self) < 0)
            return NULL;
        if (channel_wait(self, 1, sizeof(shmring_record) + shmring_align8(len), deadline, no_wait) < 0)
            return NULL;
        if (check_reader_open(self) < 0)
            return NULL;
    }
}

static void copy_maybe_without_gil(void *dst, const void *src, size_t n)
{
    if (n >= COPY_WITHOUT_GIL) {
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, src, n);
        Py_END_ALLOW_THREADS
    } else {
        memcpy(dst, src, n);
    }
}

/* Copy one buffer into the ring as a record (not published). */
static int channel_put(ChannelObject *self, const Py_buffer *src, uint64_t deadline, int no_wait)
{
    unsigned char *dst = channel_reserve_wait(self, (uint64_t)src->len, deadline, no_wait);
    if (dst == NULL)
        return -1;
    copy_maybe_without_gil(dst, src->buf, (size_t)src->len);
    shmring_channel_commit(&self->ch, (uint64_t)src->len);
    return 0;
}

static PyObject *channel_send_impl(int *held, ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    PyObject *a[2];
    Py_buffer src;
    uint64_t deadline;
    int no_wait, rc;
    if (parse_args("send", args, nargs, kwnames, ARGS_DATA_TIMEOUT, 1, 2, a) < 0)
        return NULL;
    if ((no_wait = parse_timeout(a[1], &deadline)) < 0)
        return NULL;
    if (PyObject_GetBuffer(a[0], &src, PyBUF_SIMPLE) < 0)
        return NULL;
    rc = channel_enter_timed(self, END_PRODUCER, held, deadline, no_wait);
    if (rc == 0)
        rc = check_reader_open(self);
    if (rc == 0)
        rc = channel_put(self, &src, deadline, no_wait);
    PyBuffer_Release(&src);
    if (rc < 0)
        return NULL;
    shmring_channel_publish(&self->ch);
    Py_RETURN_NONE;
}

static PyObject *channel_try_send_impl(int *held, ChannelObject *self, PyObject *data)
{
    Py_buffer src;
    unsigned char *dst;
    int rc;
    if (PyObject_GetBuffer(data, &src, PyBUF_SIMPLE) < 0)
        return NULL;
    rc = channel_enter(self, END_PRODUCER, held, 0, 1);
    if (rc != 0 || check_reader_open(self) < 0) {
        PyBuffer_Release(&src);
        if (rc > 0)
            Py_RETURN_FALSE; /* another thread is sending: no room for us now */
        return NULL;
    }
    rc = shmring_channel_reserve(&self->ch, (uint64_t)src.len, &dst);
    if (rc == SHMRING_AGAIN) {
        shmring_channel_publish(&self->ch); /* a padding record may be pending */
        switch (peer_check_sometimes(self, 1, sizeof(shmring_record) + shmring_align8((uint64_t)src.len))) {
        case 0:
            PyBuffer_Release(&src);
            Py_RETURN_FALSE;
        case 1:
            rc = shmring_channel_reserve(&self->ch, (uint64_t)src.len, &dst);
            break;
        default:
            PyBuffer_Release(&src);
            return NULL;
        }
    }
    if (rc != SHMRING_OK) {
        PyBuffer_Release(&src);
        shmring_channel_publish(&self->ch);
        if (rc == SHMRING_AGAIN)
            Py_RETURN_FALSE;
        if (rc == SHMRING_TOO_BIG)
            return PyErr_Format(PyExc_ValueError, "channel %R: a message of %zd bytes can never fit (the largest is %llu bytes)",
                                channel_name(self), src.len,
                                (unsigned long long)shmring_channel_max_message(self->ch.capacity));
        raise_corrupt(self, "head counter");
        return NULL;
    }
    memcpy(dst, src.buf, (size_t)src.len);
    shmring_channel_commit(&self->ch, (uint64_t)src.len);
    PyBuffer_Release(&src);
    shmring_channel_publish(&self->ch);
    Py_RETURN_TRUE;
}

/* Tell a failed send_many how many of its messages were delivered. */
static void note_sent(Py_ssize_t count)
{
    PyObject *type, *value, *tb, *n;
    if (!PyErr_ExceptionMatches(timeout_error) && !PyErr_ExceptionMatches(closed_error) &&
        !PyErr_ExceptionMatches(peer_gone_error))
        return;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    n = PyLong_FromSsize_t(count);
    if (value != NULL && n != NULL && PyObject_SetAttrString(value, "sent", n) < 0)
        PyErr_Clear();
    Py_XDECREF(n);
    PyErr_Restore(type, value, tb);
}

#define SEND_MANY_STACK 64

/* Write a validated batch.  When its records fit in the ring, room for all
 * of them is awaited first, so that a timeout delivers none; a batch larger
 * than the ring goes in parts (each published as the ring fills up).
 * Returns how many were committed; *failed is set with an exception. */
static Py_ssize_t channel_write_batch(ChannelObject *self, const Py_buffer *bufs, Py_ssize_t n, uint64_t deadline,
                                      int no_wait, int *failed)
{
    shmring_channel *ch = &self->ch;
    uint64_t total = 0, span, pos;
    Py_ssize_t i;
    *failed = 0;
    for (i = 0; i < n; i++)
        total += sizeof(shmring_record) + shmring_align8((uint64_t)bufs[i].len);
    if (total <= ch->capacity) {
        for (;;) {
            int room;
            /* The ring bytes the batch takes from the local tail, padding
             * included (shmring_channel_reserve places records so). */
            pos = ch->tail;
            for (i = 0; i < n; i++)
                pos = shmring_channel_place(ch, pos, (uint64_t)bufs[i].len);
            span = pos - ch->tail;
            if (span > ch->capacity) {
                /* Only from offset 0 does it fit (total <= capacity):
                 * padding to the end of the ring first delivers nothing. */
                int rc = shmring_channel_pad(ch);
                if (rc == SHMRING_OK)
                    continue;
                if (rc == SHMRING_ERR_CORRUPT)
                    goto corrupt;
                if (channel_wait(self, 1, ch->capacity - (ch->tail & ch->mask), deadline, no_wait) < 0 ||
                    check_reader_open(self) < 0)
                    goto fail;
                continue;
            }
            room = shmring_channel_has_room(ch, span);
            if (room < 0)
                goto corrupt;
            if (room > 0)
                break;
            if (channel_wait(self, 1, span, deadline, no_wait) < 0 || check_reader_open(self) < 0)
                goto fail;
        }
        for (i = 0; i < n; i++) {
            unsigned char *dst;
            if (shmring_channel_reserve(ch, (uint64_t)bufs[i].len, &dst) != SHMRING_OK)
                goto corrupt; /* room for the whole batch was seen: only a bad head takes it back */
            copy_maybe_without_gil(dst, bufs[i].buf, (size_t)bufs[i].len);
            shmring_channel_commit(ch, (uint64_t)bufs[i].len);
        }
        return n;
    }
    for (i = 0; i < n; i++)
        if (channel_put(self, &bufs[i], deadline, no_wait) < 0) {
            *failed = 1;
            return i;
        }
    return n;
corrupt:
    raise_corrupt(self, "head counter");
fail:
    *failed = 1;
    return 0;
}

static PyObject *channel_send_many_impl(int *held, ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                                        PyObject *kwnames)
{
    PyObject *a[2], *seq, *result = NULL;
    Py_buffer stack[SEND_MANY_STACK], *bufs = stack;
    uint64_t deadline, largest;
    Py_ssize_t i, n, got = 0, count = 0;
    int no_wait, failed;
    if (parse_args("send_many", args, nargs, kwnames, ARGS_BUFFERS_TIMEOUT, 1, 2, a) < 0)
        return NULL;
    if ((no_wait = parse_timeout(a[1], &deadline)) < 0)
        return NULL;
    /* The whole batch is collected and checked before anything is written:
     * a bad item delivers nothing. */
    seq = PySequence_Fast(a[0], "send_many() needs an iterable of bytes-like objects");
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n > SEND_MANY_STACK) {
        bufs = PyMem_New(Py_buffer, (size_t)n);
        if (bufs == NULL) {
            Py_DECREF(seq);
            return PyErr_NoMemory();
        }
    }
    largest = self->mapping != NULL ? shmring_channel_max_message(self->ch.capacity) : 0;
    for (got = 0; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &bufs[got], PyBUF_SIMPLE) < 0)
            goto done;
        if (self->mapping != NULL && (uint64_t)bufs[got].len > largest) {
            PyErr_Format(PyExc_ValueError,
                         "channel %R: message %zd of the batch has %zd bytes and can never fit (the largest is "
                         "%llu bytes); nothing was sent",
                         channel_name(self), got, bufs[got].len, (unsigned long long)largest);
            got++;
            goto done;
        }
    }
    if (channel_enter_timed(self, END_PRODUCER, held, deadline, no_wait) < 0 || check_reader_open(self) < 0) {
        note_sent(0);
        goto done;
    }
    count = channel_write_batch(self, bufs, n, deadline, no_wait, &failed);
    shmring_channel_publish(&self->ch); /* one publication for the batch */
    if (failed)
        note_sent(count);
    else
        result = PyLong_FromSsize_t(count);
done:
    for (i = 0; i < got; i++)
        PyBuffer_Release(&bufs[i]);
    if (bufs != stack)
        PyMem_Free(bufs);
    Py_DECREF(seq);
    return result;
}

/* The next record, waiting as the timeout allows.  Returns 0 with the message in out and len
 * set, -1 with an exception (Closed at the end of a drained stream). */
static int channel_next(ChannelObject *self, const unsigned char **out, uint64_t *len, uint64_t deadline,
                        int no_wait)
{
    for (;;) {
        int rc = shmring_channel_peek(&self->ch, out, len);
        if (rc == SHMRING_OK)
            return 0;
        if (rc == SHMRING_ERR_CORRUPT) {
            raise_corrupt(self, "record header or tail counter");
            return -1;
        }
        shmring_channel_publish_head(&self->ch); /* padding skipped on the way */
        if (shmring_channel_writer_closed(&self->ch)) {
            /* Re-check: the writer may have published right before closing. */
            rc = shmring_channel_peek(&self->ch, out, len);
            if (rc == SHMRING_OK)
                return 0;
            if (rc == SHMRING_ERR_CORRUPT) {
                raise_corrupt(self, "record header or tail counter");
                return -1;
            }
            PyErr_Format(closed_error, "channel %R: the writer closed the channel", channel_name(self));
            return -1;
        }
        if (channel_wait(self, 0, 0, deadline, no_wait) < 0)
            return -1;
    }
}

static PyObject *channel_recv_impl(int *held, ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    PyObject *timeout, *result;
    const unsigned char *src;
    uint64_t deadline, len;
    int no_wait;
    if (nargs == 0 && kwnames == NULL) {
        deadline = 0;
        no_wait = 0;
    } else {
        if (parse_args("recv", args, nargs, kwnames, ARGS_TIMEOUT, 0, 1, &timeout) < 0)
            return NULL;
        if ((no_wait = parse_timeout(timeout, &deadline)) < 0)
            return NULL;
    }
    if (channel_enter_timed(self, END_CONSUMER, held, deadline, no_wait) < 0 ||
        channel_next(self, &src, &len, deadline, no_wait) < 0)
        return NULL;
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    if (result == NULL)
        return NULL;
    copy_maybe_without_gil(PyBytes_AS_STRING(result), src, (size_t)len);
    shmring_channel_consume(&self->ch);
    shmring_channel_publish_head(&self->ch);
    return result;
}

static PyObject *channel_try_recv_impl(int *held, ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *result;
    const unsigned char *src;
    uint64_t len;
    int rc = channel_enter(self, END_CONSUMER, held, 0, 1);
    if (rc != 0) {
        if (rc > 0)
            Py_RETURN_NONE; /* another thread is receiving: nothing for us now */
        return NULL;
    }
    rc = shmring_channel_peek(&self->ch, &src, &len);
    if (rc == SHMRING_AGAIN) {
        shmring_channel_publish_head(&self->ch); /* the producer may be waiting for room */
        if (shmring_channel_writer_closed(&self->ch)) {
            rc = shmring_channel_peek(&self->ch, &src, &len);
            if (rc == SHMRING_AGAIN)
                return PyErr_Format(closed_error, "channel %R: the writer closed the channel", channel_name(self));
        } else {
            switch (peer_check_sometimes(self, 0, 0)) {
            case 0:
                Py_RETURN_NONE;
            case 1:
                rc = shmring_channel_peek(&self->ch, &src, &len);
                if (rc == SHMRING_AGAIN)
                    Py_RETURN_NONE;
                break;
            default:
                return NULL;
            }
        }
    }
    if (rc == SHMRING_ERR_CORRUPT) {
        raise_corrupt(self, "record header or tail counter");
        return NULL;
    }
    result = PyBytes_FromStringAndSize((const char *)src, (Py_ssize_t)len);
    if (result == NULL)
        return NULL;
    shmring_channel_consume(&self->ch);
    shmring_channel_publish_head(&self->ch);
    return result;
}

static PyObject *channel_recv_into_impl(int *held, ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                                        PyObject *kwnames)
{
    PyObject *a[2];
    Py_buffer dst;
    const unsigned char *src;
    uint64_t deadline, len;
    int no_wait;
    if (parse_args("recv_into", args, nargs, kwnames, ARGS_BUFFER_TIMEOUT, 1, 2, a) < 0)
        return NULL;
    if ((no_wait = parse_timeout(a[1], &deadline)) < 0)
        return NULL;
    if (PyObject_GetBuffer(a[0], &dst, PyBUF_WRITABLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "recv_into() needs a writable bytes-like object, not %.100s",
                         Py_TYPE(a[0])->tp_name);
        }
        return NULL;
    }
    if (channel_enter_timed(self, END_CONSUMER, held, deadline, no_wait) < 0 ||
        channel_next(self, &src, &len, deadline, no_wait) < 0) {
        PyBuffer_Release(&dst);
        return NULL;
    }
    if ((uint64_t)dst.len < len) {
        PyBuffer_Release(&dst);
        return PyErr_Format(PyExc_ValueError,
                            "channel %R: buffer of %zd bytes is too small for the next message of %llu bytes "
                            "(the message stays in the channel)",
                            channel_name(self), dst.len, (unsigned long long)len);
    }
    copy_maybe_without_gil(dst.buf, src, (size_t)len);
    PyBuffer_Release(&dst);
    shmring_channel_consume(&self->ch);
    shmring_channel_publish_head(&self->ch);
    return PyLong_FromUnsignedLongLong(len);
}

static PyObject *channel_recv_many_impl(int *held, ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                                        PyObject *kwnames)
{
    PyObject *a[2], *list;
    const unsigned char *src;
    uint64_t deadline, len;
    Py_ssize_t max_messages;
    int no_wait;
    if (parse_args("recv_many", args, nargs, kwnames, ARGS_MAX_TIMEOUT, 1, 2, a) < 0)
        return NULL;
    max_messages = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
    if (max_messages == -1 && PyErr_Occurred())
        return NULL;
    if (max_messages < 1)
        return PyErr_Format(PyExc_ValueError, "max_messages must be at least 1, not %zd", max_messages);
    if ((no_wait = parse_timeout(a[1], &deadline)) < 0)
        return NULL;
    if (channel_enter_timed(self, END_CONSUMER, held, deadline, no_wait) < 0 ||
        channel_next(self, &src, &len, deadline, no_wait) < 0)
        return NULL;
    list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (;;) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)src, (Py_ssize_t)len);
        int rc;
        if (b == NULL || PyList_Append(list, b) < 0) {
            Py_XDECREF(b);
            Py_DECREF(list);
            shmring_channel_publish_head(&self->ch);
            return NULL;
        }
        Py_DECREF(b);
        shmring_channel_consume(&self->ch);
        if (PyList_GET_SIZE(list) >= max_messages)
            break;
        rc = shmring_channel_peek(&self->ch, &src, &len);
        if (rc == SHMRING_AGAIN)
            break;
        if (rc != SHMRING_OK) {
            Py_DECREF(list);
            shmring_channel_publish_head(&self->ch);
            raise_corrupt(self, "record header or tail counter");
            return NULL;
        }
    }
    shmring_channel_publish_head(&self->ch);
    return list;
}

/* -- zero copy: loans -------------------------------------------------------- */

/* A loan of this channel completes (loan_complete): commit or drop a
 * reserve, consume a peek or leave it unread. */
static int channel_loan_finish(LoanObject *l, int how)
{
    ChannelObject *self = (ChannelObject *)l->owner;
    channel_fork_reset(self); /* a loan inherited through fork is the parent's: dropped there */
    if (l->state == LOAN_DONE || how != LOAN_COMPLETE)
        return 0;
    if (l->readonly) {
        shmring_channel_consume(&self->ch);
        shmring_channel_publish_head(&self->ch);
    } else {
        shmring_channel_commit(&self->ch, (uint64_t)l->commit_len);
        shmring_channel_publish(&self->ch);
    }
    return 0;
}

static PyObject *channel_reserve_impl(int *held, ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                                      PyObject *kwnames)
{
    PyObject *a[2];
    Py_ssize_t n;
    uint64_t deadline;
    unsigned char *dst;
    int no_wait;
    if (parse_args("reserve", args, nargs, kwnames, ARGS_N_TIMEOUT, 1, 2, a) < 0)
        return NULL;
    n = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0)
        return PyErr_Format(PyExc_ValueError, "reserve() size must be non-negative, not %zd", n);
    if ((no_wait = parse_timeout(a[1], &deadline)) < 0)
        return NULL;
    if (channel_enter_timed(self, END_PRODUCER, held, deadline, no_wait) < 0 || check_reader_open(self) < 0)
        return NULL;
    dst = channel_reserve_wait(self, (uint64_t)n, deadline, no_wait);
    if (dst == NULL)
        return NULL;
    zero_maybe_without_gil(dst, (size_t)n);
    return (PyObject *)loan_new((PyObject *)self, &self->gate, END_PRODUCER, channel_loan_finish,
                                channel_name(self), "channel", dst, (uint64_t)n, 0);
}

static PyObject *channel_peek_impl(int *held, ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    PyObject *timeout;
    const unsigned char *src;
    uint64_t deadline, len;
    int no_wait;
    if (parse_args("peek", args, nargs, kwnames, ARGS_TIMEOUT, 0, 1, &timeout) < 0)
        return NULL;
    if ((no_wait = parse_timeout(timeout, &deadline)) < 0)
        return NULL;
    if (channel_enter_timed(self, END_CONSUMER, held, deadline, no_wait) < 0 ||
        channel_next(self, &src, &len, deadline, no_wait) < 0)
        return NULL;
    return (PyObject *)loan_new((PyObject *)self, &self->gate, END_CONSUMER, channel_loan_finish,
                                channel_name(self), "channel", (unsigned char *)src, len, 1);
}

/* -- entry points ------------------------------------------------------------ */

/* Every call holds its end of the gate from channel_enter to its return:
 * Python code that runs in between (a finalizer run by an allocation, a
 * signal handler, another thread while the GIL is given away) then cannot
 * use that end, nor close the handle and unmap the ring under our
 * pointers; another thread waits its turn. */
#define ENTRY(NAME, END, PARAMS, ARGS)                                            \
    static PyObject *NAME PARAMS                                                  \
    {                                                                             \
        int held = 0;                                                             \
        PyObject *result = NAME##_impl ARGS;                                      \
        if (held)                                                                 \
            gate_leave(&self->gate, END);                                         \
        return result;                                                            \
    }
#define FAST_PARAMS (ChannelObject * self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
#define FAST_ARGS (&held, self, args, nargs, kwnames)
ENTRY(channel_send, END_PRODUCER, FAST_PARAMS, FAST_ARGS)
ENTRY(channel_send_many, END_PRODUCER, FAST_PARAMS, FAST_ARGS)
ENTRY(channel_reserve, END_PRODUCER, FAST_PARAMS, FAST_ARGS)
ENTRY(channel_recv, END_CONSUMER, FAST_PARAMS, FAST_ARGS)
ENTRY(channel_recv_into, END_CONSUMER, FAST_PARAMS, FAST_ARGS)
ENTRY(channel_recv_many, END_CONSUMER, FAST_PARAMS, FAST_ARGS)
ENTRY(channel_peek, END_CONSUMER, FAST_PARAMS, FAST_ARGS)
ENTRY(channel_try_send, END_PRODUCER, (ChannelObject * self, PyObject *data), (&held, self, data))
ENTRY(channel_try_recv, END_CONSUMER, (ChannelObject * self, PyObject *ignored), (&held, self, ignored))

/* -- lifetime ------------------------------------------------------------ */

static int channel_init(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"mapping", "wait", "spin_ns", NULL};
    PyObject *mapping;
    unsigned int wait = 0;
    long long spin_ns = -1;
    const shmring_segment_header *h;
    MappingObject *m;
    if (self->mapping != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "channel already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|IL:Channel", kwlist, &MappingType, &mapping, &wait, &spin_ns))
        return -1;
    m = (MappingObject *)mapping;
    if (mapping_check_open(m) < 0)
        return -1;
    h = (const shmring_segment_header *)m->seg.base;
    if (h->kind != SHMRING_KIND_CHANNEL) {
        PyErr_Format(PyExc_ValueError, "segment %R is not a channel", m->name);
        return -1;
    }
    if (wait > SHMRING_WAIT_MAX) {
        PyErr_Format(PyExc_ValueError, "unknown wait strategy %u", wait);
        return -1;
    }
    if (spin_ns > (long long)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "spin_ns is too large");
        return -1;
    }
    if (!m->seg.writable) {
        PyErr_Format(PyExc_ValueError, "segment %R is mapped read-only", m->name);
        return -1;
    }
    {
        shmring_channel attached;
        if (shmring_channel_attach(&attached, shmring_segment_payload(&m->seg),
                                   shmring_segment_payload_size(&m->seg)) != SHMRING_OK) {
            raise_code(SHMRING_ERR_CORRUPT, m->name);
            return -1;
        }
        if (wait == SHMRING_WAIT_SEMAPHORE && attached.wait != SHMRING_WAIT_SEMAPHORE) {
            PyErr_Format(PyExc_ValueError,
                         "channel %R was not created with wait=\"semaphore\": its producer posts no semaphore",
                         m->name);
            return -1;
        }
        if (PyObject_GetBuffer(mapping, &self->view, PyBUF_WRITABLE) < 0)
            return -1;
        self->ch = attached;
    }
    self->ch.interrupt = &self->gate.closing; /* close() from another thread ends the waits */
    Py_INCREF(mapping);
    self->mapping = mapping;
    self->wait = wait ? wait : self->ch.wait;
    self->spin_ns = spin_ns >= 0 ? (uint32_t)spin_ns : self->ch.spin_ns;
    self->handle_id = next_handle_id++;
    self->generation = fork_generation;
    self->token = shmring_token_self();
    return 0;
}

/* Give up this handle's ends after publishing what it committed and handing
 * back what it consumed; with `end_stream`, close them too (close(): a
 * producer's close ends the stream, a consumer's stops the writer). */
static void channel_release_roles(ChannelObject *self, int end_stream)
{
    shmring_channel_ctrl *c = self->ch.ctrl;
    channel_fork_reset(self); /* inherited through fork: nothing of ours */
    if (self->roles & ROLE_PRODUCER) {
        shmring_channel_publish(&self->ch);
        if (end_stream)
            shmring_channel_mark_closed(&self->ch, 1);
        shmring_channel_unclaim(c, 1, self->token, self->handle_id);
    }
    if (self->roles & ROLE_CONSUMER) {
        shmring_channel_publish_head(&self->ch);
        if (end_stream)
            shmring_channel_mark_closed(&self->ch, 0);
        shmring_channel_unclaim(c, 0, self->token, self->handle_id);
    }
    self->roles = 0;
}

/* A handle collected without close() gives its claims back, and nothing
 * more: garbage collection never ends a stream (only close() does, or the
 * death of the process holding the end, which the peer sees as PeerGone).
 * Another handle or process may then claim the ends and go on.  Once the
 * process is exiting (leave_all ran), a handle it drops keeps its claims,
 * as a process that dies does: the peer sees PeerGone once it is gone,
 * after everything it published. */
static void channel_give_back(ChannelObject *self)
{
    if (process_exiting) {
        channel_fork_reset(self);
        if (self->roles & ROLE_PRODUCER)
            shmring_channel_publish(&self->ch);
        if (self->roles & ROLE_CONSUMER)
            shmring_channel_publish_head(&self->ch);
        return;
    }
    channel_release_roles(self, 0);
}

static PyObject *channel_close(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    Gate *g = &self->gate;
    int e;
    if (self->mapping == NULL || self->closed)
        Py_RETURN_NONE;
    channel_fork_reset(self);
    if (gate_check_close_here(g, "channel", channel_name(self)) < 0)
        return NULL;
    /* Wake the calls of other threads (their waits end with Closed), then
     * wait until none is inside: they hold pointers into the ring. */
    if (!gate_begin_close(g)) {
        if (g->state & ROLE_PRODUCER)
            shmring_channel_interrupt_waiters(&self->ch, 1);
        if (g->state & ROLE_CONSUMER)
            shmring_channel_interrupt_waiters(&self->ch, 0);
    }
    if (gate_wait_empty(g) < 0)
        return NULL;
    if (self->closed) /* another thread's close() finished meanwhile */
        Py_RETURN_NONE;
    for (e = 0; e < GATE_ENDS; e++)
        if (g->loan[e] != NULL && loan_cancel(g->loan[e]) < 0)
            return NULL; /* views still alive: close() again once they are released */
    channel_release_roles(self, 1);
    PyBuffer_Release(&self->view);
    self->closed = 1;
    if (g->waiters)
        gate_wake(g);
    Py_RETURN_NONE;
}

static void channel_dealloc(ChannelObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->mapping != NULL && !self->closed) {
        /* Dropped without close(): loans hold a reference, calls hold one,
         * so neither is left. */
        channel_give_back(self);
        PyBuffer_Release(&self->view);
    }
    Py_CLEAR(self->mapping);
    Py_CLEAR(self->dict);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int channel_traverse(ChannelObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->mapping);
    Py_VISIT(self->dict);
    return 0;
}

static int channel_clear(ChannelObject *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

/* Counters, fill level and both ends of a channel, as a dict. */
static PyObject *stats_dict(const shmring_channel *ch)
{
    shmring_channel_ctrl *c = ch->ctrl;
    uint64_t head, tail, producer, consumer;
    /* relaxed throughout: a monitoring snapshot, not a synchronisation. */
    head = __atomic_load_n(&c->head, __ATOMIC_RELAXED);
    tail = __atomic_load_n(&c->tail, __ATOMIC_RELAXED);
    producer = __atomic_load_n(&c->producer, __ATOMIC_RELAXED);
    consumer = __atomic_load_n(&c->consumer, __ATOMIC_RELAXED);
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:L,s:O,s:L,s:O,s:O,s:O,s:I,s:I}",
        "capacity", (unsigned long long)ch->capacity,
        "head", (unsigned long long)head,
        "tail", (unsigned long long)tail,
        "fill_bytes", (unsigned long long)(tail - head <= ch->capacity ? tail - head : 0),
        "sent_messages", (unsigned long long)__atomic_load_n(&c->sent_msgs, __ATOMIC_RELAXED),
        "sent_bytes", (unsigned long long)__atomic_load_n(&c->sent_bytes, __ATOMIC_RELAXED),
        "received_messages", (unsigned long long)__atomic_load_n(&c->recv_msgs, __ATOMIC_RELAXED),
        "received_bytes", (unsigned long long)__atomic_load_n(&c->recv_bytes, __ATOMIC_RELAXED),
        "producer_blocked", (unsigned long long)__atomic_load_n(&c->producer_blocked, __ATOMIC_RELAXED),
        "consumer_blocked", (unsigned long long)__atomic_load_n(&c->consumer_blocked, __ATOMIC_RELAXED),
        "producer_pid", (long long)shmring_token_pid(producer),
        "producer_alive", shmring_token_alive(producer) ? Py_True : Py_False,
        "consumer_pid", (long long)shmring_token_pid(consumer),
        "consumer_alive", shmring_token_alive(consumer) ? Py_True : Py_False,
        "writer_closed", __atomic_load_n(&c->writer_closed, __ATOMIC_RELAXED) ? Py_True : Py_False,
        "reader_closed", __atomic_load_n(&c->reader_closed, __ATOMIC_RELAXED) ? Py_True : Py_False,
        "wait", (unsigned)__atomic_load_n(&c->wait, __ATOMIC_RELAXED),
        "spin_ns", (unsigned)__atomic_load_n(&c->spin_ns, __ATOMIC_RELAXED));
}

static PyObject *channel_stats(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL || self->closed || (self->gate.state & GATE_CLOSING))
        return PyErr_Format(closed_error, "channel is closed");
    return stats_dict(&self->ch);
}

/* channel_info(mapping) -> dict: stats of a channel segment mapped (even
 * read-only) without claiming or attaching anything; for the CLI. */
static PyObject *core_channel_info(PyObject *Py_UNUSED(module), PyObject *arg)
{
    MappingObject *m;
    shmring_channel ch;
    if (!PyObject_TypeCheck(arg, &MappingType))
        return PyErr_Format(PyExc_TypeError, "channel_info() needs a Mapping");
    m = (MappingObject *)arg;
    if (mapping_check_open(m) < 0)
        return NULL;
    if (((const shmring_segment_header *)m->seg.base)->kind != SHMRING_KIND_CHANNEL)
        return PyErr_Format(PyExc_ValueError, "segment %R is not a channel", m->name);
    if (shmring_channel_attach(&ch, shmring_segment_payload(&m->seg), shmring_segment_payload_size(&m->seg)) !=
        SHMRING_OK)
        return raise_code(SHMRING_ERR_CORRUPT, m->name);
    return stats_dict(&ch);
}

static PyObject *channel_get_capacity(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->ch.capacity);
}

static PyObject *channel_get_max_message(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->ch.capacity ? shmring_channel_max_message(self->ch.capacity) : 0);
}

static PyObject *channel_get_closed(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed || (self->gate.state & GATE_CLOSING));
}

static PyObject *channel_get_wait(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(self->wait);
}

static PyObject *channel_get_spin_ns(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(self->spin_ns);
}

static PyObject *channel_get_mapping(ChannelObject *self, void *Py_UNUSED(closure))
{
    if (self->mapping == NULL)
        Py_RETURN_NONE;
    Py_INCREF(self->mapping);
    return self->mapping;
}

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)
static PyMethodDef channel_methods[] = {
    {"send", (PyCFunction)(void (*)(void))channel_send, FASTKW,
     "send(data, timeout=None): copy a bytes-like object into the channel; blocks while it is full."},
    {"try_send", (PyCFunction)channel_try_send, METH_O,
     "try_send(data) -> bool: send if there is room now (False too while another thread is sending)."},
    {"send_many", (PyCFunction)(void (*)(void))channel_send_many, FASTKW,
     "send_many(buffers, timeout=None) -> int: one publication of every buffer.  The batch is checked whole "
     "before anything is written (a bad item sends nothing); a batch whose records fit in the ring waits for "
     "room for all of them (a Timeout then sent nothing: exc.sent == 0); a larger one goes in parts, and a "
     "Timeout says in exc.sent how many were delivered."},
    {"recv", (PyCFunction)(void (*)(void))channel_recv, FASTKW,
     "recv(timeout=None) -> bytes: the next message; blocks while the channel is empty."},
    {"try_recv", (PyCFunction)channel_try_recv, METH_NOARGS,
     "try_recv() -> bytes | None: a message if one is there (None too while another thread is receiving)."},
    {"recv_into", (PyCFunction)(void (*)(void))channel_recv_into, FASTKW,
     "recv_into(buffer, timeout=None) -> int: copy the next message into a writable buffer."},
    {"recv_many", (PyCFunction)(void (*)(void))channel_recv_many, FASTKW,
     "recv_many(max_messages, timeout=None) -> list[bytes]: every waiting message, up to max_messages."},
    {"reserve", (PyCFunction)(void (*)(void))channel_reserve, FASTKW,
     "reserve(n, timeout=None) -> Loan: with-block lending n zero-filled writable bytes of the ring; "
     "committed on exit (commit(k) to send only the first k)."},
    {"peek", (PyCFunction)(void (*)(void))channel_peek, FASTKW,
     "peek(timeout=None) -> Loan: with-block lending the next message read-only; released on exit."},
    {"stats", (PyCFunction)channel_stats, METH_NOARGS, "stats() -> dict: counters, fill level and both ends."},
    {"close", (PyCFunction)channel_close, METH_NOARGS,
     "close(): give up this handle; a writer's close ends the stream, a reader's stops the writer.  From "
     "another thread it wakes the calls blocked on this handle (they raise Closed) and returns once none is "
     "left."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef channel_getset[] = {
    {"capacity", (getter)channel_get_capacity, NULL, "Ring size in bytes.", NULL},
    {"max_message", (getter)channel_get_max_message, NULL, "Largest message that fits, in bytes.", NULL},
    {"closed", (getter)channel_get_closed, NULL, "True once this handle is closed.", NULL},
    {"wait_code", (getter)channel_get_wait, NULL, "This handle's wait strategy (WAIT_* constant).", NULL},
    {"spin_ns", (getter)channel_get_spin_ns, NULL, "This handle's adaptive spin window in ns.", NULL},
    {"_mapping", (getter)channel_get_mapping, NULL, "The underlying Mapping.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ChannelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmring._core.Channel",
    .tp_basicsize = sizeof(ChannelObject),
    .tp_dealloc = (destructor)channel_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Channel(mapping, wait=0, spin_ns=-1): the native SPSC channel; use shmring.Channel.",
    .tp_traverse = (traverseproc)channel_traverse,
    .tp_clear = (inquiry)channel_clear,
    .tp_weaklistoffset = offsetof(ChannelObject, weakrefs),
    .tp_methods = channel_methods,
    .tp_getset = channel_getset,
    .tp_dictoffset = offsetof(ChannelObject, dict),
    .tp_init = (initproc)channel_init,
    .tp_new = PyType_GenericNew,
};

static PyObject *core_create_channel(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    unsigned long long capacity;
    unsigned int wait, spin_ns, mode;
    shmring_segment seg;
    int rc;
    if (!PyArg_ParseTuple(args, "O&KIII:create_channel", name_converter, &name, &capacity, &wait, &spin_ns, &mode))
        return NULL;
    if (capacity < SHMRING_CHANNEL_MIN_CAPACITY || capacity > SHMRING_CHANNEL_MAX_CAPACITY ||
        (capacity & (capacity - 1)) != 0)
        return PyErr_Format(PyExc_ValueError, "capacity must be a power of two between %u and %llu, not %llu",
                            SHMRING_CHANNEL_MIN_CAPACITY, (unsigned long long)SHMRING_CHANNEL_MAX_CAPACITY,
                            capacity);
    if (wait == 0 || wait > SHMRING_WAIT_MAX)
        return PyErr_Format(PyExc_ValueError, "unknown wait strategy %u", wait);
    Py_BEGIN_ALLOW_THREADS
    rc = shmring_segment_create_unpublished(name.path, shmring_channel_payload_size(capacity), SHMRING_KIND_CHANNEL,
                                            (mode_t)mode, &seg);
    if (rc == SHMRING_OK) {
        shmring_channel_init(shmring_segment_payload(&seg), shmring_segment_payload_size(&seg), capacity, wait,
                             spin_ns);
        shmring_segment_publish(&seg);
    }
    Py_END_ALLOW_THREADS
    if (rc != SHMRING_OK)
        return raise_code(rc, name.obj);
    return (PyObject *)mapping_new(&seg, name.obj);
}

/* ------------------------------------------------------------------------ */
/* SyncCell: a synchronisation primitive at an offset of a mapping           */
/* ------------------------------------------------------------------------ */

static PyObject *owner_died_error;
static PyObject *not_recoverable_error;

typedef struct {
    PyObject_HEAD
    MappingObject *mapping; /* not an export: the segment may close; see cell_ok */
    Py_ssize_t offset;      /* of the primitive in the mapping */
    Py_ssize_t size;
    unsigned char *ptr;     /* valid while the mapping is open (checked by cell_ok) */
} SyncCellObject;

static PyTypeObject SyncCellType;

static int synccell_init(SyncCellObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"mapping", "offset", "size", NULL};
    PyObject *obj;
    Py_ssize_t offset, size, align;
    MappingObject *m;
    if (self->mapping != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "SyncCell already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!nn:SyncCell", kwlist, &MappingType, &obj, &offset, &size))
        return -1;
    m = (MappingObject *)obj;
    if (size != 4 && size != 8 && size != 16 && size != 24) {
        PyErr_Format(PyExc_ValueError, "unsupported primitive size %zd", size);
        return -1;
    }
    if (mapping_check_open(m) < 0)
        return -1;
    if (!m->seg.writable) {
        PyErr_Format(PyExc_ValueError, "segment %R is mapped read-only", m->name);
        return -1;
    }
    if (offset < 0 || offset > (Py_ssize_t)m->seg.map_size - size) {
        PyErr_Format(PyExc_ValueError, "offset %zd out of range: %zd bytes do not fit in a mapping of %zu", offset,
                     size, m->seg.map_size);
        return -1;
    }
    align = size >= 8 ? 8 : 4;
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

static void synccell_dealloc(SyncCellObject *self)
{
    Py_XDECREF(self->mapping);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int cell_ok(SyncCellObject *self)
{
    if (self->mapping == NULL || self->mapping->seg.base == NULL) {
        PyErr_SetString(PyExc_ValueError, "the primitive's segment is closed");
        return -1;
    }
    return 0;
}

/* Keep the mapping mapped while the GIL is released (an export makes the
 * segment's close() refuse). */
static int cell_pin(SyncCellObject *self, Py_buffer *pin)
{
    return PyObject_GetBuffer((PyObject *)self->mapping, pin, PyBUF_SIMPLE);
}

/* -- atomics ---------------------------------------------------------------- */

/* order codes: 0 relaxed, 1 acquire, 2 release, 3 acq_rel, 4 seq_cst */
static int order_ok(int order, int is_load, int is_store)
{
    if (order < 0 || order > 4)
        goto bad;
    if (is_load && (order == 2 || order == 3))
        goto bad;
    if (is_store && (order == 1 || order == 3))
        goto bad;
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, is_load ? "a load takes order relaxed, acquire or seq_cst"
                                      : is_store ? "a store takes order relaxed, release or seq_cst"
                                                 : "unknown memory order");
    return -1;
}

/* Each atomic below is the user's own operation: its order is the one the
 * user asked for, and what it pairs with is the user's protocol. */
#define ORDER_SWITCH(order, EXPR)                         \
    switch (order) {                                      \
    case 0: { const int mo = __ATOMIC_RELAXED; EXPR; } break; \
    case 1: { const int mo = __ATOMIC_ACQUIRE; EXPR; } break; \
    case 2: { const int mo = __ATOMIC_RELEASE; EXPR; } break; \
    case 3: { const int mo = __ATOMIC_ACQ_REL; EXPR; } break; \
    default: { const int mo = __ATOMIC_SEQ_CST; EXPR; } break; \
    }

/* Loads and stores take three of the orders only (order_ok refused the
 * others): a switch of its own each, so that no branch spells an order the
 * operation cannot take (GCC warns about those, reachable or not). */
#define LOAD_ORDERED(order, DST, PTR)                                  \
    switch (order) {                                                   \
    case 0: DST = shmring_load_relaxed(PTR); break;                    \
    case 1: DST = shmring_load_acquire(PTR); break;                    \
    default: DST = shmring_load_seq_cst(PTR); break;                   \
    }
#define STORE_ORDERED(order, PTR, V)                                   \
    switch (order) {                                                   \
    case 0: shmring_store_relaxed(PTR, V); break;                      \
    case 2: shmring_store_release(PTR, V); break;                      \
    default: shmring_store_seq_cst(PTR, V); break;                     \
    }

static PyObject *from_value(SyncCellObject *self, uint64_t v)
{
    if (self->size == 4)
        return PyLong_FromLong((long)(int32_t)(uint32_t)v);
    return PyLong_FromLongLong((long long)(int64_t)v);
}

static int to_value(SyncCellObject *self, PyObject *obj, uint64_t *out)
{
    long long v = PyLong_AsLongLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (self->size == 4 && (v < INT32_MIN || v > INT32_MAX)) {
        PyErr_Format(PyExc_OverflowError, "%lld does not fit in a 32-bit signed integer", v);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static PyObject *cell_load(SyncCellObject *self, PyObject *args)
{
    int order = 4;
    uint64_t v = 0;
    if (!PyArg_ParseTuple(args, "|i:load", &order) || order_ok(order, 1, 0) < 0 || cell_ok(self) < 0)
        return NULL;
    if (self->size == 4) {
        LOAD_ORDERED(order, v, (uint32_t *)self->ptr)
    } else {
        LOAD_ORDERED(order, v, (uint64_t *)self->ptr)
    }
    return from_value(self, v);
}

static PyObject *cell_store(SyncCellObject *self, PyObject *args)
{
    PyObject *obj;
    int order = 4;
    uint64_t v;
    /* Arguments first: converting them may run Python code (__index__),
     * which could close the segment; cell_ok comes after. */
    if (!PyArg_ParseTuple(args, "O|i:store", &obj, &order) || to_value(self, obj, &v) < 0 ||
        order_ok(order, 0, 1) < 0 || cell_ok(self) < 0)
        return NULL;
    if (self->size == 4) {
        STORE_ORDERED(order, (uint32_t *)self->ptr, (uint32_t)v)
    } else {
        STORE_ORDERED(order, (uint64_t *)self->ptr, v)
    }
    Py_RETURN_NONE;
}

/* op: 0 exchange, 1 add, 2 sub, 3 and, 4 or, 5 xor */
static PyObject *cell_rmw(SyncCellObject *self, PyObject *args, int op)
{
    PyObject *obj;
    int order = 4;
    uint64_t v, old = 0;
    if (!PyArg_ParseTuple(args, "O|i", &obj, &order) || to_value(self, obj, &v) < 0 ||
        order_ok(order, 0, 0) < 0 || cell_ok(self) < 0)
        return NULL;
#define RMW(T)                                                                           \
    do {                                                                                 \
        T *p = (T *)self->ptr;                                                           \
        T x = (T)v;                                                                      \
        switch (op) {                                                                    \
        case 0: ORDER_SWITCH(order, old = __atomic_exchange_n(p, x, mo)) break;          \
        case 1: ORDER_SWITCH(order, old = __atomic_fetch_add(p, x, mo)) break;           \
        case 2: ORDER_SWITCH(order, old = __atomic_fetch_sub(p, x, mo)) break;           \
        case 3: ORDER_SWITCH(order, old = __atomic_fetch_and(p, x, mo)) break;           \
        case 4: ORDER_SWITCH(order, old = __atomic_fetch_or(p, x, mo)) break;            \
        default: ORDER_SWITCH(order, old = __atomic_fetch_xor(p, x, mo)) break;          \
        }                                                                                \
    } while (0)
    if (self->size == 4)
        RMW(uint32_t);
    else
        RMW(uint64_t);
#undef RMW
    return from_value(self, old);
}

static PyObject *cell_exchange(SyncCellObject *self, PyObject *args) { return cell_rmw(self, args, 0); }
static PyObject *cell_fetch_add(SyncCellObject *self, PyObject *args) { return cell_rmw(self, args, 1); }
static PyObject *cell_fetch_sub(SyncCellObject *self, PyObject *args) { return cell_rmw(self, args, 2); }
static PyObject *cell_fetch_and(SyncCellObject *self, PyObject *args) { return cell_rmw(self, args, 3); }
static PyObject *cell_fetch_or(SyncCellObject *self, PyObject *args) { return cell_rmw(self, args, 4); }
static PyObject *cell_fetch_xor(SyncCellObject *self, PyObject *args) { return cell_rmw(self, args, 5); }

static PyObject *cell_compare_exchange(SyncCellObject *self, PyObject *args)
{
    PyObject *e_obj, *d_obj, *cur;
    int order = 4, ok = 0;
    uint64_t expected, desired;
    if (!PyArg_ParseTuple(args, "OO|i:compare_exchange", &e_obj, &d_obj, &order) ||
        to_value(self, e_obj, &expected) < 0 || to_value(self, d_obj, &desired) < 0 || order_ok(order, 0, 0) < 0 ||
        cell_ok(self) < 0)
        return NULL;
    /* The failure order may not be release/acq_rel: use the load part. */
    if (self->size == 4) {
        uint32_t e = (uint32_t)expected;
        switch (order) {
        case 0: ok = __atomic_compare_exchange_n((uint32_t *)self->ptr, &e, (uint32_t)desired, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED); break;
        case 1: ok = __atomic_compare_exchange_n((uint32_t *)self->ptr, &e, (uint32_t)desired, 0, __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE); break;
        case 2: ok = __atomic_compare_exchange_n((uint32_t *)self->ptr, &e, (uint32_t)desired, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED); break;
        case 3: ok = __atomic_compare_exchange_n((uint32_t *)self->ptr, &e, (uint32_t)desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE); break;
        default: ok = __atomic_compare_exchange_n((uint32_t *)self->ptr, &e, (uint32_t)desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); break;
        }
        expected = e;
    } else {
        uint64_t e = expected;
        switch (order) {
        case 0: ok = __atomic_compare_exchange_n((uint64_t *)self->ptr, &e, desired, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED); break;
        case 1: ok = __atomic_compare_exchange_n((uint64_t *)self->ptr, &e, desired, 0, __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE); break;
        case 2: ok = __atomic_compare_exchange_n((uint64_t *)self->ptr, &e, desired, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED); break;
        case 3: ok = __atomic_compare_exchange_n((uint64_t *)self->ptr, &e, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE); break;
        default: ok = __atomic_compare_exchange_n((uint64_t *)self->ptr, &e, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); break;
        }
        expected = e;
    }
    cur = from_value(self, expected);
    if (cur == NULL)
        return NULL;
    return Py_BuildValue("(ON)", ok ? Py_True : Py_False, cur);
}

/* The futex word of a 4- or 8-byte atomic: the low 32 bits. */
static uint32_t *cell_word(SyncCellObject *self)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (uint32_t *)(self->ptr + (self->size == 8 ? 4 : 0));
#else
    return (uint32_t *)self->ptr;
#endif
}

/* Block, in GIL-free slices with signal checks, until `ready(self)` says
 * yes or the deadline passes.  `sleep_once` sleeps once (at most until the
 * slice's end) and returns a SHMRING_* code.  Returns 1 (ready), 0 (timed
 * out) or -1 (exception). */
typedef int (*ready_fn)(SyncCellObject *, void *);
typedef int (*sleep_fn)(SyncCellObject *, void *, uint64_t);

static int cell_block_pinned(SyncCellObject *self, void *arg, ready_fn ready, sleep_fn sleep_once, uint64_t deadline);

/* `no_wait` and `deadline` come from parse_timeout, called by the caller
 * before cell_ok (it may run Python code). */
static int cell_block(SyncCellObject *self, void *arg, ready_fn ready, sleep_fn sleep_once, int no_wait,
                      uint64_t deadline)
{
    int r;
    Py_buffer pin;
    if ((r = ready(self, arg)) != 0)
        return r;
    if (no_wait)
        return 0;
    if (cell_pin(self, &pin) < 0)
        return -1;
    r = cell_block_pinned(self, arg, ready, sleep_once, deadline);
    PyBuffer_Release(&pin);
    return r;
}

static int cell_block_pinned(SyncCellObject *self, void *arg, ready_fn ready, sleep_fn sleep_once, uint64_t deadline)
{
    int r;
    for (;;) {
        uint64_t now = shmring_now_ns(), slice = now + SHMRING_WAIT_SLICE_NS;
        int rc;
        if (deadline && now >= deadline)
            return ready(self, arg);
        if (deadline && deadline < slice)
            slice = deadline;
        Py_BEGIN_ALLOW_THREADS
        rc = sleep_once(self, arg, slice);
        Py_END_ALLOW_THREADS
        if ((r = ready(self, arg)) != 0)
            return r;
        if (rc == SHMRING_ERR_SYS && errno != EINTR && errno != EAGAIN) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}

typedef struct {
    uint64_t expected;
} wait_arg;

static int atomic_changed(SyncCellObject *self, void *arg)
{
    uint64_t now;
    /* acquire: pairs with the writer's release (or stronger) store. */
    if (self->size == 4)
        now = __atomic_load_n((uint32_t *)self->ptr, __ATOMIC_ACQUIRE);
    else
        now = __atomic_load_n((uint64_t *)self->ptr, __ATOMIC_ACQUIRE);
    return (self->size == 4 ? (uint32_t)now != (uint32_t)((wait_arg *)arg)->expected
                            : now != ((wait_arg *)arg)->expected);
}

static int atomic_sleep(SyncCellObject *self, void *arg, uint64_t until)
{
    return shmring_futex_wait_until(cell_word(self), (uint32_t)((wait_arg *)arg)->expected, until);
}

static PyObject *cell_wait(SyncCellObject *self, PyObject *args)
{
    PyObject *e_obj, *timeout = Py_None;
    wait_arg a;
    uint64_t deadline;
    int r, no_wait;
    if (!PyArg_ParseTuple(args, "O|O:wait", &e_obj, &timeout) || to_value(self, e_obj, &a.expected) < 0 ||
        (no_wait = parse_timeout(timeout, &deadline)) < 0 || cell_ok(self) < 0)
        return NULL;
    r = cell_block(self, &a, atomic_changed, atomic_sleep, no_wait, deadline);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *cell_notify(SyncCellObject *self, PyObject *args)
{
    int n = INT_MAX, woken;
    if (!PyArg_ParseTuple(args, "|i:notify", &n) || cell_ok(self) < 0) /* ParseTuple runs first */
        return NULL;
    if (n < 1)
        return PyErr_Format(PyExc_ValueError, "n must be at least 1");
    woken = shmring_futex_wake(cell_word(self), n);
    if (woken < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(woken);
}

/* -- semaphore ------------------------------------------------------------- */

static int sem_ready(SyncCellObject *self, void *arg)
{
    (void)arg;
    return shmring_sem_try_acquire((shmring_sem *)self->ptr);
}

static int sem_sleep(SyncCellObject *self, void *arg, uint64_t until)
{
    (void)arg;
    return shmring_sem_wait((shmring_sem *)self->ptr, until);
}

static PyObject *cell_sem_init(SyncCellObject *self, PyObject *args)
{
    long long value;
    if (!PyArg_ParseTuple(args, "L:sem_init", &value) || cell_ok(self) < 0)
        return NULL;
    if (value < 0 || value > (long long)SHMRING_SEM_MAX)
        return PyErr_Format(PyExc_ValueError, "semaphore value must be at most %u", SHMRING_SEM_MAX);
    shmring_sem_init((shmring_sem *)self->ptr, (uint32_t)value);
    Py_RETURN_NONE;
}

/* acquire(blocking=True, timeout=None), as threading.Lock: a timeout with
 * blocking=False is a ValueError; None waits forever. */
static int parse_acquire(PyObject *args, PyObject *kwds, const char *fname, int *blocking, int *no_wait,
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

static PyObject *cell_sem_acquire(SyncCellObject *self, PyObject *args, PyObject *kwds)
{
    int blocking, r, no_wait;
    uint64_t deadline;
    if (parse_acquire(args, kwds, "acquire", &blocking, &no_wait, &deadline) < 0 || cell_ok(self) < 0)
        return NULL;
    r = cell_block(self, NULL, sem_ready, sem_sleep, no_wait, deadline);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *cell_sem_release(SyncCellObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n", NULL};
    long long n = 1;
    PyObject *n_obj = NULL;
    if ((PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) &&
        !PyArg_ParseTupleAndKeywords(args, kwds, "|O:release", kwlist, &n_obj))
        return NULL;
    if (n_obj != NULL) {
        int overflow = 0;
        if (!PyLong_Check(n_obj) || PyBool_Check(n_obj))
            return PyErr_Format(PyExc_ValueError, "n must be an int between 1 and %u", SHMRING_SEM_MAX);
        n = PyLong_AsLongLongAndOverflow(n_obj, &overflow);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (overflow)
            n = overflow > 0 ? LLONG_MAX : LLONG_MIN;
    }
    if (n < 1 || n > (long long)SHMRING_SEM_MAX)
        return PyErr_Format(PyExc_ValueError, "n must be between 1 and %u, not %lld", SHMRING_SEM_MAX, n);
    if (cell_ok(self) < 0)
        return NULL;
    if (shmring_sem_release((shmring_sem *)self->ptr, (uint32_t)n) != SHMRING_OK)
        return PyErr_Format(PyExc_ValueError, "semaphore would exceed its maximum value %u", SHMRING_SEM_MAX);
    Py_RETURN_NONE;
}

static PyObject *cell_sem_value(SyncCellObject *self, PyObject *Py_UNUSED(ignored))
{
    if (cell_ok(self) < 0)
        return NULL;
    /* relaxed: a snapshot for display. */
    return PyLong_FromUnsignedLong(__atomic_load_n(&((shmring_sem *)self->ptr)->count, __ATOMIC_RELAXED));
}

/* -- locks ------------------------------------------------------------------- */

typedef struct {
    uint64_t token;
    int result; /* the SHMRING_* code that made ready() say yes */
} lock_arg;

static uint64_t process_token_cached(void)
{
    static uint64_t token;
    static unsigned long generation;
    if (generation != fork_generation || token == 0) {
        token = shmring_token_self();
        generation = fork_generation;
    }
    return token;
}

static PyObject *raise_lock_code(int rc)
{
    if (rc == SHMRING_OWNER_DIED)
        PyErr_SetString(owner_died_error,
                        "the previous holder died holding the lock; you hold it now: repair the data it guards"
                        " (and, for a Mutex, call mark_consistent())");
    else if (rc == SHMRING_NOT_RECOVERABLE)
        PyErr_SetString(not_recoverable_error,
                        "the lock is not recoverable: a holder died and the next one released it without "
                        "calling mark_consistent()");
    else if (rc == SHMRING_NOT_OWNER)
        PyErr_SetString(PyExc_RuntimeError, "release of a lock that this process does not hold");
    else
        PyErr_Format(PyExc_RuntimeError, "lock error %d", rc);
    return NULL;
}

static PyObject *cell_spin_acquire(SyncCellObject *self, PyObject *args, PyObject *kwds)
{
    int blocking, no_wait, rc;
    uint64_t token, deadline;
    shmring_spinlock *l;
    if (parse_acquire(args, kwds, "acquire", &blocking, &no_wait, &deadline) < 0 || cell_ok(self) < 0)
        return NULL;
    l = (shmring_spinlock *)self->ptr;
    token = process_token_cached();
    rc = shmring_spin_try_acquire(l, token, !blocking);
    if (rc == SHMRING_AGAIN && blocking) {
        Py_buffer pin;
        if (no_wait)
            rc = shmring_spin_try_acquire(l, token, 1);
        if (!no_wait && cell_pin(self, &pin) < 0)
            return NULL;
        while (rc == SHMRING_AGAIN && !no_wait) {
            /* Spin without the GIL (its holder may be a thread of ours that
             * needs it to get to release()), in slices between signal checks. */
            uint64_t slice = shmring_now_ns() + SHMRING_WAIT_SLICE_NS;
            if (deadline && deadline < slice)
                slice = deadline;
            Py_BEGIN_ALLOW_THREADS
            rc = shmring_spin_acquire(l, token, slice);
            Py_END_ALLOW_THREADS
            if (rc != SHMRING_TIMEOUT)
                break;
            rc = SHMRING_AGAIN;
            if (PyErr_CheckSignals() < 0) {
                PyBuffer_Release(&pin);
                return NULL;
            }
            if (deadline && shmring_now_ns() >= deadline)
                break;
        }
        if (!no_wait)
            PyBuffer_Release(&pin);
    }
    if (rc == SHMRING_AGAIN)
        Py_RETURN_FALSE;
    if (rc != SHMRING_OK)
        return raise_lock_code(rc);
    Py_RETURN_TRUE;
}

static PyObject *cell_spin_release(SyncCellObject *self, PyObject *Py_UNUSED(ignored))
{
    int rc;
    if (cell_ok(self) < 0)
        return NULL;
    rc = shmring_spin_release((shmring_spinlock *)self->ptr, process_token_cached());
    if (rc != SHMRING_OK)
        return raise_lock_code(rc);
    Py_RETURN_NONE;
}

/* After OwnerDied: give the spin lock up unrepaired (the next holder is told). */
static PyObject *cell_spin_abandon(SyncCellObject *self, PyObject *Py_UNUSED(ignored))
{
    int rc;
    if (cell_ok(self) < 0)
        return NULL;
    rc = shmring_spin_abandon((shmring_spinlock *)self->ptr, process_token_cached());
    if (rc != SHMRING_OK)
        return raise_lock_code(rc);
    Py_RETURN_NONE;
}

static PyObject *cell_holder(SyncCellObject *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t token;
    if (cell_ok(self) < 0)
        return NULL;
    /* relaxed: a snapshot for display. */
    token = __atomic_load_n((uint64_t *)self->ptr, __ATOMIC_RELAXED);
    if (token == 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(LO)", (long long)shmring_token_pid(token),
                         shmring_token_alive(token) ? Py_True : Py_False);
}

static int mutex_ready(SyncCellObject *self, void *arg)
{
    lock_arg *a = (lock_arg *)arg;
    a->result = shmring_mutex_try_acquire((shmring_mutex *)self->ptr, a->token, 0);
    return a->result != SHMRING_AGAIN;
}

static int mutex_sleep(SyncCellObject *self, void *arg, uint64_t until)
{
    lock_arg *a = (lock_arg *)arg;
    int rc = shmring_mutex_wait((shmring_mutex *)self->ptr, a->token, until);
    if (rc == SHMRING_OK || rc == SHMRING_OWNER_DIED || rc == SHMRING_NOT_RECOVERABLE) {
        a->result = rc;
        return SHMRING_OK;
    }
    return rc;
}

static int mutex_ready_after_wait(SyncCellObject *self, void *arg)
{
    lock_arg *a = (lock_arg *)arg;
    if (a->result != SHMRING_AGAIN)
        return 1; /* taken (or refused) inside mutex_sleep */
    return mutex_ready(self, arg);
}

/* How long a Mutex waiter spins (GIL held) before it sleeps: a few short
 * critical sections' worth, far below a wake-up's cost here (~30 us). */
#define MUTEX_SPIN_NS 2000u

static PyObject *cell_mutex_acquire(SyncCellObject *self, PyObject *args, PyObject *kwds)
{
    int blocking, r, no_wait;
    uint64_t deadline;
    lock_arg a;
    if (parse_acquire(args, kwds, "acquire", &blocking, &no_wait, &deadline) < 0 || cell_ok(self) < 0)
        return NULL;
    a.token = process_token_cached();
    a.result = SHMRING_AGAIN;
    if (no_wait) {
        a.result = shmring_mutex_try_acquire((shmring_mutex *)self->ptr, a.token, 1);
        r = a.result != SHMRING_AGAIN;
    } else {
        a.result = shmring_mutex_spin_acquire((shmring_mutex *)self->ptr, a.token, MUTEX_SPIN_NS);
        if (a.result != SHMRING_AGAIN)
            r = 1;
        else
            r = cell_block(self, &a, mutex_ready_after_wait, mutex_sleep, 0, deadline);
    }
    if (r < 0)
        return NULL;
    if (r == 0)
        Py_RETURN_FALSE;
    if (a.result != SHMRING_OK)
        return raise_lock_code(a.result);
    Py_RETURN_TRUE;
}

static PyObject *cell_mutex_release(SyncCellObject *self, PyObject *Py_UNUSED(ignored))
{
    int rc;
    if (cell_ok(self) < 0)
        return NULL;
    rc = shmring_mutex_release((shmring_mutex *)self->ptr, process_token_cached());
    if (rc != SHMRING_OK)
        return raise_lock_code(rc);
    Py_RETURN_NONE;
}

/* After OwnerDied: release the mutex unrepaired, still marked owner-died, so
 * that the next holder is told and repairs (mutex_release would make it not
 * recoverable). */
static PyObject *cell_mutex_abandon(SyncCellObject *self, PyObject *Py_UNUSED(ignored))
{
    int rc;
    if (cell_ok(self) < 0)
        return NULL;
    rc = shmring_mutex_abandon((shmring_mutex *)self->ptr, process_token_cached());
    if (rc != SHMRING_OK)
        return raise_lock_code(rc);
    Py_RETURN_NONE;
}

static PyObject *cell_mutex_consistent(SyncCellObject *self, PyObject *Py_UNUSED(ignored))
{
    if (cell_ok(self) < 0)
        return NULL;
    if (shmring_mutex_consistent((shmring_mutex *)self->ptr, process_token_cached()) != SHMRING_OK)
        return PyErr_Format(PyExc_RuntimeError,
                            "mark_consistent() is for the holder of a lock whose previous holder died");
    Py_RETURN_NONE;
}

static PyObject *cell_mutex_state(SyncCellObject *self, PyObject *Py_UNUSED(ignored))
{
    if (cell_ok(self) < 0)
        return NULL;
    /* relaxed: a snapshot for display. */
    return PyLong_FromUnsignedLong(__atomic_load_n(&((shmring_mutex *)self->ptr)->state, __ATOMIC_RELAXED));
}

/* -- event and condition ------------------------------------------------------ */

static int event_ready(SyncCellObject *self, void *arg)
{
    shmring_event *e = (shmring_event *)self->ptr;
    return shmring_event_is_set(e) || shmring_event_generation(e) != *(uint32_t *)arg;
}

static int event_sleep(SyncCellObject *self, void *arg, uint64_t until)
{
    return shmring_event_wait((shmring_event *)self->ptr, *(uint32_t *)arg, until);
}

static PyObject *cell_event_set(SyncCellObject *self, PyObject *Py_UNUSED(ignored))
{
    if (cell_ok(self) < 0)
        return NULL;
    shmring_event_set((shmring_event *)self->ptr);
    Py_RETURN_NONE;
}

static PyObject *cell_event_clear(SyncCellObject *self, PyObject *Py_UNUSED(ignored))
{
    if (cell_ok(self) < 0)
        return NULL;
    shmring_event_clear((shmring_event *)self->ptr);
    Py_RETURN_NONE;
}

static PyObject *cell_event_is_set(SyncCellObject *self, PyObject *Py_UNUSED(ignored))
{
    if (cell_ok(self) < 0)
        return NULL;
    return PyBool_FromLong(shmring_event_is_set((shmring_event *)self->ptr));
}

static PyObject *cell_event_wait(SyncCellObject *self, PyObject *args)
{
    PyObject *timeout = Py_None;
    uint64_t deadline;
    uint32_t gen;
    int r, no_wait;
    if (!PyArg_ParseTuple(args, "|O:event_wait", &timeout) || (no_wait = parse_timeout(timeout, &deadline)) < 0 ||
        cell_ok(self) < 0)
        return NULL;
    gen = shmring_event_generation((shmring_event *)self->ptr);
    r = cell_block(self, &gen, event_ready, event_sleep, no_wait, deadline);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *cell_cond_prepare(SyncCellObject *self, PyObject *Py_UNUSED(ignored))
{
    if (cell_ok(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(shmring_cond_prepare((shmring_cond *)self->ptr));
}

/* cond_sleep(registered, timeout=None) -> bool: after cond_prepare (mutex
 * released by the caller): wait until a notification is taken (True) or the
 * timeout passes (False), then unregister. */
static PyObject *cell_cond_sleep(SyncCellObject *self, PyObject *args)
{
    PyObject *timeout = Py_None, *result = NULL;
    unsigned long registered;
    uint64_t deadline;
    int no_wait;
    Py_buffer pin;
    shmring_cond *c;
    if (!PyArg_ParseTuple(args, "k|O:cond_sleep", &registered, &timeout))
        return NULL;
    no_wait = parse_timeout(timeout, &deadline);
    if (cell_ok(self) < 0)
        return NULL; /* the segment is gone: nothing to unregister from */
    c = (shmring_cond *)self->ptr;
    if (no_wait < 0 || cell_pin(self, &pin) < 0) {
        shmring_cond_done(c);
        return NULL;
    }
    for (;;) {
        uint64_t now, slice;
        uint32_t seq = shmring_cond_seq(c); /* before the take: see shmring_cond_seq */
        int rc;
        if (shmring_cond_take(c, (uint32_t)registered, seq)) {
            result = Py_True;
            break;
        }
        now = shmring_now_ns();
        if (no_wait || (deadline && now >= deadline)) {
            result = Py_False;
            break;
        }
        slice = now + SHMRING_WAIT_SLICE_NS;
        if (deadline && deadline < slice)
            slice = deadline;
        Py_BEGIN_ALLOW_THREADS
        rc = shmring_cond_sleep(c, seq, slice);
        Py_END_ALLOW_THREADS
        if (rc == SHMRING_ERR_SYS && errno != EINTR && errno != EAGAIN) {
            PyErr_SetFromErrno(PyExc_OSError);
            break;
        }
        if (PyErr_CheckSignals() < 0)
            break;
    }
    shmring_cond_done(c);
    PyBuffer_Release(&pin);
    Py_XINCREF(result);
    return result;
}

static PyObject *cell_cond_notify(SyncCellObject *self, PyObject *args)
{
    int n = 1;
    if (!PyArg_ParseTuple(args, "|i:cond_notify", &n) || cell_ok(self) < 0)
        return NULL;
    if (n < 1)
        return PyErr_Format(PyExc_ValueError, "n must be at least 1");
    shmring_cond_notify((shmring_cond *)self->ptr, n);
    Py_RETURN_NONE;
}

static PyObject *core_fence(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    /* seq_cst: a full barrier, for user protocols built on relaxed atomics. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyMethodDef synccell_methods[] = {
    {"load", (PyCFunction)cell_load, METH_VARARGS, "load(order=4)"},
    {"store", (PyCFunction)cell_store, METH_VARARGS, "store(value, order=4)"},
    {"exchange", (PyCFunction)cell_exchange, METH_VARARGS, "exchange(value, order=4) -> old"},
    {"compare_exchange", (PyCFunction)cell_compare_exchange, METH_VARARGS,
     "compare_exchange(expected, desired, order=4) -> (swapped, current)"},
    {"fetch_add", (PyCFunction)cell_fetch_add, METH_VARARGS, "fetch_add(value, order=4) -> old"},
    {"fetch_sub", (PyCFunction)cell_fetch_sub, METH_VARARGS, "fetch_sub(value, order=4) -> old"},
    {"fetch_and", (PyCFunction)cell_fetch_and, METH_VARARGS, "fetch_and(value, order=4) -> old"},
    {"fetch_or", (PyCFunction)cell_fetch_or, METH_VARARGS, "fetch_or(value, order=4) -> old"},
    {"fetch_xor", (PyCFunction)cell_fetch_xor, METH_VARARGS, "fetch_xor(value, order=4) -> old"},
    {"wait", (PyCFunction)cell_wait, METH_VARARGS, "wait(expected, timeout=None) -> bool: changed?"},
    {"notify", (PyCFunction)cell_notify, METH_VARARGS, "notify(n=all) -> woken"},
    {"sem_init", (PyCFunction)cell_sem_init, METH_VARARGS, "sem_init(value)"},
    {"sem_acquire", (PyCFunction)(void (*)(void))cell_sem_acquire, METH_VARARGS | METH_KEYWORDS,
     "sem_acquire(blocking=True, timeout=None) -> bool"},
    {"sem_release", (PyCFunction)(void (*)(void))cell_sem_release, METH_VARARGS | METH_KEYWORDS, "sem_release(n=1)"},
    {"sem_value", (PyCFunction)cell_sem_value, METH_NOARGS, "sem_value() -> int"},
    {"spin_acquire", (PyCFunction)(void (*)(void))cell_spin_acquire, METH_VARARGS | METH_KEYWORDS,
     "spin_acquire(blocking=True, timeout=None) -> bool"},
    {"spin_release", (PyCFunction)cell_spin_release, METH_NOARGS, "spin_release()"},
    {"spin_abandon", (PyCFunction)cell_spin_abandon, METH_NOARGS,
     "spin_abandon(): after OwnerDied, give it up unrepaired (the next holder gets OwnerDied)"},
    {"holder", (PyCFunction)cell_holder, METH_NOARGS, "holder() -> (pid, alive) | None"},
    {"mutex_acquire", (PyCFunction)(void (*)(void))cell_mutex_acquire, METH_VARARGS | METH_KEYWORDS,
     "mutex_acquire(blocking=True, timeout=None) -> bool"},
    {"mutex_release", (PyCFunction)cell_mutex_release, METH_NOARGS, "mutex_release()"},
    {"mutex_consistent", (PyCFunction)cell_mutex_consistent, METH_NOARGS, "mutex_consistent()"},
    {"mutex_abandon", (PyCFunction)cell_mutex_abandon, METH_NOARGS,
     "mutex_abandon(): after OwnerDied, release it still marked owner-died (the next holder repairs)"},
    {"mutex_state", (PyCFunction)cell_mutex_state, METH_NOARGS, "mutex_state() -> int"},
    {"event_set", (PyCFunction)cell_event_set, METH_NOARGS, "event_set()"},
    {"event_clear", (PyCFunction)cell_event_clear, METH_NOARGS, "event_clear()"},
    {"event_is_set", (PyCFunction)cell_event_is_set, METH_NOARGS, "event_is_set() -> bool"},
    {"event_wait", (PyCFunction)cell_event_wait, METH_VARARGS, "event_wait(timeout=None) -> bool"},
    {"cond_prepare", (PyCFunction)cell_cond_prepare, METH_NOARGS, "cond_prepare() -> generation: register"},
    {"cond_sleep", (PyCFunction)cell_cond_sleep, METH_VARARGS,
     "cond_sleep(generation, timeout=None) -> bool: notified?"},
    {"cond_notify", (PyCFunction)cell_cond_notify, METH_VARARGS, "cond_notify(n=1)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SyncCellType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmring._core.SyncCell",
    .tp_basicsize = sizeof(SyncCellObject),
    .tp_dealloc = (destructor)synccell_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "SyncCell(mapping, offset, size): a synchronisation primitive at an offset of a Mapping.",
    .tp_methods = synccell_methods,
    .tp_init = (initproc)synccell_init,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------------ */
/* Module                                                                    */
/* ------------------------------------------------------------------------ */

#include "_queue.c"
#include "_topic.c"

static PyMethodDef core_methods[] = {
    {"create", core_create, METH_VARARGS,
     "create(name, payload_size, kind, mode) -> Mapping: make, reserve and publish a new segment."},
    {"open", core_open, METH_VARARGS,
     "open(name, readonly, allow_other_owner, attach=True) -> Mapping: attach to (or, attach=False, only\n"
     "look at) a segment, after validating it."},
    {"open_fd", core_open_fd, METH_VARARGS,
     "open_fd(fd, name, readonly, allow_other_owner) -> Mapping: attach through an inherited descriptor."},
    {"unlink", core_unlink, METH_VARARGS, "unlink(name): remove a segment's name."},
    {"in_use", core_in_use, METH_VARARGS, "in_use(name) -> bool: is any process attached to the segment?"},
    {"remove_unused", core_remove_unused, METH_VARARGS,
     "remove_unused(name, even_persistent=False) -> bool: remove the segment if nobody is attached."},
    {"chunk_name", core_chunk_name, METH_VARARGS, "chunk_name(queue, index) -> str: an overflow chunk's name."},
    {"chunk_index", core_chunk_index, METH_VARARGS,
     "chunk_index(entry, queue) -> int | None: the index if `entry` is named like a chunk of `queue`."},
    {"chunk_stamp", core_chunk_stamp, METH_VARARGS,
     "chunk_stamp(name) -> (queue_id, index, queue_dev, queue_ino) | None: whose overflow chunk a segment is."},
    {"object_locked", core_object_locked, METH_VARARGS,
     "object_locked(dev, ino) -> bool | None: does any process hold a lease on that object?"},
    {"unpublished", core_unpublished, METH_VARARGS,
     "unpublished(name) -> bool: a shmring segment whose maker died before publishing it."},
    {"_leave_all", core_leave_all, METH_NOARGS, "_leave_all(): end every attachment of this process (at exit)."},
    {"_after_fork_child", core_after_fork_child, METH_NOARGS,
     "_after_fork_child(): enter a forked child in the rosters of the segments it inherited."},
    {"process_alive", core_process_alive, METH_VARARGS,
     "process_alive(pid, start_time) -> bool: is that very process still running?"},
    {"process_start_time", core_process_start_time, METH_VARARGS,
     "process_start_time(pid) -> int | None: start time in clock ticks after boot."},
    {"fence", core_fence, METH_NOARGS, "fence(): a sequentially consistent memory barrier."},
    {"channel_info", core_channel_info, METH_O,
     "channel_info(mapping) -> dict: counters, fill level and both ends of a channel segment."},
    {"create_channel", core_create_channel, METH_VARARGS,
     "create_channel(name, capacity, wait, spin_ns, mode) -> Mapping: a new, initialised channel segment."},
    {"queue_info", core_queue_info, METH_O, "queue_info(mapping) -> dict: a queue's counters (a snapshot)."},
    {"topic_info", core_topic_info, METH_O, "topic_info(mapping) -> dict: a topic's counters (a snapshot)."},
    {"create_topic", core_create_topic, METH_VARARGS,
     "create_topic(name, capacity, policy, max_subscribers, spin_ns, mode) -> Mapping: a new topic segment."},
    {"create_queue", core_create_queue, METH_VARARGS,
     "create_queue(name, capacity, maxsize, flags, spin_ns, mode) -> Mapping: a new, initialised queue segment."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    "shmring._core",
    "The C core of shmring: segments, atomics and futexes over include/shmring.h.",
    -1,
    core_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void)
{
    PyObject *m, *errors;
    if (PyType_Ready(&MappingType) < 0)
        return NULL;
    errors = PyImport_ImportModule("shmring._errors");
    if (errors == NULL)
        return NULL;
    error_by_code = PyObject_GetAttrString(errors, "ERROR_BY_CODE");
    buffer_in_use_error = PyObject_GetAttrString(errors, "BufferInUseError");
    corrupted_error = PyObject_GetAttrString(errors, "CorruptedError");
    timeout_error = PyObject_GetAttrString(errors, "Timeout");
    closed_error = PyObject_GetAttrString(errors, "Closed");
    peer_gone_error = PyObject_GetAttrString(errors, "PeerGone");
    role_taken_error = PyObject_GetAttrString(errors, "RoleTaken");
    owner_died_error = PyObject_GetAttrString(errors, "OwnerDied");
    not_recoverable_error = PyObject_GetAttrString(errors, "LockNotRecoverable");
    Py_DECREF(errors);
    if (owner_died_error == NULL || not_recoverable_error == NULL)
        return NULL;
    if (error_by_code == NULL || buffer_in_use_error == NULL || corrupted_error == NULL ||
        timeout_error == NULL || closed_error == NULL || peer_gone_error == NULL || role_taken_error == NULL)
        return NULL;
    if (PyType_Ready(&LoanType) < 0 || PyType_Ready(&ChannelType) < 0 || PyType_Ready(&SyncCellType) < 0)
        return NULL;
    if (pthread_atfork(NULL, NULL, after_fork_in_child) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    m = PyModule_Create(&core_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&MappingType);
    Py_INCREF(&ChannelType);
    Py_INCREF(&LoanType);
    Py_INCREF(&SyncCellType);
    if (PyModule_AddObject(m, "Mapping", (PyObject *)&MappingType) < 0 ||
        PyModule_AddObject(m, "SyncCell", (PyObject *)&SyncCellType) < 0 ||
        PyModule_AddObject(m, "Channel", (PyObject *)&ChannelType) < 0 ||
        PyModule_AddObject(m, "Loan", (PyObject *)&LoanType) < 0 ||
        PyModule_AddIntConstant(m, "WAIT_SPIN", SHMRING_WAIT_SPIN) < 0 ||
        PyModule_AddIntConstant(m, "WAIT_YIELD", SHMRING_WAIT_YIELD) < 0 ||
        PyModule_AddIntConstant(m, "WAIT_BLOCK", SHMRING_WAIT_BLOCK) < 0 ||
        PyModule_AddIntConstant(m, "WAIT_ADAPTIVE", SHMRING_WAIT_ADAPTIVE) < 0 ||
        PyModule_AddIntConstant(m, "WAIT_SEMAPHORE", SHMRING_WAIT_SEMAPHORE) < 0 ||
        PyModule_AddIntConstant(m, "CHANNEL_CTRL_SIZE", SHMRING_CHANNEL_CTRL_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "CHANNEL_MIN_CAPACITY", SHMRING_CHANNEL_MIN_CAPACITY) < 0 ||
        PyModule_AddObject(m, "CHANNEL_MAX_CAPACITY", PyLong_FromUnsignedLongLong(SHMRING_CHANNEL_MAX_CAPACITY)) < 0 ||
        PyModule_AddIntConstant(m, "CHANNEL_DEFAULT_SPIN_NS", SHMRING_CHANNEL_DEFAULT_SPIN_NS) < 0 ||
        PyModule_AddIntConstant(m, "HEADER_SIZE", SHMRING_HEADER_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "LAYOUT_VERSION", SHMRING_LAYOUT_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "KIND_RAW", SHMRING_KIND_RAW) < 0 ||
        PyModule_AddIntConstant(m, "KIND_CHANNEL", SHMRING_KIND_CHANNEL) < 0 ||
        PyModule_AddIntConstant(m, "KIND_SYNC", SHMRING_KIND_SYNC) < 0 ||
        PyModule_AddIntConstant(m, "KIND_QUEUE", SHMRING_KIND_QUEUE) < 0 ||
        PyModule_AddIntConstant(m, "KIND_TOPIC", SHMRING_KIND_TOPIC) < 0 || queue_module_init(m) < 0 ||
        topic_module_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
