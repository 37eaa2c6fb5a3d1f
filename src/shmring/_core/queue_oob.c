/*
 * queue_oob.c - a Queue's records with out-of-band buffers (record tag
 * SHMRING_REC_OOB, shmring/oob.h): an item pickled with protocol 5 whose
 * large buffers (an ndarray's elements, a large bytes, bytearray or
 * memoryview) are not copied into the pickle stream but handed to
 * pickle's buffer_callback.  The put writes the stream and each buffer
 * straight into the record (one copy of each); the get copies each buffer
 * once into a bytearray (a bytes object for a read-only one) of its own,
 * and pickle.loads makes the item over those: an ndarray comes back
 * writable, sharing that one copy.
 *
 * Written only into a queue whose SHMRING_QUEUE_OOB flag is set, by a
 * handle without dumps/loads of the user's; an item without out-of-band
 * buffers is an ordinary pickle (tag SHMRING_REC_OBJECT).
 */
#include "core.h"

/* Interned names, made on first use. */
static PyObject *buffer_callback_kw; /* ("buffer_callback",) */
static PyObject *buffers_kw;         /* ("buffers",) */
static PyObject *torch_name;         /* "torch" */
static PyObject *python_dumps;       /* shmring._out_of_band.dumps */

static int oob_names(void)
{
    if (buffer_callback_kw != NULL)
        return 0;
    buffers_kw = Py_BuildValue("(s)", "buffers");
    torch_name = PyUnicode_InternFromString("torch");
    buffer_callback_kw = Py_BuildValue("(s)", "buffer_callback");
    if (buffers_kw == NULL || torch_name == NULL || buffer_callback_kw == NULL) {
        Py_CLEAR(buffers_kw);
        Py_CLEAR(torch_name);
        Py_CLEAR(buffer_callback_kw);
        return -1;
    }
    return 0;
}

/* -- put ------------------------------------------------------------------------ */

/* pickle's buffer_callback (bound to a list): a contiguous buffer of
 * QUEUE_OOB_MIN bytes or more goes out of band (appended to the list; a
 * false result), a smaller one stays in the stream (True). */
static PyObject *collect_buffer(PyObject *list, PyObject *buffer)
{
    const Py_buffer *view = PyPickleBuffer_GetBuffer(buffer);
    if (view == NULL)
        return NULL;
    if (view->len < QUEUE_OOB_MIN || !PyBuffer_IsContiguous(view, 'A'))
        Py_RETURN_TRUE;
    if (PyList_Append(list, buffer) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef COLLECT_BUFFER = {"collect_buffer", collect_buffer, METH_O, NULL};

/* A collector (a list, and collect_buffer bound to it) not in use, kept for
 * the next put: most items hand pickle no buffer, and making the pair for
 * each would cost them more than the rest of the change.  Taken and given
 * back with the GIL held; a put that pickles inside another one's pickling
 * (a __reduce__ that puts) finds none spare and makes its own. */
static PyObject *spare_list, *spare_callback;

static int collector_take(PyObject **list, PyObject **callback)
{
    if (spare_list != NULL && PyList_GET_SIZE(spare_list) == 0) {
        *list = spare_list;
        *callback = spare_callback;
        spare_list = spare_callback = NULL;
        return 0;
    }
    Py_CLEAR(spare_callback); /* (one that somebody called since: not ours to reuse) */
    Py_CLEAR(spare_list);
    *list = PyList_New(0);
    *callback = *list == NULL ? NULL : PyCFunction_New(&COLLECT_BUFFER, *list);
    if (*callback == NULL) {
        Py_CLEAR(*list);
        return -1;
    }
    return 0;
}

/* Keep a collector whose list is empty for the next put (one is kept). */
static void collector_give_back(PyObject *list, PyObject *callback)
{
    if (spare_list == NULL) {
        spare_list = list;
        spare_callback = callback;
        return;
    }
    Py_DECREF(callback);
    Py_DECREF(list);
}

/* How many objects may_hold_buffers looks at before it says "maybe". */
#define OOB_SCAN_BUDGET 64

/* Objects that pickle writes into its stream whatever its buffer_callback:
 * None, bools, ints, floats, str, and bytes and bytearray inside an item. */
static inline int pickled_in_stream(PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);
    return type == &PyLong_Type || type == &PyUnicode_Type || type == &PyFloat_Type || obj == Py_None ||
           type == &PyBool_Type || type == &PyBytes_Type || type == &PyByteArray_Type;
}

/* Whether pickling `obj` may meet a buffer worth taking out of band: 0 only
 * for the objects above and exact tuples, lists and dicts of them, looked
 * at up to *budget objects; 1 for anything else (an ndarray, an instance of
 * a class...).  An item of 0 is pickled by the same call as before: a
 * buffer_callback costs pickle.dumps a keyword argument, which a small item
 * notices.  A wrong 0 would only cost speed (its buffers pickled in band).
 * Runs no Python code. */
static int may_hold_buffers(PyObject *obj, int *budget)
{
    Py_ssize_t i = 0;
    PyObject *key, *value;
    if (--*budget < 0)
        return 1;
    if (pickled_in_stream(obj))
        return 0;
    if (PyTuple_CheckExact(obj) || PyList_CheckExact(obj)) {
        for (i = 0; i < PySequence_Fast_GET_SIZE(obj); i++) {
            PyObject *item = PySequence_Fast_GET_ITEM(obj, i);
            if (pickled_in_stream(item) ? --*budget < 0 : may_hold_buffers(item, budget))
                return 1;
        }
        return 0;
    }
    if (PyDict_CheckExact(obj)) {
        while (PyDict_Next(obj, &i, &key, &value))
            if ((pickled_in_stream(key) ? --*budget < 0 : may_hold_buffers(key, budget)) ||
                (pickled_in_stream(value) ? --*budget < 0 : may_hold_buffers(value, budget)))
                return 1;
        return 0;
    }
    return 1;
}

/* Whether `obj` is a raw buffer for the Python side of the pickling
 * (shmring/_out_of_band.py) to hand out of band: a large bytes or
 * bytearray, which pickle copies into its stream, or any memoryview, which
 * pickle refuses. */
static int raw_buffer_item(PyObject *obj)
{
    return PyMemoryView_Check(obj) || (PyBytes_CheckExact(obj) && PyBytes_GET_SIZE(obj) >= QUEUE_OOB_MIN) ||
           (PyByteArray_CheckExact(obj) && PyByteArray_GET_SIZE(obj) >= QUEUE_OOB_MIN);
}

/* Whether torch is imported: then the Python side pickles every item that
 * may hold buffers, to find its tensors wherever they are. */
static int torch_imported(void)
{
    PyObject *torch = PyDict_GetItemWithError(PyImport_GetModuleDict(), torch_name); /* (borrowed) */
    if (torch == NULL)
        PyErr_Clear(); /* (none, or an error looking: pickle without) */
    return torch != NULL;
}

/* Replace each PickleBuffer of `list` by a memoryview of what it refers to:
 * an export of our own, which stays valid until the put is over whatever
 * is done to the PickleBuffer (whoever made it may release it).  0, or -1
 * with an exception. */
static int hold_buffers(PyObject *list)
{
    Py_ssize_t i;
    for (i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *view = PyMemoryView_FromObject(PyList_GET_ITEM(list, i));
        if (view == NULL || PyList_SetItem(list, i, view) < 0)
            return -1;
    }
    return 0;
}

/* shmring._out_of_band.dumps(obj, callback). */
static PyObject *python_pickle(PyObject *obj, PyObject *callback)
{
    if (python_dumps == NULL) {
        PyObject *module = PyImport_ImportModule("shmring._out_of_band");
        if (module == NULL)
            return NULL;
        python_dumps = PyObject_GetAttrString(module, "dumps");
        Py_DECREF(module);
        if (python_dumps == NULL)
            return NULL;
    }
    return PyObject_CallFunctionObjArgs(python_dumps, obj, callback, NULL);
}

PyObject *oob_pickle_in_band(PyObject *obj)
{
    return python_pickle(obj, Py_None);
}

int oob_serialize(PyObject *obj, PyObject **stream, PyObject **buffers)
{
    PyObject *list, *callback;
    int budget = OOB_SCAN_BUDGET, raw = raw_buffer_item(obj);
    *stream = *buffers = NULL;
    if (!raw && !may_hold_buffers(obj, &budget)) {
        PyObject *args[2] = {obj, pickle_protocol}; /* as before */
        *stream = PyObject_Vectorcall(pickle_dumps, args, 2, NULL);
        return *stream == NULL ? -1 : 0;
    }
    if (oob_names() < 0 || collector_take(&list, &callback) < 0)
        return -1;
    if (raw || torch_imported()) {
        *stream = python_pickle(obj, callback);
    } else {
        PyObject *args[3] = {obj, pickle_protocol, callback};
        *stream = PyObject_Vectorcall(pickle_dumps, args, 2, buffer_callback_kw);
    }
    if (*stream == NULL) {
        Py_DECREF(callback);
        Py_DECREF(list);
        return -1;
    }
    if (PyList_GET_SIZE(list) == 0) {
        collector_give_back(list, callback);
        return 0; /* no buffer out of band: an ordinary pickle */
    }
    Py_DECREF(callback); /* the buffers go with the batch, the callback bound to them does not */
    if (hold_buffers(list) == 0) {
        *buffers = list;
        return 0;
    }
    Py_DECREF(list);
    Py_CLEAR(*stream);
    return -1;
}

uint64_t oob_record_len(uint64_t stream_len, PyObject *buffers)
{
    Py_ssize_t i, n = PyList_GET_SIZE(buffers);
    uint64_t end = shmring_oob_stream_offset((uint64_t)n) + stream_len;
    for (i = 0; i < n; i++)
        end = shmring_oob_buffer_offset(end) + (uint64_t)PyMemoryView_GET_BUFFER(PyList_GET_ITEM(buffers, i))->len;
    return end;
}

void oob_write(unsigned char *dst, const Py_buffer *stream, PyObject *buffers)
{
    Py_ssize_t i, n = PyList_GET_SIZE(buffers);
    uint64_t end = shmring_oob_stream_offset((uint64_t)n) + (uint64_t)stream->len;
    /* (the record's length, checked by the reserve, bounds every length here) */
    shmring_oob_write_header(dst, (uint32_t)n, (uint32_t)stream->len);
    memcpy(dst + shmring_oob_stream_offset((uint64_t)n), stream->buf, (size_t)stream->len);
    for (i = 0; i < n; i++) {
        const Py_buffer *view = PyMemoryView_GET_BUFFER(PyList_GET_ITEM(buffers, i));
        uint64_t at = shmring_oob_buffer_offset(end);
        shmring_oob_write_entry(dst, (uint32_t)i, (uint32_t)view->len, view->readonly ? SHMRING_OOB_READONLY : 0u);
        memset(dst + end, 0, (size_t)(at - end));
        copy_maybe_without_gil(dst + at, view->buf, (size_t)view->len);
        end = at + (uint64_t)view->len;
    }
}

/* -- get ------------------------------------------------------------------------ */

/* Keep `piece` (a new reference) as the next piece of `g`.  0, or -1. */
static int getbatch_add_piece(GetBatch *g, PyObject *piece)
{
    if (g->npieces == g->pieces_cap) {
        Py_ssize_t cap = g->pieces_cap ? g->pieces_cap * 2 : 8;
        PyObject **pieces = (PyObject **)realloc(g->pieces, (size_t)cap * sizeof(PyObject *));
        if (pieces == NULL)
            return -1;
        g->pieces = pieces;
        g->pieces_cap = cap;
    }
    g->pieces[g->npieces++] = piece;
    return 0;
}

/* Under the queue lock: nothing here runs Python code (bytes and bytearray
 * objects are not tracked by the garbage collector, so making them starts
 * no collection). */
int oob_take(GetBatch *g, const unsigned char *payload, uint64_t len)
{
    shmring_oob_reader r;
    const unsigned char *data;
    uint64_t blen;
    uint32_t flags;
    Py_ssize_t before = g->npieces;
    int rc = getbatch_track_pieces(g) < 0 ? -1 : shmring_oob_open(&r, payload, len);
    while (rc == SHMRING_OK) {
        PyObject *piece;
        rc = shmring_oob_next(&r, &data, &blen, &flags);
        if (rc != SHMRING_OK)
            break;
        /* A read-only buffer as bytes (pickle hands it on read-only), any
         * other as a bytearray (an ndarray over it is writable). */
        piece = flags & SHMRING_OOB_READONLY ? PyBytes_FromStringAndSize(NULL, (Py_ssize_t)blen)
                                             : PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)blen);
        if (piece == NULL || getbatch_add_piece(g, piece) < 0) {
            Py_XDECREF(piece);
            rc = -1;
            break;
        }
        copy_maybe_without_gil(flags & SHMRING_OOB_READONLY ? PyBytes_AS_STRING(piece) : PyByteArray_AS_STRING(piece),
                               data, (size_t)blen);
    }
    if (rc == SHMRING_AGAIN && getbatch_add(g, SHMRING_REC_OOB, r.stream, r.stream_len) == 0)
        return 0;
    while (g->npieces > before)
        Py_DECREF(g->pieces[--g->npieces]);
    if (rc == SHMRING_ERR_CORRUPT && getbatch_add(g, QUEUE_ITEM_DAMAGED, NULL, 0) == 0)
        return 1; /* taken: decoding it raises CorruptedError */
    PyErr_Clear(); /* (a MemoryError of the pieces: the caller raises its own) */
    return -1;
}

PyObject *oob_decode(GetBatch *g, Py_ssize_t i)
{
    Py_ssize_t k, first = g->first_piece[i], n = g->first_piece[i + 1] - first;
    PyObject *stream, *buffers, *obj = NULL;
    if (oob_names() < 0)
        return NULL;
    stream = PyBytes_FromStringAndSize(g->blob + g->offs[i], (Py_ssize_t)(g->offs[i + 1] - g->offs[i]));
    buffers = PyList_New(n);
    if (stream != NULL && buffers != NULL) {
        PyObject *args[2] = {stream, buffers};
        for (k = 0; k < n; k++) {
            Py_INCREF(g->pieces[first + k]);
            PyList_SET_ITEM(buffers, k, g->pieces[first + k]);
        }
        obj = PyObject_Vectorcall(pickle_loads, args, 1, buffers_kw);
    }
    Py_XDECREF(stream);
    Py_XDECREF(buffers);
    return obj;
}

/* -- for the tests -------------------------------------------------------------- */

static PyObject *raise_damaged(void)
{
    return PyErr_Format(corrupted_error, "an out-of-band queue record is damaged: its counts and lengths do not "
                                         "fit its payload (docs/PROTOCOL.md section 5.2)");
}

static PyObject *core_oob_encode(PyObject *Py_UNUSED(module), PyObject *obj)
{
    PyObject *stream, *buffers, *out = NULL;
    Py_buffer view;
    uint64_t len;
    if (oob_serialize(obj, &stream, &buffers) < 0)
        return NULL;
    if (buffers == NULL) {
        Py_DECREF(stream);
        Py_RETURN_NONE;
    }
    if (PyObject_GetBuffer(stream, &view, PyBUF_SIMPLE) == 0) {
        len = oob_record_len((uint64_t)view.len, buffers);
        out = len > UINT32_MAX ? PyErr_Format(PyExc_ValueError, "a record of %llu bytes is over the 4 GiB limit",
                                              (unsigned long long)len)
                               : PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
        if (out != NULL)
            oob_write((unsigned char *)PyBytes_AS_STRING(out), &view, buffers);
        PyBuffer_Release(&view);
    }
    Py_DECREF(stream);
    Py_DECREF(buffers);
    return out;
}

static PyObject *core_oob_decode(PyObject *Py_UNUSED(module), PyObject *data)
{
    Py_buffer view;
    GetBatch g;
    PyObject *obj = NULL;
    int rc;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    memset(&g, 0, sizeof g);
    rc = oob_take(&g, (const unsigned char *)view.buf, (uint64_t)view.len);
    PyBuffer_Release(&view);
    if (rc < 0)
        PyErr_NoMemory();
    else if (rc == 1)
        raise_damaged();
    else
        obj = oob_decode(&g, 0);
    getbatch_free(&g);
    return obj;
}

static PyObject *core_oob_frame(PyObject *Py_UNUSED(module), PyObject *data)
{
    Py_buffer view;
    shmring_oob_reader r;
    const unsigned char *p;
    uint64_t len;
    uint32_t flags;
    PyObject *pieces, *out = NULL;
    int rc;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    pieces = PyList_New(0);
    rc = shmring_oob_open(&r, view.buf, (uint64_t)view.len);
    while (pieces != NULL && rc == SHMRING_OK) {
        PyObject *piece;
        rc = shmring_oob_next(&r, &p, &len, &flags);
        if (rc != SHMRING_OK)
            break;
        piece = Py_BuildValue("(KKI)", (unsigned long long)(p - r.payload), (unsigned long long)len, flags);
        if (piece == NULL || PyList_Append(pieces, piece) < 0)
            Py_CLEAR(pieces);
        Py_XDECREF(piece);
    }
    if (pieces != NULL && rc == SHMRING_AGAIN)
        out = Py_BuildValue("((KK)O)", (unsigned long long)(r.stream - r.payload), (unsigned long long)r.stream_len,
                            pieces);
    else if (pieces != NULL)
        raise_damaged();
    Py_XDECREF(pieces);
    PyBuffer_Release(&view);
    return out;
}

PyMethodDef oob_functions[] = {
    {"oob_encode", core_oob_encode, METH_O,
     "oob_encode($module, obj, /)\n--\n\n"
     "The payload of the out-of-band record (shmring/oob.h) a queue writes for obj, or None when no\n"
     "buffer of obj goes out of band (the queue writes an ordinary pickle)."},
    {"oob_decode", core_oob_decode, METH_O,
     "oob_decode($module, data, /)\n--\n\n"
     "The object of an out-of-band record's payload, read as a get reads it; CorruptedError if its\n"
     "framing is damaged."},
    {"oob_frame", core_oob_frame, METH_O,
     "oob_frame($module, data, /)\n--\n\n"
     "The framing of an out-of-band record's payload as shmring/oob.h reads it: ((stream offset,\n"
     "stream length), [(offset, length, flags) of each buffer]); CorruptedError if it is damaged."},
    {NULL, NULL, 0, NULL},
};
