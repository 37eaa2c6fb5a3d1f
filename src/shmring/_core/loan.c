/*
 * loan.c - Loan: ring memory lent for a with block by reserve() (writable,
 * zero-filled) or peek() (read-only), by a Channel or a TopicEnd; a buffer
 * with the memoryview API.  Its owner's gate end is held until it
 * completes (core.h).
 */
#include "core.h"

LoanObject *loan_new(PyObject *owner, Gate *gate, int end, loan_finish_fn finish, PyObject *name,
                            const char *kind, unsigned char *ptr, uint64_t len, int readonly)
{
    LoanObject *l = PyObject_GC_New(LoanObject, &LoanType);
    if (l == NULL)
        return NULL;
    Py_INCREF(owner);
    l->owner = owner;
    l->gate = gate;
    l->end = end;
    l->finish = finish;
    Py_INCREF(name);
    l->name = name;
    l->kind = kind;
    l->ptr = ptr;
    l->len = l->commit_len = (Py_ssize_t)len;
    l->readonly = readonly;
    l->state = LOAN_NEW;
    l->cancelled = 0;
    l->thread = pthread_self();
    l->exports = 0;
    l->view = NULL;
    l->holder = NULL;
    l->pos = l->size = l->seq = 0;
    PyObject_GC_Track(l);
    gate->loan[end] = l; /* borrowed: cleared by loan_complete */
    return l;
}

static const char *loan_label(LoanObject *l)
{
    return l->readonly ? "peek" : "reserve";
}

/* Complete the loan, the owner's way (`how`), and free its end. */
static int loan_complete(LoanObject *l, int how)
{
    int rc;
    if (l->state == LOAN_DONE)
        return 0;
    rc = l->finish(l, how);
    l->state = LOAN_DONE;
    gate_loan_gone(l->gate, l);
    return rc;
}

/* Release our memoryview; fails while views of the loan are alive. */
static int loan_drop_views(LoanObject *l)
{
    if (l->view != NULL) {
        PyObject *res = PyObject_CallMethod(l->view, "release", NULL);
        if (res == NULL) {
            PyErr_Clear();
        } else {
            Py_DECREF(res);
            Py_CLEAR(l->view);
        }
    }
    if (l->view == NULL && l->exports == 0)
        return 0;
    if (l->holder == NULL)
        PyErr_Format(buffer_in_use_error,
                     "%s %R: views of the %s message are still alive (a slice, an ndarray, a "
                     "memoryview(...) of it); release them before leaving the with block. The message "
                     "is kept until then",
                     l->kind, l->name, l->readonly ? "peeked" : "reserved");
    else if (l->readonly)
        PyErr_Format(buffer_in_use_error,
                     "%s %R: %U is still alive: the peeked message is kept unread until it is gone, then "
                     "the next call on this end reads it again",
                     l->kind, l->name, l->holder);
    else
        PyErr_Format(buffer_in_use_error,
                     "%s %R: %U is still alive: the reserved message was not sent, and is dropped once it is "
                     "gone",
                     l->kind, l->name, l->holder);
    return -1;
}

/* How a loan whose block is over completes when no block exit decides it
 * (the next call, close(), garbage collection): a reserve is dropped, a
 * peek consumed, unless keep_if_held() asked to keep it for its holder. */
static int loan_after_block(LoanObject *l)
{
    return l->readonly && l->holder == NULL ? LOAN_COMPLETE : LOAN_DISCARD;
}

/* A loan whose block was left while views were alive, met by the next call
 * on its end: complete it now (a reserve is dropped, a peek consumed or,
 * held, left unread), or BufferInUseError again. */
int loan_retry(LoanObject *l)
{
    if (loan_drop_views(l) < 0)
        return -1;
    return loan_complete(l, loan_after_block(l));
}

/* The owner's close(): drop a reserve (its exit then raises Closed), consume
 * a peek that was entered (a held one is left unread), leave an unentered
 * one unread.  Errors of the completion itself (a torn topic peek) are not
 * close()'s: dropped. */
int loan_cancel(LoanObject *l)
{
    int how;
    if (l->state == LOAN_DONE)
        return 0;
    if (l->state != LOAN_NEW && loan_drop_views(l) < 0)
        return -1;
    how = l->state != LOAN_NEW ? loan_after_block(l) : LOAN_DISCARD;
    l->cancelled = !l->readonly;
    if (loan_complete(l, how) < 0)
        PyErr_Clear();
    return 0;
}

/* The loan goes away without its block having completed it: an unentered
 * peek leaves its message unread and a reserve is dropped; a peek that was
 * read is consumed, unless views of it are still alive (then it is left
 * unread: they are garbage too) or it was held (keep_if_held). */
static void loan_abandon(LoanObject *l)
{
    int how;
    if (l->owner == NULL || l->state == LOAN_DONE)
        return;
    if (l->view != NULL) {
        PyObject *res = PyObject_CallMethod(l->view, "release", NULL);
        if (res == NULL)
            PyErr_Clear();
        Py_XDECREF(res);
        Py_CLEAR(l->view);
    }
    how = l->state != LOAN_NEW && l->exports == 0 ? loan_after_block(l) : LOAN_DISCARD;
    if (loan_complete(l, how) < 0)
        PyErr_Clear();
}

static int loan_traverse(LoanObject *l, visitproc visit, void *arg)
{
    Py_VISIT(l->owner);
    Py_VISIT(l->view);
    return 0;
}

static int loan_clear(LoanObject *l)
{
    loan_abandon(l);
    Py_CLEAR(l->view);
    Py_CLEAR(l->owner);
    return 0;
}

static void loan_dealloc(LoanObject *l)
{
    PyObject_GC_UnTrack(l);
    loan_clear(l);
    Py_CLEAR(l->holder);
    Py_CLEAR(l->name);
    PyObject_GC_Del(l);
}

static int loan_getbuffer(LoanObject *l, Py_buffer *view, int flags)
{
    if (l->state != LOAN_ENTERED) {
        PyErr_SetString(PyExc_ValueError,
                        l->state == LOAN_NEW ? "enter the with block before using the message's memory"
                                             : "this message's memory was already released: it may be reused");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)l, l->ptr, l->len, l->readonly, flags) < 0)
        return -1;
    l->exports++;
    return 0;
}

static void loan_releasebuffer(LoanObject *l, Py_buffer *Py_UNUSED(view))
{
    l->exports--;
}

static PyBufferProcs loan_as_buffer = {
    (getbufferproc)loan_getbuffer,
    (releasebufferproc)loan_releasebuffer,
};

/* Our memoryview of the loan, for the memoryview API (borrowed). */
static PyObject *loan_view(LoanObject *l)
{
    if (l->view == NULL) {
        if (l->state != LOAN_ENTERED) {
            Py_buffer probe;
            loan_getbuffer(l, &probe, PyBUF_SIMPLE); /* raises the ValueError */
            return NULL;
        }
        l->view = PyMemoryView_FromObject((PyObject *)l);
    }
    return l->view;
}

static int loan_check_thread(LoanObject *l)
{
    if (!pthread_equal(l->thread, pthread_self())) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s %R: a %s() block belongs to the thread that opened it", l->kind, l->name, loan_label(l));
        return -1;
    }
    return 0;
}

static PyObject *loan_enter(LoanObject *l, PyObject *Py_UNUSED(ignored))
{
    if (loan_check_thread(l) < 0)
        return NULL;
    if (l->state != LOAN_NEW)
        return PyErr_Format(PyExc_RuntimeError, "a %s() block can be entered only once", loan_label(l));
    l->state = LOAN_ENTERED;
    Py_INCREF(l);
    return (PyObject *)l;
}

static PyObject *loan_exit(LoanObject *l, PyObject *const *args, Py_ssize_t nargs)
{
    int failed;
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "__exit__() takes exactly 3 arguments (%zd given)", nargs);
    failed = args[0] != Py_None;
    if (l->state == LOAN_DONE) {
        if (l->cancelled) {
            l->cancelled = 0;
            return PyErr_Format(closed_error,
                                "%s %R: the handle was closed while the reserve() block was open: the message "
                                "was not sent",
                                l->kind, l->name);
        }
        Py_RETURN_FALSE;
    }
    if (loan_check_thread(l) < 0)
        return NULL;
    if (l->state == LOAN_PENDING)
        Py_RETURN_FALSE;
    if (l->state == LOAN_ENTERED && loan_drop_views(l) < 0) {
        l->state = LOAN_PENDING; /* no longer holds its end for other threads */
        if (l->gate->waiters)
            gate_wake(l->gate);
        return NULL;
    }
    /* A reserve left by an exception (or never entered) is dropped; a peek
     * left by an exception still consumes its message (it was read). */
    if (loan_complete(l, l->state == LOAN_NEW || (failed && !l->readonly) ? LOAN_DISCARD : LOAN_COMPLETE) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

static PyObject *loan_commit(LoanObject *l, PyObject *arg)
{
    Py_ssize_t k;
    if (l->readonly)
        return PyErr_Format(PyExc_TypeError, "%s %R: a peek() lends a message read-only: there is nothing to commit",
                            l->kind, l->name);
    k = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (k == -1 && PyErr_Occurred())
        return NULL;
    if (loan_check_thread(l) < 0)
        return NULL;
    if (l->state > LOAN_ENTERED)
        return PyErr_Format(PyExc_ValueError, "%s %R: this reserve() block is over", l->kind, l->name);
    if (k < 0 || k > l->len)
        return PyErr_Format(PyExc_ValueError, "commit(%zd): 0 to %zd bytes were reserved", k, l->len);
    l->commit_len = k;
    Py_RETURN_NONE;
}

/* keep_if_held(holder): name what holds views of the loan (shmring.arrays
 * describes its array) in the BufferInUseError of the block's exit and of the
 * calls that meet the loan afterwards; a peek whose block ends while they
 * live is then kept for them: left unread once they are gone, not consumed,
 * so that nothing is lost. */
static PyObject *loan_keep_if_held(LoanObject *l, PyObject *holder)
{
    PyObject *old;
    if (!PyUnicode_Check(holder))
        return PyErr_Format(PyExc_TypeError, "keep_if_held() takes a str, not %.100s", Py_TYPE(holder)->tp_name);
    if (loan_check_thread(l) < 0)
        return NULL;
    if (l->state > LOAN_ENTERED)
        return PyErr_Format(PyExc_ValueError, "%s %R: this %s() block is over", l->kind, l->name, loan_label(l));
    old = l->holder;
    Py_INCREF(holder);
    l->holder = holder;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

static PyObject *loan_release(LoanObject *l, PyObject *Py_UNUSED(ignored))
{
    if (l->view != NULL) {
        PyObject *res = PyObject_CallMethod(l->view, "release", NULL);
        if (res == NULL)
            return NULL;
        Py_DECREF(res);
        Py_CLEAR(l->view);
    }
    Py_RETURN_NONE;
}

static Py_ssize_t loan_length(LoanObject *l)
{
    return l->len;
}

static PyObject *loan_subscript(LoanObject *l, PyObject *key)
{
    PyObject *view = loan_view(l);
    return view == NULL ? NULL : PyObject_GetItem(view, key);
}

static int loan_ass_subscript(LoanObject *l, PyObject *key, PyObject *value)
{
    PyObject *view = loan_view(l);
    if (view == NULL)
        return -1;
    return value == NULL ? PyObject_DelItem(view, key) : PyObject_SetItem(view, key, value);
}

static PyObject *loan_iter(LoanObject *l)
{
    PyObject *view = loan_view(l);
    return view == NULL ? NULL : PyObject_GetIter(view);
}

static PyObject *loan_richcompare(LoanObject *l, PyObject *other, int op)
{
    PyObject *view;
    if (op != Py_EQ && op != Py_NE)
        Py_RETURN_NOTIMPLEMENTED;
    view = loan_view(l);
    return view == NULL ? NULL : PyObject_RichCompare(view, other, op);
}

/* Everything else of the memoryview API (cast, tobytes, hex, tolist,
 * format, itemsize, shape...): from our memoryview of the loan. */
static PyObject *loan_getattro(LoanObject *l, PyObject *name)
{
    PyObject *res = PyObject_GenericGetAttr((PyObject *)l, name), *view, *type, *value, *tb;
    int known;
    if (res != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return res;
    PyErr_Fetch(&type, &value, &tb);
    known = PyObject_HasAttr((PyObject *)&PyMemoryView_Type, name);
    if (!known) {
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    view = loan_view(l);
    return view == NULL ? NULL : PyObject_GetAttr(view, name);
}

static PyObject *loan_get_nbytes(LoanObject *l, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(l->len);
}

static PyObject *loan_get_readonly(LoanObject *l, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(l->readonly);
}

static PyObject *loan_get_committed(LoanObject *l, void *Py_UNUSED(closure))
{
    if (l->readonly)
        Py_RETURN_NONE;
    return PyLong_FromSsize_t(l->commit_len);
}

static PyObject *loan_repr(LoanObject *l)
{
    static const char *const states[] = {"lent", "entered", "pending", "done"};
    return PyUnicode_FromFormat("<shmring %s() loan of %zd bytes, %s, %s %R>", loan_label(l), l->len,
                                states[l->state], l->kind, l->name);
}

static PyMethodDef loan_methods[] = {
    {"__enter__", (PyCFunction)loan_enter, METH_NOARGS,
     "__enter__($self, /)\n--\n\nThe loan itself: a buffer over the message's memory."},
    {"__exit__", (PyCFunction)(void (*)(void))loan_exit, METH_FASTCALL,
     "__exit__($self, exc_type, exc, tb, /)\n--\n\n"
     "Commit (reserve) or release (peek) the message; a reserve left by an exception is dropped."},
    {"commit", (PyCFunction)loan_commit, METH_O,
     "commit($self, k, /)\n--\n\n"
     "A reserve's message will be its first k bytes (0 <= k <= n; the last call wins). Without it, all n "
     "bytes are sent, zeros where nothing was written."},
    {"release", (PyCFunction)loan_release, METH_NOARGS,
     "release($self, /)\n--\n\n"
     "Drop the memoryview behind the memoryview API (as memoryview.release()); the loan stays usable."},
    {"keep_if_held", (PyCFunction)loan_keep_if_held, METH_O,
     "keep_if_held($self, holder, /)\n--\n\n"
     "Name what holds views of the loan (holder, a str) in the BufferInUseError raised while they live; a peek "
     "still held when its block ends is then left unread once they are gone (the next call reads it again), "
     "not consumed."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef loan_getset[] = {
    {"nbytes", (getter)loan_get_nbytes, NULL, "Size of the lent memory in bytes.", NULL},
    {"readonly", (getter)loan_get_readonly, NULL, "True for a peek().", NULL},
    {"committed", (getter)loan_get_committed, NULL,
     "Bytes a reserve's message will have (commit(k), else n); None for a peek().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods loan_as_sequence = {
    .sq_length = (lenfunc)loan_length,
};

static PyMappingMethods loan_as_mapping = {
    .mp_length = (lenfunc)loan_length,
    .mp_subscript = (binaryfunc)loan_subscript,
    .mp_ass_subscript = (objobjargproc)loan_ass_subscript,
};

PyTypeObject LoanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmring._core.Loan",
    .tp_basicsize = sizeof(LoanObject),
    .tp_dealloc = (destructor)loan_dealloc,
    .tp_repr = (reprfunc)loan_repr,
    .tp_as_sequence = &loan_as_sequence,
    .tp_as_mapping = &loan_as_mapping,
    .tp_getattro = (getattrofunc)loan_getattro,
    .tp_as_buffer = &loan_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Ring memory lent for a with block by reserve() (writable, zero-filled) or peek() (read-only).\n\n"
              "A buffer (memoryview(x), numpy.frombuffer(x), f.readinto(x)), with len(), indexing, slicing and "
              "the rest of the memoryview API. reserve() loans have commit(k).",
    .tp_traverse = (traverseproc)loan_traverse,
    .tp_clear = (inquiry)loan_clear,
    .tp_richcompare = (richcmpfunc)loan_richcompare,
    .tp_iter = (getiterfunc)loan_iter,
    .tp_methods = loan_methods,
    .tp_getset = loan_getset,
};
