/*
 * args.c - argument and timeout parsing of the methods called through
 * vectorcall (METH_FASTCALL | METH_KEYWORDS), shared by the types.
 */
#include "core.h"

const char *const ARGS_TIMEOUT[] = {"timeout"};
const char *const ARGS_DATA_TIMEOUT[] = {"data", "timeout"};
const char *const ARGS_N_TIMEOUT[] = {"n", "timeout"};
const char *const ARGS_MAX_TIMEOUT[] = {"max_messages", "timeout"};
const char *const ARGS_BUFFERS_TIMEOUT[] = {"buffers", "timeout"};

int parse_timeout_number(PyObject *obj, uint64_t *deadline)
{
    double t;
    *deadline = 0;
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

int parse_args_keywords(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
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

int parse_count(PyObject *obj, Py_ssize_t min, const char *too_small, Py_ssize_t *out)
{
    *out = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (*out == -1 && PyErr_Occurred())
        return -1;
    if (*out < min) {
        PyErr_Format(PyExc_ValueError, too_small, *out);
        return -1;
    }
    return 0;
}

int size_converter(PyObject *obj, void *out)
{
    size_arg *size = (size_arg *)out;
    int overflow;
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "a size must be an int, not %.100s", Py_TYPE(obj)->tp_name);
        return 0;
    }
    size->obj = obj;
    size->value = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (size->value == -1 && PyErr_Occurred())
        return 0;
    if (overflow != 0) /* out of every range: the caller reports obj as written */
        size->value = overflow > 0 ? LLONG_MAX : LLONG_MIN;
    return 1;
}

/* The arguments (count, timeout) of recv_many() and reserve(), `fname`: the
 * count (parse_count: at least `min`), then the timeout.  -1 with an
 * exception, else what parse_timeout returned. */
int parse_count_timeout(const char *fname, const char *const *names, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames, Py_ssize_t min, const char *too_small, Py_ssize_t *count,
                        uint64_t *deadline)
{
    PyObject *a[2];
    if (parse_args(fname, args, nargs, kwnames, names, 1, 2, a) < 0 || parse_count(a[0], min, too_small, count) < 0)
        return -1;
    return parse_timeout(a[1], deadline);
}
