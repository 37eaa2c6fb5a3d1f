/*
 * sync_semaphore.c - shmring._core.Semaphore: the counting semaphore of
 * include/shmring/sync.h (8 bytes) at an offset of a mapping.
 */
#include "core.h"

/* acquire's look: take a permit if there is one. */
static int semaphore_ready(PrimitiveObject *self, void *arg)
{
    (void)arg;
    return shmring_sem_try_acquire((shmring_sem *)self->ptr);
}

static int semaphore_sleep(PrimitiveObject *self, void *arg, uint64_t until)
{
    (void)arg;
    return shmring_sem_wait((shmring_sem *)self->ptr, until);
}

/* init(value): set the count (a fresh semaphore; nobody waits on it). */
static PyObject *semaphore_set(PrimitiveObject *self, PyObject *args)
{
    long long value;
    if (!PyArg_ParseTuple(args, "L:init", &value) || primitive_ok(self) < 0)
        return NULL;
    if (value < 0 || value > (long long)SHMRING_SEM_MAX)
        return PyErr_Format(PyExc_ValueError, "semaphore value must be at most %u", SHMRING_SEM_MAX);
    shmring_sem_init((shmring_sem *)self->ptr, (uint32_t)value);
    Py_RETURN_NONE;
}

static PyObject *semaphore_acquire(PrimitiveObject *self, PyObject *args, PyObject *kwds)
{
    int blocking, r, no_wait;
    uint64_t deadline;
    if (parse_acquire(args, kwds, "acquire", &blocking, &no_wait, &deadline) < 0 || primitive_ok(self) < 0)
        return NULL;
    r = primitive_block(self, NULL, semaphore_ready, semaphore_sleep, no_wait, deadline);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *semaphore_release(PrimitiveObject *self, PyObject *args, PyObject *kwds)
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
    if (primitive_ok(self) < 0)
        return NULL;
    if (shmring_sem_release((shmring_sem *)self->ptr, (uint32_t)n) != SHMRING_OK)
        return PyErr_Format(PyExc_ValueError, "semaphore would exceed its maximum value %u", SHMRING_SEM_MAX);
    Py_RETURN_NONE;
}

static PyObject *semaphore_value(PrimitiveObject *self, PyObject *Py_UNUSED(ignored))
{
    return primitive_word_snapshot(self, offsetof(shmring_sem, count));
}

static PyMethodDef semaphore_methods[] = {
    {"init", (PyCFunction)semaphore_set, METH_VARARGS, "init($self, value, /)\n--\n\nSet the count."},
    {"acquire", (PyCFunction)(void (*)(void))semaphore_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire($self, /, blocking=True, timeout=None)\n--\n\nTake a permit: True, or False on timeout."},
    {"release", (PyCFunction)(void (*)(void))semaphore_release, METH_VARARGS | METH_KEYWORDS,
     "release($self, /, n=1)\n--\n\nAdd n permits (1 to 2**31 - 1)."},
    {"value", (PyCFunction)semaphore_value, METH_NOARGS, "value($self, /)\n--\n\nThe count now."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject SemaphoreType = FIXED_PRIMITIVE_TYPE(
    "Semaphore", "A counting semaphore (8 bytes, 8-aligned) at an offset of a Mapping.", semaphore_methods);
