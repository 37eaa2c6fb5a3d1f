/* shmring._core.Queue: the MPMC queue of include/shmring.h for Python.
 *
 * Included by _core.c (one translation unit: it shares the Mapping type,
 * the argument and timeout parsers and the error helpers).
 *
 * Every operation is one C call: serialize outside the lock (pickle may run
 * any Python code), take the queue's robust mutex, copy records in or out,
 * release, wake sleepers, deserialize outside the lock.  Nothing that can
 * run Python code (no allocation of a GC-tracked object, no callback)
 * happens while the shared lock is held: a finalizer that used the queue
 * there would wait for itself.
 */

static PyObject *pickle_dumps;    /* pickle.dumps */
static PyObject *pickle_loads;    /* pickle.loads */
static PyObject *pickle_protocol; /* pickle.HIGHEST_PROTOCOL */
static PyObject *queue_empty_error; /* queue.Empty */
static PyObject *queue_full_error;  /* queue.Full */

/* How long a lock waiter sleeps before it looks at the holder's liveness. */
#define QUEUE_CHECK_NS (10u * 1000u * 1000u)
/* Overflow chunks grow to at least this many bytes. */
#define QUEUE_MIN_CHUNK (UINT64_C(1) << 20)
/* Longest queue name: "<name>.q<index>" must stay a valid segment name. */
#define QUEUE_NAME_MAX 200

typedef struct {
    uint64_t index;
    uint64_t capacity;
    shmring_segment seg;
} QueueChunk;

typedef struct {
    PyObject_HEAD
    PyObject *mapping; /* MappingObject, kept mapped by `view` */
    Py_buffer view;
    shmring_queue_ctrl *ctrl;
    unsigned char *data;
    shmring_queue_ctrl config; /* checked copy of the config */
    PyObject *dumps;           /* NULL: pickle.dumps(obj, HIGHEST_PROTOCOL) */
    PyObject *loads;           /* NULL: pickle.loads */
    QueueChunk *chunks;        /* overflow chunks mapped by this process */
    Py_ssize_t nchunks, chunks_cap;
    unsigned open_flags; /* SHMRING_OPEN_* for chunks */
    int gc_was_enabled;  /* while the lock is held: see queue_lock */
    unsigned long generation;
    uint64_t token;
    int closed;  /* this handle's close(): read without the GIL by waiters [Q5] */
    int waiting; /* threads of this handle about to sleep or asleep (GIL held) [Q5] */
    int calls;         /* put/get calls of this handle running (GIL held) */
    int leave_pending; /* close() ran while calls were running: the last one leaves */
    PyObject *dict;
    PyObject *weakrefs;
} QueueObject;

static PyTypeObject QueueType;

static PyObject *queue_name(QueueObject *self)
{
    return ((MappingObject *)self->mapping)->name;
}

static PyObject *raise_corrupted(const char *kind, PyObject *name, const char *what);

static PyObject *queue_corrupt(QueueObject *self, const char *what)
{
    return raise_corrupted("queue", queue_name(self), what);
}

static PyObject *queue_closed_error(QueueObject *self)
{
    return PyErr_Format(PyExc_ValueError, "Queue %R is closed", queue_name(self));
}

/* Has this handle been closed?  Waiters look without the GIL. */
static int queue_handle_closed(QueueObject *self)
{
    /* relaxed [Q5]: a flag; a waiter that reads it late is woken by close(). */
    return __atomic_load_n(&self->closed, __ATOMIC_RELAXED);
}

static int queue_usable(QueueObject *self)
{
    if (self->mapping == NULL) {
        PyErr_SetString(PyExc_ValueError, "queue is not initialised");
        return -1;
    }
    if (queue_handle_closed(self)) {
        queue_closed_error(self);
        return -1;
    }
    if (self->generation != fork_generation) {
        self->generation = fork_generation;
        self->token = shmring_token_self();
    }
    return 0;
}

/* -- overflow chunks (all under the queue lock) ------------------------------ */

static void chunk_path(QueueObject *self, uint64_t index, char *path)
{
    /* Cannot fail: queue names are at most QUEUE_NAME_MAX characters. */
    shmring_queue_chunk_name(PyUnicode_AsUTF8(queue_name(self)), index, path);
}

/* Unmap the chunks this process holds below `below` (retired by anyone). */
static void chunks_forget(QueueObject *self, uint64_t below)
{
    Py_ssize_t i, j = 0;
    for (i = 0; i < self->nchunks; i++) {
        if (self->chunks[i].index < below)
            shmring_segment_close(&self->chunks[i].seg);
        else
            self->chunks[j++] = self->chunks[i];
    }
    self->nchunks = j;
}

static int chunks_add(QueueObject *self, uint64_t index, uint64_t capacity, shmring_segment *seg, QueueChunk **out)
{
    if (self->nchunks == self->chunks_cap) {
        Py_ssize_t cap = self->chunks_cap ? self->chunks_cap * 2 : 8;
        QueueChunk *grown = (QueueChunk *)realloc(self->chunks, (size_t)cap * sizeof(QueueChunk));
        if (grown == NULL) {
            shmring_segment_close(seg);
            errno = ENOMEM;
            return SHMRING_ERR_SYS;
        }
        self->chunks = grown;
        self->chunks_cap = cap;
    }
    self->chunks[self->nchunks].index = index;
    self->chunks[self->nchunks].capacity = capacity;
    self->chunks[self->nchunks].seg = *seg;
    *out = &self->chunks[self->nchunks++];
    return SHMRING_OK;
}

/* Map chunk `index` (SHMRING_ERR_SYS with errno ENOENT when it is gone). */
static int chunk_get(QueueObject *self, uint64_t index, QueueChunk **out)
{
    char path[NAME_MAX + 2];
    shmring_segment seg;
    uint64_t capacity;
    Py_ssize_t i;
    int rc;
    for (i = 0; i < self->nchunks; i++) {
        if (self->chunks[i].index == index) {
            *out = &self->chunks[i];
            return SHMRING_OK;
        }
    }
    chunk_path(self, index, path);
    rc = shmring_segment_open(path, self->open_flags, &seg);
    if (rc != SHMRING_OK)
        return rc;
    if (((shmring_segment_header *)seg.base)->kind != SHMRING_KIND_QUEUE_CHUNK ||
        shmring_queue_chunk_check((shmring_queue_chunk *)shmring_segment_payload(&seg),
                                  shmring_segment_payload_size(&seg), index, self->config.queue_id,
                                  &capacity) != SHMRING_OK) {
        shmring_segment_close(&seg);
        return SHMRING_ERR_CORRUPT;
    }
    return chunks_add(self, index, capacity, &seg, out);
}

/* Is segment `path` (a chunk name at or past ovf_tail) a leftover of this
 * queue: a chunk stamped with its id, or one whose maker died before
 * publishing it (empty, or its magic still 0: killed anywhere from shm_open
 * to the publish; nothing else takes a queue's chunk names while it lives)? */
static int chunk_is_leftover(QueueObject *self, const char *path)
{
    shmring_segment seg;
    int rc = shmring_segment_open(path, SHMRING_OPEN_READONLY | self->open_flags, &seg);
    if (rc == SHMRING_OK)
        shmring_segment_close(&seg);
    if (rc == SHMRING_ERR_NOT_READY)
        return 1;
    return rc == SHMRING_OK && shmring_queue_chunk_stamp(path).queue_id == self->config.queue_id;
}

/* Make chunk `index` (not yet in the chain: nobody else looks at it). */
static int chunk_create(QueueObject *self, uint64_t index, uint64_t capacity, QueueChunk **out)
{
    char path[NAME_MAX + 2];
    shmring_segment seg;
    shmring_queue_chunk *k;
    int rc;
    chunk_path(self, index, path);
    rc = shmring_segment_create_unpublished(path, SHMRING_QUEUE_CHUNK_HEADER_SIZE + capacity,
                                            SHMRING_KIND_QUEUE_CHUNK, (mode_t)self->config.chunk_mode, &seg);
    if (rc == SHMRING_ERR_SYS && errno == EEXIST) {
        /* Left by a process killed while making it (never in the chain), or
         * something else under that name: only a chunk of ours is removed. */
        if (!chunk_is_leftover(self, path)) {
            errno = EEXIST;
            return SHMRING_ERR_SYS;
        }
        shmring_segment_unlink(path);
        rc = shmring_segment_create_unpublished(path, SHMRING_QUEUE_CHUNK_HEADER_SIZE + capacity,
                                                SHMRING_KIND_QUEUE_CHUNK, (mode_t)self->config.chunk_mode, &seg);
    }
    if (rc != SHMRING_OK)
        return rc;
    /* A chunk lives as long as it is in the chain, not while it is mapped. */
    shmring_segment_forget_lease(&seg);
    k = (shmring_queue_chunk *)shmring_segment_payload(&seg);
    k->capacity = capacity;
    k->data_offset = SHMRING_QUEUE_CHUNK_HEADER_SIZE;
    k->index = index;
    k->queue_id = self->config.queue_id;
    k->queue_dev = ((MappingObject *)self->mapping)->seg.dev;
    k->queue_ino = ((MappingObject *)self->mapping)->seg.ino;
    shmring_segment_publish(&seg);
    return chunks_add(self, index, capacity, &seg, out);
}

static void chunk_unlink(QueueObject *self, uint64_t index)
{
    char path[NAME_MAX + 2];
    chunk_path(self, index, path);
    shmring_segment_unlink(path);
    chunks_forget(self, index + 1);
}

static void set_chain_head(QueueObject *self, uint64_t head);

/* Retire drained chunk `index` (the chain's head): the head moves first, so
 * that a chunk missing from the chain always means lost items (see
 * shmring_queue_recount), then the name goes. */
static void chunk_retire(QueueObject *self, uint64_t index)
{
    set_chain_head(self, index + 1);
    chunk_unlink(self, index);
}

static int chunk_ring(QueueChunk *k, shmring_queue_ring *r)
{
    shmring_queue_chunk *h = (shmring_queue_chunk *)shmring_segment_payload(&k->seg);
    return shmring_queue_ring_load(r, &h->head, &h->tail, (unsigned char *)h + SHMRING_QUEUE_CHUNK_HEADER_SIZE,
                                   k->capacity);
}

/* -- the lock ---------------------------------------------------------------- */

static int queue_recount(QueueObject *self);

/* Take a robust mutex (queue or topic lock), waiting in slices with the GIL
 * released.  0 with *granted = SHMRING_OK, _OWNER_DIED or _NOT_RECOVERABLE;
 * 1 on timeout; -1 with an exception (a signal handler raised). */
static int lock_robust(shmring_mutex *m, uint64_t token, uint64_t deadline, int *granted)
{
    int rc = shmring_mutex_try_acquire(m, token, 0);
    while (rc == SHMRING_AGAIN || rc == SHMRING_ERR_SYS || rc == SHMRING_TIMEOUT) {
        uint64_t slice = shmring_now_ns() + SHMRING_WAIT_SLICE_NS;
        if (deadline && deadline < slice)
            slice = deadline;
        Py_BEGIN_ALLOW_THREADS
        rc = shmring_mutex_lock(m, token, MUTEX_SPIN_NS, QUEUE_CHECK_NS, slice);
        Py_END_ALLOW_THREADS
        if (rc == SHMRING_TIMEOUT || rc == SHMRING_ERR_SYS) {
            if (PyErr_CheckSignals() < 0)
                return -1;
            if (deadline && shmring_now_ns() >= deadline)
                return 1;
            rc = SHMRING_AGAIN;
        }
    }
    *granted = rc;
    return 0;
}

/* A CorruptedError about segment `name` (a `kind`: "queue", "topic"). */
static PyObject *raise_corrupted(const char *kind, PyObject *name, const char *what)
{
    PyObject *msg = PyUnicode_FromFormat("%s %R: corrupted (%s): a counter or record read from shared memory "
                                         "is impossible",
                                         kind, name, what);
    if (msg != NULL) {
        PyObject *exc = PyObject_CallFunctionObjArgs(corrupted_error, msg, name, NULL);
        Py_DECREF(msg);
        if (exc != NULL) {
            PyErr_SetObject(corrupted_error, exc);
            Py_DECREF(exc);
        }
    }
    return NULL;
}

/* Release the queue lock (and let the garbage collector run again). */
static void queue_unlock(QueueObject *self)
{
    shmring_queue_unlock(self->ctrl, self->token);
    if (self->gc_was_enabled)
        PyGC_Enable();
}

/* Take the queue lock.  0, or -1 with an exception; 1 on timeout.  While
 * it is held the garbage collector is off: an error raised under the lock
 * allocates, and a collection could run a finalizer that uses this queue
 * and would wait for a lock its own process holds. */
static int queue_lock(QueueObject *self, uint64_t deadline)
{
    int rc, r = lock_robust(&self->ctrl->lock, self->token, deadline, &rc);
    if (r != 0)
        return r;
    self->gc_was_enabled = PyGC_Disable();
    if (rc == SHMRING_NOT_RECOVERABLE) {
        if (self->gc_was_enabled)
            PyGC_Enable();
        queue_corrupt(self, "its lock was abandoned in an inconsistent state");
        return -1;
    }
    if (rc == SHMRING_OWNER_DIED) {
        /* The last holder died holding it: every change it made is either
         * committed by its single store or invisible; only the counters may
         * lag.  Recount, then go on. */
        int repaired = queue_recount(self);
        if (repaired < 0) {
            /* A system error (out of memory or descriptors) may pass: leave
             * the lock to be repaired by the next holder.  Corruption stays. */
            if (repaired == -2)
                shmring_mutex_abandon(&self->ctrl->lock, self->token);
            else
                shmring_queue_unlock(self->ctrl, self->token); /* unrepaired: unusable for all */
            if (self->gc_was_enabled)
                PyGC_Enable();
            return -1;
        }
        shmring_mutex_consistent(&self->ctrl->lock, self->token);
    }
    return 0;
}

static int queue_chain(QueueObject *self, uint64_t *head, uint64_t *tail)
{
    /* relaxed: under the lock [Q1]. */
    *head = __atomic_load_n(&self->ctrl->ovf_head, __ATOMIC_RELAXED);
    *tail = __atomic_load_n(&self->ctrl->ovf_tail, __ATOMIC_RELAXED);
    if (*tail - *head > SHMRING_QUEUE_MAX_CHUNKS) {
        queue_corrupt(self, "overflow chain");
        return -1;
    }
    return 0;
}

static void set_chain_head(QueueObject *self, uint64_t head)
{
    /* relaxed: under the lock [Q1]. */
    __atomic_store_n(&self->ctrl->ovf_head, head, __ATOMIC_RELAXED);
    chunks_forget(self, head);
}

/* Remove chunks at index >= ovf_tail: made by a producer killed before it
 * moved ovf_tail (never in the chain; maybe not even published). */
static void remove_stale_chunks(QueueObject *self)
{
    /* relaxed: under the lock [Q1]. */
    uint64_t i = __atomic_load_n(&self->ctrl->ovf_tail, __ATOMIC_RELAXED);
    for (;; i++) {
        char path[NAME_MAX + 2];
        chunk_path(self, i, path);
        if (!chunk_is_leftover(self, path) || shmring_segment_unlink(path) != SHMRING_OK)
            return; /* gone (the end of the leftovers), or somebody else's segment: leave it */
    }
}

/* After OWNER_DIED: count what the rings hold (shmring_queue_recount).
 * 0, -1 (corrupted) or -2 (a system error: it may pass). */
static int queue_recount(QueueObject *self)
{
    int rc = shmring_queue_recount(self->ctrl, self->config.capacity, PyUnicode_AsUTF8(queue_name(self)), NULL);
    int saved = errno;
    chunks_forget(self, __atomic_load_n(&self->ctrl->ovf_head, __ATOMIC_RELAXED)); /* relaxed: lock held */
    if (rc == SHMRING_OK) {
        remove_stale_chunks(self);
        return 0;
    }
    if (rc == SHMRING_ERR_SYS) {
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
        return -2;
    }
    queue_corrupt(self, "counting the records after a holder died");
    return -1;
}

/* -- put ------------------------------------------------------------------------ */

/* Serialized items of one put: buffers to copy in and their record tags. */
typedef struct {
    Py_ssize_t n;
    Py_buffer *bufs;
    PyObject **objs; /* owned: what the buffers come from */
    uint32_t tag;
    uint64_t total; /* payload bytes */
    Py_buffer one_buf;
    PyObject *one_obj;
} PutBatch;

static void batch_release(PutBatch *b)
{
    Py_ssize_t i;
    for (i = 0; i < b->n; i++) {
        PyBuffer_Release(&b->bufs[i]);
        Py_DECREF(b->objs[i]);
    }
    if (b->bufs != &b->one_buf) {
        PyMem_Free(b->bufs);
        PyMem_Free(b->objs);
    }
    b->n = 0;
}

static PyObject *queue_serialize(QueueObject *self, PyObject *obj)
{
    if (self->dumps != NULL)
        return PyObject_CallOneArg(self->dumps, obj);
    {
        PyObject *args[2] = {obj, pickle_protocol};
        return PyObject_Vectorcall(pickle_dumps, args, 2, NULL);
    }
}

/* Fill `b` from one object (`many` = 0) or an iterable of them. */
static int batch_make(QueueObject *self, PutBatch *b, PyObject *arg, int many, int raw)
{
    PyObject *seq = NULL;
    Py_ssize_t n, i;
    memset(b, 0, sizeof(*b));
    b->tag = raw ? SHMRING_REC_BYTES : SHMRING_REC_OBJECT;
    if (!many) {
        n = 1;
        b->bufs = &b->one_buf;
        b->objs = &b->one_obj;
    } else {
        /* A tuple of our own: pickling an item may run code that changes
         * the caller's list under us. */
        seq = PySequence_Tuple(arg);
        if (seq == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_TypeError, "put_many() needs an iterable of items");
            }
            return -1;
        }
        n = PyTuple_GET_SIZE(seq);
        b->bufs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
        b->objs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(PyObject *));
        if (b->bufs == NULL || b->objs == NULL) {
            PyMem_Free(b->bufs);
            PyMem_Free(b->objs);
            b->bufs = NULL;
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
    }
    for (i = 0; i < n; i++) {
        PyObject *item = many ? PyTuple_GET_ITEM(seq, i) : arg;
        PyObject *data;
        if (raw) {
            Py_INCREF(item);
            data = item;
        } else {
            data = queue_serialize(self, item);
            if (data == NULL)
                goto fail;
        }
        if (PyObject_GetBuffer(data, &b->bufs[i], PyBUF_SIMPLE) < 0) {
            if (!raw)
                PyErr_Format(PyExc_TypeError, "dumps() must return a bytes-like object, not %.100s",
                             Py_TYPE(data)->tp_name);
            Py_DECREF(data);
            goto fail;
        }
        b->objs[i] = data;
        b->n = i + 1;
        b->total += (uint64_t)b->bufs[i].len;
    }
    Py_XDECREF(seq);
    return 0;
fail:
    Py_XDECREF(seq);
    batch_release(b);
    if (b->bufs != &b->one_buf) {
        /* batch_release freed them */
    }
    return -1;
}

#define QUEUE_DONE 0
#define QUEUE_WAIT 1
#define QUEUE_ERROR -1

/* Put the whole batch, or nothing (lock held). */
static int queue_put_locked(QueueObject *self, PutBatch *b)
{
    shmring_queue_ctrl *c = self->ctrl;
    int bounded = (self->config.flags & SHMRING_QUEUE_BOUNDED) != 0;
    uint64_t h, t, new_tail, first_new;
    shmring_queue_ring r;
    QueueChunk *k = NULL;
    Py_ssize_t i;
    int rc, must_wait = 0;
    /* relaxed: under the lock [Q1]. */
    uint64_t count = __atomic_load_n(&c->count, __ATOMIC_RELAXED);
    if (self->config.maxsize && count + (uint64_t)b->n > self->config.maxsize)
        return QUEUE_WAIT;
    if (queue_chain(self, &h, &t) < 0)
        return QUEUE_ERROR;
    if (self->nchunks)
        chunks_forget(self, h); /* retired by consumers meanwhile */
    new_tail = first_new = t;
    if (h == t) {
        shmring_queue_main_ring(c, self->config.capacity, &r, &rc);
    } else {
        rc = chunk_get(self, t - 1, &k);
        if (rc == SHMRING_OK)
            rc = chunk_ring(k, &r);
        if (rc != SHMRING_OK && !(rc == SHMRING_ERR_SYS && errno == ENOENT)) {
            queue_corrupt(self, "overflow chunk");
            return QUEUE_ERROR;
        }
        if (rc != SHMRING_OK) {
            PyErr_Format(PyExc_OSError, "queue %R: overflow chunk %llu is gone (removed by hand?)",
                         queue_name(self), (unsigned long long)(t - 1));
            return QUEUE_ERROR;
        }
    }
    if (rc != SHMRING_OK) {
        queue_corrupt(self, "ring counters");
        return QUEUE_ERROR;
    }
    {
        shmring_queue_ring first = r; /* committed at the end, after the new chunks */
        shmring_queue_ring *cur = &first;
        shmring_queue_ring fresh;
        if (b->n > 1 && first.head == first.tail) {
            /* An empty ring takes any batch that fits it (shmring_queue_ring_reserve
             * restarts it for one record): records go one after the other, so
             * restart it for the whole batch if it would reach the end. */
            uint64_t records = 0;
            for (i = 0; i < b->n; i++)
                records += shmring_queue_record_size((uint64_t)b->bufs[i].len);
            if (records > first.capacity - first.tail % first.capacity)
                shmring_queue_ring_restart(&first);
        }
        for (i = 0; i < b->n; i++) {
            unsigned char *dst;
            uint64_t len = (uint64_t)b->bufs[i].len;
            rc = shmring_queue_ring_reserve(cur, b->tag, len, &dst);
            if (rc != SHMRING_OK) {
                uint64_t need = shmring_queue_record_size(len), cap;
                if (rc != SHMRING_TOO_BIG && rc != SHMRING_AGAIN)
                    goto undo;
                if (len > UINT32_MAX) {
                    PyErr_Format(PyExc_ValueError, "queue %R: an item of %llu bytes is over the 4 GiB limit",
                                 queue_name(self), (unsigned long long)len);
                    goto undo;
                }
                /* No room here: a bounded queue waits unless the item could
                 * never fit its ring; an unbounded one opens a new chunk. */
                if (bounded && need <= self->config.capacity) {
                    must_wait = 1;
                    goto undo;
                }
                if (new_tail - h >= SHMRING_QUEUE_MAX_CHUNKS) {
                    PyErr_Format(PyExc_OSError, "queue %R: %u overflow chunks already held", queue_name(self),
                                 SHMRING_QUEUE_MAX_CHUNKS);
                    goto undo;
                }
                cap = bounded ? need : (need > self->config.capacity ? need : self->config.capacity);
                if (!bounded && cap < QUEUE_MIN_CHUNK)
                    cap = QUEUE_MIN_CHUNK;
                if (cur != &first)
                    shmring_queue_ring_commit(cur); /* a new chunk: invisible until ovf_tail moves */
                rc = chunk_create(self, new_tail, cap, &k);
                if (rc != SHMRING_OK) {
                    raise_code(rc, queue_name(self));
                    goto undo;
                }
                new_tail++;
                if (chunk_ring(k, &fresh) != SHMRING_OK) {
                    queue_corrupt(self, "new chunk");
                    goto undo;
                }
                cur = &fresh;
                rc = shmring_queue_ring_reserve(cur, b->tag, len, &dst);
                if (rc != SHMRING_OK) {
                    queue_corrupt(self, "new chunk too small");
                    goto undo;
                }
            }
            if (b->bufs[i].len > COPY_WITHOUT_GIL)
                copy_maybe_without_gil(dst, b->bufs[i].buf, (size_t)b->bufs[i].len);
            else
                memcpy(dst, b->bufs[i].buf, (size_t)b->bufs[i].len);
        }
        if (cur != &first)
            shmring_queue_ring_commit(cur);
        shmring_queue_ring_commit(&first);
        if (new_tail != t)
            /* relaxed: under the lock [Q1]; the chunks are complete. */
            __atomic_store_n(&c->ovf_tail, new_tail, __ATOMIC_RELAXED);
        shmring_queue_count_add(c, (uint64_t)b->n, b->total);
        return QUEUE_DONE;
    undo:
        /* Nothing committed: the chunks made here were never in the chain. */
        while (new_tail > first_new)
            chunk_unlink(self, --new_tail);
        if (must_wait)
            return QUEUE_WAIT;
        if (!PyErr_Occurred())
            queue_corrupt(self, "ring counters");
        return QUEUE_ERROR;
    }
}

/* -- get ------------------------------------------------------------------------ */

/* Records taken by one get, copied out under the lock into `blob`. */
typedef struct {
    Py_ssize_t n;
    char *blob;
    size_t used, size;
    uint64_t *offs; /* n + 1 */
    uint32_t *tags;
    Py_ssize_t cap;
} GetBatch;

static void getbatch_free(GetBatch *g)
{
    free(g->blob);
    free(g->offs);
    free(g->tags);
    memset(g, 0, sizeof(*g));
}

static int getbatch_add(GetBatch *g, uint32_t tag, const unsigned char *p, uint64_t len)
{
    if (g->n + 1 >= g->cap) {
        Py_ssize_t cap = g->cap ? g->cap * 2 : 16;
        uint64_t *offs = (uint64_t *)realloc(g->offs, (size_t)(cap + 1) * sizeof(uint64_t));
        uint32_t *tags;
        if (offs == NULL)
            return -1;
        g->offs = offs;
        tags = (uint32_t *)realloc(g->tags, (size_t)cap * sizeof(uint32_t));
        if (tags == NULL)
            return -1;
        g->tags = tags;
        g->cap = cap;
    }
    if (g->used + len > g->size) {
        size_t size = g->size ? g->size : 4096;
        char *blob;
        while (size < g->used + len)
            size *= 2;
        blob = (char *)realloc(g->blob, size);
        if (blob == NULL)
            return -1;
        g->blob = blob;
        g->size = size;
    }
    if (g->n == 0)
        g->offs[0] = 0;
    if (len == 0)
        ; /* nothing to copy (and blob may still be NULL) */
    else if (len > COPY_WITHOUT_GIL)
        copy_maybe_without_gil(g->blob + g->used, p, (size_t)len);
    else
        memcpy(g->blob + g->used, p, (size_t)len);
    g->used += len;
    g->tags[g->n] = tag;
    g->offs[++g->n] = g->used;
    return 0;
}

/* Chunk `index`, the head of the chain, is missing: removed by someone
 * else (consumers unlink a chunk only after moving the head past it), and
 * its items with it.  Recount (which skips missing chunks), count the lost
 * items as taken and done, and raise CorruptedError saying how many were
 * lost; the queue goes on with what is left.  Lock held. */
static void queue_chunk_lost(QueueObject *self, uint64_t index)
{
    shmring_queue_ctrl *c = self->ctrl;
    char path[NAME_MAX + 2];
    /* relaxed: under the lock [Q1]. */
    uint64_t before = __atomic_load_n(&c->count, __ATOMIC_RELAXED), after;
    if (queue_recount(self) < 0)
        return;
    after = __atomic_load_n(&c->count, __ATOMIC_RELAXED); /* relaxed: under the lock [Q1] */
    if (before > after)
        shmring_queue_task_done(c, before - after); /* nobody will call task_done() for them */
    chunk_path(self, index, path);
    PyErr_Format(corrupted_error,
                 "queue %R: overflow chunk %s is missing (removed by another program?): %llu item(s) were lost; "
                 "the queue goes on with the rest",
                 queue_name(self), path + 1, (unsigned long long)(before > after ? before - after : 0));
}

/* Take up to `max` items (lock held). */
static int queue_get_locked(QueueObject *self, GetBatch *g, Py_ssize_t max)
{
    shmring_queue_ctrl *c = self->ctrl;
    uint64_t h, t, bytes = 0;
    Py_ssize_t before = g->n;
    shmring_queue_ring r;
    QueueChunk *k;
    int rc, on_chunk = 0;
    shmring_queue_main_ring(c, self->config.capacity, &r, &rc);
    if (rc != SHMRING_OK)
        return queue_corrupt(self, "ring counters"), QUEUE_ERROR;
    if (queue_chain(self, &h, &t) < 0)
        return QUEUE_ERROR;
    if (self->nchunks)
        chunks_forget(self, h); /* retired by other consumers meanwhile */
    while (g->n - before < max) {
        uint32_t tag;
        const unsigned char *p;
        uint64_t len, at = r.head;
        rc = shmring_queue_ring_take(&r, &tag, &p, &len);
        if (rc == SHMRING_OK) {
            if (getbatch_add(g, tag, p, len) < 0) {
                r.head = at; /* it stays in the queue */
                if (g->n > before)
                    break; /* hand out what was taken */
                shmring_queue_ring_commit(&r);
                PyErr_NoMemory();
                goto fail;
            }
            bytes += len;
            continue;
        }
        if (rc != SHMRING_AGAIN) {
            r.head = at;
            if (g->n > before)
                break; /* hand out what was taken; the next call reports it */
            queue_corrupt(self, on_chunk ? "overflow chunk record" : "record header");
            goto fail;
        }
        /* This ring is empty: on to the oldest chunk, retiring empty ones. */
        shmring_queue_ring_commit(&r);
        if (on_chunk) {
            chunk_retire(self, h++); /* unmaps it: r goes back to the (empty) main ring */
            on_chunk = 0;
            shmring_queue_main_ring(c, self->config.capacity, &r, &rc);
        }
        if (h == t)
            break;
        rc = chunk_get(self, h, &k);
        if (rc == SHMRING_ERR_SYS && errno == ENOENT) {
            if (g->n > before)
                break; /* hand out what was taken; the next call reports the loss */
            queue_chunk_lost(self, h);
            return QUEUE_ERROR;
        }
        if (rc != SHMRING_OK || chunk_ring(k, &r) != SHMRING_OK) {
            shmring_queue_main_ring(c, self->config.capacity, &r, &rc); /* committed, empty */
            if (g->n > before)
                break; /* hand out what was taken; the next call reports it */
            if (rc == SHMRING_ERR_SYS)
                PyErr_SetFromErrno(PyExc_OSError);
            else
                queue_corrupt(self, "overflow chunk");
            goto fail;
        }
        on_chunk = 1;
    }
    shmring_queue_ring_commit(&r);
    if (on_chunk && r.head == r.tail)
        /* Emptied: retire it now, so that producers go back to the main ring
         * (when it was the last one). */
        chunk_retire(self, h);
    if (shmring_queue_count_sub(c, (uint64_t)(g->n - before), bytes) != SHMRING_OK) {
        queue_corrupt(self, "item count");
        return QUEUE_ERROR;
    }
    return g->n > before ? QUEUE_DONE : QUEUE_WAIT;
fail:
    shmring_queue_count_sub(c, (uint64_t)(g->n - before), bytes);
    return QUEUE_ERROR;
}

/* -- blocking --------------------------------------------------------------- */

typedef struct {
    PutBatch *put; /* or NULL for a get */
    GetBatch *get;
    Py_ssize_t max;
} QueueOp;

/* Run `op` until done, waiting as `block`/`deadline` say.  0 done, -1 error
 * (Full/Empty on a timeout or when not blocking). */
static int queue_run(QueueObject *self, QueueOp *op, int block, uint64_t deadline)
{
    shmring_queue_ctrl *c = self->ctrl;
    int is_put = op->put != NULL;
    uint32_t *seq = is_put ? &c->room_seq : &c->items_seq;
    uint32_t *waiters = is_put ? &c->room_waiters : &c->items_waiters;
    uint64_t spin_until = 0;
    int polled = 0, slept = 0, lr;
    for (;;) {
        int r;
        uint32_t my_seq, wake_items, wake_room;
        uint64_t count;
        if (queue_handle_closed(self))
            goto closed; /* by another thread of ours, while this one waited */
        lr = queue_lock(self, deadline);
        if (lr < 0)
            return -1;
        if (lr > 0)
            goto timeout;
        r = is_put ? queue_put_locked(self, op->put) : queue_get_locked(self, op->get, op->max);
        if (r == QUEUE_DONE) {
            /* relaxed [Q2]: read under the lock, after the change. */
            wake_items = __atomic_load_n(&c->items_waiters, __ATOMIC_RELAXED);
            wake_room = __atomic_load_n(&c->room_waiters, __ATOMIC_RELAXED);
            count = __atomic_load_n(&c->count, __ATOMIC_RELAXED);
            queue_unlock(self);
            if (is_put) {
                shmring_queue_wake(&c->items_seq, wake_items, (int)(op->put->n < INT_MAX ? op->put->n : INT_MAX));
                /* Room left and producers asleep: pass it on [Q2]. */
                if (!self->config.maxsize || count < self->config.maxsize)
                    shmring_queue_wake(&c->room_seq, wake_room, 1);
            } else {
                shmring_queue_wake(&c->room_seq, wake_room, (int)(op->get->n < INT_MAX ? op->get->n : INT_MAX));
                if (count > 0)
                    shmring_queue_wake(&c->items_seq, wake_items, 1);
            }
            return 0;
        }
        if (r == QUEUE_ERROR) {
            queue_unlock(self);
            return -1;
        }
        if (!block || (deadline && shmring_now_ns() >= deadline)) {
            queue_unlock(self);
            goto timeout;
        }
        if (!polled && self->config.spin_ns) {
            /* Poll (GIL released) before sleeping: a futex wake and sleep per
             * item cost more than the item (4 producers on a full queue ran
             * at 0.5M items/s sleeping, 1.2M polling).  Yield while polling:
             * with more processes than CPUs the peer we wait for needs ours. */
            /* relaxed: a mark to compare with while polling. */
            uint64_t mark = __atomic_load_n(is_put ? &c->gets : &c->puts, __ATOMIC_RELAXED);
            queue_unlock(self);
            polled = 1;
            spin_until = shmring_now_ns() + self->config.spin_ns;
            Py_BEGIN_ALLOW_THREADS
            for (unsigned i = 1;; i++) {
                /* relaxed: a hint; the lock's acquire orders the real check. */
                if (__atomic_load_n(is_put ? &c->gets : &c->puts, __ATOMIC_RELAXED) != mark ||
                    queue_handle_closed(self))
                    break;
                if (i & 7u)
                    shmring_cpu_relax();
                else if (sched_yield(), shmring_now_ns() >= spin_until)
                    break;
            }
            Py_END_ALLOW_THREADS
            continue;
        }
        polled = 0;
        my_seq = shmring_queue_register(seq, waiters);
        queue_unlock(self);
        {
            uint64_t slice = shmring_now_ns() + SHMRING_WAIT_SLICE_NS;
            int wr = SHMRING_OK;
            if (deadline && deadline < slice)
                slice = deadline;
            /* [Q5]: counted and checked with the GIL held, which close()
             * holds too: either close() ran before the check below, or it
             * sees `waiting` and bumps the word this thread sleeps on. */
            self->waiting++;
            if (!queue_handle_closed(self)) {
                Py_BEGIN_ALLOW_THREADS
                wr = shmring_futex_wait_until(seq, my_seq, slice);
                Py_END_ALLOW_THREADS
            }
            self->waiting--;
            shmring_queue_unregister(waiters);
            (void)wr;
            slept = 1;
            if (PyErr_CheckSignals() < 0) {
                /* We may have taken a wake meant for someone: pass it on. */
                shmring_queue_wake(seq, 1, 1);
                return -1;
            }
        }
    }
timeout:
closed:
    /* A wake-up taken just before the deadline (or the close) must not be
     * lost to the others (relaxed: a hint; a spare wake is harmless). */
    if (slept)
        shmring_queue_wake(seq, __atomic_load_n(waiters, __ATOMIC_RELAXED), 1);
    if (queue_handle_closed(self))
        queue_closed_error(self);
    else
        PyErr_SetNone(is_put ? queue_full_error : queue_empty_error);
    return -1;
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
        uint64_t need = 0;
        Py_ssize_t i;
        for (i = 0; i < b.n; i++)
            need += shmring_queue_record_size((uint64_t)b.bufs[i].len);
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
    batch_release(&b);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *queue_item(QueueObject *self, GetBatch *g, Py_ssize_t i, int raw)
{
    const char *p = g->blob + g->offs[i];
    Py_ssize_t len = (Py_ssize_t)(g->offs[i + 1] - g->offs[i]);
    PyObject *data = PyBytes_FromStringAndSize(p, len), *obj;
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
    memset(&g, 0, sizeof(g));
    op.get = &g;
    op.max = max;
    if (queue_run(self, &op, block, deadline) < 0) {
        getbatch_free(&g);
        return NULL;
    }
    if (!as_list) {
        result = queue_item(self, &g, 0, raw);
    } else {
        result = PyList_New(g.n);
        for (i = 0; result != NULL && i < g.n; i++) {
            PyObject *item = queue_item(self, &g, i, raw);
            if (item == NULL)
                Py_CLEAR(result);
            else
                PyList_SET_ITEM(result, i, item);
        }
    }
    getbatch_free(&g);
    return result;
}

/* A call on this handle ends: close() left the attachment to the last one
 * (a put may be making an overflow chunk that the queue's removal, were
 * this the last attachment, would otherwise miss). */
static PyObject *queue_call_done(QueueObject *self, PyObject *result)
{
    if (--self->calls == 0 && self->leave_pending) {
        self->leave_pending = 0;
        mapping_leave_now((MappingObject *)self->mapping);
    }
    return result;
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

static PyObject *queue_put(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3];
    int block;
    uint64_t deadline;
    if (nargs == 1 && kwnames == NULL)
        return queue_do_put(self, args[0], 0, 0, 1, 0); /* the common call: no parsing */
    if (parse_args("put", args, nargs, kwnames, ARGS_OBJ_BLOCK_TIMEOUT, 1, 3, a) < 0 ||
        parse_block(a[1], a[2], &block, &deadline) < 0)
        return NULL;
    return queue_do_put(self, a[0], 0, 0, block, deadline);
}

static PyObject *queue_put_nowait(QueueObject *self, PyObject *obj)
{
    return queue_do_put(self, obj, 0, 0, 0, 0);
}

static PyObject *queue_put_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3];
    int block;
    uint64_t deadline;
    if (parse_args("put_many", args, nargs, kwnames, ARGS_ITEMS_BLOCK_TIMEOUT, 1, 3, a) < 0 ||
        parse_block(a[1], a[2], &block, &deadline) < 0)
        return NULL;
    return queue_do_put(self, a[0], 1, 0, block, deadline);
}

static PyObject *queue_put_many_nowait(QueueObject *self, PyObject *items)
{
    return queue_do_put(self, items, 1, 0, 0, 0);
}

static PyObject *queue_put_bytes(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3];
    int block;
    uint64_t deadline;
    if (parse_args("put_bytes", args, nargs, kwnames, ARGS_DATA_BLOCK_TIMEOUT, 1, 3, a) < 0 ||
        parse_block(a[1], a[2], &block, &deadline) < 0)
        return NULL;
    return queue_do_put(self, a[0], 0, 1, block, deadline);
}

static PyObject *queue_get(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    int block;
    uint64_t deadline;
    if (nargs == 0 && kwnames == NULL)
        return queue_do_get(self, 1, 0, 0, 1, 0);
    if (parse_args("get", args, nargs, kwnames, ARGS_BLOCK_TIMEOUT, 0, 2, a) < 0 ||
        parse_block(a[0], a[1], &block, &deadline) < 0)
        return NULL;
    return queue_do_get(self, 1, 0, 0, block, deadline);
}

static PyObject *queue_get_nowait(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    return queue_do_get(self, 1, 0, 0, 0, 0);
}

static PyObject *queue_get_bytes(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    int block;
    uint64_t deadline;
    if (parse_args("get_bytes", args, nargs, kwnames, ARGS_BLOCK_TIMEOUT, 0, 2, a) < 0 ||
        parse_block(a[0], a[1], &block, &deadline) < 0)
        return NULL;
    return queue_do_get(self, 1, 0, 1, block, deadline);
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

static PyObject *queue_join(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    shmring_queue_ctrl *c;
    PyObject *a[1];
    uint64_t deadline;
    if (parse_args("join", args, nargs, kwnames, names, 0, 1, a) < 0 || parse_timeout(a[0], &deadline) < 0 ||
        queue_usable(self) < 0)
        return NULL;
    c = self->ctrl;
    for (;;) {
        uint32_t seq;
        uint64_t slice;
        /* seq_cst [Q3]: announce, read seq, then re-read done and puts;
         * pairs with task_done's bump and load of done_waiters. */
        __atomic_fetch_add(&c->done_waiters, 1u, __ATOMIC_SEQ_CST);
        seq = __atomic_load_n(&c->done_seq, __ATOMIC_SEQ_CST);
        if (shmring_queue_unfinished(c) == 0) {
            /* relaxed: a hint for task_done. */
            __atomic_fetch_sub(&c->done_waiters, 1u, __ATOMIC_RELAXED);
            Py_RETURN_NONE;
        }
        if (deadline && shmring_now_ns() >= deadline) {
            /* relaxed: a hint for task_done. */
            __atomic_fetch_sub(&c->done_waiters, 1u, __ATOMIC_RELAXED);
            PyErr_Format(timeout_error, "queue %R: join() timed out with unfinished tasks", queue_name(self));
            return NULL;
        }
        slice = shmring_now_ns() + SHMRING_WAIT_SLICE_NS;
        if (deadline && deadline < slice)
            slice = deadline;
        self->waiting++; /* [Q5], as in queue_run */
        if (!queue_handle_closed(self)) {
            Py_BEGIN_ALLOW_THREADS
            shmring_futex_wait_until(&c->done_seq, seq, slice);
            Py_END_ALLOW_THREADS
        }
        self->waiting--;
        /* relaxed: a hint for task_done. */
        __atomic_fetch_sub(&c->done_waiters, 1u, __ATOMIC_RELAXED);
        if (PyErr_CheckSignals() < 0)
            return NULL;
        if (queue_handle_closed(self))
            return queue_closed_error(self); /* by another thread of ours */
    }
}

/* -- the rest ------------------------------------------------------------------- */

static PyObject *queue_qsize(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL)
        return queue_usable(self) < 0 ? NULL : NULL;
    /* relaxed: a snapshot; exact at the moment it is read. */
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->ctrl->count, __ATOMIC_RELAXED));
}

static PyObject *queue_empty(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL)
        return queue_usable(self) < 0 ? NULL : NULL;
    /* relaxed: a snapshot. */
    return PyBool_FromLong(__atomic_load_n(&self->ctrl->count, __ATOMIC_RELAXED) == 0);
}

static PyObject *queue_full(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL)
        return queue_usable(self) < 0 ? NULL : NULL;
    /* relaxed: a snapshot. */
    return PyBool_FromLong(self->config.maxsize &&
                           __atomic_load_n(&self->ctrl->count, __ATOMIC_RELAXED) >= self->config.maxsize);
}

static PyObject *queue_data_size(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL)
        return queue_usable(self) < 0 ? NULL : NULL;
    /* relaxed: a snapshot. */
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->ctrl->bytes, __ATOMIC_RELAXED));
}

/* is_closed(): this handle's state, the one that makes its calls raise. */
static PyObject *queue_is_closed(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL)
        return queue_usable(self) < 0 ? NULL : NULL;
    return PyBool_FromLong(queue_handle_closed(self));
}

/* closed_anywhere(): whether close() was called on any handle of this queue,
 * in any process (faster-fifo's is_closed()); a mark only. */
static PyObject *queue_closed_anywhere(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL)
        return queue_usable(self) < 0 ? NULL : NULL;
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

/* close(): this handle only (as multiprocessing); its calls raise ValueError
 * from now on, those of other threads blocked in it included: they are woken
 * [Q5].  Other handles and processes go on; closed_anywhere() tells them.
 * The handle's attachment ends too, once no call of it is running. */
static PyObject *queue_close(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL || queue_handle_closed(self))
        Py_RETURN_NONE;
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
    return Py_BuildValue(
        "{sKsKsKsKsKsKsKsKsKsKsOsKsKsK}", "capacity", (unsigned long long)cfg->capacity, "maxsize",
        (unsigned long long)cfg->maxsize, "items", (unsigned long long)__atomic_load_n(&c->count, __ATOMIC_RELAXED),
        "bytes", (unsigned long long)__atomic_load_n(&c->bytes, __ATOMIC_RELAXED), "puts",
        (unsigned long long)__atomic_load_n(&c->puts, __ATOMIC_RELAXED), "gets",
        (unsigned long long)__atomic_load_n(&c->gets, __ATOMIC_RELAXED), "unfinished",
        (unsigned long long)shmring_queue_unfinished(c), "overflow_chunks",
        (unsigned long long)(__atomic_load_n(&c->ovf_tail, __ATOMIC_RELAXED) -
                             __atomic_load_n(&c->ovf_head, __ATOMIC_RELAXED)),
        "used_bytes",
        (unsigned long long)(__atomic_load_n(&c->tail, __ATOMIC_RELAXED) - __atomic_load_n(&c->head, __ATOMIC_RELAXED)),
        "holder", (unsigned long long)shmring_token_pid(__atomic_load_n(&c->lock.owner, __ATOMIC_RELAXED)), "bounded",
        (cfg->flags & SHMRING_QUEUE_BOUNDED) ? Py_True : Py_False, "queue_id", (unsigned long long)cfg->queue_id,
        "chunk_head", (unsigned long long)__atomic_load_n(&c->ovf_head, __ATOMIC_RELAXED), "chunk_tail",
        (unsigned long long)__atomic_load_n(&c->ovf_tail, __ATOMIC_RELAXED));
}

static PyObject *queue_stats(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL)
        return queue_usable(self) < 0 ? NULL : NULL;
    return queue_counters(self->ctrl, &self->config);
}

/* queue_info(mapping): the same counters from a read-only mapping, for
 * `shmring inspect` (no lock taken: a snapshot). */
static PyObject *core_queue_info(PyObject *Py_UNUSED(module), PyObject *arg)
{
    MappingObject *m;
    shmring_queue_ctrl cfg, *c;
    if (!PyObject_TypeCheck(arg, &MappingType))
        return PyErr_Format(PyExc_TypeError, "queue_info() needs a Mapping");
    m = (MappingObject *)arg;
    if (mapping_check_open(m) < 0)
        return NULL;
    c = (shmring_queue_ctrl *)shmring_segment_payload(&m->seg);
    if (((const shmring_segment_header *)m->seg.base)->kind != SHMRING_KIND_QUEUE ||
        shmring_queue_check_config(c, shmring_segment_payload_size(&m->seg), &cfg) != SHMRING_OK)
        return raise_code(SHMRING_ERR_CORRUPT, m->name);
    return queue_counters(c, &cfg);
}

/* Test hook: die (SIGKILL) at `stage` of a put made under the lock:
 * 1 = record written, tail not committed; 2 = tail committed, counters not;
 * 3 = holding the lock only; 4 = an empty ring restarted at offset 0
 * (shmring_queue_ring_restart) and the record written, tail committed, head not. */
static PyObject *queue_crash_in_put(QueueObject *self, PyObject *arg)
{
    long stage = PyLong_AsLong(arg);
    shmring_queue_ctrl *c;
    shmring_queue_ring r;
    unsigned char *dst;
    int rc;
    if (stage == -1 && PyErr_Occurred())
        return NULL;
    if (queue_usable(self) < 0 || queue_lock(self, 0) != 0)
        return NULL;
    c = self->ctrl;
    shmring_queue_main_ring(c, self->config.capacity, &r, &rc);
    if (stage == 4 && rc == SHMRING_OK)
        shmring_queue_ring_restart(&r);
    if (stage != 3 && rc == SHMRING_OK &&
        shmring_queue_ring_reserve(&r, SHMRING_REC_BYTES, 5, &dst) == SHMRING_OK) {
        memcpy(dst, "crash", 5);
        if (stage == 2)
            shmring_queue_ring_commit(&r);
        if (stage == 4)
            /* relaxed: under the lock; the first half of shmring_queue_ring_commit. */
            __atomic_store_n(r.tail_p, r.tail, __ATOMIC_RELAXED);
    }
    kill(getpid(), SIGKILL);
    for (;;)
        pause();
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

static void queue_dealloc(QueueObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->mapping != NULL)
        PyBuffer_Release(&self->view);
    chunks_forget(self, UINT64_MAX);
    free(self->chunks);
    Py_CLEAR(self->mapping);
    Py_CLEAR(self->dumps);
    Py_CLEAR(self->loads);
    Py_CLEAR(self->dict);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int queue_traverse(QueueObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->mapping);
    Py_VISIT(self->dumps);
    Py_VISIT(self->loads);
    Py_VISIT(self->dict);
    return 0;
}

static int queue_clear(QueueObject *self)
{
    Py_CLEAR(self->dumps);
    Py_CLEAR(self->loads);
    Py_CLEAR(self->dict);
    return 0;
}

static PyObject *queue_get_capacity(QueueObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->config.capacity);
}

static PyObject *queue_get_maxsize_cfg(QueueObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->config.maxsize);
}

static PyObject *queue_get_bounded(QueueObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong((self->config.flags & SHMRING_QUEUE_BOUNDED) != 0);
}

static PyObject *queue_get_closed(QueueObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(queue_handle_closed(self));
}

static PyObject *queue_get_mapping(QueueObject *self, void *Py_UNUSED(closure))
{
    if (self->mapping == NULL)
        Py_RETURN_NONE;
    Py_INCREF(self->mapping);
    return self->mapping;
}

static PyMethodDef queue_methods[] = {
    {"put", (PyCFunction)(void (*)(void))queue_put, FASTKW, "put(obj, block=True, timeout=None)"},
    {"put_nowait", (PyCFunction)queue_put_nowait, METH_O, "put_nowait(obj)"},
    {"put_many", (PyCFunction)(void (*)(void))queue_put_many, FASTKW,
     "put_many(items, block=True, timeout=None)\n\n"
     "Put the items as one batch: all of them, or none.  Every item is serialized before anything\n"
     "is written: when one fails (not picklable, or dumps raised or returned no bytes-like object),\n"
     "or the iterable raises, the exception propagates and nothing is put.  The batch then waits\n"
     "(block, timeout) for room for all of it (maxsize items; bytes on a bounded ring); on timeout\n"
     "it raises queue.Full and nothing is put, even if room for part of it came meanwhile.  A\n"
     "batch that can never fit (more items than maxsize, more record bytes than a bounded ring)\n"
     "raises ValueError at once."},
    {"put_many_nowait", (PyCFunction)queue_put_many_nowait, METH_O,
     "put_many_nowait(items)\n\nput_many(items, block=False): all or nothing, queue.Full if it does not fit now."},
    {"put_bytes", (PyCFunction)(void (*)(void))queue_put_bytes, FASTKW, "put_bytes(data, block=True, timeout=None)"},
    {"get", (PyCFunction)(void (*)(void))queue_get, FASTKW, "get(block=True, timeout=None)"},
    {"get_nowait", (PyCFunction)queue_get_nowait, METH_NOARGS, "get_nowait()"},
    {"get_many", (PyCFunction)(void (*)(void))queue_get_many, FASTKW,
     "get_many(block=True, timeout=None, max_messages_to_get=...)"},
    {"get_many_nowait", (PyCFunction)(void (*)(void))queue_get_many_nowait, FASTKW,
     "get_many_nowait(max_messages_to_get=...)"},
    {"get_bytes", (PyCFunction)(void (*)(void))queue_get_bytes, FASTKW, "get_bytes(block=True, timeout=None)"},
    {"qsize", (PyCFunction)queue_qsize, METH_NOARGS, "qsize() -> int"},
    {"empty", (PyCFunction)queue_empty, METH_NOARGS, "empty() -> bool"},
    {"full", (PyCFunction)queue_full, METH_NOARGS, "full() -> bool"},
    {"data_size", (PyCFunction)queue_data_size, METH_NOARGS, "data_size() -> int"},
    {"is_closed", (PyCFunction)queue_is_closed, METH_NOARGS,
     "is_closed() -> bool\n\nWhether close() was called on this handle: then its put/get (and the calls\n"
     "other threads are blocked in) raise ValueError.  Other handles are not affected."},
    {"closed_anywhere", (PyCFunction)queue_closed_anywhere, METH_NOARGS,
     "closed_anywhere() -> bool\n\nWhether close() was called on any handle of this queue, in any process\n"
     "(faster-fifo's is_closed()).  A mark that never resets: it stops nothing."},
    {"close", (PyCFunction)queue_close, METH_NOARGS,
     "close()\n\nClose this handle, as multiprocessing does: its calls raise ValueError from now on,\n"
     "and threads blocked in its get/put/join are woken to raise it.  Other handles, in this process\n"
     "or others, keep working; close() itself removes nothing."},
    {"stats", (PyCFunction)queue_stats, METH_NOARGS, "stats() -> dict"},
    {"_task_done", (PyCFunction)queue_task_done, METH_NOARGS, "_task_done()"},
    {"_join", (PyCFunction)(void (*)(void))queue_join, FASTKW, "_join(timeout=None)"},
    {"_crash_in_put", (PyCFunction)queue_crash_in_put, METH_O, "_crash_in_put(stage): test hook, never returns"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef queue_getset[] = {
    {"capacity", (getter)queue_get_capacity, NULL, "bytes in the main ring", NULL},
    {"_maxsize", (getter)queue_get_maxsize_cfg, NULL, "item bound (0: none)", NULL},
    {"bounded", (getter)queue_get_bounded, NULL, "whether the ring's bytes bound producers", NULL},
    {"_closed", (getter)queue_get_closed, NULL, "whether this handle is closed", NULL},
    {"_mapping", (getter)queue_get_mapping, NULL, "the Mapping", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject QueueType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmring._core.Queue",
    .tp_basicsize = sizeof(QueueObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Multi-producer/multi-consumer queue over a mapped queue segment (use shmring.Queue).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)queue_init,
    .tp_dealloc = (destructor)queue_dealloc,
    .tp_traverse = (traverseproc)queue_traverse,
    .tp_clear = (inquiry)queue_clear,
    .tp_methods = queue_methods,
    .tp_getset = queue_getset,
    .tp_dictoffset = offsetof(QueueObject, dict),
    .tp_weaklistoffset = offsetof(QueueObject, weakrefs),
};

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
    if (rc != SHMRING_OK)
        return raise_code(rc, name.obj);
    return (PyObject *)mapping_new(&seg, name.obj);
}

static int queue_module_init(PyObject *m)
{
    PyObject *pickle = PyImport_ImportModule("pickle"), *queue;
    if (pickle == NULL)
        return -1;
    pickle_dumps = PyObject_GetAttrString(pickle, "dumps");
    pickle_loads = PyObject_GetAttrString(pickle, "loads");
    pickle_protocol = PyObject_GetAttrString(pickle, "HIGHEST_PROTOCOL");
    Py_DECREF(pickle);
    queue = PyImport_ImportModule("queue");
    if (queue == NULL)
        return -1;
    queue_empty_error = PyObject_GetAttrString(queue, "Empty");
    queue_full_error = PyObject_GetAttrString(queue, "Full");
    Py_DECREF(queue);
    if (pickle_dumps == NULL || pickle_loads == NULL || pickle_protocol == NULL || queue_empty_error == NULL ||
        queue_full_error == NULL || PyType_Ready(&QueueType) < 0)
        return -1;
    Py_INCREF(&QueueType);
    if (PyModule_AddObject(m, "Queue", (PyObject *)&QueueType) < 0 ||
        PyModule_AddIntConstant(m, "QUEUE_BOUNDED", SHMRING_QUEUE_BOUNDED) < 0 ||
        PyModule_AddIntConstant(m, "QUEUE_CTRL_SIZE", SHMRING_QUEUE_CTRL_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "QUEUE_MIN_CAPACITY", SHMRING_QUEUE_MIN_CAPACITY) < 0 ||
        PyModule_AddIntConstant(m, "KIND_QUEUE_CHUNK", SHMRING_KIND_QUEUE_CHUNK) < 0)
        return -1;
    return 0;
}
