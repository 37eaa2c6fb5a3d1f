/*
 * sync_locks.c - shmring._core.SpinLock (16 bytes) and shmring._core.Mutex
 * (24 bytes, robust): the locks of include/shmring/sync.h at an offset of a
 * mapping.  Both record their holder's process token, so that a waiter
 * that finds the holder dead takes the lock over (OwnerDied).
 */
#include "core.h"

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

/* holder() of both: the token in the first 8 bytes (shmring_spinlock.owner,
 * shmring_mutex.owner). */
static PyObject *lock_holder(PrimitiveObject *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t token;
    if (primitive_ok(self) < 0)
        return NULL;
    /* relaxed: a snapshot for display. */
    token = shmring_load_relaxed((uint64_t *)self->ptr);
    if (token == 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(LO)", (long long)shmring_token_pid(token),
                         shmring_token_alive(token) ? Py_True : Py_False);
}

/* Give the lock up, by `spin` on a SpinLock or `mutex` on a Mutex: None,
 * or the exception of the code it returns. */
static PyObject *lock_give_up(PrimitiveObject *self, int (*spin)(shmring_spinlock *l, uint64_t token),
                              int (*mutex)(shmring_mutex *m, uint64_t token))
{
    int rc;
    if (primitive_ok(self) < 0)
        return NULL;
    if (Py_TYPE(self) == &MutexType)
        rc = mutex((shmring_mutex *)self->ptr, process_token_cached());
    else
        rc = spin((shmring_spinlock *)self->ptr, process_token_cached());
    if (rc != SHMRING_OK)
        return raise_lock_code(rc);
    Py_RETURN_NONE;
}

/* release() of both. */
static PyObject *lock_release(PrimitiveObject *self, PyObject *Py_UNUSED(ignored))
{
    return lock_give_up(self, shmring_spin_release, shmring_mutex_release);
}

/* abandon() of both, after OwnerDied: give the lock up unrepaired, so that
 * the next holder is told (a Mutex stays marked owner-died and its next
 * holder repairs; release() would make it not recoverable). */
static PyObject *lock_abandon(PrimitiveObject *self, PyObject *Py_UNUSED(ignored))
{
    return lock_give_up(self, shmring_spin_abandon, shmring_mutex_abandon);
}

/* The docstrings of the methods both locks have. */
PyDoc_STRVAR(lock_acquire_doc, "acquire($self, /, blocking=True, timeout=None)\n--\n\n"
                               "Take the lock: True, or False on timeout; OwnerDied (held) when its holder died.");
PyDoc_STRVAR(lock_release_doc, "release($self, /)\n--\n\nRelease the lock.");
PyDoc_STRVAR(lock_holder_doc, "holder($self, /)\n--\n\n(pid, alive) of the holder, or None when free.");

/* -- SpinLock ------------------------------------------------------------------- */

static PyObject *spinlock_acquire(PrimitiveObject *self, PyObject *args, PyObject *kwds)
{
    int blocking, no_wait, rc;
    uint64_t token, deadline;
    shmring_spinlock *l;
    if (parse_acquire(args, kwds, "acquire", &blocking, &no_wait, &deadline) < 0 || primitive_ok(self) < 0)
        return NULL;
    l = (shmring_spinlock *)self->ptr;
    token = process_token_cached();
    rc = shmring_spin_try_acquire(l, token, !blocking);
    if (rc == SHMRING_AGAIN && blocking && no_wait) {
        rc = shmring_spin_try_acquire(l, token, 1);
    } else if (rc == SHMRING_AGAIN && blocking) {
        /* Spin without the GIL (its holder may be a thread of ours that
         * needs it to get to release()), a slice at a time, signals
         * checked between slices. */
        Py_buffer pin;
        GilWait gil;
        if (primitive_pin(self, &pin) < 0)
            return NULL;
        gil_wait_init(&gil, NULL, NULL);
        rc = shmring_spin_acquire_hooked(l, token, deadline, &gil.hooks);
        PyBuffer_Release(&pin);
        if (rc < 0)
            return NULL; /* a signal handler raised */
        if (rc == SHMRING_TIMEOUT)
            rc = SHMRING_AGAIN;
    }
    if (rc == SHMRING_AGAIN)
        Py_RETURN_FALSE;
    if (rc != SHMRING_OK)
        return raise_lock_code(rc);
    Py_RETURN_TRUE;
}

static PyMethodDef spinlock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))spinlock_acquire, METH_VARARGS | METH_KEYWORDS, lock_acquire_doc},
    {"release", (PyCFunction)lock_release, METH_NOARGS, lock_release_doc},
    {"abandon", (PyCFunction)lock_abandon, METH_NOARGS,
     "abandon($self, /)\n--\n\nAfter OwnerDied, give it up unrepaired (the next holder gets OwnerDied)."},
    {"holder", (PyCFunction)lock_holder, METH_NOARGS, lock_holder_doc},
    {NULL, NULL, 0, NULL},
};

PyTypeObject SpinLockType = FIXED_PRIMITIVE_TYPE(
    "SpinLock", "A spin lock (16 bytes, 8-aligned) at an offset of a Mapping.", spinlock_methods);

/* -- Mutex ------------------------------------------------------------------------ */

static PyObject *mutex_acquire(PrimitiveObject *self, PyObject *args, PyObject *kwds)
{
    int blocking, no_wait, granted, r;
    uint64_t deadline, token;
    shmring_mutex *m;
    if (parse_acquire(args, kwds, "acquire", &blocking, &no_wait, &deadline) < 0 || primitive_ok(self) < 0)
        return NULL;
    m = (shmring_mutex *)self->ptr;
    token = process_token_cached();
    if (no_wait) {
        granted = shmring_mutex_try_acquire(m, token, 1);
        r = granted == SHMRING_AGAIN;
    } else {
        /* Spin (MUTEX_SPIN_NS), then sleep, the GIL released, looking at
         * the holder's liveness after each slice without the lock. */
        Py_buffer pin;
        if (primitive_pin(self, &pin) < 0)
            return NULL;
        r = lock_robust(m, token, deadline, &granted);
        PyBuffer_Release(&pin);
    }
    if (r < 0)
        return NULL;
    if (r > 0)
        Py_RETURN_FALSE;
    if (granted != SHMRING_OK)
        return raise_lock_code(granted);
    Py_RETURN_TRUE;
}

static PyObject *mutex_mark_consistent(PrimitiveObject *self, PyObject *Py_UNUSED(ignored))
{
    if (primitive_ok(self) < 0)
        return NULL;
    if (shmring_mutex_consistent((shmring_mutex *)self->ptr, process_token_cached()) != SHMRING_OK)
        return PyErr_Format(PyExc_RuntimeError,
                            "mark_consistent() is for the holder of a lock whose previous holder died");
    Py_RETURN_NONE;
}

static PyObject *mutex_state(PrimitiveObject *self, PyObject *Py_UNUSED(ignored))
{
    return primitive_word_snapshot(self, offsetof(shmring_mutex, state));
}

static PyMethodDef mutex_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))mutex_acquire, METH_VARARGS | METH_KEYWORDS, lock_acquire_doc},
    {"release", (PyCFunction)lock_release, METH_NOARGS, lock_release_doc},
    {"mark_consistent", (PyCFunction)mutex_mark_consistent, METH_NOARGS,
     "mark_consistent($self, /)\n--\n\nAfter OwnerDied, the data is repaired: the lock may be used again."},
    {"abandon", (PyCFunction)lock_abandon, METH_NOARGS,
     "abandon($self, /)\n--\n\nAfter OwnerDied, release it still marked owner-died (the next holder repairs)."},
    {"state", (PyCFunction)mutex_state, METH_NOARGS,
     "state($self, /)\n--\n\nThe lock's state word (0 consistent, 1 owner died, 2 not recoverable)."},
    {"holder", (PyCFunction)lock_holder, METH_NOARGS, lock_holder_doc},
    {NULL, NULL, 0, NULL},
};

PyTypeObject MutexType = FIXED_PRIMITIVE_TYPE(
    "Mutex", "A robust mutex (24 bytes, 8-aligned) at an offset of a Mapping.", mutex_methods);
