/*
 * gil.c - the one implementation of the hooks with which every blocking
 * call of the extension waits (shmring_wait_sliced, include/shmring/wait.h),
 * and the wait for a robust lock.
 */
#include "core.h"

/* before_sleep: give the GIL away for one slice. */
static void gil_release(void *ctx)
{
    GilWait *w = (GilWait *)ctx;
    w->saved = PyEval_SaveThread();
}

/* after_sleep: take it back (errno survives: PyEval_RestoreThread keeps it). */
static void gil_take(void *ctx)
{
    GilWait *w = (GilWait *)ctx;
    PyEval_RestoreThread(w->saved);
}

/* between: the GIL held, after each slice.  A close() begun by another
 * thread ends the wait (the caller raises its own error), then the signal
 * handlers run: one that raises (Ctrl-C) ends it with its exception. */
static int gil_between(void *ctx, int slept)
{
    GilWait *w = (GilWait *)ctx;
    (void)slept;
    if (w->closing != NULL && w->closing(w->handle))
        return WAIT_CLOSING;
    if (PyErr_CheckSignals() < 0)
        return WAIT_SIGNALLED;
    return SHMRING_OK;
}

void gil_wait_init(GilWait *w, int (*closing)(void *handle), void *handle)
{
    w->saved = NULL;
    w->closing = closing;
    w->handle = handle;
    w->hooks.ctx = w;
    w->hooks.before_sleep = gil_release;
    w->hooks.after_sleep = gil_take;
    w->hooks.between = gil_between;
}

int gil_wait_sliced(void *ctx, int (*ready)(void *ctx, int last), int (*sleep)(void *ctx, uint64_t until_ns),
                    int (*closing)(void *handle), void *handle, uint64_t deadline)
{
    GilWait w;
    gil_wait_init(&w, closing, handle);
    return shmring_wait_for(ctx, ready, sleep, SHMRING_WAIT_SLICE_NS, &w.hooks, deadline);
}

int lock_robust(shmring_mutex *m, uint64_t token, uint64_t deadline, int *granted)
{
    GilWait w;
    /* The uncontended way, without setting up the wait. */
    int rc = shmring_mutex_try_acquire(m, token, 0);
    if (rc == SHMRING_AGAIN) {
        gil_wait_init(&w, NULL, NULL);
        for (;;) {
            rc = shmring_mutex_lock_hooked(m, token, MUTEX_SPIN_NS, LOCK_CHECK_NS, deadline, &w.hooks);
            if (rc != SHMRING_ERR_SYS || errno != EINTR)
                break;
            /* A signal cut a sleep short (the lock is not held): run its
             * handler now, then wait again. */
            if (PyErr_CheckSignals() < 0)
                return -1;
        }
    }
    if (rc == SHMRING_TIMEOUT)
        return 1;
    if (rc == SHMRING_ERR_SYS) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (rc < 0)
        return -1; /* WAIT_SIGNALLED: the handler's exception is set */
    *granted = rc;
    return 0;
}
