/*
 * gate.c - the gate of a Channel handle or a Topic end: the calls of the
 * threads that share one handle, one at a time per end, and close() from
 * another thread (core.h says how).
 */
#include "core.h"

void gate_wake(Gate *g)
{
    /* relaxed: written with the GIL held; a sleeper read it before it let
     * the GIL go, so the GIL orders the two. */
    __atomic_fetch_add(&g->seq, 1u, __ATOMIC_RELAXED);
    shmring_futex_wake(&g->seq, INT_MAX);
}

void gate_loan_gone(Gate *g, LoanObject *loan)
{
    if (g->loan[loan->end] == loan) {
        g->loan[loan->end] = NULL;
        if (g->waiters)
            gate_wake(g);
    }
}

int gate_begin_close(Gate *g)
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

int gate_check_close_here(Gate *g, const char *kind, PyObject *name)
{
    pthread_t me = pthread_self();
    int e;
    /* A signal handler, a finalizer, an iterator run by the call: close()
     * cannot wait for the call it is inside of. */
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

void gate_fork_reset(Gate *g)
{
    int e;
    g->state &= GATE_CLOSING;
    g->waiters = 0;
    for (e = 0; e < GATE_ENDS; e++) {
        if (g->loan[e] != NULL) {
            g->loan[e]->state = LOAN_DONE;
            g->loan[e] = NULL;
        }
    }
}

/* -- waiting for the gate to change (shmring_wait_sliced) -------------------- */

/* A wait on the gate: `look` says whether the caller may go on (SHMRING_OK),
 * must wait (SHMRING_AGAIN) or must stop (-1, an exception set); between
 * looks it sleeps on `seq`, counted in `waiters` so that the gate's
 * changes wake it. */
typedef struct GateWait {
    Gate *g;
    int (*look)(struct GateWait *w);
    uint32_t seq;  /* the futex word, read with the GIL held */
    int counted;   /* counted in g->waiters (GIL held) */
    /* gate_enter_slow's */
    int end;
    const char *kind, *end_name;
    PyObject *name;
} GateWait;

static void gate_wait_uncount(GateWait *w)
{
    if (w->counted) {
        w->g->waiters--;
        w->counted = 0;
    }
}

/* ready (GIL held): look; if the caller must wait, read the word to sleep
 * on and count ourselves in, before the GIL goes. */
static int gate_wait_ready(void *ctx, int last)
{
    GateWait *w = (GateWait *)ctx;
    int r;
    gate_wait_uncount(w);
    r = w->look(w);
    if (r == SHMRING_AGAIN && !last) {
        /* relaxed: see gate_wake. */
        w->seq = __atomic_load_n(&w->g->seq, __ATOMIC_RELAXED);
        w->g->waiters++;
        w->counted = 1;
    }
    return r;
}

/* sleep (GIL released): until the gate changes or `until`. */
static int gate_wait_sleep(void *ctx, uint64_t until)
{
    GateWait *w = (GateWait *)ctx;
    shmring_futex_wait_until(&w->g->seq, w->seq, until);
    return SHMRING_AGAIN;
}

/* Wait until `w->look` says OK, or `deadline` (0: none).  As
 * shmring_wait_sliced: SHMRING_OK, SHMRING_TIMEOUT, or negative with an
 * exception set. */
static int gate_wait(GateWait *w, uint64_t deadline)
{
    int rc;
    w->counted = 0;
    rc = gil_wait_sliced(w, gate_wait_ready, gate_wait_sleep, NULL, NULL, deadline);
    gate_wait_uncount(w);
    return rc;
}

/* gate_wait_empty's look: no call inside. */
static int gate_look_empty(GateWait *w)
{
    return (w->g->state & ((1 << GATE_ENDS) - 1)) ? (int)SHMRING_AGAIN : (int)SHMRING_OK;
}

int gate_wait_empty(Gate *g)
{
    GateWait w;
    w.g = g;
    w.look = gate_look_empty;
    return gate_wait(&w, 0) == SHMRING_OK ? 0 : -1;
}

/* gate_enter_slow's look: enter if the end is free (then SHMRING_OK);
 * complete a pending loan; refuse (-1) what would wait for itself. */
static int gate_look_enter(GateWait *w)
{
    Gate *g = w->g;
    pthread_t me = pthread_self();
    for (;;) {
        LoanObject *loan = g->loan[w->end];
        if (g->state & GATE_CLOSING) {
            PyErr_Format(closed_error, "%s %R: this handle is closed", w->kind, w->name);
            return -1;
        }
        if (g->state & (1 << w->end)) {
            if (!pthread_equal(g->owner[w->end], me))
                return SHMRING_AGAIN;
            PyErr_Format(PyExc_RuntimeError,
                         "%s %R: a %s call on this handle is already running in this thread (a signal "
                         "handler, a finalizer or a callback of that call called it again)",
                         w->kind, w->name, w->end_name);
            return -1;
        }
        if (loan == NULL) {
            gate_take(g, w->end);
            return SHMRING_OK;
        }
        if (loan->state == LOAN_PENDING) {
            if (loan_retry(loan) < 0)
                return -1;
            continue;
        }
        if (!pthread_equal(loan->thread, me))
            return SHMRING_AGAIN;
        PyErr_Format(PyExc_RuntimeError, "%s %R: finish the %s() block first (its loan holds the %s end)", w->kind,
                     w->name, loan->readonly ? "peek" : "reserve", w->end_name);
        return -1;
    }
}

int gate_enter_slow(Gate *g, int end, const char *kind, PyObject *name, const char *end_name, uint64_t deadline,
                    int no_wait)
{
    GateWait w;
    int rc;
    w.g = g;
    w.look = gate_look_enter;
    w.end = end;
    w.kind = kind;
    w.end_name = end_name;
    w.name = name;
    if (no_wait) {
        rc = gate_look_enter(&w);
        return rc == SHMRING_AGAIN ? 1 : rc == SHMRING_OK ? 0 : -1;
    }
    rc = gate_wait(&w, deadline);
    if (rc == SHMRING_OK)
        return 0;
    if (rc == SHMRING_TIMEOUT)
        PyErr_Format(timeout_error, "%s %R: timed out waiting for another thread's %s call on this handle", kind,
                     name, end_name);
    return -1;
}
