/*
 * errors.c - the exception objects of shmring._core, and the helpers that
 * raise them for a segment.
 */
#include "core.h"

PyObject *error_by_code;
PyObject *buffer_in_use_error;
PyObject *corrupted_error;
PyObject *timeout_error;
PyObject *closed_error;
PyObject *peer_gone_error;
PyObject *role_taken_error;
PyObject *owner_died_error;
PyObject *not_recoverable_error;
PyObject *lagged_error;
PyObject *queue_empty_error;
PyObject *queue_full_error;
PyObject *queue_closed_error;
PyObject *pickle_dumps;
PyObject *pickle_loads;
PyObject *pickle_protocol;

/* What the extension raises or calls, from the modules that define them. */
static const struct {
    const char *module, *attr;
    PyObject **out;
} IMPORTS[] = {
    {"shmring._errors", "ERROR_BY_CODE", &error_by_code},
    {"shmring._errors", "BufferInUseError", &buffer_in_use_error},
    {"shmring._errors", "CorruptedError", &corrupted_error},
    {"shmring._errors", "Timeout", &timeout_error},
    {"shmring._errors", "Closed", &closed_error},
    {"shmring._errors", "PeerGone", &peer_gone_error},
    {"shmring._errors", "RoleTaken", &role_taken_error},
    {"shmring._errors", "OwnerDied", &owner_died_error},
    {"shmring._errors", "LockNotRecoverable", &not_recoverable_error},
    {"shmring._errors", "Lagged", &lagged_error},
    {"shmring._errors", "QueueClosed", &queue_closed_error},
    {"queue", "Empty", &queue_empty_error},
    {"queue", "Full", &queue_full_error},
    {"pickle", "dumps", &pickle_dumps},
    {"pickle", "loads", &pickle_loads},
    {"pickle", "HIGHEST_PROTOCOL", &pickle_protocol},
};

int errors_init(void)
{
    size_t i;
    for (i = 0; i < sizeof IMPORTS / sizeof IMPORTS[0]; i++) {
        PyObject *module = PyImport_ImportModule(IMPORTS[i].module);
        if (module == NULL)
            return -1;
        *IMPORTS[i].out = PyObject_GetAttrString(module, IMPORTS[i].attr);
        Py_DECREF(module);
        if (*IMPORTS[i].out == NULL)
            return -1;
    }
    return 0;
}

PyObject *raise_code(int code, PyObject *name)
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

PyObject *raise_corrupted(const char *kind, PyObject *name, const char *what)
{
    PyObject *msg = PyUnicode_FromFormat("%s %R: corrupted %s: a counter or record header read from shared memory "
                                         "is impossible",
                                         kind, name, what);
    if (msg != NULL) {
        PyObject *exc = PyObject_CallFunctionObjArgs(corrupted_error, msg, name, NULL);
        Py_DECREF(msg);
        if (exc != NULL) {
            PyErr_SetObject(corrupted_error, exc);
            Py_DECREF(exc);
        }
    }
    return NULL;
}

int raise_closed_meanwhile(const char *kind, PyObject *name, const char *handle)
{
    PyErr_Format(closed_error, "%s %R: this %s was closed by another thread", kind, name, handle);
    return -1;
}

/* Tell a failed send_many how many of its messages were delivered. */
void note_sent(Py_ssize_t count)
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
