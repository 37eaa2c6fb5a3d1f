/*
 * core_queue.h - the Queue part of the private interface of shmring._core
 * (queue.c, queue_ops.c, queue_chunks.c, queue_wait.c, queue_values.c,
 * queue_oob.c):
 * included by core.h, at its place among the other parts, and by nothing
 * else (every .c file includes only core.h).
 */
#ifndef SHMRING_CORE_H
#error "core_queue.h is a part of core.h: include core.h"
#endif
#ifndef SHMRING_CORE_QUEUE_H
#define SHMRING_CORE_QUEUE_H

/* ------------------------------------------------------------------------ */
/* Queue (queue.c, queue_ops.c, queue_chunks.c, queue_wait.c, queue_oob.c)  */
/* ------------------------------------------------------------------------ */

/* Overflow chunks grow to at least this many bytes. */
#define QUEUE_MIN_CHUNK (UINT64_C(1) << 20)
/* Longest queue name: "<name>.q<index>" must stay a valid segment name. */
#define QUEUE_NAME_MAX 200

typedef struct {
    uint64_t index, capacity;
    shmring_segment seg;
} QueueChunk;

typedef struct QueueObject {
    HANDLE_HEAD
    shmring_queue_ctrl *ctrl;
    unsigned char *data;
    shmring_queue_ctrl config; /* checked copy of the config */
    PyObject *dumps;           /* NULL: pickle.dumps(obj, HIGHEST_PROTOCOL) */
    PyObject *loads;           /* NULL: pickle.loads */
    QueueChunk *chunks;        /* overflow chunks mapped by this process */
    Py_ssize_t nchunks, chunks_cap;
    unsigned open_flags; /* SHMRING_OPEN_* for chunks */
    int gc_was_enabled;  /* while the lock is held: see queue_lock */
    unsigned long generation; uint64_t token; /* as ChannelObject's */
    int closed;  /* this handle's close(): read without the GIL by waiters [Q5] */
    int waiting; /* threads of this handle about to sleep or asleep (GIL held) [Q5] */
    int calls;         /* put/get calls of this handle running (GIL held) */
    int leave_pending; /* close() ran while calls were running: the last one leaves */
    uint64_t refused_len; /* bytes-bounded: what the last put refused (Full) needed, for full() */
    PyObject *pending;    /* NULL, or a batch's rest after an item that failed to decode (queue_pending.c) */
    struct GetBatchSpare { /* the arrays of the last get, kept for the next (getbatch_lend) */
        char *blob;
        size_t size;
        uint64_t *offs;
        uint32_t *tags;
        Py_ssize_t cap;
    } spare;
    struct QueueObject *holding_prev, *holding_next; /* while `pending` is set: the handles holding items */
} QueueObject;

extern PyTypeObject QueueType;

PyObject *queue_name(QueueObject *self);
/* CorruptedError about this queue (`what`: the damaged part).  NULL. */
PyObject *queue_corrupt(QueueObject *self, const char *what);
/* ValueError: this handle is closed.  NULL. */
PyObject *raise_queue_closed(QueueObject *self);
/* Has this handle been closed?  Waiters look without the GIL. */
static inline int queue_handle_closed(QueueObject *self)
{
    /* relaxed [Q5]: a flag; a waiter that reads it late is woken by close(). */
    return __atomic_load_n(&self->closed, __ATOMIC_RELAXED);
}
/* 0 when this handle may be used, else -1 with an exception. */
int queue_usable(QueueObject *self);

/* Serialized items of one put: for each item, the bytes to copy in and its
 * record tag.  An item of tag SHMRING_REC_OOB (shmring/oob.h) is its pickle
 * stream (bufs[i]) and its out-of-band buffers (oob[i], a list of
 * memoryviews), gathered into its record as it is written. */
typedef struct {
    Py_ssize_t n;
    Py_buffer *bufs;
    PyObject **objs; /* owned: what the buffers come from */
    PyObject **oob;  /* owned: NULL, or item i's out-of-band buffers */
    uint32_t *tags;
    uint64_t *lens;  /* record payload bytes of each item */
    uint64_t total;  /* payload bytes */
    Py_buffer one_buf; /* (the arrays of a batch of one item) */
    PyObject *one_obj, *one_oob;
    uint32_t one_tag;
    uint64_t one_len;
} PutBatch;

/* Records taken by one get, copied out under the lock: the payloads into
 * `blob` (an item of tag SHMRING_REC_OOB: its stream), the out-of-band
 * buffers of SHMRING_REC_OOB items each into a bytes or bytearray object
 * of its own (`pieces`). */
typedef struct {
    Py_ssize_t n;
    char *blob;
    size_t used, size;
    uint64_t *offs; /* n + 1 */
    uint32_t *tags; /* QUEUE_ITEM_DAMAGED: a record whose framing was refused */
    Py_ssize_t *first_piece; /* NULL until a piece is kept (getbatch_track_pieces), then n + 1:
                              * item i's pieces are [first_piece[i], first_piece[i + 1]) */
    Py_ssize_t cap;
    PyObject **pieces; /* owned */
    Py_ssize_t npieces, pieces_cap;
} GetBatch;

/* Item i of a get's batch as the caller gets it (raw: its bytes). */
PyObject *queue_item(QueueObject *self, GetBatch *g, Py_ssize_t i, int raw);
/* A put of one object that never waits (queue_pending_return). */
PyObject *queue_put_back(QueueObject *self, PyObject *obj);
/* queue_pending.c: a batch's items after one that failed to decode. */
int queue_pending_keep(QueueObject *self, GetBatch *g, Py_ssize_t failed);
Py_ssize_t queue_pending_count(QueueObject *self);
PyObject *queue_pending_take(QueueObject *self, Py_ssize_t max, int as_list, int raw);
void queue_pending_return(QueueObject *self, PyObject *context);
/* Forget the items held, without putting them back (a forked child's
 * copy of its parent's, or a handle being cleared). */
void queue_pending_drop(QueueObject *self);
/* At exit, before the attachments end: every handle of this process that
 * holds items puts them back, as its close() would. */
void queue_pending_return_all(void);

/* The tag a GetBatch gives a record taken out of the queue whose
 * out-of-band framing was damaged: decoding it raises CorruptedError. */
#define QUEUE_ITEM_DAMAGED 0u

/* Buffers smaller than this stay in the pickle stream (copying them is
 * cheaper than handing them out of band). */
#define QUEUE_OOB_MIN 8192

/* The value encoding (queue_values.c, shmring/value.h): 1 with the bytes
 * in *out, 0 when obj is not made only of encodable values (pickle it),
 * -1 with an exception; and the object of an encoding (NULL with
 * CorruptedError when it is damaged). */
int value_encode(PyObject *obj, PyObject **out);
PyObject *value_decode(const void *payload, uint64_t len);

/* queue_oob.c: the records of tag SHMRING_REC_OOB (shmring/oob.h).
 * oob_serialize pickles `obj` with protocol 5, buffers of QUEUE_OOB_MIN
 * bytes or more out of band: 0 with *stream (bytes) and *buffers (a list
 * of memoryviews of the buffers, or NULL when none went out of band: an
 * ordinary pickle), or -1 with an exception.  oob_record_len: the payload bytes of
 * the record.  oob_write: the record's payload at dst (lock held).
 * oob_take: copy the record at `payload` into `g` (lock held): 0 taken,
 * 1 taken as QUEUE_ITEM_DAMAGED (its framing is refused), -1 out of memory
 * (nothing taken, no exception set).  oob_decode: the object of item i
 * (after the lock). */
int oob_serialize(PyObject *obj, PyObject **stream, PyObject **buffers);
uint64_t oob_record_len(uint64_t stream_len, PyObject *buffers);
void oob_write(unsigned char *dst, const Py_buffer *stream, PyObject *buffers);
int oob_take(GetBatch *g, const unsigned char *payload, uint64_t len);
PyObject *oob_decode(GetBatch *g, Py_ssize_t i);
/* The in-band pickle of an object taken from such a record (for
 * get_bytes() and a loads of the user's): its buffers in the stream. */
PyObject *oob_pickle_in_band(PyObject *obj);

/* Results of queue_put_locked / queue_get_locked. */
#define QUEUE_DONE 0
#define QUEUE_WAIT 1
#define QUEUE_ERROR -1

/* queue_ops.c: the batches, and the put and get under the lock. */
int batch_make(QueueObject *self, PutBatch *b, PyObject *arg, int many, int raw);
void batch_release(PutBatch *b);
void getbatch_free(GetBatch *g);
/* An empty batch with the arrays the handle's last get left (none at
 * first), and the arrays handed back when it is done (kept if small). */
void getbatch_lend(QueueObject *self, GetBatch *g);
void getbatch_give_back(QueueObject *self, GetBatch *g);
/* Copy a record's payload into `g` as item n: 0, or -1 out of memory. */
int getbatch_add(GetBatch *g, uint32_t tag, const unsigned char *p, uint64_t len);
/* Before the first piece is kept: count the pieces of each item from now
 * on (most gets keep none, and pay nothing for them).  0, or -1. */
int getbatch_track_pieces(GetBatch *g);
int queue_put_locked(QueueObject *self, PutBatch *b);
int queue_get_locked(QueueObject *self, GetBatch *g, Py_ssize_t max);

/* queue_chunks.c: overflow chunks (all under the queue lock). */
void chunk_path(QueueObject *self, uint64_t index, char *path);
void chunks_forget(QueueObject *self, uint64_t below);
/* Map chunk `index` (SHMRING_ERR_SYS with errno ENOENT when it is gone). */
int chunk_get(QueueObject *self, uint64_t index, QueueChunk **out);
/* Make chunk `index` (not yet in the chain: nobody else looks at it). */
int chunk_create(QueueObject *self, uint64_t index, uint64_t capacity, QueueChunk **out);
void chunk_unlink(QueueObject *self, uint64_t index);
/* Retire drained chunk `index` (the chain's head). */
void chunk_retire(QueueObject *self, uint64_t index);
int chunk_ring(QueueChunk *k, shmring_queue_ring *r);
/* Remove chunks at index >= ovf_tail (made by a producer killed before it
 * moved ovf_tail). */
void remove_stale_chunks(QueueObject *self);
/* The chain's head and tail (lock held): 0, or -1 with CorruptedError. */
int queue_chain(QueueObject *self, uint64_t *head, uint64_t *tail);
/* After OWNER_DIED: count what the rings hold.  0, -1 (corrupted) or -2
 * (a system error: it may pass). */
int queue_recount(QueueObject *self);

/* queue_wait.c: the lock, the blocking run of one operation, join. */
int queue_lock(QueueObject *self, uint64_t deadline);
void queue_unlock(QueueObject *self);

/* One put (put != NULL) or get (of at most `max` items). */
typedef struct {
    PutBatch *put;
    GetBatch *get;
    Py_ssize_t max;
} QueueOp;

/* Run `op` until done, waiting as `block`/`deadline` say.  0 done, -1 with
 * an exception (Full/Empty on a timeout or when not blocking). */
int queue_run(QueueObject *self, QueueOp *op, int block, uint64_t deadline);
PyObject *queue_join(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);

#endif /* SHMRING_CORE_QUEUE_H */
