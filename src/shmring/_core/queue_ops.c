/*
 * queue_ops.c - a Queue's put and get, the queue lock held (queue_run in
 * queue_wait.c takes it and waits): the serialized items of a put (a
 * PutBatch, made before the lock is taken: pickle may run any Python
 * code), the records of a get (a GetBatch, copied out under the lock and
 * deserialized after), and the rings they go in and out of, the overflow
 * chunks included (queue_chunks.c).
 */
#include "core.h"

/* -- put ------------------------------------------------------------------------ */

/* Let go of the items (the arrays stay, for others: batch_set fills them
 * again from item 0). */
static inline void batch_clear(PutBatch *b)
{
    Py_ssize_t i;
    for (i = 0; i < b->n; i++) {
        PyBuffer_Release(&b->bufs[i]);
        Py_DECREF(b->objs[i]);
        Py_XDECREF(b->oob[i]);
    }
    b->n = 0;
    b->total = 0;
}

/* Free the per-item arrays of a batch of more than one item. */
static void batch_free_arrays(PutBatch *b)
{
    PyMem_Free(b->bufs);
    PyMem_Free(b->objs);
    PyMem_Free(b->oob);
    PyMem_Free(b->tags);
    PyMem_Free(b->lens);
}

void batch_release(PutBatch *b)
{
    batch_clear(b);
    if (b->bufs != NULL && b->bufs != &b->one_buf)
        batch_free_arrays(b);
    b->bufs = NULL;
}

/* Room for `n` items: the one_* fields for one, else arrays.  0, or -1 with
 * MemoryError. */
static inline int batch_alloc(PutBatch *b, Py_ssize_t n)
{
    size_t k = (size_t)n;
    if (n <= 1) {
        b->bufs = &b->one_buf;
        b->objs = &b->one_obj;
        b->oob = &b->one_oob;
        b->tags = &b->one_tag;
        b->lens = &b->one_len;
        return 0;
    }
    /* Not zeroed: batch_set fills entry i before b->n counts it, and
     * nothing reads past b->n. */
    b->bufs = PyMem_Malloc(k * sizeof(Py_buffer));
    b->objs = PyMem_Malloc(k * sizeof(PyObject *));
    b->oob = PyMem_Malloc(k * sizeof(PyObject *));
    b->tags = PyMem_Malloc(k * sizeof(uint32_t));
    b->lens = PyMem_Malloc(k * sizeof(uint64_t));
    if (b->bufs == NULL || b->objs == NULL || b->oob == NULL || b->tags == NULL || b->lens == NULL) {
        batch_free_arrays(b);
        b->bufs = NULL;
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Item i of the batch is `data` (its buffer taken here; the reference
 * stolen), with `buffers` (stolen, may be NULL) out of band.  0, or -1
 * with an exception (data is then released). */
static inline int batch_set(PutBatch *b, Py_ssize_t i, uint32_t tag, PyObject *data, PyObject *buffers)
{
    if (PyBytes_CheckExact(data)) {
        /* The common case (a pickle, an encoding): its bytes as they are,
         * held by the reference in objs[i] (obj NULL: nothing to release). */
        b->bufs[i].obj = NULL;
        b->bufs[i].buf = PyBytes_AS_STRING(data);
        b->bufs[i].len = PyBytes_GET_SIZE(data);
    } else if (PyObject_GetBuffer(data, &b->bufs[i], PyBUF_SIMPLE) < 0) {
        Py_DECREF(data);
        Py_XDECREF(buffers);
        return -1;
    }
    b->objs[i] = data;
    b->oob[i] = buffers;
    b->tags[i] = buffers != NULL ? SHMRING_REC_OOB : tag;
    b->lens[i] = buffers != NULL ? oob_record_len((uint64_t)b->bufs[i].len, buffers) : (uint64_t)b->bufs[i].len;
    b->n = i + 1;
    b->total += b->lens[i];
    return 0;
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
int batch_make(QueueObject *self, PutBatch *b, PyObject *arg, int many, int raw)
{
    PyObject *seq = NULL;
    Py_ssize_t n, i;
    /* The value encoding and the out-of-band buffers where the queue allows
     * them and no dumps/loads of the user's replace pickle; the value
     * encoding only when every item of the batch encodes (else all are
     * pickled). */
    int ours = !raw && self->dumps == NULL && self->loads == NULL;
    int values = ours && (self->config.flags & SHMRING_QUEUE_VALUES);
    int oob = ours && (self->config.flags & SHMRING_QUEUE_OOB);
    b->n = 0;
    b->total = 0;
    b->bufs = NULL; /* (the rest is set as it is used: batch_alloc, batch_set) */
    if (!many) {
        n = 1;
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
    }
    if (batch_alloc(b, n) < 0) {
        Py_XDECREF(seq);
        return -1;
    }
    for (i = 0; i < n && values; i++) {
        PyObject *item = many ? PyTuple_GET_ITEM(seq, i) : arg, *data = NULL;
        /* A large bytes goes out of band: copied once each way. */
        int rc = oob && PyBytes_CheckExact(item) && PyBytes_GET_SIZE(item) >= QUEUE_OOB_MIN ? 0
                                                                                            : value_encode(item, &data);
        if (rc < 0)
            goto fail;
        values = rc;
        if (rc == 1 && batch_set(b, i, SHMRING_REC_VALUE, data, NULL) < 0)
            goto fail; /* (a bytes object: its buffer cannot fail) */
    }
    if (values && b->n == n) {
        Py_XDECREF(seq);
        return 0;
    }
    batch_clear(b); /* an item does not encode: pickle them all */
    for (i = 0; i < n; i++) {
        PyObject *item = many ? PyTuple_GET_ITEM(seq, i) : arg;
        PyObject *data, *buffers = NULL;
        if (raw) {
            Py_INCREF(item);
            data = item;
        } else if (oob) {
            if (oob_serialize(item, &data, &buffers) < 0)
                goto fail;
        } else {
            data = queue_serialize(self, item);
            if (data == NULL)
                goto fail;
        }
        if (!raw && !PyObject_CheckBuffer(data)) {
            PyErr_Format(PyExc_TypeError, "dumps() must return a bytes-like object, not %.100s",
                         Py_TYPE(data)->tp_name);
            Py_DECREF(data);
            Py_XDECREF(buffers);
            goto fail;
        }
        if (batch_set(b, i, raw ? SHMRING_REC_BYTES : SHMRING_REC_OBJECT, data, buffers) < 0)
            goto fail;
    }
    Py_XDECREF(seq);
    return 0;
fail:
    Py_XDECREF(seq);
    batch_release(b);
    return -1;
}

/* Where a put's records go: the ring it started in (committed last, after
 * the new chunks) and the ring being filled (`cur`: `first`, or the newest
 * chunk made by this put). */
typedef struct {
    uint64_t h, t;          /* the chain when the put began */
    uint64_t new_tail;      /* the chain's tail once the put commits */
    shmring_queue_ring first, fresh, *cur;
} PutPlace;

/* The ring a put starts in: the main ring while the chain is empty, else
 * its newest chunk.  0, or QUEUE_ERROR with an exception. */
static int put_start(QueueObject *self, PutPlace *p)
{
    QueueChunk *k;
    int rc;
    if (p->h == p->t) {
        shmring_queue_main_ring(self->ctrl, self->config.capacity, &p->first, &rc);
    } else {
        rc = chunk_get(self, p->t - 1, &k);
        if (rc == SHMRING_OK)
            rc = chunk_ring(k, &p->first);
        /* A newest chunk that does not exist: ovf_tail (or ovf_head) names
         * a chain that was never made, or a chunk was removed by hand. */
        if (rc != SHMRING_OK) {
            queue_corrupt(self, rc == SHMRING_ERR_SYS && errno == ENOENT ? "ovf_tail (its newest chunk does not exist)"
                                                                         : "overflow chunk");
            return QUEUE_ERROR;
        }
    }
    if (rc != SHMRING_OK) {
        queue_corrupt(self, "ring counters");
        return QUEUE_ERROR;
    }
    p->cur = &p->first;
    return 0;
}

/* A record of `len` bytes found no room in the current ring (`rc`): a
 * bounded queue waits (QUEUE_WAIT) unless the item could never fit its
 * ring; an unbounded one opens a new chunk (not in the chain until the put
 * commits) and reserves the record there (0, *dst set).  QUEUE_ERROR, with
 * an exception or not (the caller then reports the ring's counters). */
static int put_overflow(QueueObject *self, PutPlace *p, uint32_t tag, uint64_t len, int rc, unsigned char **dst)
{
    int bounded = (self->config.flags & SHMRING_QUEUE_BOUNDED) != 0;
    uint64_t need = shmring_queue_record_size(len), cap;
    QueueChunk *k;
    if (rc != SHMRING_TOO_BIG && rc != SHMRING_AGAIN)
        return QUEUE_ERROR;
    if (len > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "queue %R: an item of %llu bytes is over the 4 GiB limit", queue_name(self),
                     (unsigned long long)len);
        return QUEUE_ERROR;
    }
    if (bounded && need <= self->config.capacity)
        return QUEUE_WAIT;
    if (p->new_tail - p->h >= SHMRING_QUEUE_MAX_CHUNKS) {
        PyErr_Format(PyExc_OSError, "queue %R: %u overflow chunks already held", queue_name(self),
                     SHMRING_QUEUE_MAX_CHUNKS);
        return QUEUE_ERROR;
    }
    cap = bounded ? need : (need > self->config.capacity ? need : self->config.capacity);
    if (!bounded && cap < QUEUE_MIN_CHUNK)
        cap = QUEUE_MIN_CHUNK;
    if (p->cur != &p->first)
        shmring_queue_ring_commit(p->cur); /* a new chunk: invisible until ovf_tail moves */
    rc = chunk_create(self, p->new_tail, cap, &k);
    if (rc != SHMRING_OK) {
        raise_code(rc, queue_name(self));
        return QUEUE_ERROR;
    }
    p->new_tail++;
    if (chunk_ring(k, &p->fresh) != SHMRING_OK) {
        queue_corrupt(self, "overflow chunk (just made)");
        return QUEUE_ERROR;
    }
    p->cur = &p->fresh;
    if (shmring_queue_ring_reserve(p->cur, tag, len, dst) != SHMRING_OK) {
        queue_corrupt(self, "overflow chunk (too small for its record)");
        return QUEUE_ERROR;
    }
    return 0;
}

/* Put the whole batch, or nothing (lock held): QUEUE_DONE, QUEUE_WAIT (no
 * room now: nothing was written) or QUEUE_ERROR with an exception. */
int queue_put_locked(QueueObject *self, PutBatch *b)
{
    shmring_queue_ctrl *c = self->ctrl;
    PutPlace p;
    Py_ssize_t i;
    int r = 0;
    /* relaxed: under the lock [Q1]. */
    uint64_t count = shmring_load_relaxed(&c->count);
    if (self->config.maxsize && count + (uint64_t)b->n > self->config.maxsize)
        return QUEUE_WAIT;
    if (queue_chain(self, &p.h, &p.t) < 0)
        return QUEUE_ERROR;
    if (self->nchunks)
        chunks_forget(self, p.h); /* retired by consumers meanwhile */
    p.new_tail = p.t;
    if (put_start(self, &p) < 0)
        return QUEUE_ERROR;
    if (b->n > 1 && p.first.head == p.first.tail) {
        /* An empty ring takes any batch that fits it (shmring_queue_ring_reserve
         * restarts it for one record): records go one after the other, so
         * restart it for the whole batch if it would reach the end. */
        uint64_t records = 0;
        for (i = 0; i < b->n; i++)
            records += shmring_queue_record_size(b->lens[i]);
        if (records > p.first.capacity - p.first.tail % p.first.capacity)
            shmring_queue_ring_restart(&p.first);
    }
    for (i = 0; i < b->n && r == 0; i++) {
        unsigned char *dst;
        int rc = shmring_queue_ring_reserve(p.cur, b->tags[i], b->lens[i], &dst);
        if (rc != SHMRING_OK)
            r = put_overflow(self, &p, b->tags[i], b->lens[i], rc, &dst);
        if (r == 0 && b->oob[i] != NULL)
            oob_write(dst, &b->bufs[i], b->oob[i]); /* each piece straight into its place */
        else if (r == 0)
            copy_maybe_without_gil(dst, b->bufs[i].buf, (size_t)b->bufs[i].len);
    }
    if (r != 0) {
        /* Nothing committed: the chunks made here were never in the chain. */
        while (p.new_tail > p.t)
            chunk_unlink(self, --p.new_tail);
        if (r == QUEUE_ERROR && !PyErr_Occurred())
            queue_corrupt(self, "ring counters");
        return r;
    }
    if (p.cur != &p.first)
        shmring_queue_ring_commit(p.cur);
    shmring_queue_ring_commit(&p.first);
    if (p.new_tail != p.t)
        /* relaxed: under the lock [Q1]; the chunks are complete. */
        shmring_store_relaxed(&c->ovf_tail, p.new_tail);
    shmring_queue_count_add(c, (uint64_t)b->n, b->total);
    return QUEUE_DONE;
}

/* -- get ------------------------------------------------------------------------ */

void getbatch_free(GetBatch *g)
{
    if (g->first_piece != NULL) { /* (only a get that met an out-of-band record) */
        Py_ssize_t i;
        for (i = 0; i < g->npieces; i++)
            Py_DECREF(g->pieces[i]);
        free(g->pieces);
        free(g->first_piece);
    }
    free(g->blob);
    free(g->offs);
    free(g->tags);
    memset(g, 0, sizeof(*g));
}

/* A get's arrays are kept for the handle's next get up to these sizes: a
 * malloc and a free of each per call cost as much as the rest of a small
 * get's copying. */
#define GETBATCH_SPARE_ITEMS 1024
#define GETBATCH_SPARE_BYTES ((size_t)64 * 1024)

void getbatch_lend(QueueObject *self, GetBatch *g)
{
    memset(g, 0, sizeof(*g));
    /* Taken out of the handle while the get runs (with the GIL): another
     * thread's get on the same handle meanwhile makes arrays of its own. */
    g->blob = self->spare.blob;
    g->size = self->spare.size;
    g->offs = self->spare.offs;
    g->tags = self->spare.tags;
    g->cap = self->spare.cap;
    memset(&self->spare, 0, sizeof(self->spare));
}

void getbatch_give_back(QueueObject *self, GetBatch *g)
{
    if (self->spare.offs == NULL && g->offs != NULL && g->cap <= GETBATCH_SPARE_ITEMS &&
        g->size <= GETBATCH_SPARE_BYTES) {
        self->spare.blob = g->blob;
        self->spare.size = g->size;
        self->spare.offs = g->offs;
        self->spare.tags = g->tags;
        self->spare.cap = g->cap;
        g->blob = NULL;
        g->offs = NULL;
        g->tags = NULL;
    }
    getbatch_free(g);
}

/* Room in the arrays of `g` for one more item.  0, or -1 out of memory. */
static inline int getbatch_grow(GetBatch *g)
{
    Py_ssize_t cap = g->cap ? g->cap * 2 : 16;
    uint64_t *offs;
    uint32_t *tags;
    if (g->n + 1 < g->cap)
        return 0;
    offs = (uint64_t *)realloc(g->offs, (size_t)(cap + 1) * sizeof(uint64_t));
    if (offs == NULL)
        return -1;
    g->offs = offs;
    tags = (uint32_t *)realloc(g->tags, (size_t)cap * sizeof(uint32_t));
    if (tags == NULL)
        return -1;
    g->tags = tags;
    if (g->first_piece != NULL) {
        Py_ssize_t *first_piece = (Py_ssize_t *)realloc(g->first_piece, (size_t)(cap + 1) * sizeof(Py_ssize_t));
        if (first_piece == NULL)
            return -1;
        g->first_piece = first_piece;
    }
    g->cap = cap;
    return 0;
}

int getbatch_track_pieces(GetBatch *g)
{
    if (g->first_piece != NULL)
        return 0;
    if (getbatch_grow(g) < 0)
        return -1;
    /* (every item taken so far has no piece: zeros) */
    g->first_piece = (Py_ssize_t *)calloc((size_t)(g->cap + 1), sizeof(Py_ssize_t));
    return g->first_piece == NULL ? -1 : 0;
}

/* getbatch_add, inline in the get's loop (its hot path). */
static inline int getbatch_copy(GetBatch *g, uint32_t tag, const unsigned char *p, uint64_t len)
{
    if (getbatch_grow(g) < 0)
        return -1;
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
    if (len > 0) /* (blob may still be NULL) */
        copy_maybe_without_gil(g->blob + g->used, p, (size_t)len);
    g->used += len;
    g->tags[g->n] = tag;
    g->offs[++g->n] = g->used;
    if (g->first_piece != NULL)
        g->first_piece[g->n] = g->npieces; /* the pieces added before it are its own */
    return 0;
}

int getbatch_add(GetBatch *g, uint32_t tag, const unsigned char *p, uint64_t len)
{
    return getbatch_copy(g, tag, p, len);
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

/* The ring a get was reading is empty: commit it, retire it if it is a
 * chunk, and go on to the oldest chunk left.  1: read on in *r; 0: nothing
 * left, or stop and hand out what was taken (`taken`: the next call
 * reports the trouble); -1 with an exception (the caller fails); -2: a
 * chunk is missing (queue_chunk_lost raised). */
static int get_next_ring(QueueObject *self, shmring_queue_ring *r, int *on_chunk, uint64_t *h, uint64_t t,
                         int taken)
{
    QueueChunk *k;
    int rc;
    shmring_queue_ring_commit(r);
    if (*on_chunk) {
        chunk_retire(self, (*h)++); /* unmaps it: r goes back to the (empty) main ring */
        *on_chunk = 0;
        shmring_queue_main_ring(self->ctrl, self->config.capacity, r, &rc);
    }
    if (*h == t)
        return 0;
    rc = chunk_get(self, *h, &k);
    if (rc == SHMRING_ERR_SYS && errno == ENOENT) {
        if (taken)
            return 0; /* hand out what was taken; the next call reports the loss */
        queue_chunk_lost(self, *h);
        return -2;
    }
    if (rc != SHMRING_OK || chunk_ring(k, r) != SHMRING_OK) {
        shmring_queue_main_ring(self->ctrl, self->config.capacity, r, &rc); /* committed, empty */
        if (taken)
            return 0; /* hand out what was taken; the next call reports it */
        if (rc == SHMRING_ERR_SYS)
            PyErr_SetFromErrno(PyExc_OSError);
        else
            queue_corrupt(self, "overflow chunk");
        return -1;
    }
    *on_chunk = 1;
    return 1;
}

/* Take up to `max` items (lock held): QUEUE_DONE, QUEUE_WAIT (none there)
 * or QUEUE_ERROR with an exception. */
int queue_get_locked(QueueObject *self, GetBatch *g, Py_ssize_t max)
{
    shmring_queue_ctrl *c = self->ctrl;
    uint64_t h, t, bytes = 0;
    Py_ssize_t before = g->n;
    shmring_queue_ring r;
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
            if ((tag == SHMRING_REC_OOB ? oob_take(g, p, len) : getbatch_copy(g, tag, p, len)) < 0) {
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
        rc = get_next_ring(self, &r, &on_chunk, &h, t, g->n > before);
        if (rc == 0)
            break;
        if (rc == -2)
            return QUEUE_ERROR;
        if (rc < 0)
            goto fail;
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
