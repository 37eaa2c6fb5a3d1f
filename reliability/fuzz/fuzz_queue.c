/*
 * fuzz_queue.c - the queue (shmring/queue.h, queue_wait.h) with a hostile
 * peer: the blocking put and get of C peers (with a deadline passed
 * or close), the ring operations a holder of the lock runs on the main ring
 * and on an overflow chunk (load, take, reserve, commit, the counters),
 * the recount after a holder died (reached by a dead token written over
 * the lock's owner), the readers of value-encoded and out-of-band records
 * (shmring/value.h, oob.h), task_done, the sleep words, and the checks of a
 * new opener, while the fuzzer rewrites the control block, the records, and
 * the chunk's header and records between them.
 *
 * The queue's segment is heap memory.  Its one overflow chunk is heap
 * memory too (for the ring operations, under AddressSanitizer), copied
 * into a real segment "/shmring-fuzz-PID.q0.TAG" before each operation that
 * opens chunks by name (the recount, the chunk's stamp).
 */
#include "fuzz_common.h"

#define CHUNK_CAP 256u
#define CHUNK_PAYLOAD (SHMRING_QUEUE_CHUNK_HEADER_SIZE + CHUNK_CAP)
#define CHUNK_TOTAL (SHMRING_HEADER_SIZE + CHUNK_PAYLOAD)
/* Chains longer than this (and no longer than SHMRING_QUEUE_MAX_CHUNKS)
 * would make the recount try to open every missing chunk by name: the same
 * steps as a short chain, thousands of times slower.  Operations that may
 * recount are skipped on them. */
#define LONGEST_CHAIN 8u

/* The chunk key of every queue made here (as if shmring_queue_init had
 * drawn it), so that chunk 0's name stays the same. */
#define CHUNK_KEY0 UINT64_C(0x0123456789abcdef)
#define CHUNK_KEY1 UINT64_C(0xfedcba9876543210)

static char queue_name[NAME_MAX];
static char chunk_path[NAME_MAX + 2];
static shmring_segment chunk_seg; /* the real chunk, made once */

static void remove_chunk(void)
{
    shm_unlink(chunk_path);
}

/* The real segment of chunk 0, made once per process. */
static void make_chunk_segment(void)
{
    if (chunk_seg.base != NULL)
        return;
    snprintf(queue_name, sizeof queue_name, "/shmring-fuzz-%ld", (long)getpid());
    FZ_ASSERT(shmring_queue_chunk_name_keyed(queue_name, CHUNK_KEY0, CHUNK_KEY1, 0, chunk_path) == SHMRING_OK);
    shm_unlink(chunk_path); /* a leftover of a killed run with this pid */
    FZ_ASSERT(shmring_segment_create(chunk_path, CHUNK_PAYLOAD, SHMRING_KIND_QUEUE_CHUNK, 0600, &chunk_seg) ==
              SHMRING_OK);
    atexit(remove_chunk);
}

typedef struct queue {
    unsigned char *base;   /* the queue's segment */
    shmring_queue_ctrl *c;
    uint64_t capacity;     /* as the queue's config check returned it */
    unsigned char *chunk;  /* chunk 0's segment, on the heap */
} queue;

static shmring_queue_chunk *chunk_of(const queue *q)
{
    return (shmring_queue_chunk *)(void *)(q->chunk + SHMRING_HEADER_SIZE);
}

/* Stamp chunk 0 as a producer does when it starts the chain. */
static void chunk_init(queue *q)
{
    shmring_queue_chunk *k;
    q->chunk = fz_segment_new(SHMRING_KIND_QUEUE_CHUNK, CHUNK_PAYLOAD);
    k = chunk_of(q);
    k->capacity = CHUNK_CAP;
    k->data_offset = SHMRING_QUEUE_CHUNK_HEADER_SIZE;
    k->index = 0;
    k->queue_id = q->c->queue_id;
    k->queue_dev = 1;
    k->queue_ino = 2;
}

/* Make the real chunk what the heap one is, for operations that open it. */
static void chunk_sync(const queue *q)
{
    memcpy(chunk_seg.base, q->chunk, CHUNK_TOTAL);
}

/* Chunk 0's ring as a holder of the lock opens it (the chunk's checks first). */
static int chunk_ring(const queue *q, shmring_queue_ring *r)
{
    shmring_queue_chunk *k = chunk_of(q);
    uint64_t payload_size, cap;
    int rc = fz_segment_open(q->chunk, CHUNK_TOTAL, SHMRING_KIND_QUEUE_CHUNK, &payload_size);
    if (rc == SHMRING_OK)
        rc = fz_rc(shmring_queue_chunk_check(k, payload_size, 0, q->c->queue_id, &cap));
    if (rc == SHMRING_OK)
        rc = fz_rc(shmring_queue_ring_load(r, &k->head, &k->tail, (unsigned char *)k + SHMRING_QUEUE_CHUNK_HEADER_SIZE,
                                           cap));
    return rc;
}

/* Walk an out-of-band record (shmring/oob.h) as a reader does: every piece
 * it hands out lies inside the `len` bytes at `p`. */
static void read_oob_record(const unsigned char *p, uint64_t len)
{
    shmring_oob_reader r;
    const unsigned char *data;
    uint64_t blen;
    uint32_t flags;
    if (fz_rc(shmring_oob_open(&r, p, len)) != SHMRING_OK)
        return;
    (void)fz_inside(p, (size_t)len, r.stream, r.stream_len);
    while (fz_rc(shmring_oob_next(&r, &data, &blen, &flags)) == SHMRING_OK)
        (void)fz_inside(p, (size_t)len, data, blen);
}

/* Take up to `n` records from a ring and commit, as get_many does. */
static void take_records(fz_input *in, queue *q, shmring_queue_ring *r, unsigned n)
{
    uint64_t len, items = 0, bytes = 0;
    const unsigned char *p;
    uint32_t tag;
    while (n-- > 0 && fz_rc(shmring_queue_ring_take(r, &tag, &p, &len)) == SHMRING_OK) {
        (void)fz_inside(r->data, (size_t)r->capacity, p, len);
        if (tag == SHMRING_REC_OOB)
            read_oob_record(p, len); /* in place, as a C peer may */
        items++;
        bytes += len;
    }
    if (fz_u8(in) & 1) {
        shmring_queue_ring_commit(r);
        (void)fz_rc(shmring_queue_count_sub(q->c, items, bytes));
    }
}

/* Reserve and fill up to `n` records and commit, as put_many does. */
static void put_records(fz_input *in, queue *q, shmring_queue_ring *r, unsigned n)
{
    uint64_t items = 0, bytes = 0;
    while (n-- > 0) {
        uint64_t len = fz_range(in, 0, r->capacity);
        unsigned char *dst;
        int fits = shmring_queue_ring_fits(r, len);
        int rc = fz_rc(shmring_queue_ring_reserve(r, SHMRING_REC_BYTES, len, &dst));
        FZ_ASSERT(fits == (rc == SHMRING_OK)); /* fits() foretells reserve() */
        if (rc != SHMRING_OK)
            break;
        (void)fz_inside(r->data, (size_t)r->capacity, dst, len);
        memset(dst, 0x3C, (size_t)len);
        items++;
        bytes += len;
    }
    shmring_queue_ring_commit(r);
    shmring_queue_count_add(q->c, items, bytes);
}

/* A chain the recount would walk quickly (see LONGEST_CHAIN). */
static int short_chain(const queue *q)
{
    uint64_t span = q->c->ovf_tail - q->c->ovf_head;
    return span <= LONGEST_CHAIN || span > SHMRING_QUEUE_MAX_CHUNKS;
}

/* Take the lock (repairing after a dead holder), work on a ring, release. */
static void locked_step(fz_input *in, queue *q)
{
    shmring_queue_ring r;
    unsigned what = fz_u8(in) % 4, n = (unsigned)fz_range(in, 1, 8);
    int rc;
    chunk_sync(q);
    if (fz_rc(shmring_queue_lock_repair(q->c, q->capacity, queue_name, fz_token(), FZ_PAST)) != SHMRING_OK)
        return;
    if (what == 3) {
        uint64_t lost = 0;
        (void)fz_rc(shmring_queue_recount(q->c, q->capacity, queue_name, &lost));
    } else {
        if (what == 2)
            rc = chunk_ring(q, &r);
        else
            shmring_queue_main_ring(q->c, q->capacity, &r, &rc);
        if (fz_rc(rc) == SHMRING_OK) {
            if (what == 0)
                take_records(in, q, &r, n);
            else
                put_records(in, q, &r, n);
        }
    }
    shmring_queue_unlock(q->c, fz_token());
}

/* put and get of a C peer, with a deadline passed or close. */
static void blocking_step(fz_input *in, queue *q)
{
    unsigned char buf[600];
    uint64_t deadline = fz_deadline(in);
    uint64_t len = fz_range(in, 0, sizeof buf);
    static const uint32_t tags[] = {SHMRING_REC_BYTES, SHMRING_REC_OBJECT, SHMRING_REC_VALUE, SHMRING_REC_OOB};
    uint32_t tag = tags[fz_u8(in) % 4];
    chunk_sync(q);
    if (fz_u8(in) & 1) {
        memset(buf, 0x77, sizeof buf);
        (void)fz_rc(shmring_queue_put(q->c, q->capacity, queue_name, fz_token(), tag, buf, len, deadline));
    } else {
        uint64_t got;
        if (fz_rc(shmring_queue_get(q->c, q->capacity, queue_name, fz_token(), buf, len, &got, &tag, deadline)) ==
                SHMRING_OK &&
            tag == SHMRING_REC_VALUE)
            (void)shmring_value_check(buf, got); /* a hostile value encoding: refused, never read past */
        else if (tag == SHMRING_REC_OOB)
            read_oob_record(buf, got); /* hostile counts and lengths: refused, never read past */
        FZ_ASSERT(got <= q->capacity);
    }
}

/* What needs no lock: task_done and join's count, the sleep words, a
 * tool's look at the chunk and at the queue's id. */
static void lockless_step(fz_input *in, queue *q)
{
    unsigned what = fz_u8(in) % 4;
    if (what == 0) {
        (void)fz_rc(shmring_queue_task_done(q->c, fz_range(in, 1, 4)));
        (void)shmring_queue_unfinished(q->c);
    } else if (what == 1) {
        uint32_t *seq = fz_u8(in) & 1 ? &q->c->items_seq : &q->c->room_seq;
        uint32_t *waiters = seq == &q->c->items_seq ? &q->c->items_waiters : &q->c->room_waiters;
        (void)shmring_queue_register(seq, waiters);
        shmring_queue_unregister(waiters);
        shmring_queue_wake(seq, 1, 1);
    } else if (what == 2) {
        chunk_sync(q);
        (void)shmring_queue_chunk_stamp(chunk_path);
    } else {
        (void)shmring_queue_id_of(q->base, SHMRING_HEADER_SIZE + shmring_queue_payload_size(q->capacity));
    }
}

/* A queue with a few records, some in chunk 0 when the input asks. */
static void fill(fz_input *in, queue *q)
{
    shmring_queue_ring r;
    unsigned char buf[64];
    unsigned i, n = (unsigned)fz_range(in, 0, 10);
    uint32_t tag;
    uint64_t len;
    memset(buf, 0x11, sizeof buf);
    for (i = 0; i < n; i++)
        (void)fz_rc(shmring_queue_put(q->c, q->capacity, queue_name, fz_token(), SHMRING_REC_OBJECT, buf,
                                      fz_range(in, 0, sizeof buf), FZ_PAST));
    n = (unsigned)fz_range(in, 0, 10);
    for (i = 0; i < n; i++)
        (void)fz_rc(shmring_queue_get(q->c, q->capacity, queue_name, fz_token(), buf, sizeof buf, &len, &tag,
                                      FZ_PAST));
    if (fz_u8(in) & 1 && chunk_ring(q, &r) == SHMRING_OK) {
        /* The main ring was full: the chain starts (as under the lock). */
        put_records(in, q, &r, (unsigned)fz_range(in, 1, 6));
        q->c->ovf_tail = 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input in = {data, size, 0};
    uint64_t cap = 8 * fz_range(&in, 8, 64), payload_size = shmring_queue_payload_size(cap);
    uint32_t flags = fz_u8(&in) & (SHMRING_QUEUE_BOUNDED | SHMRING_QUEUE_VALUES | SHMRING_QUEUE_OOB);
    queue q;
    shmring_queue_ctrl cfg;
    uint64_t opened_size;
    fz_region regions[6];

    make_chunk_segment();
    q.base = fz_segment_new(SHMRING_KIND_QUEUE, payload_size);
    q.c = (shmring_queue_ctrl *)(void *)(q.base + SHMRING_HEADER_SIZE);
    shmring_queue_init(q.c, cap, fz_range(&in, 0, 6), flags, 0, 0600);
    q.c->chunk_key[0] = CHUNK_KEY0;
    q.c->chunk_key[1] = CHUNK_KEY1;
    FZ_ASSERT(shmring_queue_check_config(q.c, payload_size, &cfg) == SHMRING_OK);
    q.capacity = cfg.capacity;
    chunk_init(&q);
    fill(&in, &q);

    regions[0].base = (unsigned char *)q.c; /* the control block, twice as likely */
    regions[0].len = SHMRING_QUEUE_CTRL_SIZE;
    regions[1] = regions[0];
    regions[2].base = (unsigned char *)q.c + SHMRING_QUEUE_CTRL_SIZE; /* the main ring's records */
    regions[2].len = (size_t)cap;
    regions[3].base = (unsigned char *)chunk_of(&q); /* the chunk's header and records */
    regions[3].len = CHUNK_PAYLOAD;
    regions[4].base = q.chunk; /* the chunk segment's header fields */
    regions[4].len = SHMRING_HEADER_FIELDS_SIZE;
    regions[5].base = q.base; /* the queue segment's */
    regions[5].len = SHMRING_HEADER_FIELDS_SIZE;

    while (fz_more(&in)) {
        unsigned op = fz_u8(&in) % 5;
        if (op == 0) {
            fz_patch(&in, regions, 6);
        } else if (op == 1 && short_chain(&q)) {
            locked_step(&in, &q);
        } else if (op == 2 && short_chain(&q)) {
            blocking_step(&in, &q);
        } else if (op == 3) {
            lockless_step(&in, &q);
        } else if (op == 4 && fz_segment_open(q.base, SHMRING_HEADER_SIZE + payload_size, SHMRING_KIND_QUEUE,
                                              &opened_size) == SHMRING_OK) {
            /* A new opener: the header, then the config, read once. */
            if (fz_rc(shmring_queue_check_config(q.c, opened_size, &cfg)) == SHMRING_OK)
                FZ_ASSERT(cfg.capacity <= opened_size - SHMRING_QUEUE_CTRL_SIZE);
        }
    }
    free(q.chunk);
    free(q.base);
    return 0;
}
