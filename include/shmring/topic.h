/*
 * shmring/topic.h - the topic: a broadcast ring.
 *
 * Publishers append records to one ring under the topic's robust mutex;
 * every subscriber reads them with its own cursor, without a lock.  Records
 * have a 16-byte header {len, tag, seq} (shmring_topic_record) and start at
 * 16-byte aligned offsets; `seq` numbers the messages, so a subscriber that
 * fell behind knows how many it missed.
 *
 * head is the reclaim point: bytes before it may be overwritten.  Policy
 * BLOCK moves it only up to the slowest live subscriber's cursor (publishers
 * wait for room); OVERWRITE moves it as far as a publish needs.  A reader
 * copies a record, then re-reads head [T2]: if head has passed the record,
 * the copy may be torn and is discarded (SHMRING_LAGGED).  A gap marker
 * (SHMRING_REC_GAP) stands for messages lost before they reached the ring
 * (a bridge's importer writes one): its 8-byte payload is their count, it
 * takes that many message numbers, and readers report it as they report
 * falling behind.  Layout and
 * algorithm: docs/PROTOCOL.md section 6.
 */
#ifndef SHMRING_TOPIC_H
#define SHMRING_TOPIC_H

#include "base.h"
#include "atomics.h"
#include "os.h"
#include "wait.h"
#include "record.h"
#include "sync.h"
#include "watch.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHMRING_TOPIC_BLOCK 1u
#define SHMRING_TOPIC_OVERWRITE 2u
#define SHMRING_TOPIC_CTRL_SIZE 384u
#define SHMRING_TOPIC_MIN_CAPACITY 128u
#define SHMRING_TOPIC_MAX_CAPACITY (UINT64_C(1) << 32)
#define SHMRING_TOPIC_MAX_SUBSCRIBERS 4096u
#define SHMRING_TOPIC_NO_RECORD UINT64_MAX

typedef struct shmring_topic_ctrl {
    /* Config: written before the segment is published. */
    uint64_t capacity;         /* ring bytes: a multiple of 16 */
    uint64_t data_offset;      /* from the payload start */
    uint32_t policy;           /* SHMRING_TOPIC_BLOCK or _OVERWRITE */
    uint32_t max_subscribers;  /* entries in the subscriber table */
    uint32_t spin_ns;          /* how long a waiter polls before sleeping */
    uint32_t reserved0;
    uint8_t pad0[32];
    /* The publishers' lock, on a cache line of its own: subscribers poll
     * tail, and should not see the lock's two writes per publish too. */
    shmring_mutex lock; /* [T3] */
    uint8_t pad1[40];
    /* Publishers' state: written under the lock, read by subscribers. */
    uint64_t tail;      /* bytes published, ever [T1] */
    uint64_t head;      /* reclaim point: bytes before it may be overwritten [T2] */
    uint64_t next_seq;  /* number of the next message */
    uint64_t last_pos;  /* offset of the newest record, or NO_RECORD [T1] */
    uint8_t pad2[96];
    /* Sleep words. */
    uint32_t data_seq;     /* bumped after a publish when subscribers sleep [T4] */
    uint32_t data_waiters;
    uint32_t room_seq;     /* bumped after a subscriber moved on, for BLOCK publishers [T5] */
    uint32_t room_waiters;
    uint8_t pad3[112];
} shmring_topic_ctrl;
SHMRING_STATIC_ASSERT(offsetof(shmring_topic_ctrl, lock) == 64, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_topic_ctrl, tail) == 128, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_topic_ctrl, head) == 136, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_topic_ctrl, next_seq) == 144, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_topic_ctrl, last_pos) == 152, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_topic_ctrl, data_seq) == 256, "layout");
SHMRING_STATIC_ASSERT(sizeof(shmring_topic_ctrl) == SHMRING_TOPIC_CTRL_SIZE, "layout");

/* One subscriber: the table follows the control block. */
typedef struct shmring_topic_sub {
    uint64_t token;    /* owning process, 0 = free [T6] */
    uint64_t cursor;   /* next byte to read [T5] */
    uint64_t next_seq; /* number of the next message it expects (its own) */
    uint64_t lagged;   /* messages it missed, ever (statistics) */
} shmring_topic_sub;
SHMRING_STATIC_ASSERT(sizeof(shmring_topic_sub) == 32, "layout");

/* The header of a topic record: shmring_record (shmring/record.h) and the
 * message number. */
typedef struct shmring_topic_record {
    uint32_t len; /* payload bytes (data records); bytes after the header (PAD) */
    uint32_t tag; /* SHMRING_REC_OBJECT, _BYTES, _PAD or _GAP */
    uint64_t seq; /* message number (PAD: the next message's; GAP: the first lost one's) */
} shmring_topic_record;
SHMRING_STATIC_ASSERT(sizeof(shmring_topic_record) == 16, "layout");

static inline uint64_t shmring_topic_data_offset(uint32_t max_subscribers)
{
    uint64_t end = SHMRING_TOPIC_CTRL_SIZE + (uint64_t)max_subscribers * sizeof(shmring_topic_sub);
    return (end + 127u) & ~(uint64_t)127u;
}

static inline uint64_t shmring_topic_payload_size(uint64_t capacity, uint32_t max_subscribers)
{
    return shmring_topic_data_offset(max_subscribers) + capacity;
}

static inline uint64_t shmring_topic_record_size(uint64_t len)
{
    return (sizeof(shmring_topic_record) + len + 15u) & ~(uint64_t)15u;
}

static inline void shmring_topic_init(void *payload, uint64_t capacity, uint32_t policy, uint32_t max_subscribers,
                                      uint32_t spin_ns)
{
    shmring_topic_ctrl *c = (shmring_topic_ctrl *)payload;
    memset(c, 0, sizeof(*c));
    c->capacity = capacity;
    c->data_offset = shmring_topic_data_offset(max_subscribers);
    c->policy = policy;
    c->max_subscribers = max_subscribers;
    c->spin_ns = spin_ns;
    c->last_pos = SHMRING_TOPIC_NO_RECORD;
}

static inline int shmring_topic_check_config(const shmring_topic_ctrl *c, uint64_t payload_size,
                                             shmring_topic_ctrl *copy)
{
    /* The size first: a payload smaller than the block it claims to hold
     * must not be read past its end. */
    if (payload_size < SHMRING_TOPIC_CTRL_SIZE)
        return SHMRING_ERR_CORRUPT;
    memcpy(copy, c, sizeof(*copy));
    if (copy->max_subscribers == 0 ||
        copy->max_subscribers > SHMRING_TOPIC_MAX_SUBSCRIBERS ||
        copy->data_offset != shmring_topic_data_offset(copy->max_subscribers) ||
        (copy->policy != SHMRING_TOPIC_BLOCK && copy->policy != SHMRING_TOPIC_OVERWRITE) ||
        copy->spin_ns > SHMRING_MAX_SPIN_NS ||
        copy->capacity < SHMRING_TOPIC_MIN_CAPACITY || copy->capacity > SHMRING_TOPIC_MAX_CAPACITY ||
        (copy->capacity & 15u) != 0 || copy->data_offset > payload_size ||
        copy->capacity > payload_size - copy->data_offset)
        return SHMRING_ERR_CORRUPT;
    return SHMRING_OK;
}

/* A topic as one process sees it: pointers and the checked config. */
typedef struct shmring_topic {
    shmring_topic_ctrl *ctrl;
    shmring_topic_sub *subs;
    unsigned char *data;
    uint64_t capacity;
    uint32_t policy;
    uint32_t max_subscribers;
    /* Optional, process-local (NULL after attach): as in shmring_channel, a
     * word another thread of this process sets (release) to make
     * shmring_topic_reserve_wait return early (SHMRING_ERR_SYS, EINTR). */
    const uint32_t *interrupt;
} shmring_topic;

static inline int shmring_topic_attach(shmring_topic *t, void *payload, uint64_t payload_size)
{
    shmring_topic_ctrl cfg;
    int rc = shmring_topic_check_config((const shmring_topic_ctrl *)payload, payload_size, &cfg);
    if (rc != SHMRING_OK)
        return rc;
    t->ctrl = (shmring_topic_ctrl *)payload;
    t->subs = (shmring_topic_sub *)((unsigned char *)payload + SHMRING_TOPIC_CTRL_SIZE);
    t->data = (unsigned char *)payload + cfg.data_offset;
    t->capacity = cfg.capacity;
    t->policy = cfg.policy;
    t->max_subscribers = cfg.max_subscribers;
    t->interrupt = NULL;
    return SHMRING_OK;
}

/* -- copying record bytes -------------------------------------------------- */

/* A lapped subscriber may copy a record while a publisher overwrites it:
 * the copy is then discarded by the re-read of head [T2], but the accesses
 * themselves must be atomic, or they are a data race for the C memory model
 * (and ThreadSanitizer).  Both sides therefore copy record bytes as relaxed
 * 8-byte atomics, which compile to plain moves.  Headers and payloads start
 * 8-byte aligned (records are 16-aligned, the header 16 bytes) and a record
 * is padded to 16, so the whole words covering them stay inside the record. */

/* Write `len` bytes from `src` to the record bytes at `dst` (8-aligned); the
 * bytes after them up to the next 8-byte boundary become zero. */
static inline void shmring_topic_copy_in(unsigned char *dst, const void *src, uint64_t len)
{
    const unsigned char *from = (const unsigned char *)src;
    uint64_t *to = (uint64_t *)(void *)dst, last = 0, i, words = len / 8u;
    for (i = 0; i < words; i++) {
        uint64_t w; /* its own variable: `last` has its address taken */
        memcpy(&w, from + 8u * i, 8);
        /* relaxed [T2]: after the release fence that moved head past the
         * old record; [T1]: before the store of tail that publishes it. */
        shmring_store_relaxed(&to[i], w);
    }
    if (len % 8u != 0) {
        memcpy(&last, from + 8u * words, (size_t)(len % 8u));
        /* relaxed [T2][T1]: as above. */
        shmring_store_relaxed(&to[words], last);
    }
}

/* Read `len` bytes of the record bytes at `src` (8-aligned) into `dst`.  The
 * copy may be torn: validate it afterwards (shmring_topic_still_valid). */
static inline void shmring_topic_copy_out(void *dst, const unsigned char *src, uint64_t len)
{
    unsigned char *to = (unsigned char *)dst;
    const uint64_t *from = (const uint64_t *)(const void *)src;
    uint64_t last, i, words = len / 8u;
    for (i = 0; i < words; i++) {
        /* relaxed [T2]: before the acquire fence and re-read of head. */
        uint64_t w = shmring_load_relaxed(&from[i]); /* its own variable: kept in a register */
        memcpy(to + 8u * i, &w, 8);
    }
    if (len % 8u != 0) {
        /* relaxed [T2]: as above. */
        last = shmring_load_relaxed(&from[words]);
        memcpy(to + 8u * words, &last, (size_t)(len % 8u));
    }
}

/* Copy the payload of a record that shmring_topic_next gave a live
 * subscriber at or after its own published cursor.  BLOCK: no publisher
 * reclaims what the slowest live subscriber has not moved past, and this
 * one moves its cursor after the copy (seq_cst [T5], read by the publisher
 * before it moves head), so no write races with the copy: memcpy, as fast
 * as it gets.  OVERWRITE: the word-wise shmring_topic_copy_out. */
static inline void shmring_topic_copy_subscribed(const shmring_topic *t, void *dst, const unsigned char *src,
                                                 uint64_t len)
{
    if (t->policy == SHMRING_TOPIC_BLOCK)
        memcpy(dst, src, (size_t)len);
    else
        shmring_topic_copy_out(dst, src, len);
}

/* -- publishing (the lock held) ------------------------------------------- */

/* Lowest cursor of the live subscribers (tail if none); frees the slots of
 * dead ones when `reap`. */
static inline uint64_t shmring_topic_min_cursor(shmring_topic *t, uint64_t tail, int reap)
{
    uint64_t low = tail;
    uint32_t i;
    for (i = 0; i < t->max_subscribers; i++) {
        shmring_topic_sub *s = &t->subs[i];
        /* acquire [T6]: pairs with the CAS that claimed or freed the slot;
         * a new subscriber sets its cursor under the lock we hold. */
        uint64_t token = shmring_load_acquire(&s->token), cur;
        if (token == 0)
            continue;
        /* seq_cst [T5]: pairs with the subscriber's store of its cursor and
         * load of room_waiters. */
        cur = shmring_load_seq_cst(&s->cursor);
        if (tail - cur > t->capacity)
            cur = tail - t->capacity; /* corrupt or far behind: never below what we hold */
        if (cur < low) {
            if (reap && !shmring_token_alive(token)) {
                /* release [T6]: a dead subscriber never blocks publishers. */
                shmring_cas_release(&s->token, &token, 0);
                continue;
            }
            low = cur;
        }
    }
    return low;
}

/* Make `need` bytes free after `tail`, moving head as the policy allows.
 * SHMRING_AGAIN: BLOCK and a live subscriber is too far behind. */
static inline int shmring_topic_make_room(shmring_topic *t, uint64_t tail, uint64_t need, int reap)
{
    shmring_topic_ctrl *c = t->ctrl;
    /* relaxed: under the lock [T3]. */
    uint64_t head = shmring_load_relaxed(&c->head), target;
    if (tail - head > t->capacity || (head & 15u) != 0)
        return SHMRING_ERR_CORRUPT;
    if (t->capacity - (tail - head) >= need)
        return SHMRING_OK;
    target = tail + need - t->capacity;
    if (t->policy == SHMRING_TOPIC_BLOCK) {
        uint64_t low = shmring_topic_min_cursor(t, tail, reap), last;
        if (low < target)
            return SHMRING_AGAIN;
        /* Free at once all that every subscriber has read (16-aligned: a
         * hostile cursor must not make head unaligned), so that the next
         * publishes find room without looking at every subscriber again;
         * but keep the newest record, for latest().  relaxed: under the
         * lock [T3]. */
        last = shmring_load_relaxed(&c->last_pos);
        low &= ~(uint64_t)15u;
        if (last != SHMRING_TOPIC_NO_RECORD && last >= target && last < low)
            low = last & ~(uint64_t)15u;
        if (low > target)
            target = low;
    } else {
        /* Whole records only, so that head always sits on a record. */
        uint64_t h = head;
        while (h < target) {
            /* h is 16-aligned and capacity a multiple of 16: the header fits. */
            const shmring_topic_record *r = (const shmring_topic_record *)(t->data + h % t->capacity);
            uint32_t len = r->len, tag = r->tag; /* read once: the mapping is untrusted */
            uint64_t size = tag == SHMRING_REC_PAD ? sizeof(shmring_topic_record) + (uint64_t)len
                                                   : shmring_topic_record_size(len);
            if (size > tail - h || (size & 15u) != 0 || size == 0 || h % t->capacity + size > t->capacity)
                return SHMRING_ERR_CORRUPT;
            h += size;
        }
        target = h;
    }
    /* relaxed + release fence [T2]: head is visible before any byte of the
     * space it frees is overwritten; pairs with the reader's acquire fence
     * before it re-reads head. */
    shmring_store_relaxed(&c->head, target);
    shmring_fence_release();
    return SHMRING_OK;
}

/* Reserve a record of `len` bytes; *out gets where its payload goes and
 * *pos where the record starts.  A record never wraps: a padding record is
 * published alone first when it would.  SHMRING_OK, SHMRING_AGAIN (BLOCK:
 * no room), SHMRING_TOO_BIG or SHMRING_ERR_CORRUPT. */
static inline int shmring_topic_reserve(shmring_topic *t, uint32_t tag, uint64_t len, int reap, unsigned char **out,
                                        uint64_t *pos)
{
    shmring_topic_ctrl *c = t->ctrl;
    uint64_t need = shmring_topic_record_size(len), tail, off, contig;
    shmring_topic_record hdr;
    int rc;
    if (len > UINT32_MAX || need > t->capacity)
        return SHMRING_TOO_BIG;
    /* relaxed: under the lock [T3]. */
    tail = shmring_load_relaxed(&c->tail);
    if ((tail & 15u) != 0)
        return SHMRING_ERR_CORRUPT;
    off = tail % t->capacity;
    contig = t->capacity - off;
    if (contig < need) {
        rc = shmring_topic_make_room(t, tail, contig, reap);
        if (rc != SHMRING_OK)
            return rc;
        hdr.len = (uint32_t)(contig - sizeof(shmring_topic_record));
        hdr.tag = SHMRING_REC_PAD;
        hdr.seq = c->next_seq;
        shmring_topic_copy_in(t->data + off, &hdr, sizeof(hdr)); /* lapped readers may read it */
        tail += contig;
        /* seq_cst [T1][T4]: the padding is readable before tail says so;
         * sleeping subscribers must move past it before BLOCK can reclaim it. */
        shmring_store_seq_cst(&c->tail, tail);
        if (shmring_load_seq_cst(&c->data_waiters) != 0) {
            shmring_fetch_add_seq_cst(&c->data_seq, 1u);
            shmring_futex_wake(&c->data_seq, INT_MAX);
        }
        off = 0;
    }
    rc = shmring_topic_make_room(t, tail, need, reap);
    if (rc != SHMRING_OK)
        return rc;
    hdr.len = (uint32_t)len;
    hdr.tag = tag;
    hdr.seq = c->next_seq;
    shmring_topic_copy_in(t->data + off, &hdr, sizeof(hdr));
    *out = t->data + off + sizeof(shmring_topic_record);
    *pos = tail;
    return SHMRING_OK;
}

/* Publish the record reserved at `pos`.  Returns whether subscribers may
 * sleep (the caller then calls shmring_topic_wake_subscribers). */
static inline int shmring_topic_commit(shmring_topic *t, uint64_t pos)
{
    shmring_topic_ctrl *c = t->ctrl;
    const shmring_topic_record *r = (const shmring_topic_record *)(t->data + pos % t->capacity);
    /* relaxed: under the lock [T3]. */
    shmring_store_relaxed(&c->next_seq, c->next_seq + 1);
    shmring_store_relaxed(&c->last_pos, pos);
    /* seq_cst [T1][T4]: release for readers' acquire of tail; seq_cst so
     * that the load of data_waiters below cannot miss an announced sleeper. */
    shmring_store_seq_cst(&c->tail, pos + shmring_topic_record_size(r->len));
    return shmring_load_seq_cst(&c->data_waiters) != 0;
}

/* Publish the gap marker reserved at `pos` (tag SHMRING_REC_GAP, 8 bytes:
 * write `missed` there first): as shmring_topic_commit, but the marker
 * takes `missed` message numbers and last_pos stays on the newest message
 * (latest() never returns a marker). */
static inline int shmring_topic_commit_gap(shmring_topic *t, uint64_t pos, uint64_t missed)
{
    shmring_topic_ctrl *c = t->ctrl;
    /* relaxed: under the lock [T3]. */
    shmring_store_relaxed(&c->next_seq, c->next_seq + missed);
    /* seq_cst [T1][T4]: as in shmring_topic_commit. */
    shmring_store_seq_cst(&c->tail, pos + shmring_topic_record_size(sizeof(uint64_t)));
    return shmring_load_seq_cst(&c->data_waiters) != 0;
}

static inline void shmring_topic_wake_subscribers(shmring_topic *t)
{
    /* seq_cst [T4]: the sleeper re-reads tail after reading data_seq. */
    shmring_fetch_add_seq_cst(&t->ctrl->data_seq, 1u);
    shmring_futex_wake(&t->ctrl->data_seq, INT_MAX);
}

/* -- subscribing ---------------------------------------------------------- */

/* Claim a subscriber slot (the lock held, so that no publish moves head
 * between reading tail and publishing the cursor).  Returns the slot index,
 * or -1 when the table is full of live subscribers. */
static inline int shmring_topic_subscribe(shmring_topic *t, uint64_t token)
{
    shmring_topic_ctrl *c = t->ctrl;
    uint32_t i, pass;
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < t->max_subscribers; i++) {
            shmring_topic_sub *s = &t->subs[i];
            /* relaxed: a first look; the CAS decides. */
            uint64_t cur = shmring_load_relaxed(&s->token);
            if (cur != 0 && (pass == 0 || shmring_token_alive(cur)))
                continue;
            /* acquire [T6]: take the slot (free, or a dead process's). */
            if (!shmring_cas_acquire(&s->token, &cur, token))
                continue;
            /* relaxed under the lock; seq_cst for the cursor [T5]. */
            shmring_store_relaxed(&s->next_seq, shmring_load_relaxed(&c->next_seq));
            shmring_store_relaxed(&s->lagged, 0);
            shmring_store_seq_cst(&s->cursor, shmring_load_relaxed(&c->tail));
            return (int)i;
        }
    }
    return -1;
}

static inline void shmring_topic_unsubscribe(shmring_topic *t, int slot, uint64_t token)
{
    uint64_t cur = token;
    /* release [T6]: the slot is free once nobody reads through it. */
    shmring_cas_release(&t->subs[slot].token, &cur, 0);
}

/* The record at `cursor`, skipping padding (*cursor moves past it).
 * SHMRING_OK (the payload may still be torn: check with
 * shmring_topic_still_valid after copying), SHMRING_GAP (a gap marker, with
 * the outputs of a message: read its count with shmring_topic_gap_count),
 * SHMRING_AGAIN (nothing new), SHMRING_LAGGED (head passed the cursor) or
 * SHMRING_ERR_CORRUPT. */
static inline int shmring_topic_next(shmring_topic *t, uint64_t *cursor, uint32_t *tag, const unsigned char **payload,
                                     uint64_t *len, uint64_t *seq, uint64_t *size)
{
    shmring_topic_ctrl *c = t->ctrl;
    for (;;) {
        /* acquire [T1]: pairs with the publisher's store of tail. */
        uint64_t tail = shmring_load_acquire(&c->tail);
        /* acquire [T2]: pairs with the release fence after head moved. */
        uint64_t head = shmring_load_acquire(&c->head);
        uint64_t cur = *cursor, off, contig;
        shmring_topic_record copy;
        if (cur == tail)
            return SHMRING_AGAIN;
        if (cur < head)
            return SHMRING_LAGGED;
        if (cur > tail || tail - cur > t->capacity || (cur & 15u) != 0)
            return SHMRING_ERR_CORRUPT;
        off = cur % t->capacity;
        contig = t->capacity - off;
        shmring_topic_copy_out(&copy, t->data + off, sizeof(copy)); /* once: the mapping is untrusted */
        shmring_fence_acquire(); /* [T2]: the header before head */
        /* relaxed after the fence [T2]. */
        if (shmring_load_relaxed(&c->head) > cur)
            return SHMRING_LAGGED;
        if (copy.tag == SHMRING_REC_PAD) {
            if ((uint64_t)copy.len + sizeof(shmring_topic_record) != contig || contig > tail - cur)
                return SHMRING_ERR_CORRUPT;
            *cursor = cur + contig;
            continue;
        }
        *size = shmring_topic_record_size(copy.len);
        if (*size > contig || *size > tail - cur)
            return SHMRING_ERR_CORRUPT;
        *tag = copy.tag;
        *len = copy.len;
        *seq = copy.seq;
        *payload = t->data + off + sizeof(shmring_topic_record);
        if (copy.tag != SHMRING_REC_OBJECT && copy.tag != SHMRING_REC_BYTES) {
            /* Off the message path: a gap marker, or garbage. */
            if (copy.tag != SHMRING_REC_GAP || copy.len != sizeof(uint64_t))
                return SHMRING_ERR_CORRUPT;
            return SHMRING_GAP;
        }
        return SHMRING_OK;
    }
}

/* After copying a record read at `pos`: SHMRING_OK if no publisher reclaimed
 * it meanwhile, else SHMRING_LAGGED (the copy may be torn: discard it). */
static inline int shmring_topic_still_valid(shmring_topic *t, uint64_t pos)
{
    /* acquire fence [T2]: pairs with the release fence after the publisher
     * moved head; if our copy saw any overwritten byte, we see the new head. */
    shmring_fence_acquire();
    /* relaxed after the fence. */
    return shmring_load_relaxed(&t->ctrl->head) > pos ? SHMRING_LAGGED : SHMRING_OK;
}

/* The count of a gap marker that shmring_topic_next gave at `pos` (its
 * payload `p`): SHMRING_OK with *missed, SHMRING_LAGGED (reclaimed while it
 * was read), or SHMRING_ERR_CORRUPT (a count of 0, or numbers past 2^64-1
 * from the marker's `seq`). */
static inline int shmring_topic_gap_count(shmring_topic *t, uint64_t pos, const unsigned char *p, uint64_t seq,
                                          uint64_t *missed)
{
    uint64_t count;
    shmring_topic_copy_out(&count, p, sizeof(count)); /* atomic words: a publisher may lap us */
    if (shmring_topic_still_valid(t, pos) != SHMRING_OK)
        return SHMRING_LAGGED;
    if (count == 0 || count > UINT64_MAX - seq)
        return SHMRING_ERR_CORRUPT;
    *missed = count;
    return SHMRING_OK;
}

/* Where a lagging subscriber resumes: the oldest record still held, and its
 * message number.  SHMRING_AGAIN when nothing is held (head == tail): the
 * caller then reads tail and next_seq together under the lock. */
static inline int shmring_topic_oldest(shmring_topic *t, uint64_t *pos, uint64_t *seq)
{
    shmring_topic_ctrl *c = t->ctrl;
    for (;;) {
        /* acquire [T2]/[T1]: as in shmring_topic_next. */
        uint64_t head = shmring_load_acquire(&c->head);
        uint64_t tail = shmring_load_acquire(&c->tail);
        uint64_t s;
        if (head > tail || tail - head > t->capacity || (head & 15u) != 0) {
            /* acquire, as above: a publish between our two loads moves both
             * (a full ring: tail - head is about capacity); only a pair that
             * stays impossible is corruption. */
            if (shmring_load_acquire(&c->head) != head ||
                shmring_load_acquire(&c->tail) != tail)
                continue;
            return SHMRING_ERR_CORRUPT;
        }
        if (head == tail)
            return SHMRING_AGAIN;
        /* relaxed [T2]: validated by shmring_topic_still_valid below. */
        s = shmring_load_relaxed(&((const shmring_topic_record *)(t->data + head % t->capacity))->seq);
        if (shmring_topic_still_valid(t, head) == SHMRING_OK) {
            *pos = head;
            *seq = s;
            return SHMRING_OK;
        }
    }
}

/* Publish the subscriber's new cursor; returns whether BLOCK publishers may
 * sleep (then call shmring_topic_wake_publishers). */
static inline int shmring_topic_advance(shmring_topic *t, int slot, uint64_t cursor, uint64_t next_seq)
{
    shmring_topic_sub *s = &t->subs[slot];
    /* relaxed: only this subscriber writes it. */
    shmring_store_relaxed(&s->next_seq, next_seq);
    /* seq_cst [T5]: pairs with the publisher's seq_cst loads of cursors
     * after it announced itself in room_waiters. */
    shmring_store_seq_cst(&s->cursor, cursor);
    return t->policy == SHMRING_TOPIC_BLOCK && shmring_load_seq_cst(&t->ctrl->room_waiters) != 0;
}

static inline void shmring_topic_wake_publishers(shmring_topic *t)
{
    /* seq_cst [T5]. */
    shmring_fetch_add_seq_cst(&t->ctrl->room_seq, 1u);
    shmring_futex_wake(&t->ctrl->room_seq, INT_MAX);
}

/* Has another thread of this process asked this waiter to stop? */
static inline int shmring_topic_interrupted(const shmring_topic *t)
{
    /* acquire: pairs with the interrupting thread's release store. */
    return t->interrupt != NULL && shmring_load_acquire(t->interrupt) != 0;
}

/* The words of a sleep for a waiter outside the blocking calls
 * (shmring/watch.h): a subscriber waits for a publish on data_seq,
 * announced in data_waiters [T4]; a publisher of a BLOCK topic for room on
 * room_seq, room_waiters [T5].  Wakers wake every sleeper. */
static inline shmring_watch shmring_topic_watch(shmring_topic *t, int publisher)
{
    shmring_topic_ctrl *c = t->ctrl;
    return shmring_watch_make(publisher ? &c->room_seq : &c->data_seq, publisher ? &c->room_waiters : &c->data_waiters,
                              0, 0, 0);
}

/* Wake this process's thread sleeping for room (publisher) or for data
 * (subscriber), after setting *t->interrupt.  No word changes value: other
 * sleepers wake spuriously and sleep again, and a waiter caught just before
 * its sleep sleeps until its deadline (callers wait in slices). */
static inline void shmring_topic_interrupt_waiters(shmring_topic *t, int publisher)
{
    shmring_futex_wake(publisher ? &t->ctrl->room_seq : &t->ctrl->data_seq, INT_MAX);
}

/* The steps of shmring_topic_reserve_wait (shmring/wait.h).  ready: take
 * the lock (a dead publisher's is taken over: nothing to repair [T3]),
 * announce in room_waiters [T5] and try to reserve; on no room, release the
 * lock (announced: the sleep withdraws it), or give up at the deadline.
 * sleep: on room_seq for a slice of 10 ms; a whole slice without progress
 * makes the next try reap dead subscribers. */
typedef struct shmring_topic_waiter_ {
    shmring_topic *t;
    uint64_t token;
    uint32_t tag;
    uint64_t len;
    uint64_t deadline_ns;
    unsigned char **out;
    uint64_t *pos;
    const shmring_wait_hooks *hooks; /* also for the lock's own wait */
    uint32_t seq;                    /* room_seq, read after announcing */
    int reap;                        /* a slow subscriber for a whole slice: alive? */
} shmring_topic_waiter_;

static inline int shmring_topic_reserve_ready_(void *ctx, int last)
{
    shmring_topic_waiter_ *w = (shmring_topic_waiter_ *)ctx;
    shmring_topic_ctrl *c = w->t->ctrl;
    int rc = shmring_mutex_lock_hooked(&c->lock, w->token, 2000u, 10000000u, w->deadline_ns, w->hooks);
    if (rc == SHMRING_OWNER_DIED)
        rc = shmring_mutex_consistent(&c->lock, w->token);
    if (rc != SHMRING_OK)
        return rc;
    /* seq_cst [T5]: announce before looking at the cursors. */
    shmring_fetch_add_seq_cst(&c->room_waiters, 1u);
    w->seq = shmring_load_seq_cst(&c->room_seq);
    rc = shmring_topic_reserve(w->t, w->tag, w->len, w->reap, w->out, w->pos);
    if (rc != SHMRING_AGAIN || last || (w->deadline_ns && shmring_now_ns() >= w->deadline_ns)) {
        /* relaxed: a hint for subscribers. */
        shmring_fetch_sub_relaxed(&c->room_waiters, 1u);
        if (rc != SHMRING_OK)
            shmring_mutex_release(&c->lock, w->token);
        return rc == SHMRING_AGAIN ? (int)SHMRING_TIMEOUT : rc;
    }
    shmring_mutex_release(&c->lock, w->token);
    return SHMRING_AGAIN;
}

static inline int shmring_topic_reserve_sleep_(void *ctx, uint64_t until_ns)
{
    shmring_topic_waiter_ *w = (shmring_topic_waiter_ *)ctx;
    shmring_topic_ctrl *c = w->t->ctrl;
    int rc = shmring_topic_interrupted(w->t) ? (int)SHMRING_ERR_SYS
                                             : shmring_futex_wait_until(&c->room_seq, w->seq, until_ns);
    /* relaxed: a hint for subscribers. */
    shmring_fetch_sub_relaxed(&c->room_waiters, 1u);
    if (shmring_topic_interrupted(w->t)) {
        errno = EINTR;
        return SHMRING_ERR_SYS;
    }
    w->reap = rc == SHMRING_TIMEOUT;
    return SHMRING_AGAIN; /* woken, timed out or a signal: look again */
}

/* Take the topic lock and reserve a record of `len` bytes, waiting for
 * room under BLOCK (reaping dead subscribers after a 10 ms slice without
 * progress) until deadline_ns (0 = forever); `hooks` (may be NULL) run
 * around and between the sleeps, the lock's included (shmring/wait.h).  A
 * dead publisher's lock is taken over: nothing to repair [T3].  SHMRING_OK
 * with the lock held: write the payload at *out, then
 * shmring_topic_commit(t, *pos), release the lock and wake as commit says.
 * Else SHMRING_TOO_BIG, SHMRING_TIMEOUT, SHMRING_ERR_CORRUPT, lock errors,
 * SHMRING_ERR_SYS (EINTR: a signal while waiting for the lock, or
 * t->interrupt set), or what a hook ended the wait with. */
static inline int shmring_topic_reserve_wait_hooked(shmring_topic *t, uint64_t token, uint32_t tag, uint64_t len,
                                                    uint64_t deadline_ns, unsigned char **out, uint64_t *pos,
                                                    const shmring_wait_hooks *hooks)
{
    shmring_topic_waiter_ w;
    w.t = t;
    w.token = token;
    w.tag = tag;
    w.len = len;
    w.deadline_ns = deadline_ns;
    w.out = out;
    w.pos = pos;
    w.hooks = hooks;
    w.seq = 0;
    w.reap = 0;
    return shmring_wait_for(&w, shmring_topic_reserve_ready_, shmring_topic_reserve_sleep_, 10000000u, hooks,
                            deadline_ns);
}

/* shmring_topic_reserve_wait_hooked without hooks. */
static inline int shmring_topic_reserve_wait(shmring_topic *t, uint64_t token, uint32_t tag, uint64_t len,
                                             uint64_t deadline_ns, unsigned char **out, uint64_t *pos)
{
    return shmring_topic_reserve_wait_hooked(t, token, tag, len, deadline_ns, out, pos, NULL);
}

/* Blocking publish for plain C and C++ peers.  Returns as
 * shmring_topic_reserve_wait. */
static inline int shmring_topic_publish(shmring_topic *t, uint64_t token, uint32_t tag, const void *data,
                                        uint64_t len, uint64_t deadline_ns)
{
    unsigned char *dst;
    uint64_t pos;
    int wake, rc = shmring_topic_reserve_wait(t, token, tag, len, deadline_ns, &dst, &pos);
    if (rc != SHMRING_OK)
        return rc;
    shmring_topic_copy_in(dst, data, len);
    wake = shmring_topic_commit(t, pos);
    shmring_mutex_release(&t->ctrl->lock, token);
    if (wake)
        shmring_topic_wake_subscribers(t);
    return SHMRING_OK;
}

/* Blocking publish of a gap marker: `missed` (at least 1) messages were
 * lost before they reached this topic.  Returns as shmring_topic_publish,
 * or SHMRING_ERR_ARG for a count of 0 or one that would carry the message
 * numbers past 2^64-1. */
static inline int shmring_topic_publish_gap(shmring_topic *t, uint64_t token, uint64_t missed, uint64_t deadline_ns)
{
    unsigned char *dst;
    uint64_t pos;
    int wake, rc;
    if (missed == 0)
        return SHMRING_ERR_ARG;
    rc = shmring_topic_reserve_wait(t, token, SHMRING_REC_GAP, sizeof(missed), deadline_ns, &dst, &pos);
    if (rc != SHMRING_OK)
        return rc;
    /* relaxed: under the lock [T3]. */
    if (missed > UINT64_MAX - shmring_load_relaxed(&t->ctrl->next_seq)) {
        shmring_mutex_release(&t->ctrl->lock, token); /* reserved, not committed: nothing published */
        return SHMRING_ERR_ARG;
    }
    shmring_topic_copy_in(dst, &missed, sizeof(missed));
    wake = shmring_topic_commit_gap(t, pos, missed);
    shmring_mutex_release(&t->ctrl->lock, token);
    if (wake)
        shmring_topic_wake_subscribers(t);
    return SHMRING_OK;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_TOPIC_H */
