/*
 * array.c - the array message (shmring/array.h) for shmring.arrays:
 * array_header() writes the header of one, array_check() checks one and
 * says what it holds.  No shared state: plain bytes of a message.
 */
#include "core.h"

/* array_header(typestr, order, shape): the header bytes (up to the data
 * offset) of an array message. */
static PyObject *core_array_header(PyObject *Py_UNUSED(module), PyObject *args)
{
    const char *typestr;
    int order;
    PyObject *shape_obj, *out;
    uint64_t shape[SHMRING_ARRAY_MAX_NDIM];
    Py_ssize_t ndim, i;
    if (!PyArg_ParseTuple(args, "sCO!:array_header", &typestr, &order, &PyTuple_Type, &shape_obj))
        return NULL;
    if (order != 'C' && order != 'F')
        return PyErr_Format(PyExc_ValueError, "the order of an array message is 'C' or 'F'");
    ndim = PyTuple_GET_SIZE(shape_obj);
    if (ndim > (Py_ssize_t)SHMRING_ARRAY_MAX_NDIM)
        return PyErr_Format(PyExc_ValueError, "arrays of more than %u dimensions cannot be sent",
                            SHMRING_ARRAY_MAX_NDIM);
    for (i = 0; i < ndim; i++) {
        shape[i] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(shape_obj, i));
        if (PyErr_Occurred())
            return NULL;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)shmring_array_data_offset((unsigned)ndim));
    if (out == NULL)
        return NULL;
    if (shmring_array_write_header(PyBytes_AS_STRING(out), typestr, (char)order, (unsigned)ndim, shape) !=
        SHMRING_OK) {
        Py_DECREF(out);
        return PyErr_Format(PyExc_ValueError, "no array message describes type string %R, order %c, shape %R",
                            PyTuple_GET_ITEM(args, 0), order, shape_obj);
    }
    return out;
}

/* array_check(message): (typestr, order, data offset, nbytes, shape) of an
 * array message, every field checked; ValueError if it is not one.  The
 * buffer is released before returning. */
static PyObject *core_array_check(PyObject *Py_UNUSED(module), PyObject *message)
{
    Py_buffer view;
    shmring_array_header h;
    uint64_t shape[SHMRING_ARRAY_MAX_NDIM];
    PyObject *dims;
    unsigned i;
    int rc;
    if (PyObject_GetBuffer(message, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    rc = shmring_array_check(view.buf, (uint64_t)view.len, &h, shape);
    PyBuffer_Release(&view);
    if (rc != SHMRING_OK)
        return PyErr_Format(PyExc_ValueError,
                            "not an array message (or its header does not add up: magic, version, ndim, order, "
                            "type string, data offset, shape and length; docs/PROTOCOL.md section 7)");
    dims = PyTuple_New(h.ndim);
    if (dims == NULL)
        return NULL;
    for (i = 0; i < h.ndim; i++) {
        PyObject *n = PyLong_FromUnsignedLongLong(shape[i]);
        if (n == NULL) {
            Py_DECREF(dims);
            return NULL;
        }
        PyTuple_SET_ITEM(dims, i, n);
    }
    /* The type string is printable ASCII: shmring_array_itemsize took it. */
    return Py_BuildValue("s#CKKN", h.typestr, (Py_ssize_t)strnlen(h.typestr, sizeof h.typestr), h.order,
                         (unsigned long long)h.data_offset, (unsigned long long)h.nbytes, dims);
}

PyMethodDef array_functions[] = {
    {"array_header", core_array_header, METH_VARARGS,
     "array_header($module, typestr, order, shape, /)\n--\n\n"
     "The header of an array message (docs/PROTOCOL.md section 7), up to its data offset."},
    {"array_check", core_array_check, METH_O,
     "array_check($module, message, /)\n--\n\n"
     "(typestr, order, data offset, nbytes, shape) of an array message; ValueError if it is not one."},
    {NULL, NULL, 0, NULL},
};
