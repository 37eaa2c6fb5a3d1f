/*
 * mapping.c - Mapping, one attachment to a segment exported through the
 * buffer protocol, and the module functions about segments (create, open,
 * unlink, in_use, the overflow chunks' names, process liveness; leave_all
 * at exit and after_fork_child).
 */
#include "core.h"

/* Every Mapping still attached, for leave_all (exit) and after_fork_child. */
static MappingObject *attached_mappings;

int process_exiting;

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

int mapping_check_open(MappingObject *self)
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

PyObject *mapping_from_result(int rc, shmring_segment *seg, PyObject *name)
{
    if (rc != SHMRING_OK)
        return raise_code(rc, name);
    return (PyObject *)mapping_new(seg, name);
}

void mapping_leave_now(MappingObject *self)
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

/* duplicate(readonly=None) -> Mapping: a second, independent attachment,
 * read-only or writable as this one is unless `readonly` says. */
static PyObject *mapping_duplicate(MappingObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int readonly = !self->seg.writable, rc;
    shmring_segment seg;
    if (nargs > 1)
        return PyErr_Format(PyExc_TypeError, "duplicate() takes at most 1 argument (%zd given)", nargs);
    if (nargs == 1 && args[0] != Py_None && (readonly = PyObject_IsTrue(args[0])) < 0)
        return NULL;
    if (mapping_check_open(self) < 0)
        return NULL;
    if (self->seg.lease_fd < 0)
        return PyErr_Format(PyExc_ValueError, "segment %R: this mapping is not attached any more", self->name);
    Py_BEGIN_ALLOW_THREADS
    rc = shmring_segment_reopen(&self->seg,
                                SHMRING_OPEN_ALLOW_OTHER_OWNER | (readonly ? SHMRING_OPEN_READONLY : 0u), &seg);
    Py_END_ALLOW_THREADS
    return mapping_from_result(rc, &seg, self->name);
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
     "close($self, /)\n--\n\nLeave and unmap; raises BufferInUseError while exported buffers are alive."},
    {"leave", (PyCFunction)mapping_leave, METH_NOARGS,
     "leave($self, /)\n--\n\nEnd this attachment (the last one out removes the segment); the memory stays "
     "mapped."},
    {"duplicate", (PyCFunction)(void (*)(void))mapping_duplicate, METH_FASTCALL,
     "duplicate($self, readonly=None, /)\n--\n\nA second, independent attachment to the same segment "
     "(read-only if this one is, unless readonly says)."},
    {"users", (PyCFunction)mapping_users, METH_NOARGS,
     "users($self, /)\n--\n\nThe roster: (pid, alive, attached_ns) for each attachment listed."},
    {"header", (PyCFunction)mapping_header, METH_NOARGS,
     "header($self, /)\n--\n\nThe segment header fields as a dict."},
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

PyTypeObject MappingType = {
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

/* The segment name of `obj`, checked (the O& converter of the functions
 * that take one). */
int name_converter(PyObject *obj, void *out)
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
    size_arg payload_arg; /* a negative or huge size is reported as written */
    unsigned long long payload;
    unsigned int kind, mode, object_type = 0;
    shmring_segment seg;
    int rc;

    if (!PyArg_ParseTuple(args, "O&O&II|I:create", name_converter, &name, size_converter, &payload_arg, &kind, &mode,
                          &object_type))
        return NULL;
    payload = (unsigned long long)payload_arg.value;
    if (payload_arg.value <= 0 || payload > (unsigned long long)PY_SSIZE_T_MAX - SHMRING_HEADER_SIZE) {
        PyErr_Format(PyExc_ValueError, "segment size must be between 1 and %zd bytes, not %R",
                     (Py_ssize_t)(PY_SSIZE_T_MAX - SHMRING_HEADER_SIZE), payload_arg.obj);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = shmring_segment_create_unpublished(name.path, payload, kind, (mode_t)mode, &seg);
    if (rc == SHMRING_OK) {
        shmring_segment_set_object_type(&seg, object_type);
        shmring_segment_publish(&seg);
    }
    Py_END_ALLOW_THREADS
    return mapping_from_result(rc, &seg, name.obj);
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
    return mapping_from_result(rc, &seg, name.obj);
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
    return mapping_from_result(rc, &seg, name.obj);
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

/* chunk_name(queue, index, key) -> str: the name of a queue's overflow
 * chunk, given the 16 bytes of its control block's chunk_key. */
static PyObject *core_chunk_name(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    unsigned long long index;
    const unsigned char *key;
    Py_ssize_t key_len;
    uint64_t k[2] = {0, 0};
    int i;
    char out[NAME_MAX + 2];
    if (!PyArg_ParseTuple(args, "O&Ky#:chunk_name", name_converter, &name, &index, &key, &key_len))
        return NULL;
    if (key_len != 16)
        return PyErr_Format(PyExc_ValueError, "a chunk key is 16 bytes, not %zd", key_len);
    for (i = 0; i < 16; i++)
        k[i / 8] |= (uint64_t)key[i] << (8 * (i % 8)); /* little-endian, as stored */
    if (shmring_queue_chunk_name_keyed(name.path, k[0], k[1], (uint64_t)index, out) != SHMRING_OK)
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
 * this keep their channel ends and locks, as a dead process's would.  The
 * queue items a handle still holds go back into their queue first: an
 * ordinary exit loses nothing that close() would have kept. */
static PyObject *core_leave_all(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    queue_pending_return_all();
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


MappingObject *mapping_arg(PyObject *arg, const char *fname)
{
    MappingObject *m;
    if (!PyObject_TypeCheck(arg, &MappingType)) {
        PyErr_Format(PyExc_TypeError, "%s() needs a Mapping", fname);
        return NULL;
    }
    m = (MappingObject *)arg;
    return mapping_check_open(m) < 0 ? NULL : m;
}

PyMethodDef mapping_functions[] = {
    {"create", core_create, METH_VARARGS,
     "create($module, name, payload_size, kind, mode, object_type=0, /)\n--\n\n"
     "Make, reserve and publish a new segment (object_type: which primitive a sync segment holds): a Mapping "
     "of it."},
    {"open", core_open, METH_VARARGS,
     "open($module, name, readonly, allow_other_owner, attach=True, /)\n--\n\n"
     "Attach to (or, attach=False, only look at) a segment, after validating it: a Mapping."},
    {"open_fd", core_open_fd, METH_VARARGS,
     "open_fd($module, fd, name, readonly, allow_other_owner, /)\n--\n\n"
     "Attach through an inherited descriptor: a Mapping."},
    {"unlink", core_unlink, METH_VARARGS, "unlink($module, name, /)\n--\n\nRemove a segment's name."},
    {"in_use", core_in_use, METH_VARARGS,
     "in_use($module, name, /)\n--\n\nIs any process attached to the segment?"},
    {"remove_unused", core_remove_unused, METH_VARARGS,
     "remove_unused($module, name, even_persistent=False, /)\n--\n\n"
     "Remove the segment if nobody is attached: True, else False."},
    {"chunk_name", core_chunk_name, METH_VARARGS,
     "chunk_name($module, queue, index, key, /)\n--\n\n"
     "The name of a queue's overflow chunk under its 16-byte chunk key."},
    {"chunk_index", core_chunk_index, METH_VARARGS,
     "chunk_index($module, entry, queue, /)\n--\n\n"
     "The index if `entry` is named like an overflow chunk of `queue`, else None."},
    {"chunk_stamp", core_chunk_stamp, METH_VARARGS,
     "chunk_stamp($module, name, /)\n--\n\n"
     "Whose overflow chunk a segment is: (queue_id, index, queue_dev, queue_ino), or None."},
    {"object_locked", core_object_locked, METH_VARARGS,
     "object_locked($module, dev, ino, /)\n--\n\n"
     "Does any process hold a lease on that object?  None when /proc/locks cannot tell."},
    {"unpublished", core_unpublished, METH_VARARGS,
     "unpublished($module, name, /)\n--\n\nA shmring segment whose maker died before publishing it?"},
    {"_leave_all", core_leave_all, METH_NOARGS,
     "_leave_all($module, /)\n--\n\nEnd every attachment of this process (at exit)."},
    {"_after_fork_child", core_after_fork_child, METH_NOARGS,
     "_after_fork_child($module, /)\n--\n\nEnter a forked child in the rosters of the segments it inherited."},
    {"process_alive", core_process_alive, METH_VARARGS,
     "process_alive($module, pid, start_time, /)\n--\n\nIs that very process still running?"},
    {"process_start_time", core_process_start_time, METH_VARARGS,
     "process_start_time($module, pid, /)\n--\n\nA process's start time in clock ticks after boot, or None."},
    {NULL, NULL, 0, NULL},
};
