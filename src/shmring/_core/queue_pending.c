/*
 * queue_pending.c - the items of a batch that get_many() took from the ring
 * but could not hand over, because an item before them failed to decode
 * (its loads raised, or its record was damaged).
 *
 * get_many() returns the items before the bad one.  The bad one's error and
 * the items after it wait, in order, in the handle's `pending` list, and the
 * handle's next gets take them before anything from the ring: a batch gives
 * what the same number of get() calls would have given, and nothing that
 * was taken from the ring is lost.  close(), the end of the handle (its
 * collection) and the end of the process (an ordinary exit: leave_all,
 * before the attachments end) put the items still waiting back into the
 * queue.  For the last, the handles holding items are linked in a list of
 * the process (`holding`, under the GIL), which holds no reference: a
 * handle leaves it when its items are taken, put back or forgotten, and
 * when it is freed.  A forked child inherits the list with its parent's
 * handles; their items are the parent's to put back, so the child skips
 * them (their `generation` is not the child's).  A process killed, or
 * ended by os._exit(), loses what its handles held, as it loses an item
 * it took and had not processed.
 *
 * An entry is a 2-tuple: (False, item) or (True, exception), so that an
 * item that is itself an exception instance is never mistaken for an error.
 */
#include "core.h"

/* The handles of this process with items pending (GIL). */
static QueueObject *holding;

static void holding_link(QueueObject *self)
{
    self->holding_prev = NULL;
    self->holding_next = holding;
    if (holding != NULL)
        holding->holding_prev = self;
    holding = self;
}

static void holding_unlink(QueueObject *self)
{
    if (self->holding_prev != NULL)
        self->holding_prev->holding_next = self->holding_next;
    else if (holding == self)
        holding = self->holding_next;
    if (self->holding_next != NULL)
        self->holding_next->holding_prev = self->holding_prev;
    self->holding_prev = self->holding_next = NULL;
}

void queue_pending_drop(QueueObject *self)
{
    if (self->pending == NULL)
        return;
    holding_unlink(self);
    Py_CLEAR(self->pending);
}

/* After a take: a handle whose list ran empty holds nothing any more. */
static void pending_forget_if_empty(QueueObject *self)
{
    if (self->pending != NULL && PyList_GET_SIZE(self->pending) == 0)
        queue_pending_drop(self);
}

/* The current exception as a pending entry (clears it): the exception
 * object, its traceback attached. */
static PyObject *pending_error_entry(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value == NULL ? NULL : Py_BuildValue("(ON)", Py_True, value);
}

/* Raise the exception of a pending entry (a reference is taken). */
static void pending_raise(PyObject *exc)
{
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), Py_NewRef(exc), PyException_GetTraceback(exc));
}

/* Item `failed` of `g` raised (the exception is set).  Keep that error and
 * the items after it, decoded now, in the handle's pending list.  0, or -1
 * with an exception (out of memory: then the original error stands). */
int queue_pending_keep(QueueObject *self, GetBatch *g, Py_ssize_t failed)
{
    /* The entries are made first, in a list of our own, and joined to the
     * handle's after: decoding runs the user's loads, which may call this
     * handle's get and take (and free) its pending list meanwhile. */
    PyObject *entries = PyList_New(0), *entry;
    Py_ssize_t i;
    int rc = -1;
    if (entries == NULL)
        return -1;
    entry = pending_error_entry();
    if (entry == NULL || PyList_Append(entries, entry) < 0)
        goto done;
    for (i = failed + 1; i < g->n; i++) {
        PyObject *item = queue_item(self, g, i, 0);
        Py_DECREF(entry);
        entry = item != NULL ? Py_BuildValue("(ON)", Py_False, item) : pending_error_entry();
        if (entry == NULL || PyList_Append(entries, entry) < 0)
            goto done;
    }
    if (self->pending == NULL) {
        if ((self->pending = PyList_New(0)) == NULL)
            goto done;
        holding_link(self);
    }
    rc = PyList_SetSlice(self->pending, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, entries);
done:
    Py_XDECREF(entry);
    Py_DECREF(entries);
    return rc;
}

/* Put `entry` back at the front of the handle's pending list (a take
 * whose get_bytes() conversion failed: the item waits for the next get). */
static void pending_put_front(QueueObject *self, PyObject *entry)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb); /* the conversion's error is the one raised */
    if (self->pending == NULL && (self->pending = PyList_New(0)) != NULL)
        holding_link(self);
    if (self->pending == NULL || PyList_Insert(self->pending, 0, entry) < 0)
        PyErr_WriteUnraisable((PyObject *)self); /* out of memory: the item is lost, and said so */
    PyErr_Restore(type, value, tb);
}

Py_ssize_t queue_pending_count(QueueObject *self)
{
    return self->pending == NULL ? 0 : PyList_GET_SIZE(self->pending);
}

/* An item of the pending list as a get_bytes() gives it: its pickle (or
 * the handle's dumps), as a put would have written it. */
static PyObject *pending_as_bytes(QueueObject *self, PyObject *item)
{
    PyObject *args[2] = {item, pickle_protocol};
    if (PyBytes_Check(item) && self->dumps == NULL)
        return Py_NewRef(item);
    return self->dumps != NULL ? PyObject_CallOneArg(self->dumps, item)
                               : PyObject_Vectorcall(pickle_dumps, args, 2, NULL);
}

/* The next gets of a handle with items pending: up to `max` items (one,
 * without `as_list`) up to the next error, or that error raised when it
 * comes first.  Never blocks. */
PyObject *queue_pending_take(QueueObject *self, Py_ssize_t max, int as_list, int raw)
{
    PyObject *list = self->pending, *first = PyList_GET_ITEM(list, 0), *result;
    Py_ssize_t n = 0, i;
    if (PyTuple_GET_ITEM(first, 0) == Py_True) {
        PyObject *exc = Py_NewRef(PyTuple_GET_ITEM(first, 1));
        if (PyList_SetSlice(list, 0, 1, NULL) == 0)
            pending_raise(exc);
        Py_DECREF(exc);
        pending_forget_if_empty(self);
        return NULL;
    }
    if (!as_list) {
        /* Out of the list before any user code runs (get_bytes() calls the
         * handle's dumps, which may call this handle's get). */
        PyObject *item = Py_NewRef(PyTuple_GET_ITEM(first, 1));
        Py_INCREF(first);
        if (PyList_SetSlice(list, 0, 1, NULL) < 0) {
            Py_DECREF(item);
            Py_DECREF(first);
            return NULL;
        }
        pending_forget_if_empty(self); /* (list may be gone from here on) */
        result = raw ? pending_as_bytes(self, item) : Py_NewRef(item);
        if (result == NULL)
            pending_put_front(self, first);
        Py_DECREF(item);
        Py_DECREF(first);
        return result;
    }
    while (n < max && n < PyList_GET_SIZE(list) && PyTuple_GET_ITEM(PyList_GET_ITEM(list, n), 0) == Py_False)
        n++;
    if ((result = PyList_New(n)) == NULL)
        return NULL;
    for (i = 0; i < n; i++)
        PyList_SET_ITEM(result, i, Py_NewRef(PyTuple_GET_ITEM(PyList_GET_ITEM(list, i), 1)));
    if (PyList_SetSlice(list, 0, n, NULL) < 0)
        Py_CLEAR(result);
    pending_forget_if_empty(self);
    return result;
}

/* The handle ends (close(), or its collection) with items pending: put
 * them back into the queue, at its end, without waiting (a put that
 * cannot be made now is reported as unraisable: nothing else can be done
 * with it).  The errors pending are reported the same way: their items
 * could not be decoded, and nobody was told yet.  `context`: the handle,
 * or NULL while it is being freed. */
void queue_pending_return(QueueObject *self, PyObject *context)
{
    PyObject *list = self->pending;
    Py_ssize_t i;
    if (list == NULL)
        return;
    holding_unlink(self);
    self->pending = NULL;
    for (i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *entry = PyList_GET_ITEM(list, i), *done;
        if (PyTuple_GET_ITEM(entry, 0) == Py_True) {
            pending_raise(PyTuple_GET_ITEM(entry, 1));
            PyErr_WriteUnraisable(context);
            continue;
        }
        done = queue_put_back(self, PyTuple_GET_ITEM(entry, 1));
        if (done == NULL)
            PyErr_WriteUnraisable(context);
        Py_XDECREF(done);
    }
    Py_DECREF(list);
}

void queue_pending_return_all(void)
{
    /* One handle at a time from the front: putting back runs Python code
     * (a handle's dumps), which may free or change other handles. */
    while (holding != NULL) {
        QueueObject *self = (QueueObject *)Py_NewRef((PyObject *)holding);
        if (self->mapping != NULL && !queue_handle_closed(self) && self->generation == fork_generation)
            queue_pending_return(self, (PyObject *)self);
        else
            queue_pending_drop(self); /* a forked child's copy of its parent's */
        Py_DECREF(self);
    }
}
