/*
 * queue.c - shmring._core.Queue, the MPMC queue of include/shmring/queue.h
 * for Python: the type, its methods and its lifetime.
 *
 * Every operation is one C call: serialize outside the lock (pickle may run
 * any Python code), take the queue's robust mutex, copy records in or out,
 * release, wake sleepers, deserialize outside the lock (queue_ops.c,
 * queue_wait.c).  Nothing that can run Python code (no allocation of a
 * GC-tracked object, no callback) happens while the shared lock is held: a
 * finalizer that used the queue there would wait for itself.
 */
#include "core.h"

/* The ValueError of a handle made without __init__. */
static PyObject *raise_queue_uninitialised(void)
{
    PyErr_SetString(PyExc_ValueError, "queue is not initialised");
    return NULL;
}

PyObject *queue_name(QueueObject *self)
{
    return ((MappingObject *)self->mapping)->name;
}

PyObject *queue_corrupt(QueueObject *self, const char *what)
{
    return raise_corrupted("queue", queue_name(self), what);
}

PyObject *raise_queue_closed(QueueObject *self)
{
    return PyErr_Format(queue_closed_error, "Queue %R is closed", queue_name(self));
}

int queue_usable(QueueObject *self)
{
    if (self->mapping == NULL) {
        raise_queue_uninitialised();
        return -1;
    }
    if (queue_handle_closed(self)) {
        raise_queue_closed(self);
        return -1;
    }
    if (self->generation != fork_generation) {
        self->generation = fork_generation;
        self->token = shmring_token_self();
        queue_pending_drop(self); /* the parent's: it hands them over itself */
    }
    return 0;
}

/* block/timeout as multiprocessing.Queue: block=False ignores timeout. */
static int parse_block(PyObject *block_obj, PyObject *timeout_obj, int *block, uint64_t *deadline)
{
    *block = 1;
    *deadline = 0;
    if (block_obj != NULL) {
        int b = PyObject_IsTrue(block_obj);
        if (b < 0)
            return -1;
        *block = b;
    }
    if (!*block)
        return 0;
    if (timeout_obj != NULL && timeout_obj != Py_None) {
        double t = PyFloat_AsDouble(timeout_obj);
        if (t == -1.0 && PyErr_Occurred())
            return -1;
        if (t < 0) {
            PyErr_SetString(PyExc_ValueError, "'timeout' must be a non-negative number");
            return -1;
        }
        if (t <= 1e9) {
            *deadline = shmring_now_ns() + (uint64_t)(t * 1e9);
            if (*deadline == 0)
                *deadline = 1;
        }
    }
    return 0;
}

/* The ring bytes the records of a batch take. */
static uint64_t queue_batch_record_bytes(const PutBatch *b)
{
    uint64_t need = 0;
    Py_ssize_t i;
    for (i = 0; i < b->n; i++)
        need += shmring_queue_record_size(b->lens[i]);
    return need;
}

static PyObject *queue_do_put_impl(QueueObject *self, PyObject *arg, int many, int raw, int block,
                                   uint64_t deadline)
{
    PutBatch b;
    QueueOp op = {NULL, NULL, 0};
    int rc;
    if (queue_usable(self) < 0 || batch_make(self, &b, arg, many, raw) < 0)
        return NULL;
    if (b.n == 0) {
        batch_release(&b);
        Py_RETURN_NONE;
    }
    if (self->config.maxsize && (uint64_t)b.n > self->config.maxsize) {
        PyErr_Format(PyExc_ValueError, "put_many() of %zd items into a queue of maxsize %llu can never fit", b.n,
                     (unsigned long long)self->config.maxsize);
        batch_release(&b);
        return NULL;
    }
    if ((self->config.flags & SHMRING_QUEUE_BOUNDED) && b.n > 1) {
        uint64_t need = queue_batch_record_bytes(&b);
        if (need > self->config.capacity) {
            PyErr_Format(PyExc_ValueError,
                         "put_many(): %zd items (%llu bytes in records) can never fit together in the %llu-byte "
                         "ring of this queue; put them in smaller batches",
                         b.n, (unsigned long long)need, (unsigned long long)self->config.capacity);
            batch_release(&b);
            return NULL;
        }
    }
    op.put = &b;
    rc = queue_run(self, &op, block, deadline);
    /* full() says True while the ring cannot take what was refused here. */
    self->refused_len = 0;
    if (rc < 0 && (self->config.flags & SHMRING_QUEUE_BOUNDED) && PyErr_ExceptionMatches(queue_full_error))
        self->refused_len = queue_batch_record_bytes(&b) - sizeof(shmring_record);
    batch_release(&b);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyObject *queue_item(QueueObject *self, GetBatch *g, Py_ssize_t i, int raw)
{
    const char *p = g->blob + g->offs[i];
    Py_ssize_t len = (Py_ssize_t)(g->offs[i + 1] - g->offs[i]);
    PyObject *data, *obj;
    if (g->tags[i] == QUEUE_ITEM_DAMAGED)
        return queue_corrupt(self, "out-of-band record (its counts and lengths do not fit its payload)");
    if (g->tags[i] == SHMRING_REC_VALUE || g->tags[i] == SHMRING_REC_OOB) {
        /* straight from the copy: no bytes in between */
        obj = g->tags[i] == SHMRING_REC_VALUE ? value_decode(p, (uint64_t)len) : oob_decode(g, i);
        if (obj == NULL || (!raw && self->loads == NULL))
            return obj;
        {   /* get_bytes(), and a handle with a loads of its own, see the
             * item's pickle (in-band), however it travelled */
            PyObject *args[2] = {obj, pickle_protocol};
            data = g->tags[i] == SHMRING_REC_VALUE ? PyObject_Vectorcall(pickle_dumps, args, 2, NULL)
                                                   : oob_pickle_in_band(obj);
        }
        Py_DECREF(obj);
        if (data == NULL || raw)
            return data;
        obj = PyObject_CallOneArg(self->loads, data);
        Py_DECREF(data);
        return obj;
    }
    data = PyBytes_FromStringAndSize(p, len);
    if (data == NULL || raw || g->tags[i] == SHMRING_REC_BYTES)
        return data;
    obj = PyObject_CallOneArg(self->loads != NULL ? self->loads : pickle_loads, data);
    Py_DECREF(data);
    return obj;
}

static PyObject *queue_do_get_impl(QueueObject *self, Py_ssize_t max, int as_list, int raw, int block,
                                   uint64_t deadline)
{
    GetBatch g;
    QueueOp op = {NULL, NULL, 0};
    PyObject *result = NULL;
    Py_ssize_t i;
    if (queue_usable(self) < 0)
        return NULL;
    if (queue_pending_count(self) > 0)
        return queue_pending_take(self, max, as_list, raw);
    getbatch_lend(self, &g);
    op.get = &g;
    op.max = max;
    if (queue_run(self, &op, block, deadline) < 0) {
        getbatch_give_back(self, &g);
        return NULL;
    }
    if (!as_list) {
        result = queue_item(self, &g, 0, raw);
    } else {
        result = PyList_New(g.n);
        for (i = 0; result != NULL && i < g.n; i++) {
            PyObject *item = queue_item(self, &g, i, raw);
            if (item == NULL) {
                /* The items before it are returned; its error and the
                 * items after it wait for the next gets (queue_pending.c). */
                Py_SET_SIZE(result, i);
                if (queue_pending_keep(self, &g, i) < 0 || i == 0) {
                    Py_CLEAR(result);
                    if (!PyErr_Occurred())
                        result = queue_pending_take(self, 1, 0, raw); /* raises item 0's error */
                }
                break;
            }
            PyList_SET_ITEM(result, i, item);
        }
    }
    getbatch_give_back(self, &g);
    return result;
}

/* faster-fifo's last_error: the message of the last error of a put or get
 * of this handle (its Empty and Full, the ordinary outcomes, are not
 * errors; a closed handle's QueueClosed is; KeyboardInterrupt and other
 * exits are not errors of the queue). */
static void queue_note_error(QueueObject *self)
{
    PyObject *type, *value, *tb, *msg;
    if (!PyErr_ExceptionMatches(PyExc_Exception) ||
        ((PyErr_ExceptionMatches(queue_empty_error) || PyErr_ExceptionMatches(queue_full_error)) &&
         !PyErr_ExceptionMatches(queue_closed_error)))
        return;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    msg = value != NULL ? PyObject_Str(value) : NULL;
    if (msg == NULL || PyObject_SetAttrString((PyObject *)self, "last_error", msg) < 0)
        PyErr_Clear(); /* the error being raised matters more than its note */
    Py_XDECREF(msg);
    PyErr_Restore(type, value, tb);
}

/* A call on this handle ends: close() left the attachment to the last one
 * (a put may be making an overflow chunk that the queue's removal, were
 * this the last attachment, would otherwise miss). */
static PyObject *queue_call_done(QueueObject *self, PyObject *result)
{
    if (result == NULL)
        queue_note_error(self);
    if (--self->calls == 0 && self->leave_pending) {
        self->leave_pending = 0;
        mapping_leave_now((MappingObject *)self->mapping);
    }
    return result;
}

PyObject *queue_put_back(QueueObject *self, PyObject *obj)
{
    return queue_do_put_impl(self, obj, 0, 0, 0, 0);
}

static PyObject *queue_do_put(QueueObject *self, PyObject *arg, int many, int raw, int block, uint64_t deadline)
{
    self->calls++;
    return queue_call_done(self, queue_do_put_impl(self, arg, many, raw, block, deadline));
}

static PyObject *queue_do_get(QueueObject *self, Py_ssize_t max, int as_list, int raw, int block, uint64_t deadline)
{
    self->calls++;
    return queue_call_done(self, queue_do_get_impl(self, max, as_list, raw, block, deadline));
}

static const char *const ARGS_OBJ_BLOCK_TIMEOUT[] = {"obj", "block", "timeout"};
static const char *const ARGS_ITEMS_BLOCK_TIMEOUT[] = {"items", "block", "timeout"};
static const char *const ARGS_DATA_BLOCK_TIMEOUT[] = {"data", "block", "timeout"};
static const char *const ARGS_BLOCK_TIMEOUT[] = {"block", "timeout"};
static const char *const ARGS_BLOCK_TIMEOUT_MAX[] = {"block", "timeout", "max_messages_to_get"};

/* put(), put_many() and put_bytes(): `fname`, whose parameters `names` are
 * the item(s), block and timeout.  (Inline: put_bytes() is a hot call.) */
static inline PyObject *queue_put_parsed(QueueObject *self, const char *fname, const char *const *names, int many,
                                         int raw, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3];
    int block;
    uint64_t deadline;
    if (parse_args(fname, args, nargs, kwnames, names, 1, 3, a) < 0 ||
        parse_block(a[1], a[2], &block, &deadline) < 0)
        return NULL;
    return queue_do_put(self, a[0], many, raw, block, deadline);
}

static PyObject *queue_put(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs == 1 && kwnames == NULL)
        return queue_do_put(self, args[0], 0, 0, 1, 0); /* the common call: no parsing */
    return queue_put_parsed(self, "put", ARGS_OBJ_BLOCK_TIMEOUT, 0, 0, args, nargs, kwnames);
}

static PyObject *queue_put_nowait(QueueObject *self, PyObject *obj)
{
    return queue_do_put(self, obj, 0, 0, 0, 0);
}

static PyObject *queue_put_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return queue_put_parsed(self, "put_many", ARGS_ITEMS_BLOCK_TIMEOUT, 1, 0, args, nargs, kwnames);
}

static PyObject *queue_put_many_nowait(QueueObject *self, PyObject *items)
{
    return queue_do_put(self, items, 1, 0, 0, 0);
}

static PyObject *queue_put_bytes(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return queue_put_parsed(self, "put_bytes", ARGS_DATA_BLOCK_TIMEOUT, 0, 1, args, nargs, kwnames);
}

/* get() and get_bytes() (`fname`): block and timeout.  (Inline:
 * get_bytes() is a hot call.) */
static inline PyObject *queue_get_parsed(QueueObject *self, const char *fname, int raw, PyObject *const *args,
                                         Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    int block;
    uint64_t deadline;
    if (parse_args(fname, args, nargs, kwnames, ARGS_BLOCK_TIMEOUT, 0, 2, a) < 0 ||
        parse_block(a[0], a[1], &block, &deadline) < 0)
        return NULL;
    return queue_do_get(self, 1, 0, raw, block, deadline);
}

static PyObject *queue_get(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs == 0 && kwnames == NULL)
        return queue_do_get(self, 1, 0, 0, 1, 0); /* the common call: no parsing */
    return queue_get_parsed(self, "get", 0, args, nargs, kwnames);
}

static PyObject *queue_get_nowait(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    return queue_do_get(self, 1, 0, 0, 0, 0);
}

static PyObject *queue_get_bytes(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return queue_get_parsed(self, "get_bytes", 1, args, nargs, kwnames);
}

static int parse_max(PyObject *obj, Py_ssize_t *max)
{
    *max = PY_SSIZE_T_MAX;
    if (obj == NULL)
        return 0;
    *max = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (*max == -1 && PyErr_Occurred())
        return -1;
    if (*max < 1) {
        PyErr_SetString(PyExc_ValueError, "max_messages_to_get must be at least 1");
        return -1;
    }
    return 0;
}

static PyObject *queue_get_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3];
    int block;
    uint64_t deadline;
    Py_ssize_t max;
    if (parse_args("get_many", args, nargs, kwnames, ARGS_BLOCK_TIMEOUT_MAX, 0, 3, a) < 0 ||
        parse_block(a[0], a[1], &block, &deadline) < 0 || parse_max(a[2], &max) < 0)
        return NULL;
    return queue_do_get(self, max, 1, 0, block, deadline);
}

static const char *const ARGS_MAX_ONLY[] = {"max_messages_to_get"};

static PyObject *queue_get_many_nowait(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                                       PyObject *kwnames)
{
    PyObject *a[1];
    Py_ssize_t max;
    if (parse_args("get_many_nowait", args, nargs, kwnames, ARGS_MAX_ONLY, 0, 1, a) < 0 || parse_max(a[0], &max) < 0)
        return NULL;
    return queue_do_get(self, max, 1, 0, 0, 0);
}

/* -- joinable ----------------------------------------------------------------- */

static PyObject *queue_task_done(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (queue_usable(self) < 0)
        return NULL;
    if (shmring_queue_task_done(self->ctrl, 1) != SHMRING_OK) {
        PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- the rest ------------------------------------------------------------------- */

/* The number of items now, for qsize(), empty() and full(): 0, or -1 with
 * ValueError on a handle made without __init__. */
static int queue_count_now(QueueObject *self, uint64_t *count)
{
    if (self->mapping == NULL) {
        raise_queue_uninitialised();
        return -1;
    }
    /* relaxed: a snapshot; exact at the moment it is read. */
    *count = __atomic_load_n(&self->ctrl->count, __ATOMIC_RELAXED);
    return 0;
}

/* qsize() and empty() count the items this handle took and holds for its
 * next gets (queue_pending.c) with those of the queue. */
static PyObject *queue_qsize(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t count;
    if (queue_count_now(self, &count) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(count + (uint64_t)queue_pending_count(self));
}

static PyObject *queue_empty(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t count;
    return queue_count_now(self, &count) < 0 ? NULL : PyBool_FromLong(count == 0 && queue_pending_count(self) == 0);
}

/* full(): maxsize items held; or, when the ring's bytes bound producers,
 * the ring cannot take now a 1-byte item, nor what this handle's last
 * refused put needed (a snapshot of the counters, without the lock: a
 * pair that does not check out, read while others move it, says "not full"). */
static PyObject *queue_full(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t count;
    shmring_queue_ring r;
    int rc;
    if (queue_count_now(self, &count) < 0)
        return NULL;
    if (self->config.maxsize && count >= self->config.maxsize)
        Py_RETURN_TRUE;
    if (!(self->config.flags & SHMRING_QUEUE_BOUNDED))
        Py_RETURN_FALSE;
    shmring_queue_main_ring(self->ctrl, self->config.capacity, &r, &rc);
    return PyBool_FromLong(rc == SHMRING_OK && !shmring_queue_ring_fits(&r, self->refused_len ? self->refused_len : 1));
}

static PyObject *queue_data_size(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL)
        return raise_queue_uninitialised();
    /* relaxed: a snapshot. */
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->ctrl->bytes, __ATOMIC_RELAXED));
}

/* is_closed(): this handle's state, the one that makes its calls raise. */
static PyObject *queue_is_closed(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL)
        return raise_queue_uninitialised();
    return PyBool_FromLong(queue_handle_closed(self));
}

/* closed_anywhere(): whether close() was called on any handle of this queue,
 * in any process (faster-fifo's is_closed()); a mark only. */
static PyObject *queue_closed_anywhere(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL)
        return raise_queue_uninitialised();
    /* acquire [Q4]: pairs with the release store in close(). */
    return PyBool_FromLong(__atomic_load_n(&self->ctrl->closed, __ATOMIC_ACQUIRE) != 0);
}

/* Wake every sleeper on `seq` (of any process: they re-check and sleep again). */
static void queue_wake_all(uint32_t *seq)
{
    /* release [Q5]: only has to differ from the value a sleeper read. */
    __atomic_fetch_add(seq, 1u, __ATOMIC_RELEASE);
    shmring_futex_wake(seq, INT_MAX);
}

/* close(): this handle only (as multiprocessing); its calls raise QueueClosed
 * from now on, those of other threads blocked in it included: they are woken
 * [Q5].  Other handles and processes go on; closed_anywhere() tells them.
 * The handle's attachment ends too, once no call of it is running. */
static PyObject *queue_close(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL || queue_handle_closed(self))
        Py_RETURN_NONE;
    if (self->generation == fork_generation)
        queue_pending_return(self, (PyObject *)self);
    /* release [Q4]: closed_anywhere() in every process. */
    __atomic_store_n(&self->ctrl->closed, 1u, __ATOMIC_RELEASE);
    /* relaxed [Q5]: the GIL orders it with the waiters' checks. */
    __atomic_store_n(&self->closed, 1, __ATOMIC_RELAXED);
    if (self->waiting > 0) {
        queue_wake_all(&self->ctrl->items_seq);
        queue_wake_all(&self->ctrl->room_seq);
        queue_wake_all(&self->ctrl->done_seq);
    }
    if (self->calls > 0)
        self->leave_pending = 1;
    else
        mapping_leave_now((MappingObject *)self->mapping);
    Py_RETURN_NONE;
}

/* A queue's counters as a dict, for stats() and `shmring inspect`. */
static PyObject *queue_counters(shmring_queue_ctrl *c, const shmring_queue_ctrl *cfg)
{
    /* relaxed throughout: a monitoring snapshot. */
    uint64_t holder = __atomic_load_n(&c->lock.owner, __ATOMIC_RELAXED);
    return Py_BuildValue(
        "{sKsKsKsKsKsKsKsKsKsKsOsKsKsKsIsIsIsKsKsO}", "capacity", (unsigned long long)cfg->capacity, "maxsize",
        (unsigned long long)cfg->maxsize, "items", (unsigned long long)__atomic_load_n(&c->count, __ATOMIC_RELAXED),
        "bytes", (unsigned long long)__atomic_load_n(&c->bytes, __ATOMIC_RELAXED), "puts",
        (unsigned long long)__atomic_load_n(&c->puts, __ATOMIC_RELAXED), "gets",
        (unsigned long long)__atomic_load_n(&c->gets, __ATOMIC_RELAXED), "unfinished",
        (unsigned long long)shmring_queue_unfinished(c), "overflow_chunks",
        (unsigned long long)(__atomic_load_n(&c->ovf_tail, __ATOMIC_RELAXED) -
                             __atomic_load_n(&c->ovf_head, __ATOMIC_RELAXED)),
        "used_bytes",
        (unsigned long long)(__atomic_load_n(&c->tail, __ATOMIC_RELAXED) - __atomic_load_n(&c->head, __ATOMIC_RELAXED)),
        "holder", (unsigned long long)(holder ? shmring_token_pid(holder) : 0), "bounded",
        (cfg->flags & SHMRING_QUEUE_BOUNDED) ? Py_True : Py_False, "queue_id", (unsigned long long)cfg->queue_id,
        "chunk_head", (unsigned long long)__atomic_load_n(&c->ovf_head, __ATOMIC_RELAXED), "chunk_tail",
        (unsigned long long)__atomic_load_n(&c->ovf_tail, __ATOMIC_RELAXED), "getters_waiting",
        (unsigned)__atomic_load_n(&c->items_waiters, __ATOMIC_RELAXED), "putters_waiting",
        (unsigned)__atomic_load_n(&c->room_waiters, __ATOMIC_RELAXED), "joiners_waiting",
        (unsigned)__atomic_load_n(&c->done_waiters, __ATOMIC_RELAXED), "bytes_put",
        (unsigned long long)__atomic_load_n(&c->bytes_put, __ATOMIC_RELAXED), "bytes_got",
        (unsigned long long)__atomic_load_n(&c->bytes_got, __ATOMIC_RELAXED), "holder_alive",
        holder && shmring_token_alive(holder) ? Py_True : Py_False);
}

static PyObject *queue_stats(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL)
        return raise_queue_uninitialised();
    return queue_counters(self->ctrl, &self->config);
}

/* queue_info(mapping): the same counters from a read-only mapping, for
 * `shmring inspect` (no lock taken: a snapshot). */
static PyObject *core_queue_info(PyObject *Py_UNUSED(module), PyObject *arg)
{
    MappingObject *m = mapping_arg(arg, "queue_info");
    shmring_queue_ctrl cfg, *c;
    if (m == NULL)
        return NULL;
    c = (shmring_queue_ctrl *)shmring_segment_payload(&m->seg);
    if (((const shmring_segment_header *)m->seg.base)->kind != SHMRING_KIND_QUEUE ||
        shmring_queue_check_config(c, shmring_segment_payload_size(&m->seg), &cfg) != SHMRING_OK)
        return raise_code(SHMRING_ERR_CORRUPT, m->name);
    return queue_counters(c, &cfg);
}

static int queue_init(QueueObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"mapping", "dumps", "loads", "allow_other_owner", NULL};
    PyObject *mapping, *dumps = Py_None, *loads = Py_None;
    int allow_other = 0;
    MappingObject *m;
    if (self->mapping != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "queue already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|OOp:Queue", kwlist, &MappingType, &mapping, &dumps, &loads,
                                     &allow_other))
        return -1;
    m = (MappingObject *)mapping;
    if (mapping_check_open(m) < 0)
        return -1;
    if (((const shmring_segment_header *)m->seg.base)->kind != SHMRING_KIND_QUEUE) {
        PyErr_Format(PyExc_ValueError, "segment %R is not a queue", m->name);
        return -1;
    }
    if (!m->seg.writable) {
        PyErr_Format(PyExc_ValueError, "segment %R is mapped read-only", m->name);
        return -1;
    }
    if (PyUnicode_GetLength(m->name) > QUEUE_NAME_MAX) {
        PyErr_Format(PyExc_ValueError, "queue names are at most %d characters", QUEUE_NAME_MAX);
        return -1;
    }
    if (shmring_queue_check_config((shmring_queue_ctrl *)shmring_segment_payload(&m->seg),
                                   shmring_segment_payload_size(&m->seg), &self->config) != SHMRING_OK) {
        raise_code(SHMRING_ERR_CORRUPT, m->name);
        return -1;
    }
    if ((dumps != Py_None && !PyCallable_Check(dumps)) || (loads != Py_None && !PyCallable_Check(loads))) {
        PyErr_SetString(PyExc_TypeError, "dumps and loads must be callables or None");
        return -1;
    }
    if (PyObject_GetBuffer(mapping, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    Py_INCREF(mapping);
    self->mapping = mapping;
    self->ctrl = (shmring_queue_ctrl *)shmring_segment_payload(&m->seg);
    self->data = (unsigned char *)self->ctrl + SHMRING_QUEUE_CTRL_SIZE;
    if (dumps != Py_None) {
        Py_INCREF(dumps);
        self->dumps = dumps;
    }
    if (loads != Py_None) {
        Py_INCREF(loads);
        self->loads = loads;
    }
    /* Chunks are looked at, never attached to: they live while in the chain. */
    self->open_flags = SHMRING_OPEN_NO_ATTACH | (allow_other ? SHMRING_OPEN_ALLOW_OTHER_OWNER : 0u);
    self->generation = fork_generation;
    self->token = shmring_token_self();
    return 0;
}

/* The handle is collected with items pending: put them back.  A finalizer
 * rather than a step of dealloc, so that a handle in a reference cycle does
 * it too, before the collector clears its references (queue_clear). */
static void queue_finalize(QueueObject *self)
{
    if (self->pending != NULL && self->mapping != NULL && !queue_handle_closed(self) &&
        self->generation == fork_generation) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb); /* a collection may run while an exception is raised */
        queue_pending_return(self, (PyObject *)self);
        PyErr_Restore(type, value, tb);
    }
}

static void queue_dealloc(QueueObject *self)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
        return; /* resurrected by what the finalizer ran */
    queue_pending_drop(self);
    handle_dealloc_begin((HandleObject *)self);
    if (self->mapping != NULL)
        PyBuffer_Release(&self->view);
    chunks_forget(self, UINT64_MAX);
    free(self->chunks);
    free(self->spare.blob);
    free(self->spare.offs);
    free(self->spare.tags);
    Py_CLEAR(self->dumps);
    Py_CLEAR(self->loads);
    handle_dealloc_end((HandleObject *)self);
}

/* The handle's hooks, and the serializers. */
static int queue_traverse(QueueObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dumps);
    Py_VISIT(self->loads);
    Py_VISIT(self->pending);
    return handle_traverse((HandleObject *)self, visit, arg);
}

static int queue_clear(QueueObject *self)
{
    queue_pending_drop(self);
    Py_CLEAR(self->dumps);
    Py_CLEAR(self->loads);
    return handle_clear((HandleObject *)self);
}

static PyObject *queue_attr_capacity(QueueObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->config.capacity);
}

static PyObject *queue_attr_maxsize(QueueObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->config.maxsize);
}

static PyObject *queue_attr_bounded(QueueObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong((self->config.flags & SHMRING_QUEUE_BOUNDED) != 0);
}

static PyObject *queue_attr_closed(QueueObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(queue_handle_closed(self));
}

static PyMethodDef queue_methods[] = {
    {"put", (PyCFunction)(void (*)(void))queue_put, FASTKW,
     "put($self, /, obj, block=True, timeout=None)\n--\n\n"
     "Put obj into the queue (pickled), waiting for room while block, up to timeout; queue.Full then."},
    {"put_nowait", (PyCFunction)queue_put_nowait, METH_O,
     "put_nowait($self, obj, /)\n--\n\nput(obj, block=False)."},
    {"put_many", (PyCFunction)(void (*)(void))queue_put_many, FASTKW,
     "put_many($self, /, items, block=True, timeout=None)\n--\n\n"
     "Put the items as one batch: all of them, or none.  Every item is serialized before anything\n"
     "is written: when one fails (not picklable, or dumps raised or returned no bytes-like object),\n"
     "or the iterable raises, the exception propagates and nothing is put.  The batch then waits\n"
     "(block, timeout) for room for all of it (maxsize items; bytes on a bounded ring); on timeout\n"
     "it raises queue.Full and nothing is put, even if room for part of it came meanwhile.  A\n"
     "batch that can never fit (more items than maxsize, more record bytes than a bounded ring)\n"
     "raises ValueError at once."},
    {"put_many_nowait", (PyCFunction)queue_put_many_nowait, METH_O,
     "put_many_nowait($self, items, /)\n--\n\n"
     "put_many(items, block=False): all or nothing, queue.Full if it does not fit now."},
    {"put_bytes", (PyCFunction)(void (*)(void))queue_put_bytes, FASTKW,
     "put_bytes($self, /, data, block=True, timeout=None)\n--\n\n"
     "Put a bytes-like object as it is (no pickling); get() returns it as bytes."},
    {"get", (PyCFunction)(void (*)(void))queue_get, FASTKW,
     "get($self, /, block=True, timeout=None)\n--\n\n"
     "Take the next item, waiting for one while block, up to timeout; queue.Empty then."},
    {"get_nowait", (PyCFunction)queue_get_nowait, METH_NOARGS,
     "get_nowait($self, /)\n--\n\nget(block=False)."},
    {"get_many", (PyCFunction)(void (*)(void))queue_get_many, FASTKW,
     "get_many($self, /, block=True, timeout=None, max_messages_to_get=sys.maxsize)\n--\n\n"
     "Every item there (a list), up to max_messages_to_get, in one lock hold; waits for the first."},
    {"get_many_nowait", (PyCFunction)(void (*)(void))queue_get_many_nowait, FASTKW,
     "get_many_nowait($self, /, max_messages_to_get=sys.maxsize)\n--\n\nget_many(block=False, ...)."},
    {"get_bytes", (PyCFunction)(void (*)(void))queue_get_bytes, FASTKW,
     "get_bytes($self, /, block=True, timeout=None)\n--\n\nget(), the item's bytes as they are (no unpickling)."},
    {"qsize", (PyCFunction)queue_qsize, METH_NOARGS, "qsize($self, /)\n--\n\nThe number of items now."},
    {"empty", (PyCFunction)queue_empty, METH_NOARGS, "empty($self, /)\n--\n\nIs the queue empty now?"},
    {"full", (PyCFunction)queue_full, METH_NOARGS,
     "full($self, /)\n--\n\nDoes the queue hold maxsize items now?  With max_size_bytes, also: is its ring\n"
     "too full now for a 1-byte item, or for what this handle's last put refused with Full?"},
    {"data_size", (PyCFunction)queue_data_size, METH_NOARGS,
     "data_size($self, /)\n--\n\nThe bytes of the items now (serialized)."},
    {"is_closed", (PyCFunction)queue_is_closed, METH_NOARGS,
     "is_closed($self, /)\n--\n\n"
     "Whether close() was called on this handle: then its put/get (and the calls\n"
     "other threads are blocked in) raise QueueClosed (a ValueError).  Other handles are not affected."},
    {"closed_anywhere", (PyCFunction)queue_closed_anywhere, METH_NOARGS,
     "closed_anywhere($self, /)\n--\n\n"
     "Whether close() was called on any handle of this queue, in any process\n"
     "(faster-fifo's is_closed()).  A mark that never resets: it stops nothing."},
    {"close", (PyCFunction)queue_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Close this handle, as multiprocessing does: its calls raise QueueClosed (a ValueError) from now on,\n"
     "and threads blocked in its get/put/join are woken to raise it.  Other handles, in this process\n"
     "or others, keep working; close() itself removes nothing."},
    {"stats", (PyCFunction)queue_stats, METH_NOARGS, "stats($self, /)\n--\n\nThe queue's counters, as a dict."},
    {"_task_done", (PyCFunction)queue_task_done, METH_NOARGS,
     "_task_done($self, /)\n--\n\nA taken item is done (JoinableQueue.task_done)."},
    {"_join", (PyCFunction)(void (*)(void))queue_join, FASTKW,
     "_join($self, /, timeout=None)\n--\n\nWait until every item put is done (JoinableQueue.join)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef queue_getset[] = {
    {"capacity", (getter)queue_attr_capacity, NULL, "bytes in the main ring", NULL},
    {"_maxsize", (getter)queue_attr_maxsize, NULL, "item bound (0: none)", NULL},
    {"bounded", (getter)queue_attr_bounded, NULL, "whether the ring's bytes bound producers", NULL},
    {"_closed", (getter)queue_attr_closed, NULL, "whether this handle is closed", NULL},
    {"_mapping", (getter)handle_get_mapping, NULL, "the Mapping", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject QueueType = HANDLE_TYPE(
    "Queue", "Multi-producer/multi-consumer queue over a mapped queue segment (use shmring.Queue).",
    QueueObject, queue_init, queue_dealloc, queue_traverse, queue_clear, queue_finalize, queue_methods, queue_getset);

static PyObject *core_create_queue(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    unsigned long long capacity, maxsize;
    unsigned int flags, spin_ns, mode;
    shmring_segment seg;
    int rc;
    if (!PyArg_ParseTuple(args, "O&KKIII:create_queue", name_converter, &name, &capacity, &maxsize, &flags,
                          &spin_ns, &mode))
        return NULL;
    if (capacity < SHMRING_QUEUE_MIN_CAPACITY || capacity > SHMRING_QUEUE_MAX_CAPACITY || (capacity & 7u) != 0)
        return PyErr_Format(PyExc_ValueError, "capacity must be a multiple of 8 between %u and %llu, not %llu",
                            SHMRING_QUEUE_MIN_CAPACITY, (unsigned long long)SHMRING_QUEUE_MAX_CAPACITY, capacity);
    if ((flags & ~SHMRING_QUEUE_FLAGS_KNOWN) != 0 || mode > 0777)
        return PyErr_Format(PyExc_ValueError, "bad queue flags or mode");
    if (spin_ns > SHMRING_MAX_SPIN_NS)
        return PyErr_Format(PyExc_ValueError, "spin_ns must be at most %u", SHMRING_MAX_SPIN_NS);
    if (PyUnicode_GetLength(name.obj) > QUEUE_NAME_MAX)
        return PyErr_Format(PyExc_ValueError, "queue names are at most %d characters", QUEUE_NAME_MAX);
    Py_BEGIN_ALLOW_THREADS
    rc = shmring_segment_create_unpublished(name.path, shmring_queue_payload_size(capacity), SHMRING_KIND_QUEUE,
                                            (mode_t)mode, &seg);
    if (rc == SHMRING_OK) {
        shmring_queue_init(shmring_segment_payload(&seg), capacity, maxsize, flags, spin_ns, mode);
        shmring_segment_publish(&seg);
    }
    Py_END_ALLOW_THREADS
    return mapping_from_result(rc, &seg, name.obj);
}


PyMethodDef queue_functions[] = {
    {"queue_info", core_queue_info, METH_O,
     "queue_info($module, mapping, /)\n--\n\nA queue's counters (a snapshot), as a dict."},
    {"create_queue", core_create_queue, METH_VARARGS,
     "create_queue($module, name, capacity, maxsize, flags, spin_ns, mode, /)\n--\n\n"
     "A new, initialised queue segment: a Mapping of it."},
    {NULL, NULL, 0, NULL},
};
