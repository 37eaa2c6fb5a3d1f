/*
 * shmring/queue.h - the queue: a multi-producer / multi-consumer ring of
 * records under a robust mutex, with a chain of overflow chunks
 * (docs/PROTOCOL.md section 5).  Its control block, the ring operations
 * (shmring_queue_ring), the counters and sleep words, the overflow chunks'
 * names and stamps, and the recount after a holder died.  The blocking put
 * and get for C and C++ programs are in shmring/queue_wait.h.
 */
#ifndef SHMRING_QUEUE_H
#define SHMRING_QUEUE_H

#include "base.h"
#include "atomics.h"
#include "os.h"
#include "segment.h"
#include "record.h"
#include "sync.h"
#include "siphash.h"

#include <dirent.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Many producers and many consumers share one ring of records (the record
 * format of the channel, with tags for what the payload is).  Every change
 * to the ring happens under the queue's robust mutex [Q1], and each change
 * becomes visible by a single store (the new tail or head; a put that
 * restarts an empty ring stores tail, then head, and either state is a valid
 * ring: shmring_queue_ring_commit), so a process killed anywhere leaves either the
 * old state or the new one: the next holder is told OWNER_DIED, recounts
 * (shmring_queue_recount) and goes on.
 *
 * Overflow (queues not created SHMRING_QUEUE_BOUNDED): when the main ring
 * has no room, producers open a chain of overflow chunks, each its own
 * segment named "<queue>.q<index>.<tag>" holding a ring of the same format
 * (the tag is keyed by a secret of the queue: shmring_queue_chunk_name).  While
 * the chain is not empty every new record goes to its newest chunk (FIFO is
 * kept); consumers drain the main ring, then the chunks from the oldest,
 * unlinking each once empty.  The chunk handling lives in the extension;
 * the helpers here work on any ring (main or chunk).  A C peer that does not
 * follow chunks should use bounded queues, whose chain stays empty unless a
 * single record is larger than the whole ring (see docs/PROTOCOL.md).
 */

#define SHMRING_QUEUE_CTRL_SIZE 384u
#define SHMRING_QUEUE_CHUNK_HEADER_SIZE 64u
#define SHMRING_QUEUE_MIN_CAPACITY 64u
#define SHMRING_QUEUE_MAX_CAPACITY (UINT64_C(1) << 32)
#define SHMRING_QUEUE_MAX_CHUNKS 65536u  /* chunks held at once; more is corruption */
#define SHMRING_QUEUE_BOUNDED 1u         /* ctrl.flags: the ring's bytes bound producers */
#define SHMRING_QUEUE_VALUES 2u          /* ctrl.flags: records may be value-encoded ('V', shmring/value.h) */
#define SHMRING_QUEUE_OOB 4u             /* ctrl.flags: records may hold out-of-band buffers ('M', shmring/oob.h) */
#define SHMRING_QUEUE_FLAGS_KNOWN 7u

typedef struct shmring_queue_ctrl {
    /* Config: written before the segment is published. */
    uint64_t capacity;    /* main ring bytes: a multiple of 8 */
    uint64_t data_offset; /* from the payload start: SHMRING_QUEUE_CTRL_SIZE */
    uint64_t maxsize;     /* item bound; 0 = unbounded */
    uint32_t flags;       /* SHMRING_QUEUE_* */
    uint32_t spin_ns;     /* how long a waiter polls before sleeping */
    uint32_t closed;      /* 1 once any process called close() [Q4] */
    uint32_t chunk_mode;  /* permission bits of the overflow chunks */
    uint64_t queue_id;    /* random, non-zero: stamped on every chunk of this queue */
    uint64_t chunk_key[2]; /* random, secret: keys the chunks' names (0600 segment) */
    uint8_t pad0[64];
    /* Ring state: read and written under the lock only, except count and
     * bytes, which lock-free readers (qsize, a polling waiter) load relaxed. */
    shmring_mutex lock;  /* [Q1] */
    uint64_t head;       /* main ring: bytes released, ever */
    uint64_t tail;       /* main ring: bytes committed, ever */
    uint64_t count;      /* items held in all rings */
    uint64_t bytes;      /* payload bytes held in all rings */
    uint64_t ovf_head;   /* oldest overflow chunk still held */
    uint64_t ovf_tail;   /* one past the newest chunk */
    uint64_t puts;       /* items ever put */
    uint64_t gets;       /* items ever taken */
    uint64_t done;       /* task_done() calls, ever: puts - done tasks are unfinished [Q3] */
    uint64_t bytes_put;  /* statistics: payload bytes ever put (for rates; not repaired after a death) */
    uint64_t bytes_got;  /* statistics: payload bytes ever taken */
    uint8_t pad1[16];
    /* Sleep words: a waiter registers under the lock [Q2]. */
    uint32_t items_seq;     /* bumped after items were added */
    uint32_t items_waiters; /* consumers that may sleep on items_seq */
    uint32_t room_seq;      /* bumped after items were taken */
    uint32_t room_waiters;  /* producers that may sleep on room_seq */
    uint32_t done_seq;      /* bumped when done reaches puts [Q3] */
    uint32_t done_waiters;  /* join() callers */
    uint8_t pad2[104];
} shmring_queue_ctrl;

SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, maxsize) == 16, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, flags) == 24, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, closed) == 32, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, chunk_mode) == 36, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, queue_id) == 40, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, chunk_key) == 48, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, lock) == 128, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, head) == 152, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, count) == 168, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, ovf_head) == 184, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, done) == 216, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, bytes_put) == 224, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, items_seq) == 256, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, done_waiters) == 276, "layout");
SHMRING_STATIC_ASSERT(sizeof(shmring_queue_ctrl) == SHMRING_QUEUE_CTRL_SIZE, "layout");

/* Payload header of an overflow chunk segment (kind QUEUE_CHUNK). */
typedef struct shmring_queue_chunk {
    uint64_t capacity;    /* ring bytes: a multiple of 8 */
    uint64_t data_offset; /* SHMRING_QUEUE_CHUNK_HEADER_SIZE */
    uint64_t index;       /* its number in the queue's chain */
    uint64_t head;        /* under the queue lock, as ctrl.head */
    uint64_t tail;
    uint64_t queue_id;    /* its queue's ctrl.queue_id: whose chunk this is */
    uint64_t queue_dev;   /* its queue's object (st_dev, st_ino): whether anybody */
    uint64_t queue_ino;   /* still uses it, once its name is gone (tools) */
} shmring_queue_chunk;
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_chunk, index) == 16, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_chunk, tail) == 32, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_chunk, queue_id) == 40, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_chunk, queue_dev) == 48, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_chunk, queue_ino) == 56, "layout");
SHMRING_STATIC_ASSERT(sizeof(shmring_queue_chunk) == SHMRING_QUEUE_CHUNK_HEADER_SIZE, "layout");

static inline uint64_t shmring_queue_payload_size(uint64_t capacity)
{
    return SHMRING_QUEUE_CTRL_SIZE + capacity;
}

/* Ring bytes one record of `len` payload bytes takes (without padding). */
static inline uint64_t shmring_queue_record_size(uint64_t len)
{
    return shmring_record_size(len);
}

static inline void shmring_queue_init(void *payload, uint64_t capacity, uint64_t maxsize, uint32_t flags,
                                      uint32_t spin_ns, uint32_t chunk_mode)
{
    shmring_queue_ctrl *c = (shmring_queue_ctrl *)payload;
    memset(c, 0, sizeof(*c));
    c->queue_id = shmring_random_id();
    c->chunk_key[0] = shmring_random_id();
    c->chunk_key[1] = shmring_random_id();
    c->capacity = capacity;
    c->data_offset = SHMRING_QUEUE_CTRL_SIZE;
    c->maxsize = maxsize;
    c->flags = flags;
    c->spin_ns = spin_ns;
    c->chunk_mode = chunk_mode;
}

/* Check the config of an attached queue (a hostile peer may have written
 * it; the config is read once, here, and the checked copy used after). */
static inline int shmring_queue_check_config(const shmring_queue_ctrl *c, uint64_t payload_size,
                                             shmring_queue_ctrl *copy)
{
    /* The size first: a payload smaller than the block it claims to hold
     * must not be read past its end. */
    if (payload_size < SHMRING_QUEUE_CTRL_SIZE)
        return SHMRING_ERR_CORRUPT;
    memcpy(copy, c, sizeof(*copy));
    if (copy->data_offset != SHMRING_QUEUE_CTRL_SIZE ||
        copy->capacity < SHMRING_QUEUE_MIN_CAPACITY || copy->capacity > SHMRING_QUEUE_MAX_CAPACITY ||
        (copy->capacity & 7u) != 0 || copy->capacity > payload_size - SHMRING_QUEUE_CTRL_SIZE ||
        (copy->flags & ~SHMRING_QUEUE_FLAGS_KNOWN) != 0 || (copy->chunk_mode & ~0777u) != 0 ||
        copy->spin_ns > SHMRING_MAX_SPIN_NS || copy->queue_id == 0)
        return SHMRING_ERR_CORRUPT;
    return SHMRING_OK;
}

/* Check chunk `index` of the queue whose id is `queue_id` (its config is
 * read once, here; *capacity gets the checked ring size). */
static inline int shmring_queue_chunk_check(const shmring_queue_chunk *k, uint64_t payload_size, uint64_t index,
                                            uint64_t queue_id, uint64_t *capacity)
{
    uint64_t cap;
    if (payload_size < SHMRING_QUEUE_CHUNK_HEADER_SIZE) /* before reading the header it claims */
        return SHMRING_ERR_CORRUPT;
    /* relaxed: config written before the chunk was published. */
    cap = shmring_load_relaxed(&k->capacity);
    if (shmring_load_relaxed(&k->data_offset) != SHMRING_QUEUE_CHUNK_HEADER_SIZE ||
        shmring_load_relaxed(&k->queue_id) != queue_id ||
        shmring_load_relaxed(&k->index) != index || cap < SHMRING_QUEUE_MIN_CAPACITY ||
        cap > SHMRING_QUEUE_MAX_CAPACITY || (cap & 7u) != 0 || cap > payload_size - SHMRING_QUEUE_CHUNK_HEADER_SIZE)
        return SHMRING_ERR_CORRUPT;
    *capacity = cap;
    return SHMRING_OK;
}

/* One ring (the main one or a chunk), seen by the holder of the queue lock.
 * head/tail are working copies: records are written (read) at the copy, and
 * become visible to the next holder when shmring_queue_ring_commit stores them,
 * so a batch is all or nothing. */
typedef struct shmring_queue_ring {
    uint64_t *head_p;
    uint64_t *tail_p;
    unsigned char *data;
    uint64_t capacity;
    uint64_t head;
    uint64_t tail;
} shmring_queue_ring;

/* Load a ring's counters (lock held) and check them. */
static inline int shmring_queue_ring_load(shmring_queue_ring *r, uint64_t *head_p, uint64_t *tail_p,
                                          unsigned char *data, uint64_t capacity)
{
    r->head_p = head_p;
    r->tail_p = tail_p;
    r->data = data;
    r->capacity = capacity;
    /* relaxed: under the lock [Q1]; its acquire ordered the last holder's stores. */
    r->head = shmring_load_relaxed(head_p);
    r->tail = shmring_load_relaxed(tail_p);
    if (r->tail - r->head > capacity || ((r->head | r->tail) & 7u) != 0)
        return SHMRING_ERR_CORRUPT;
    return SHMRING_OK;
}

/* Make the working head and tail the ring's (lock held).  A put moves tail
 * and a get head; a put that restarted an empty ring (shmring_queue_ring_restart)
 * moves both, tail first: a holder killed between the two stores leaves
 * tail moved and head not, a valid ring whose padding record the next reader
 * skips (the other order would leave head past tail). */
static inline void shmring_queue_ring_commit(shmring_queue_ring *r)
{
    /* relaxed: under the lock; the lock's release [Q1] publishes both. */
    shmring_store_relaxed(r->tail_p, r->tail);
    /* release [Q1]: keeps the tail store before this one in the holder's
     * own order (a holder killed in between, above); the next holder reads
     * both after its acquire of the lock. */
    shmring_store_release(r->head_p, r->head);
}

/* An empty ring (working head == tail) whose tail is not at offset 0 has
 * all its bytes free, but split by the end of the ring: a record longer
 * than the part before the end would wait for ever for room it has.  Start
 * over at offset 0: a padding record covers the bytes to the end, and tail
 * and head both move past it (committed tail first: shmring_queue_ring_commit).
 * Does nothing to a ring that is not empty or already at offset 0. */
static inline void shmring_queue_ring_restart(shmring_queue_ring *r)
{
    uint64_t pos = r->tail % r->capacity;
    shmring_record *rec;
    if (r->tail != r->head || pos == 0)
        return;
    rec = (shmring_record *)(r->data + pos);
    rec->len = (uint32_t)(r->capacity - pos - sizeof(shmring_record));
    rec->tag = SHMRING_REC_PAD;
    r->tail += r->capacity - pos;
    r->head = r->tail;
}

/* Reserve a record of `len` payload bytes at the working tail and return
 * where its payload goes; SHMRING_AGAIN when there is no room now,
 * SHMRING_TOO_BIG when it could never fit.  A record that fits the ring
 * (record size <= capacity) always fits an empty one. */
static inline int shmring_queue_ring_reserve(shmring_queue_ring *r, uint32_t tag, uint64_t len, unsigned char **out)
{
    uint64_t need = shmring_queue_record_size(len);
    uint64_t pos = r->tail % r->capacity;
    uint64_t contig = r->capacity - pos;
    uint64_t room = r->capacity - (r->tail - r->head);
    shmring_record *rec;
    if (len > UINT32_MAX || need > r->capacity)
        return SHMRING_TOO_BIG;
    if (contig < need && r->tail == r->head) {
        shmring_queue_ring_restart(r);
        pos = 0;
        contig = room = r->capacity;
    }
    if (contig < need) {
        if (room < contig + need)
            return SHMRING_AGAIN;
        rec = (shmring_record *)(r->data + pos);
        rec->len = (uint32_t)(contig - sizeof(shmring_record));
        rec->tag = SHMRING_REC_PAD;
        r->tail += contig;
        pos = 0;
    } else if (room < need) {
        return SHMRING_AGAIN;
    }
    rec = (shmring_record *)(r->data + pos);
    rec->len = (uint32_t)len;
    rec->tag = tag;
    r->tail += need;
    *out = r->data + pos + sizeof(shmring_record);
    return SHMRING_OK;
}

/* Whether shmring_queue_ring_reserve would place a record of `len` bytes now
 * (for waiters: no side effects).  An empty ring takes any record that fits
 * the ring (it restarts at offset 0). */
static inline int shmring_queue_ring_fits(const shmring_queue_ring *r, uint64_t len)
{
    uint64_t need = shmring_queue_record_size(len);
    uint64_t pos = r->tail % r->capacity;
    uint64_t contig = r->capacity - pos;
    uint64_t room = r->capacity - (r->tail - r->head);
    if (len > UINT32_MAX || need > r->capacity)
        return 0;
    if (r->tail == r->head)
        return 1;
    return need <= (contig < need ? (room >= contig ? room - contig : 0) : room);
}

/* Take the record at the working head: its tag, payload and length stay
 * valid until the lock is released.  Padding is skipped.  SHMRING_AGAIN when
 * the ring is empty; SHMRING_ERR_CORRUPT for a record that does not fit
 * between head and tail (checked before anything is read past it). */
static inline int shmring_queue_ring_take(shmring_queue_ring *r, uint32_t *tag, const unsigned char **payload,
                                          uint64_t *len)
{
    for (;;) {
        uint64_t avail = r->tail - r->head, pos, contig, need;
        const shmring_record *rec;
        uint32_t rlen, rtag;
        if (avail == 0)
            return SHMRING_AGAIN;
        pos = r->head % r->capacity;
        contig = r->capacity - pos;
        if (avail < sizeof(shmring_record))
            return SHMRING_ERR_CORRUPT;
        rec = (const shmring_record *)(r->data + pos);
        rlen = rec->len; /* read once: the mapping is untrusted */
        rtag = rec->tag;
        if (rtag == SHMRING_REC_PAD) {
            if ((uint64_t)rlen + sizeof(shmring_record) != contig || contig > avail)
                return SHMRING_ERR_CORRUPT;
            r->head += contig;
            continue;
        }
        need = shmring_queue_record_size(rlen);
        if ((rtag != SHMRING_REC_OBJECT && rtag != SHMRING_REC_BYTES && rtag != SHMRING_REC_VALUE &&
             rtag != SHMRING_REC_OOB) ||
            need > contig || need > avail)
            return SHMRING_ERR_CORRUPT;
        *tag = rtag;
        *len = rlen;
        *payload = r->data + pos + sizeof(shmring_record);
        r->head += need;
        return SHMRING_OK;
    }
}

/* Count the records of a ring (lock held, after OWNER_DIED). */
static inline int shmring_queue_ring_count(shmring_queue_ring r, uint64_t *items, uint64_t *bytes)
{
    for (;;) {
        uint32_t tag;
        const unsigned char *p;
        uint64_t len;
        int rc = shmring_queue_ring_take(&r, &tag, &p, &len);
        if (rc == SHMRING_AGAIN)
            return SHMRING_OK;
        if (rc != SHMRING_OK)
            return rc;
        *items += 1;
        *bytes += len;
    }
}

static inline void shmring_queue_main_ring(shmring_queue_ctrl *c, uint64_t capacity, shmring_queue_ring *r, int *rc)
{
    *rc = shmring_queue_ring_load(r, &c->head, &c->tail, (unsigned char *)c + SHMRING_QUEUE_CTRL_SIZE, capacity);
}

/* Add `n` items of `len` payload bytes in all to the counters (lock held).
 * A holder killed part-way leaves some of them behind: shmring_queue_recount
 * redoes count and bytes from the records and puts or gets from those. */
static inline void shmring_queue_count_add(shmring_queue_ctrl *c, uint64_t n, uint64_t len)
{
    /* relaxed: under the lock [Q1]; lock-free readers only want a snapshot. */
    shmring_store_relaxed(&c->count, c->count + n);
    shmring_store_relaxed(&c->bytes, c->bytes + len);
    shmring_store_relaxed(&c->bytes_put, c->bytes_put + len);
    /* release [Q3]: task_done() and join() compare done with puts. */
    shmring_store_release(&c->puts, c->puts + n);
}

static inline int shmring_queue_count_sub(shmring_queue_ctrl *c, uint64_t n, uint64_t len)
{
    /* relaxed: under the lock [Q1]. */
    uint64_t count = shmring_load_relaxed(&c->count);
    uint64_t bytes = shmring_load_relaxed(&c->bytes);
    if (count < n || bytes < len)
        return SHMRING_ERR_CORRUPT;
    shmring_store_relaxed(&c->count, count - n);
    shmring_store_relaxed(&c->bytes, bytes - len);
    shmring_store_relaxed(&c->gets, c->gets + n);
    shmring_store_relaxed(&c->bytes_got, c->bytes_got + len);
    return SHMRING_OK;
}

static inline int shmring_queue_lock(shmring_queue_ctrl *c, uint64_t token, uint64_t spin_ns, uint64_t check_ns,
                                     uint64_t deadline_ns)
{
    return shmring_mutex_lock(&c->lock, token, spin_ns, check_ns, deadline_ns);
}

static inline void shmring_queue_unlock(shmring_queue_ctrl *c, uint64_t token)
{
    (void)shmring_mutex_release(&c->lock, token);
}

/* Register as a sleeper on `seq` (lock held) and return the value to sleep
 * on.  [Q2]: the register happens under the lock, and a waker reads the
 * waiter count under the lock after its change, so either the sleeper saw
 * the change before sleeping or the waker sees the sleeper and bumps seq. */
static inline uint32_t shmring_queue_register(uint32_t *seq, uint32_t *waiters)
{
    /* relaxed [Q2]: ordered by the lock. */
    shmring_fetch_add_relaxed(waiters, 1u);
    return shmring_load_relaxed(seq);
}

/* After the sleep, without the lock: an atomic decrement (other processes
 * change the count at the same time: registrations under the lock, other
 * waiters' decrements outside it). */
static inline void shmring_queue_unregister(uint32_t *waiters)
{
    /* relaxed: a hint; a stale count (a waiter killed asleep) costs a spare wake call. */
    shmring_fetch_sub_relaxed(waiters, 1u);
}

/* After the lock is released: wake up to `n` sleepers on `seq` if the
 * count read under the lock [Q2] said there were any. */
static inline void shmring_queue_wake(uint32_t *seq, uint32_t waiters_seen, int n)
{
    if (waiters_seen == 0)
        return;
    /* release [Q2]: the sleeper re-takes the lock anyway; the bump only has
     * to differ from the value it read under the lock. */
    shmring_fetch_add_release(seq, 1u);
    shmring_futex_wake(seq, n);
}

/* task_done(): SHMRING_ERR_ARG when called more often than items were put. */
static inline int shmring_queue_task_done(shmring_queue_ctrl *c, uint64_t n)
{
    /* relaxed: a first guess for the CAS. */
    uint64_t cur = shmring_load_relaxed(&c->done), puts;
    do {
        /* acquire [Q3]: pairs with the release store of puts in count_add. */
        puts = shmring_load_acquire(&c->puts);
        if (cur + n > puts)
            return SHMRING_ERR_ARG;
        /* acq_rel [Q3]: pairs with join()'s load of done. */
    } while (!shmring_cas_acq_rel(&c->done, &cur, cur + n));
    if (cur + n == puts) {
        /* seq_cst [Q3]: bump, then read the sleepers join() announced
         * before re-reading done and puts. */
        shmring_fetch_add_seq_cst(&c->done_seq, 1u);
        if (shmring_load_seq_cst(&c->done_waiters) != 0)
            shmring_futex_wake(&c->done_seq, INT_MAX);
    }
    return SHMRING_OK;
}

/* Tasks put and not yet done (a snapshot). */
static inline uint64_t shmring_queue_unfinished(shmring_queue_ctrl *c)
{
    /* acquire [Q3]: done first, so that puts read after it is not older. */
    uint64_t done = shmring_load_acquire(&c->done);
    uint64_t puts = shmring_load_acquire(&c->puts);
    return puts > done ? puts - done : 0;
}

/* Overflow chunks are named "<queue>.q<index>.<tag>": the index in decimal,
 * the tag 16 lowercase hex digits of SipHash-2-4 of the index (8 bytes,
 * little-endian) under the queue's chunk_key.  The key is drawn at creation
 * and lives only in the queue's segment, which other users cannot read
 * (docs/PROTOCOL.md 5.3): /dev/shm is listable by all, so a name another
 * user could predict (the index alone, or a per-queue constant seen in one
 * chunk's name) could be taken before the queue needs it, and the sticky
 * directory would not let the owner remove it.  These functions are the only
 * places that spell the name. */

/* Name of overflow chunk `index` of queue `name` ("/name" or "name") under
 * chunk key {k0, k1} in `out` ("/name.qN.T", NAME_MAX + 2 bytes).  0, or
 * SHMRING_ERR_ARG if too long. */
static inline int shmring_queue_chunk_name_keyed(const char *name, uint64_t k0, uint64_t k1, uint64_t index,
                                                 char *out)
{
    unsigned char msg[8];
    unsigned i;
    int n;
    for (i = 0; i < 8; i++)
        msg[i] = (unsigned char)(index >> (8 * i));
    n = snprintf(out, NAME_MAX + 2, "%s%s.q%llu.%016llx", name[0] == '/' ? "" : "/", name,
                 (unsigned long long)index, (unsigned long long)shmring_siphash24(k0, k1, msg, sizeof msg));
    return n > 0 && n <= NAME_MAX ? SHMRING_OK : SHMRING_ERR_ARG;
}

/* Name of overflow chunk `index` of the queue whose control block is `c`. */
static inline int shmring_queue_chunk_name(const shmring_queue_ctrl *c, const char *name, uint64_t index, char *out)
{
    /* relaxed: config, published with the segment [S1]. */
    return shmring_queue_chunk_name_keyed(name, shmring_load_relaxed(&c->chunk_key[0]),
                                          shmring_load_relaxed(&c->chunk_key[1]), index, out);
}

/* Is `entry` ("x.qN.T" or "/x.qN.T") named like chunk N of queue `name`?  1
 * with *index = N, else 0.  Only the form (the tag is not checked: tools do
 * not hold the key): the chunk's stamp says whose it is. */
static inline int shmring_queue_chunk_parse(const char *entry, const char *name, uint64_t *index)
{
    size_t n;
    uint64_t v = 0;
    const char *p;
    int digits;
    if (entry[0] == '/')
        entry++;
    if (name[0] == '/')
        name++;
    n = strlen(name);
    if (strncmp(entry, name, n) != 0 || entry[n] != '.' || entry[n + 1] != 'q')
        return 0;
    p = entry + n + 2;
    if (*p < '0' || *p > '9' || (*p == '0' && p[1] >= '0' && p[1] <= '9'))
        return 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9u) / 10u)
            return 0;
        v = v * 10u + (uint64_t)(*p - '0');
    }
    if (*p++ != '.')
        return 0;
    for (digits = 0; (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'); p++)
        digits++;
    if (digits != 16 || *p != '\0')
        return 0;
    *index = v;
    return 1;
}

/* The id of the queue whose segment's first `len` bytes are at `base`
 * (0 if too short to tell). */
static inline uint64_t shmring_queue_id_of(const unsigned char *base, size_t len)
{
    const shmring_queue_ctrl *c = (const shmring_queue_ctrl *)(const void *)(base + SHMRING_HEADER_SIZE);
    if (len < SHMRING_HEADER_SIZE + sizeof(shmring_queue_ctrl))
        return 0;
    /* relaxed: config, published with the segment [S1]. */
    return shmring_load_relaxed(&c->queue_id);
}

/* The stamp of a chunk: which queue's it is, and where it stands. */
typedef struct shmring_chunk_stamp {
    uint64_t queue_id;           /* 0: not a published, well-formed chunk */
    uint64_t index;
    uint64_t queue_dev, queue_ino; /* the queue's object */
} shmring_chunk_stamp;

/* Read the stamp of chunk segment `path` ("/x.qN.T"), looking only. */
static inline shmring_chunk_stamp shmring_queue_chunk_stamp(const char *path)
{
    shmring_chunk_stamp st;
    shmring_segment seg;
    memset(&st, 0, sizeof st);
    if (shmring_segment_open(path, SHMRING_OPEN_READONLY | SHMRING_OPEN_ALLOW_OTHER_OWNER | SHMRING_OPEN_NO_ATTACH,
                             &seg) != SHMRING_OK)
        return st;
    if (((const shmring_segment_header *)(const void *)seg.base)->kind == SHMRING_KIND_QUEUE_CHUNK &&
        shmring_segment_payload_size(&seg) >= SHMRING_QUEUE_CHUNK_HEADER_SIZE) {
        const shmring_queue_chunk *k = (const shmring_queue_chunk *)(const void *)shmring_segment_payload(&seg);
        /* relaxed: config, published with the chunk [S1]. */
        st.queue_id = shmring_load_relaxed(&k->queue_id);
        st.index = shmring_load_relaxed(&k->index);
        st.queue_dev = shmring_load_relaxed(&k->queue_dev);
        st.queue_ino = shmring_load_relaxed(&k->queue_ino);
    }
    shmring_segment_unmap(&seg); /* a look: nothing to leave */
    return st;
}

/* Unlink every overflow chunk of queue `queue_name` stamped `queue_id`
 * (found by name under /dev/shm, kept only if the stamp matches: a segment
 * merely named like a chunk is left alone). */
static inline int shmring_queue_remove_chunks(const char *queue_name, uint64_t queue_id)
{
    struct dirent *e;
    int rc = SHMRING_OK;
    DIR *d = opendir("/dev/shm");
    if (d == NULL)
        return errno == ENOENT ? SHMRING_OK : SHMRING_ERR_SYS;
    while ((e = readdir(d)) != NULL) {
        char path[NAME_MAX + 2];
        uint64_t index;
        if (!shmring_queue_chunk_parse(e->d_name, queue_name, &index) || strlen(e->d_name) > NAME_MAX - 1)
            continue;
        path[0] = '/';
        memcpy(path + 1, e->d_name, strlen(e->d_name) + 1);
        (void)index; /* (a damaged chunk may say another index: its stamp is what counts) */
        if (shmring_queue_chunk_stamp(path).queue_id == queue_id && shm_unlink(path) != 0 && errno != ENOENT)
            rc = SHMRING_ERR_SYS;
    }
    closedir(d);
    return rc;
}

/* Recount `count` and `bytes` from the records of the main ring and of every
 * overflow chunk of queue `name` (lock held: after OWNER_DIED, or after a
 * chunk was found missing).  Consumers move ovf_head before they unlink a
 * drained chunk, so a chunk missing from the chain was removed by someone
 * else, and its items are lost: it is counted in *lost (may be NULL) and
 * skipped, and ovf_head moves past missing chunks at the head.  SHMRING_OK,
 * SHMRING_ERR_CORRUPT or SHMRING_ERR_SYS. */
static inline int shmring_queue_recount(shmring_queue_ctrl *c, uint64_t capacity, const char *name, uint64_t *lost)
{
    uint64_t items = 0, bytes = 0, h, t, i, missing = 0;
    /* relaxed: config, published with the segment [S1]. */
    uint64_t queue_id = shmring_load_relaxed(&c->queue_id);
    shmring_queue_ring r;
    int rc;
    shmring_queue_main_ring(c, capacity, &r, &rc);
    if (rc != SHMRING_OK || shmring_queue_ring_count(r, &items, &bytes) != SHMRING_OK)
        return SHMRING_ERR_CORRUPT;
    /* relaxed: under the lock [Q1]. */
    h = shmring_load_relaxed(&c->ovf_head);
    t = shmring_load_relaxed(&c->ovf_tail);
    if (t - h > SHMRING_QUEUE_MAX_CHUNKS)
        return SHMRING_ERR_CORRUPT;
    for (i = h; i != t; i++) {
        char path[NAME_MAX + 2];
        shmring_segment seg;
        uint64_t cap;
        shmring_queue_chunk *k;
        if (shmring_queue_chunk_name(c, name, i, path) != SHMRING_OK)
            return SHMRING_ERR_ARG;
        rc = shmring_segment_open(path, SHMRING_OPEN_ALLOW_OTHER_OWNER | SHMRING_OPEN_NO_ATTACH, &seg);
        if (rc == SHMRING_ERR_SYS && errno == ENOENT) {
            missing++;
            if (i == h)
                /* relaxed: under the lock [Q1]. */
                shmring_store_relaxed(&c->ovf_head, ++h);
            continue;
        }
        if (rc != SHMRING_OK)
            return rc;
        k = (shmring_queue_chunk *)shmring_segment_payload(&seg);
        rc = ((shmring_segment_header *)seg.base)->kind == SHMRING_KIND_QUEUE_CHUNK
                 ? shmring_queue_chunk_check(k, shmring_segment_payload_size(&seg), i, queue_id, &cap)
                 : SHMRING_ERR_CORRUPT;
        if (rc == SHMRING_OK)
            rc = shmring_queue_ring_load(&r, &k->head, &k->tail, (unsigned char *)k + SHMRING_QUEUE_CHUNK_HEADER_SIZE,
                                         cap);
        if (rc == SHMRING_OK)
            rc = shmring_queue_ring_count(r, &items, &bytes);
        shmring_segment_unmap(&seg); /* a look: nothing to leave */
        if (rc != SHMRING_OK)
            return SHMRING_ERR_CORRUPT;
    }
    /* The dead holder's last operation moved a ring's tail (a put) or head
     * (a get) and maybe not the counters after it: puts - gets must equal the
     * items held; the side that lags is the one it did not finish. */
    {
        /* relaxed: under the lock [Q1]. */
        uint64_t puts = shmring_load_relaxed(&c->puts);
        uint64_t gets = shmring_load_relaxed(&c->gets);
        if (puts - gets < items)
            shmring_store_release(&c->puts, gets + items); /* [Q3] as in count_add */
        else if (puts - gets > items)
            shmring_store_relaxed(&c->gets, puts - items);
    }
    shmring_store_relaxed(&c->count, items);
    shmring_store_relaxed(&c->bytes, bytes);
    if (lost != NULL)
        *lost = missing;
    return SHMRING_OK;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_QUEUE_H */
