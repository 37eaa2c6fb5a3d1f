/*
 * shmring/channel.h - the channel: a lock-free single-producer /
 * single-consumer ring of records (docs/PROTOCOL.md section 3).  Its
 * control block, claiming and giving back the two ends, and the steps of
 * each side: the producer reserves, commits and publishes (stores tail);
 * the consumer peeks, consumes and publishes head.  How a side waits, and
 * the blocking calls for C and C++ programs, are in shmring/channel_wait.h.
 */
#ifndef SHMRING_CHANNEL_H
#define SHMRING_CHANNEL_H

#include "base.h"
#include "atomics.h"
#include "os.h"
#include "record.h"
#include "sync.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Wait strategies: how a side waits (shmring/channel_wait.h). */
enum shmring_wait_strategy {
    SHMRING_WAIT_SPIN = 1,     /* busy-poll with the CPU pause hint */
    SHMRING_WAIT_YIELD = 2,    /* poll, calling sched_yield between polls */
    SHMRING_WAIT_BLOCK = 3,    /* sleep on a futex at once */
    SHMRING_WAIT_ADAPTIVE = 4, /* spin for spin_ns, then sleep on the futex */
    SHMRING_WAIT_SEMAPHORE = 5 /* producer posts a semaphore after writing; the consumer waits on it */
};
#define SHMRING_WAIT_MAX 5u

#define SHMRING_CHANNEL_CTRL_SIZE 640u    /* control block before the data */
#define SHMRING_CHANNEL_MIN_CAPACITY 64u
#define SHMRING_CHANNEL_MAX_CAPACITY (UINT64_C(1) << 32) /* record lengths are 32-bit */
#define SHMRING_CHANNEL_DEFAULT_SPIN_NS 20000u

/* Control block at the start of a channel segment's payload.  Fields are
 * grouped by writer on 128-byte blocks (two cache lines, so that the adjacent
 * line prefetcher does not couple them): the producer's counters, the
 * consumer's counters, and the two sleep words are each written by one side
 * only, and the sleep words only when someone sleeps. */
typedef struct shmring_channel_ctrl {
    /* Config: written at creation (before the segment is published); the
     * close flags are written once each. */
    uint64_t capacity;      /* data bytes: a power of two */
    uint64_t data_offset;   /* from the payload start: SHMRING_CHANNEL_CTRL_SIZE */
    uint32_t wait;          /* enum shmring_wait_strategy: the default strategy */
    uint32_t spin_ns;       /* adaptive spin window */
    uint32_t writer_closed; /* 1: end of stream, set by the producer [S4] */
    uint32_t reader_closed; /* 1: the consumer is gone for good [S4] */
    uint32_t claim_seq;     /* futex word: bumped when an end is given back and somebody waits [S11] */
    uint32_t claim_waiters; /* processes (threads) waiting for an end to be given back [S11] */
    uint8_t pad0[88];
    /* Producer block. */
    uint64_t tail;             /* bytes committed, ever [S2] */
    uint64_t producer;         /* token of the producing process, CAS-claimed [S3] */
    uint64_t producer_handle;  /* which handle of that process */
    uint64_t sent_msgs;        /* statistics, written by the producer only */
    uint64_t sent_bytes;
    uint64_t producer_blocked; /* times the producer slept on a full ring (futex) */
    uint8_t pad1[80];
    /* Consumer block. */
    uint64_t head;             /* bytes released, ever [S5] */
    uint64_t consumer;         /* token of the consuming process [S3] */
    uint64_t consumer_handle;
    uint64_t recv_msgs;
    uint64_t recv_bytes;
    uint64_t consumer_blocked; /* times the consumer slept on an empty ring (futex) */
    uint8_t pad2[80];
    /* Consumer's sleep: futex word bumped by the producer to wake it. */
    uint32_t data_seq;         /* [S6] */
    uint32_t consumer_waiting; /* 1 while the consumer may sleep on data_seq [S6] */
    shmring_sem data_sem;      /* "semaphore" channels: posted after every publish [S8] */
    uint8_t pad3[112];
    /* Producer's sleep. */
    uint32_t space_seq;        /* [S7] */
    uint32_t producer_waiting; /* [S7] */
    shmring_sem space_sem;     /* "semaphore" channels: posted after every release [S8] */
    uint8_t pad4[112];
} shmring_channel_ctrl;

SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, capacity) == 0, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, data_offset) == 8, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, wait) == 16, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, spin_ns) == 20, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, writer_closed) == 24, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, reader_closed) == 28, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, claim_seq) == 32, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, claim_waiters) == 36, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, tail) == 128, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, producer) == 136, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, producer_handle) == 144, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, sent_msgs) == 152, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, sent_bytes) == 160, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, producer_blocked) == 168, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, head) == 256, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, consumer) == 264, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, consumer_handle) == 272, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, recv_msgs) == 280, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, recv_bytes) == 288, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, consumer_blocked) == 296, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, data_seq) == 384, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, consumer_waiting) == 388, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, space_seq) == 512, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, producer_waiting) == 516, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, data_sem) == 392, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, space_sem) == 520, "layout");
SHMRING_STATIC_ASSERT(sizeof(shmring_channel_ctrl) == SHMRING_CHANNEL_CTRL_SIZE, "layout");

/* Every record starts with this 8-byte header at an 8-byte aligned offset. */
/* Largest message a ring of `capacity` bytes can carry. */
static inline uint64_t shmring_channel_max_message(uint64_t capacity)
{
    return capacity - sizeof(shmring_record);
}

/* Payload bytes a channel segment needs for a ring of `capacity`. */
static inline uint64_t shmring_channel_payload_size(uint64_t capacity)
{
    return SHMRING_CHANNEL_CTRL_SIZE + capacity;
}

/* Process-local state of one channel handle.  Each side keeps its own
 * counter and a cached copy of the other side's, so that the common case
 * touches no cache line the other side writes. */
typedef struct shmring_channel {
    shmring_channel_ctrl *ctrl;
    unsigned char *data;
    uint64_t capacity, mask;
    /* producer */
    uint64_t tail;           /* local tail: committed records, maybe unpublished */
    uint64_t tail_published; /* last value stored to ctrl->tail */
    uint64_t head_cache;     /* last head read from ctrl */
    uint64_t batch_msgs, batch_bytes; /* committed since the last publish */
    /* consumer */
    uint64_t head;           /* local head: released records, maybe unpublished */
    uint64_t head_published;
    uint64_t tail_cache;
    uint64_t current_size;   /* bytes of the record peek returned */
    uint64_t current_len;
    uint64_t released_msgs, released_bytes;
    int light; /* this process publishes with the light barrier */
    /* the channel's default strategy, read once at attach */
    uint32_t wait, spin_ns;
    /* Optional, process-local (NULL after attach): a word another thread of
     * this process sets (release) to make shmring_channel_wait return early
     * with SHMRING_ERR_SYS / EINTR, e.g. to close the handle; it then calls
     * shmring_channel_interrupt_waiters. */
    const uint32_t *interrupt;
} shmring_channel;


/* Initialise a fresh channel in `payload` (a new segment, not yet published). */
static inline int shmring_channel_init(void *payload, uint64_t payload_size, uint64_t capacity,
                                       uint32_t wait, uint32_t spin_ns)
{
    shmring_channel_ctrl *c = (shmring_channel_ctrl *)payload;
    if (capacity < SHMRING_CHANNEL_MIN_CAPACITY || capacity > SHMRING_CHANNEL_MAX_CAPACITY ||
        (capacity & (capacity - 1)) != 0 || wait == 0 || wait > SHMRING_WAIT_MAX ||
        payload_size < shmring_channel_payload_size(capacity))
        return SHMRING_ERR_ARG;
    memset(c, 0, sizeof *c);
    c->capacity = capacity;
    c->data_offset = SHMRING_CHANNEL_CTRL_SIZE;
    c->wait = wait;
    c->spin_ns = spin_ns;
    return SHMRING_OK;
}

/* Attach local state to a validated segment's payload.  The config is read
 * once, checked, and kept locally: it is never re-read from shared memory. */
static inline int shmring_channel_attach(shmring_channel *ch, void *payload, uint64_t payload_size)
{
    shmring_channel_ctrl *c = (shmring_channel_ctrl *)payload;
    uint64_t cap, off;
    memset(ch, 0, sizeof *ch);
    if (payload_size < SHMRING_CHANNEL_CTRL_SIZE)
        return SHMRING_ERR_CORRUPT;
    cap = c->capacity;
    off = c->data_offset;
    if (cap < SHMRING_CHANNEL_MIN_CAPACITY || cap > SHMRING_CHANNEL_MAX_CAPACITY ||
        (cap & (cap - 1)) != 0 || off != SHMRING_CHANNEL_CTRL_SIZE ||
        payload_size < shmring_channel_payload_size(cap))
        return SHMRING_ERR_CORRUPT;
    ch->ctrl = c;
    ch->data = (unsigned char *)payload + off;
    ch->capacity = cap;
    ch->mask = cap - 1;
    ch->wait = c->wait;
    ch->spin_ns = c->spin_ns;
    if (ch->wait == 0 || ch->wait > SHMRING_WAIT_MAX)
        ch->wait = SHMRING_WAIT_ADAPTIVE; /* untrusted: fall back to the default */
    if (ch->spin_ns > 100000000u)
        ch->spin_ns = SHMRING_CHANNEL_DEFAULT_SPIN_NS;
    return SHMRING_OK;
}

/* Claim an end ([S3]): `slot` is &ctrl->producer or &ctrl->consumer, `handle`
 * the matching *_handle field.  Succeeds when the end is free, already ours,
 * or held by a dead process.  Within one process, only one handle may hold
 * an end: callers serialise claims (the GIL does in Python). */
static inline int shmring_channel_claim(uint64_t *slot, uint64_t *handle, uint64_t token, uint64_t handle_id)
{
    /* acquire: pairs with the release CAS of a previous claimer [S3], so
     * that its handle id is visible below. */
    uint64_t cur = shmring_load_acquire(slot);
    for (;;) {
        if (cur == token) {
            /* relaxed: the id was written by this very process. */
            if (shmring_load_relaxed(handle) == handle_id)
                return SHMRING_OK;
            return SHMRING_ROLE_TAKEN;
        }
        if (cur != 0 && shmring_token_alive(cur))
            return SHMRING_ROLE_TAKEN;
        /* acq_rel [S3]: acquire pairs with the releasing store of the
         * previous holder (its counter updates happen-before our reads of
         * them); release publishes our claim. */
        if (shmring_cas_acq_rel_acquire(slot, &cur, token)) {
            /* relaxed: read only by this process (see cur == token above). */
            shmring_store_relaxed(handle, handle_id);
            return SHMRING_OK;
        }
        /* cur now holds the competing value: look again. */
    }
}

/* Give an end back ([S3]), if this handle still holds it; wake whoever
 * waits for an end ([S11]). */
static inline void shmring_channel_unclaim(shmring_channel_ctrl *c, int producer, uint64_t token,
                                           uint64_t handle_id)
{
    uint64_t *slot = producer ? &c->producer : &c->consumer;
    uint64_t *handle = producer ? &c->producer_handle : &c->consumer_handle;
    uint64_t expected = token;
    /* relaxed: written by this process in shmring_channel_claim. */
    if (shmring_load_relaxed(handle) != handle_id)
        return;
    /* release [S3]: pairs with the acquire of the next claimer, so that our
     * last counter stores are visible to it. */
    if (!shmring_cas_release(slot, &expected, 0))
        return;
    /* seq_cst fence [S11]: the free slot is visible before we look for
     * waiters; pairs with the waiter's fence between its registration and
     * its new look at the slot (shmring_channel_claim_wait_prepare). */
    shmring_fence_seq_cst();
    /* relaxed: ordered by the fence above. */
    if (shmring_load_relaxed(&c->claim_waiters) != 0) {
        /* release [S11]: a waiter's futex wait returns at once if the bump
         * came between its read of claim_seq and its sleep. */
        shmring_fetch_add_release(&c->claim_seq, 1u);
        shmring_futex_wake(&c->claim_seq, INT_MAX);
    }
}

/* Waiting for an end another live process holds [S11]: register, then
 * claim again (shmring_channel_claim); if still taken, sleep on claim_seq
 * with the returned value (shmring_futex_wait_until) for at most a slice,
 * since a holder that dies never gives its end back (the next claim takes
 * it over), then unregister (shmring_channel_claim_wait_done).  Returns the
 * value to sleep on. */
static inline uint32_t shmring_channel_claim_wait_prepare(shmring_channel_ctrl *c)
{
    uint32_t seq;
    /* relaxed: a count; the fence below orders it. */
    shmring_fetch_add_relaxed(&c->claim_waiters, 1u);
    /* acquire: pairs with the releaser's bump. */
    seq = shmring_load_acquire(&c->claim_seq);
    /* seq_cst fence [S11]: registered (and seq read) before the caller looks
     * at the slot again; pairs with the fence in shmring_channel_unclaim. */
    shmring_fence_seq_cst();
    return seq;
}

static inline void shmring_channel_claim_wait_done(shmring_channel_ctrl *c)
{
    /* relaxed: a hint; a waiter killed asleep leaves it one too high, which
     * only costs releasers a spare wake call. */
    shmring_fetch_sub_relaxed(&c->claim_waiters, 1u);
}

/* Start producing: load the shared tail (after a claim). */
static inline int shmring_channel_producer_start(shmring_channel *ch)
{
    /* acquire [S2]: our own (or a dead predecessor's) release of tail. */
    uint64_t tail = shmring_load_acquire(&ch->ctrl->tail);
    /* acquire [S5]: pairs with the consumer's release of head. */
    uint64_t head = shmring_load_acquire(&ch->ctrl->head);
    if ((tail & 7u) != 0 || (head & 7u) != 0 || tail - head > ch->capacity)
        return SHMRING_ERR_CORRUPT;
    ch->tail = ch->tail_published = tail;
    ch->head_cache = head;
    ch->batch_msgs = ch->batch_bytes = 0;
    ch->light = shmring_light_barrier_register();
    return SHMRING_OK;
}

/* Start consuming: load the shared head (after a claim). */
static inline int shmring_channel_consumer_start(shmring_channel *ch)
{
    /* acquire [S5]: our own (or a dead predecessor's) release of head. */
    uint64_t head = shmring_load_acquire(&ch->ctrl->head);
    /* acquire [S2]: pairs with the producer's release of tail. */
    uint64_t tail = shmring_load_acquire(&ch->ctrl->tail);
    if ((tail & 7u) != 0 || (head & 7u) != 0 || tail - head > ch->capacity)
        return SHMRING_ERR_CORRUPT;
    ch->head = ch->head_published = head;
    ch->tail_cache = tail;
    ch->current_size = 0;
    ch->released_msgs = ch->released_bytes = 0;
    ch->light = shmring_light_barrier_register();
    return SHMRING_OK;
}

/* Is there room for `n` more bytes at the local tail?  Refreshes the cached
 * head only when the cached value says no.  Returns 1, 0, or -1 (corrupt). */
static inline int shmring_channel_has_room(shmring_channel *ch, uint64_t n)
{
    uint64_t head;
    if (ch->capacity - (ch->tail - ch->head_cache) >= n)
        return 1;
    /* acquire [S5]: pairs with the consumer's release of head, so that the
     * consumer has finished reading the bytes we are about to overwrite. */
    head = shmring_load_acquire(&ch->ctrl->head);
    /* Untrusted: head must lie within one capacity behind our tail. */
    if ((head & 7u) != 0 || ch->tail - head > ch->capacity)
        return -1;
    ch->head_cache = head;
    return ch->capacity - (ch->tail - head) >= n;
}

/* Fill the rest of the ring with a padding record, so that the next record
 * starts at offset 0 (not yet visible: see shmring_channel_publish).
 * Returns SHMRING_OK (also when the local tail is at offset 0 already),
 * SHMRING_AGAIN when the padding does not fit yet, or SHMRING_ERR_CORRUPT. */
static inline int shmring_channel_pad(shmring_channel *ch)
{
    uint64_t pos = ch->tail & ch->mask, contig = ch->capacity - pos;
    shmring_record *rec;
    int room;
    if (pos == 0)
        return SHMRING_OK;
    room = shmring_channel_has_room(ch, contig);
    if (room <= 0)
        return room < 0 ? SHMRING_ERR_CORRUPT : SHMRING_AGAIN;
    rec = (shmring_record *)(ch->data + pos);
    rec->len = (uint32_t)(contig - sizeof(shmring_record));
    rec->tag = SHMRING_REC_PAD;
    ch->tail += contig; /* published with the next record [S2] */
    return SHMRING_OK;
}

/* The stream offset after a record of `len` payload bytes placed at `pos`
 * the way shmring_channel_reserve places it (behind a padding record when it
 * would cross the end of the ring): to size a batch before writing it. */
static inline uint64_t shmring_channel_place(const shmring_channel *ch, uint64_t pos, uint64_t len)
{
    uint64_t need = sizeof(shmring_record) + shmring_align8(len), contig = ch->capacity - (pos & ch->mask);
    return (need > contig ? pos + contig : pos) + need;
}

/* Reserve room for a record of `len` payload bytes at the local tail.
 * Returns SHMRING_OK with *out set to where the payload goes (commit with
 * shmring_channel_commit), SHMRING_AGAIN when the ring has no room now,
 * SHMRING_TOO_BIG, or SHMRING_ERR_CORRUPT.  A record never wraps: when it
 * does not fit before the end of the ring, a padding record fills the rest
 * and the record starts again at offset 0. */
static inline int shmring_channel_reserve(shmring_channel *ch, uint64_t len, unsigned char **out)
{
    uint64_t need;
    int room;
    if (len > shmring_channel_max_message(ch->capacity))
        return SHMRING_TOO_BIG;
    need = sizeof(shmring_record) + shmring_align8(len);
    if (need > ch->capacity - (ch->tail & ch->mask)) {
        int rc = shmring_channel_pad(ch); /* need <= capacity: the tail is not at offset 0 */
        if (rc != SHMRING_OK)
            return rc;
    }
    room = shmring_channel_has_room(ch, need);
    if (room <= 0)
        return room < 0 ? SHMRING_ERR_CORRUPT : SHMRING_AGAIN;
    *out = ch->data + (ch->tail & ch->mask) + sizeof(shmring_record);
    return SHMRING_OK;
}

/* Commit the record reserved last with `len` payload bytes (written at the
 * pointer reserve returned).  Not yet visible: see shmring_channel_publish. */
static inline void shmring_channel_commit(shmring_channel *ch, uint64_t len)
{
    shmring_record *rec = (shmring_record *)(ch->data + (ch->tail & ch->mask));
    rec->len = (uint32_t)len;
    rec->tag = SHMRING_REC_DATA;
    ch->tail += sizeof(shmring_record) + shmring_align8(len);
    ch->batch_msgs++;
    ch->batch_bytes += len;
}

/* What the two ends do to hand their progress to the other: add the batch
 * to this end's statistics, store this end's counter (the producer's tail,
 * the consumer's head), and wake the other end if it sleeps, on its futex
 * word and, on "semaphore" channels, its semaphore. */
static inline void shmring_channel_publish_counter_(shmring_channel *ch, uint64_t *counter, uint64_t value,
                                                    uint64_t *stat_msgs, uint64_t *stat_bytes, uint64_t batch_msgs,
                                                    uint64_t batch_bytes, uint32_t *other_waiting,
                                                    uint32_t *other_seq, shmring_sem *other_sem)
{
    /* relaxed: statistics only, written by this end, read with relaxed loads. */
    shmring_store_relaxed(stat_msgs, shmring_load_relaxed(stat_msgs) + batch_msgs);
    shmring_store_relaxed(stat_bytes, shmring_load_relaxed(stat_bytes) + batch_bytes);
    /* release [S2] (tail) / [S5] (head): pairs with the other end's acquire
     * load of the counter.  Tail: the records (headers and payloads)
     * written before are visible before it.  Head: our reads of the
     * released bytes complete before the producer may overwrite them. */
    shmring_store_release(counter, value);
    /* light or full barrier [S6] (tail) / [S7] (head): pairs with the other
     * end's heavy barrier between setting its waiting flag and re-reading
     * the counter: either it sees our counter, or we see its flag and wake
     * it (lost wake-up race). */
    shmring_light_barrier(ch->light);
    /* relaxed: ordered by the fence above. */
    if (shmring_load_relaxed(other_waiting)) {
        /* release [S6]/[S7]: the futex word changes after the counter did. */
        shmring_fetch_add_release(other_seq, 1u);
        shmring_futex_wake(other_seq, 1);
    }
    if (ch->wait == SHMRING_WAIT_SEMAPHORE)
        shmring_sem_signal(other_sem); /* [S8]: after the counter store above */
}

/* Make every committed record visible to the consumer (store tail [S2]),
 * and wake it if it sleeps [S6].  One call can publish a whole batch. */
static inline void shmring_channel_publish(shmring_channel *ch)
{
    shmring_channel_ctrl *c = ch->ctrl;
    if (ch->tail == ch->tail_published)
        return;
    shmring_channel_publish_counter_(ch, &c->tail, ch->tail, &c->sent_msgs, &c->sent_bytes, ch->batch_msgs,
                                     ch->batch_bytes, &c->consumer_waiting, &c->data_seq, &c->data_sem);
    ch->batch_msgs = ch->batch_bytes = 0;
    ch->tail_published = ch->tail;
}

/* The next message, without consuming it.  Returns SHMRING_OK with *out and
 * *len set, SHMRING_AGAIN when the ring is empty, or SHMRING_ERR_CORRUPT when
 * a counter or record header read from shared memory is impossible.  Padding
 * records are skipped on the way. */
static inline int shmring_channel_peek(shmring_channel *ch, const unsigned char **out, uint64_t *len)
{
    for (;;) {
        uint64_t avail = ch->tail_cache - ch->head, pos, size, room;
        const shmring_record *rec;
        uint32_t rlen, rtag;
        if (avail == 0) {
            /* acquire [S2]: pairs with the producer's release of tail, so
             * the records below it are fully written. */
            uint64_t tail = shmring_load_acquire(&ch->ctrl->tail);
            if ((tail & 7u) != 0 || tail - ch->head > ch->capacity)
                return SHMRING_ERR_CORRUPT;
            ch->tail_cache = tail;
            avail = tail - ch->head;
            if (avail == 0)
                return SHMRING_AGAIN;
        }
        pos = ch->head & ch->mask;
        room = ch->capacity - pos;
        rec = (const shmring_record *)(ch->data + pos);
        /* relaxed: ordered by the acquire of tail above; read once each into
         * locals so that a peer rewriting them cannot change what we check. */
        rlen = shmring_load_relaxed(&rec->len);
        rtag = shmring_load_relaxed(&rec->tag);
        if (rtag == SHMRING_REC_PAD) {
            if ((uint64_t)rlen + sizeof(shmring_record) != room || room > avail)
                return SHMRING_ERR_CORRUPT;
            ch->head += room; /* published with the next release [S5] */
            continue;
        }
        size = sizeof(shmring_record) + shmring_align8(rlen);
        if (rtag != SHMRING_REC_DATA || size > room || size > avail)
            return SHMRING_ERR_CORRUPT;
        ch->current_size = size;
        ch->current_len = rlen;
        *out = ch->data + pos + sizeof(shmring_record);
        *len = rlen;
        return SHMRING_OK;
    }
}

/* Step past the message peek returned, in the local head only: the
 * producer gets its bytes back at shmring_channel_publish_head (one call
 * may give back a batch). */
static inline void shmring_channel_consume(shmring_channel *ch)
{
    ch->head += ch->current_size;
    ch->released_msgs++;
    ch->released_bytes += ch->current_len;
    ch->current_size = 0;
}

/* Give the consumed bytes back to the producer: store head [S5]
 * ("release" in docs/PROTOCOL.md 3.4), and wake the producer if it sleeps
 * [S7]. */
static inline void shmring_channel_publish_head(shmring_channel *ch)
{
    shmring_channel_ctrl *c = ch->ctrl;
    if (ch->head == ch->head_published)
        return;
    shmring_channel_publish_counter_(ch, &c->head, ch->head, &c->recv_msgs, &c->recv_bytes, ch->released_msgs,
                                     ch->released_bytes, &c->producer_waiting, &c->space_seq, &c->space_sem);
    ch->released_msgs = ch->released_bytes = 0;
    ch->head_published = ch->head;
}

/* Mark one end closed ([S4]) and wake the other end if it sleeps. */
static inline void shmring_channel_mark_closed(shmring_channel *ch, int writer)
{
    shmring_channel_ctrl *c = ch->ctrl;
    /* release [S4]: pairs with the acquire load of the flag by the other
     * end; everything we published before closing is visible first. */
    shmring_store_release(writer ? &c->writer_closed : &c->reader_closed, 1u);
    shmring_fence_seq_cst(); /* [S6]/[S7]: as in publish */
    /* release [S6]/[S7]: unconditional bump, so a sleeper re-checks. */
    shmring_fetch_add_release(writer ? &c->data_seq : &c->space_seq, 1u);
    shmring_futex_wake(writer ? &c->data_seq : &c->space_seq, INT_MAX);
    shmring_sem_signal(writer ? &c->data_sem : &c->space_sem);
}

static inline int shmring_channel_writer_closed(const shmring_channel *ch)
{
    /* acquire [S4]: pairs with the producer's release in mark_closed. */
    return (int)shmring_load_acquire(&ch->ctrl->writer_closed);
}

static inline int shmring_channel_reader_closed(const shmring_channel *ch)
{
    /* acquire [S4]: pairs with the consumer's release in mark_closed. */
    return (int)shmring_load_acquire(&ch->ctrl->reader_closed);
}

/* Has another thread of this process asked this waiter to stop? */
static inline int shmring_channel_interrupted(const shmring_channel *ch)
{
    /* acquire: pairs with the interrupting thread's release store, made
     * before it calls shmring_channel_interrupt_waiters. */
    return ch->interrupt != NULL && shmring_load_acquire(ch->interrupt) != 0;
}

/* Wake this process's thread sleeping in shmring_channel_wait on the
 * `writer` side, after setting *ch->interrupt.  The words it sleeps on keep
 * their values (the peer's protocol is untouched), so a waiter caught
 * between its last look at *interrupt and its sleep sleeps until its
 * deadline: callers wait in slices. */
static inline void shmring_channel_interrupt_waiters(shmring_channel *ch, int writer)
{
    shmring_channel_ctrl *c = ch->ctrl;
    shmring_futex_wake(writer ? &c->space_seq : &c->data_seq, INT_MAX);
    shmring_futex_wake(writer ? &c->space_sem.count : &c->data_sem.count, INT_MAX);
    shmring_futex_wake(&c->claim_seq, INT_MAX); /* a wait for an end held elsewhere [S11] */
}

/* Is data readable (or the stream over) without blocking?  Refreshes the
 * cached tail.  Returns 1, 0, or -1 (corrupt). */
static inline int shmring_channel_readable(shmring_channel *ch)
{
    uint64_t tail;
    if (ch->tail_cache != ch->head)
        return 1;
    /* acquire [S2]: pairs with the producer's release of tail. */
    tail = shmring_load_acquire(&ch->ctrl->tail);
    if ((tail & 7u) != 0 || tail - ch->head > ch->capacity)
        return -1;
    ch->tail_cache = tail;
    return tail != ch->head || shmring_channel_writer_closed(ch);
}

/* The condition a waiting side waits for: data (or the end of the stream)
 * for the consumer; `need` free bytes (or a closed reader) for the producer.
 * Returns 1, 0, or -1 (corrupt). */
static inline int shmring_channel_ready(shmring_channel *ch, int writer, uint64_t need)
{
    int r;
    if (!writer)
        return shmring_channel_readable(ch);
    r = shmring_channel_has_room(ch, need);
    return r != 0 ? r : shmring_channel_reader_closed(ch);
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_CHANNEL_H */
