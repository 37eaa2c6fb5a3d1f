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

/* Longest time the GIL is given away in one blocking slice: bounds the delay
 * before a pending signal (Ctrl-C) is noticed. */
#define WAIT_SLICE_NS (50 * 1000 * 1000ull)

static PyObject *error_by_code; /* shmring._errors.ERROR_BY_CODE */
static PyObject *buffer_in_use_error;

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
/* Mapping: one mapped segment, exported through the buffer protocol         */
/* ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    shmring_segment seg;
    PyObject *name;        /* str, with the leading '/' */
    Py_ssize_t exports;    /* live Py_buffer views */
} MappingObject;

static PyTypeObject MappingType;

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
    return self;
}

static void mapping_dealloc(MappingObject *self)
{
    /* No view can be alive here: each holds a reference to us. */
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
    if (shmring_segment_close(&self->seg) != SHMRING_OK)
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, self->name);
    Py_RETURN_NONE;
}

static PyObject *mapping_header(MappingObject *self, PyObject *Py_UNUSED(ignored))
{
    const shmring_segment_header *h;
    if (mapping_check_open(self) < 0)
        return NULL;
    h = (const shmring_segment_header *)self->seg.base;
    return Py_BuildValue(
        "{s:O,s:I,s:I,s:I,s:I,s:K,s:L,s:K,s:K,s:I,s:I}",
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
        "flags", (unsigned)h->flags);
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

static PyObject *mapping_get_readonly(MappingObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(!self->seg.writable);
}

static PyObject *mapping_get_exports(MappingObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->exports);
}

static PyObject *mapping_repr(MappingObject *self)
{
    if (self->seg.base == NULL)
        return PyUnicode_FromFormat("<shmring._core.Mapping %R closed>", self->name);
    return PyUnicode_FromFormat("<shmring._core.Mapping %R size=%zu>", self->name, self->seg.map_size);
}

static PyMethodDef mapping_methods[] = {
    {"close", (PyCFunction)mapping_close, METH_NOARGS,
     "Unmap; raises BufferInUseError while exported buffers are alive."},
    {"header", (PyCFunction)mapping_header, METH_NOARGS, "The segment header fields as a dict."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef mapping_getset[] = {
    {"size", (getter)mapping_get_size, NULL, "Bytes mapped (header + payload).", NULL},
    {"closed", (getter)mapping_get_closed, NULL, "True once unmapped.", NULL},
    {"readonly", (getter)mapping_get_readonly, NULL, "True if mapped read-only.", NULL},
    {"exports", (getter)mapping_get_exports, NULL, "Number of live exported buffers.", NULL},
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
    .tp_doc = "A mapped shmring segment (header + payload); made by create() or open().",
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
    int readonly, allow_other_owner;
    shmring_segment seg;
    unsigned flags = 0;
    int rc;

    if (!PyArg_ParseTuple(args, "O&pp:open", name_converter, &name, &readonly, &allow_other_owner))
        return NULL;
    if (readonly)
        flags |= SHMRING_OPEN_READONLY;
    if (allow_other_owner)
        flags |= SHMRING_OPEN_ALLOW_OTHER_OWNER;
    Py_BEGIN_ALLOW_THREADS
    rc = shmring_segment_open(name.path, flags, &seg);
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
/* Module functions: 32-bit atomics and futex on any writable buffer         */
/* ------------------------------------------------------------------------ */

/* Get a buffer and the aligned 32-bit word at `offset` inside it. */
static uint32_t *word_at(PyObject *obj, Py_buffer *view, Py_ssize_t offset, int writable)
{
    uint32_t *word;
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0)
        return NULL;
    if (offset < 0 || offset > view->len - (Py_ssize_t)sizeof(uint32_t)) {
        PyErr_Format(PyExc_ValueError, "offset %zd out of range for a buffer of %zd bytes", offset, view->len);
        goto fail;
    }
    word = (uint32_t *)((char *)view->buf + offset);
    if (((uintptr_t)word & (sizeof(uint32_t) - 1)) != 0) {
        PyErr_Format(PyExc_ValueError, "offset %zd is not 4-byte aligned", offset);
        goto fail;
    }
    return word;
fail:
    PyBuffer_Release(view);
    return NULL;
}

static PyObject *core_atomic_load_u32(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *obj;
    Py_ssize_t offset;
    Py_buffer view;
    uint32_t *word, value;
    if (!PyArg_ParseTuple(args, "On:atomic_load_u32", &obj, &offset))
        return NULL;
    if ((word = word_at(obj, &view, offset, 0)) == NULL)
        return NULL;
    /* acquire: pairs with the release store of atomic_store_u32 in the
     * writing process, so data written before that store is visible. */
    value = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(value);
}

static PyObject *core_atomic_store_u32(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *obj;
    Py_ssize_t offset;
    unsigned int value;
    Py_buffer view;
    uint32_t *word;
    if (!PyArg_ParseTuple(args, "OnI:atomic_store_u32", &obj, &offset, &value))
        return NULL;
    if ((word = word_at(obj, &view, offset, 1)) == NULL)
        return NULL;
    /* release: pairs with the acquire load of atomic_load_u32 (or the futex
     * re-check) in the reading process: publishes earlier writes. */
    __atomic_store_n(word, (uint32_t)value, __ATOMIC_RELEASE);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* futex_wait(buffer, offset, expected, timeout) -> bool
 * Sleep while the word equals `expected`.  True once it differs (or a wake
 * arrived), False on timeout.  timeout None or negative: no limit. */
static PyObject *core_futex_wait(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *obj, *timeout_obj = Py_None, *result = NULL;
    Py_ssize_t offset;
    unsigned int expected;
    Py_buffer view;
    uint32_t *word;
    uint64_t deadline = 0, now;
    int has_deadline = 0, rc, err;

    if (!PyArg_ParseTuple(args, "OnI|O:futex_wait", &obj, &offset, &expected, &timeout_obj))
        return NULL;
    if (timeout_obj != Py_None) {
        double t = PyFloat_AsDouble(timeout_obj);
        if (t == -1.0 && PyErr_Occurred())
            return NULL;
        if (t != t) {
            PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
            return NULL;
        }
        if (t >= 0) {
            has_deadline = 1;
            if (t > 1e9)
                t = 1e9; /* ~31 years: no limit in practice, no overflow */
            deadline = shmring_now_ns() + (uint64_t)(t * 1e9);
        }
    }
    if ((word = word_at(obj, &view, offset, 1)) == NULL)
        return NULL;
    for (;;) {
        struct timespec slice;
        uint64_t wait_ns = WAIT_SLICE_NS;
        /* acquire: pairs with the release store of the waker, so that when
         * the value has changed its earlier writes are visible. */
        if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != expected) {
            result = Py_True;
            break;
        }
        if (has_deadline) {
            now = shmring_now_ns();
            if (now >= deadline) {
                result = Py_False;
                break;
            }
            if (deadline - now < wait_ns)
                wait_ns = deadline - now;
        }
        slice.tv_sec = (time_t)(wait_ns / 1000000000u);
        slice.tv_nsec = (long)(wait_ns % 1000000000u);
        Py_BEGIN_ALLOW_THREADS
        rc = shmring_futex_wait(word, expected, &slice);
        Py_END_ALLOW_THREADS
        err = errno;
        if (rc == SHMRING_OK) {
            result = Py_True;
            break;
        }
        if (err != ETIMEDOUT && err != EINTR) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            break;
        }
        if (PyErr_CheckSignals() < 0)
            break;
    }
    PyBuffer_Release(&view);
    Py_XINCREF(result);
    return result;
}

static PyObject *core_futex_wake(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *obj;
    Py_ssize_t offset;
    int n = INT_MAX, woken;
    Py_buffer view;
    uint32_t *word;
    if (!PyArg_ParseTuple(args, "On|i:futex_wake", &obj, &offset, &n))
        return NULL;
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "n must be at least 1");
        return NULL;
    }
    if ((word = word_at(obj, &view, offset, 1)) == NULL)
        return NULL;
    woken = shmring_futex_wake(word, n);
    PyBuffer_Release(&view);
    if (woken < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(woken);
}

/* ------------------------------------------------------------------------ */
/* Module                                                                    */
/* ------------------------------------------------------------------------ */

static PyMethodDef core_methods[] = {
    {"create", core_create, METH_VARARGS,
     "create(name, payload_size, kind, mode) -> Mapping: make, reserve and publish a new segment."},
    {"open", core_open, METH_VARARGS,
     "open(name, readonly, allow_other_owner) -> Mapping: attach to and validate a segment."},
    {"unlink", core_unlink, METH_VARARGS, "unlink(name): remove a segment's name."},
    {"process_alive", core_process_alive, METH_VARARGS,
     "process_alive(pid, start_time) -> bool: is that very process still running?"},
    {"process_start_time", core_process_start_time, METH_VARARGS,
     "process_start_time(pid) -> int | None: start time in clock ticks after boot."},
    {"atomic_load_u32", core_atomic_load_u32, METH_VARARGS,
     "atomic_load_u32(buffer, offset) -> int: acquire load of an aligned 32-bit word."},
    {"atomic_store_u32", core_atomic_store_u32, METH_VARARGS,
     "atomic_store_u32(buffer, offset, value): release store of an aligned 32-bit word."},
    {"futex_wait", core_futex_wait, METH_VARARGS,
     "futex_wait(buffer, offset, expected, timeout=None) -> bool: sleep while the word equals expected."},
    {"futex_wake", core_futex_wake, METH_VARARGS,
     "futex_wake(buffer, offset, n=all) -> int: wake sleepers on the word."},
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
    Py_DECREF(errors);
    if (error_by_code == NULL || buffer_in_use_error == NULL)
        return NULL;
    m = PyModule_Create(&core_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&MappingType);
    if (PyModule_AddObject(m, "Mapping", (PyObject *)&MappingType) < 0 ||
        PyModule_AddIntConstant(m, "HEADER_SIZE", SHMRING_HEADER_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "LAYOUT_VERSION", SHMRING_LAYOUT_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "KIND_RAW", SHMRING_KIND_RAW) < 0 ||
        PyModule_AddIntConstant(m, "KIND_CHANNEL", SHMRING_KIND_CHANNEL) < 0 ||
        PyModule_AddIntConstant(m, "KIND_SYNC", SHMRING_KIND_SYNC) < 0 ||
        PyModule_AddIntConstant(m, "KIND_QUEUE", SHMRING_KIND_QUEUE) < 0 ||
        PyModule_AddIntConstant(m, "KIND_TOPIC", SHMRING_KIND_TOPIC) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
