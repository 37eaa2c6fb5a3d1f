/*
 * queue_values.c - the value encoding of queue items (shmring/value.h):
 * None, bool, 64-bit int, float, bytes, str and tuples of them, of the
 * exact types, written and read several times faster than a pickle.
 * value_encode decides whether an object is made only of those (anything
 * else, a subclass included, goes to pickle as before) and writes it;
 * value_decode makes the object back from a record, checking every length
 * (shmring_value_next) before it reads.
 */
#include "core.h"

/* How many values one item may hold before it is pickled instead: the
 * encoding writes a value each time it is reached, so a tuple that holds
 * the same tuple many times over (pickle writes it once) must not grow
 * without bound. */
#define VALUE_MAX_NODES 4096

/* The bytes `obj` takes encoded, or -1 when it is not made only of exact
 * encodable values, or is too large for one record (UINT32_MAX bytes) or
 * too many values (*budget counts them down): no exception left set, the
 * caller pickles it. */
static Py_ssize_t value_size(PyObject *obj, unsigned depth, Py_ssize_t *budget)
{
    if (--*budget < 0)
        return -1;
    if (obj == Py_None || obj == Py_True || obj == Py_False)
        return 1;
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow != 0 || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return -1;
        }
        return 9;
    }
    if (PyFloat_CheckExact(obj))
        return 9;
    if (PyBytes_CheckExact(obj))
        return PyBytes_GET_SIZE(obj) <= (Py_ssize_t)UINT32_MAX - 5 ? 5 + PyBytes_GET_SIZE(obj) : -1;
    if (PyUnicode_CheckExact(obj)) {
        Py_ssize_t n;
        if (PyUnicode_AsUTF8AndSize(obj, &n) == NULL) { /* lone surrogates: pickle keeps them */
            PyErr_Clear();
            return -1;
        }
        return n <= (Py_ssize_t)UINT32_MAX - 5 ? 5 + n : -1;
    }
    if (PyTuple_CheckExact(obj) && depth < SHMRING_VALUE_MAX_DEPTH) {
        Py_ssize_t i, total = 5, n = PyTuple_GET_SIZE(obj);
        for (i = 0; i < n; i++) {
            Py_ssize_t one = value_size(PyTuple_GET_ITEM(obj, i), depth + 1, budget);
            if (one < 0 || one > (Py_ssize_t)UINT32_MAX - total)
                return -1; /* (a record holds at most UINT32_MAX bytes) */
            total += one;
        }
        return total;
    }
    return -1;
}

static unsigned char *put_length(unsigned char *q, char kind, Py_ssize_t n)
{
    uint32_t n32 = (uint32_t)n;
    *q++ = (unsigned char)kind;
    memcpy(q, &n32, 4);
    return q + 4;
}

/* Write `obj` (value_size said it encodes) at q; past its end. */
static unsigned char *value_write(PyObject *obj, unsigned char *q)
{
    if (obj == Py_None || obj == Py_True || obj == Py_False) {
        *q++ = (unsigned char)(obj == Py_None ? 'N' : obj == Py_True ? 'T' : 'F');
    } else if (PyLong_CheckExact(obj)) {
        int overflow;
        int64_t v = (int64_t)PyLong_AsLongLongAndOverflow(obj, &overflow); /* in range: value_size saw it */
        *q++ = 'i';
        memcpy(q, &v, 8);
        q += 8;
    } else if (PyFloat_CheckExact(obj)) {
        double d = PyFloat_AS_DOUBLE(obj);
        *q++ = 'd';
        memcpy(q, &d, 8);
        q += 8;
    } else if (PyBytes_CheckExact(obj)) {
        q = put_length(q, 'b', PyBytes_GET_SIZE(obj));
        memcpy(q, PyBytes_AS_STRING(obj), (size_t)PyBytes_GET_SIZE(obj));
        q += PyBytes_GET_SIZE(obj);
    } else if (PyUnicode_CheckExact(obj)) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &n); /* cached by value_size */
        q = put_length(q, 's', n);
        memcpy(q, utf8, (size_t)n);
        q += n;
    } else {
        Py_ssize_t i, n = PyTuple_GET_SIZE(obj);
        q = put_length(q, 't', n);
        for (i = 0; i < n; i++)
            q = value_write(PyTuple_GET_ITEM(obj, i), q);
    }
    return q;
}

/* One walk for the common small item: write `obj` at q, stopping at `end`.
 * Past its end; NULL when it does not encode (no exception left set) and
 * `end` when it does not fit (the caller then sizes it first). */
static unsigned char *value_write_bounded(PyObject *obj, unsigned char *q, const unsigned char *end, unsigned depth,
                                          Py_ssize_t *budget)
{
    Py_ssize_t n, room = end - q;
    if (--*budget < 0)
        return NULL;
    if (obj == Py_None || obj == Py_True || obj == Py_False) {
        if (room < 1)
            return (unsigned char *)end;
        *q++ = (unsigned char)(obj == Py_None ? 'N' : obj == Py_True ? 'T' : 'F');
        return q;
    }
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        int64_t v64 = (int64_t)v;
        if (overflow != 0 || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return NULL;
        }
        if (room < 9)
            return (unsigned char *)end;
        *q = 'i';
        memcpy(q + 1, &v64, 8);
        return q + 9;
    }
    if (PyFloat_CheckExact(obj)) {
        double d = PyFloat_AS_DOUBLE(obj);
        if (room < 9)
            return (unsigned char *)end;
        *q = 'd';
        memcpy(q + 1, &d, 8);
        return q + 9;
    }
    if (PyBytes_CheckExact(obj) || PyUnicode_CheckExact(obj)) {
        const char *data;
        if (PyBytes_CheckExact(obj)) {
            data = PyBytes_AS_STRING(obj);
            n = PyBytes_GET_SIZE(obj);
        } else if ((data = PyUnicode_AsUTF8AndSize(obj, &n)) == NULL) { /* lone surrogates: pickled */
            PyErr_Clear();
            return NULL;
        }
        if (room < 5 || n > room - 5)
            return (unsigned char *)end; /* (the sizing walk then checks the record limit) */
        q = put_length(q, PyBytes_CheckExact(obj) ? 'b' : 's', n);
        memcpy(q, data, (size_t)n);
        return q + n;
    }
    if (PyTuple_CheckExact(obj) && depth < SHMRING_VALUE_MAX_DEPTH) {
        Py_ssize_t i;
        n = PyTuple_GET_SIZE(obj);
        if (room < 5)
            return (unsigned char *)end;
        q = put_length(q, 't', n);
        for (i = 0; i < n; i++) {
            q = value_write_bounded(PyTuple_GET_ITEM(obj, i), q, end, depth + 1, budget);
            if (q == NULL || q == end)
                return q;
        }
        return q;
    }
    return NULL;
}

/* Items up to this many encoded bytes are written in one walk through a
 * buffer on the stack (then copied once into their bytes object); larger
 * ones are sized first and written in place. */
#define VALUE_SMALL_ITEM 512

int value_encode(PyObject *obj, PyObject **out)
{
    unsigned char small[VALUE_SMALL_ITEM], *end;
    Py_ssize_t budget = VALUE_MAX_NODES, size;
    end = value_write_bounded(obj, small, small + sizeof small, 0, &budget);
    if (end == NULL)
        return 0;
    if (end != small + sizeof small) { /* (an item of exactly the buffer's size is sized again: harmless) */
        *out = PyBytes_FromStringAndSize((const char *)small, end - small);
        return *out == NULL ? -1 : 1;
    }
    budget = VALUE_MAX_NODES;
    size = value_size(obj, 0, &budget);
    if (size < 0)
        return 0;
    *out = PyBytes_FromStringAndSize(NULL, size);
    if (*out == NULL)
        return -1;
    value_write(obj, (unsigned char *)PyBytes_AS_STRING(*out));
    return 1;
}

/* The object of the value at *p (before end), tuples `depth` deep; NULL
 * with an exception. */
static PyObject *value_read(const unsigned char **p, const unsigned char *end, unsigned depth)
{
    shmring_value v;
    PyObject *tuple;
    uint32_t i;
    if (shmring_value_next(p, end, &v) != SHMRING_OK)
        return PyErr_Format(corrupted_error, "a value-encoded queue item is damaged: a length runs past its end, "
                                             "or an unknown kind");
    switch (v.kind) {
    case 'N':
        Py_RETURN_NONE;
    case 'T':
        Py_RETURN_TRUE;
    case 'F':
        Py_RETURN_FALSE;
    case 'i':
        return PyLong_FromLongLong((long long)v.i);
    case 'd':
        return PyFloat_FromDouble(v.d);
    case 'b':
        return PyBytes_FromStringAndSize((const char *)v.data, (Py_ssize_t)v.n);
    case 's': {
        PyObject *s = PyUnicode_DecodeUTF8((const char *)v.data, (Py_ssize_t)v.n, "strict");
        if (s == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            PyErr_Format(corrupted_error, "a value-encoded queue item holds a str that is not UTF-8");
        }
        return s;
    }
    default: /* 't': shmring_value_next knows no other kind */
        if (depth >= SHMRING_VALUE_MAX_DEPTH)
            return PyErr_Format(corrupted_error, "a value-encoded queue item nests tuples deeper than %u",
                                SHMRING_VALUE_MAX_DEPTH);
        tuple = PyTuple_New((Py_ssize_t)v.n); /* n <= the bytes left: no huge allocation */
        if (tuple == NULL)
            return NULL;
        for (i = 0; i < v.n; i++) {
            PyObject *item = value_read(p, end, depth + 1);
            if (item == NULL) {
                Py_DECREF(tuple);
                return NULL;
            }
            PyTuple_SET_ITEM(tuple, (Py_ssize_t)i, item);
        }
        return tuple;
    }
}

PyObject *value_decode(const void *payload, uint64_t len)
{
    const unsigned char *p = (const unsigned char *)payload, *end = p + len;
    PyObject *obj = value_read(&p, end, 0);
    if (obj != NULL && p != end) {
        Py_DECREF(obj);
        return PyErr_Format(corrupted_error, "a value-encoded queue item has %llu bytes after its value",
                            (unsigned long long)(end - p));
    }
    return obj;
}

/* -- for the tests and for other kinds of messages ------------------------------- */

static PyObject *core_value_encode(PyObject *Py_UNUSED(module), PyObject *obj)
{
    PyObject *out;
    int rc = value_encode(obj, &out);
    if (rc < 0)
        return NULL;
    if (rc == 0)
        Py_RETURN_NONE;
    return out;
}

static PyObject *core_value_decode(PyObject *Py_UNUSED(module), PyObject *data)
{
    Py_buffer view;
    PyObject *obj;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    obj = value_decode(view.buf, (uint64_t)view.len);
    PyBuffer_Release(&view);
    return obj;
}

PyMethodDef value_functions[] = {
    {"value_encode", core_value_encode, METH_O,
     "value_encode($module, obj, /)\n--\n\n"
     "The value encoding of obj (shmring/value.h), or None if obj is not made only of exact None, bool,\n"
     "64-bit int, float, bytes, str and tuples of these."},
    {"value_decode", core_value_decode, METH_O,
     "value_decode($module, data, /)\n--\n\n"
     "The object of a value encoding; CorruptedError if it is damaged."},
    {NULL, NULL, 0, NULL},
};
