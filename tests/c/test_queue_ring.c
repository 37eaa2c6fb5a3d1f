/*
 * The queue (shmring/queue.h, queue_wait.h) on plain memory: its ring of
 * records (shmring_queue_ring) with counters in local variables, then a
 * whole control block with the blocking put and get.  Wrap-around,
 * padding, the restart of an empty ring, exact fit, full and empty rings,
 * and every counter, record header and config field read from shared
 * memory checked before it is used.
 */
#include "helpers.h"

#define CAP 256u

typedef struct {
    uint64_t head, tail; /* the shared counters */
    unsigned char *data;
} ring_mem;

static void mem_new(ring_mem *m)
{
    m->head = m->tail = 0;
    m->data = (unsigned char *)helpers_memory(CAP);
}

static void ring_load(shmring_queue_ring *r, ring_mem *m)
{
    CHECK_EQ(shmring_queue_ring_load(r, &m->head, &m->tail, m->data, CAP), SHMRING_OK);
}

/* Fresh memory, and a working copy of its empty ring. */
static void ring_new(ring_mem *m, shmring_queue_ring *r)
{
    mem_new(m);
    ring_load(r, m);
}

/* Reserve and fill one record in the working copy. */
static int put(shmring_queue_ring *r, uint64_t len, unsigned seed)
{
    unsigned char *dst;
    int rc = shmring_queue_ring_reserve(r, SHMRING_REC_BYTES, len, &dst);
    if (rc == SHMRING_OK)
        helpers_fill(dst, len, seed);
    return rc;
}

/* Take one record from the working copy and check it. */
static int take(shmring_queue_ring *r, uint64_t want_len, unsigned seed)
{
    const unsigned char *p;
    uint64_t len;
    uint32_t tag;
    int rc = shmring_queue_ring_take(r, &tag, &p, &len);
    if (rc != SHMRING_OK)
        return rc;
    CHECK_EQ(tag, SHMRING_REC_BYTES);
    CHECK_EQ(len, want_len);
    CHECK(helpers_pattern_ok(p, len, seed));
    return SHMRING_OK;
}

static const shmring_record *record_at(ring_mem *m, uint64_t offset)
{
    return (const shmring_record *)(const void *)(m->data + offset);
}

/* Records of 104 and 80 bytes (112 + 88 ring bytes, seeds 1 and 2): tail
 * 200, 56 bytes left before the end of the ring. */
static void put_up_to_200(shmring_queue_ring *r)
{
    CHECK_EQ(put(r, 104, 1), SHMRING_OK);
    CHECK_EQ(put(r, 80, 2), SHMRING_OK);
}

/* put_up_to_200, the first record taken, then one of 64 bytes (72 ring
 * bytes, seed 3) that does not fit in the 56 before the end: padding at
 * 200, the record at 0. */
static void wrap_behind_padding(shmring_queue_ring *r)
{
    put_up_to_200(r);
    CHECK_EQ(take(r, 104, 1), SHMRING_OK);
    CHECK_EQ(put(r, 64, 3), SHMRING_OK);
}

static void loading_refuses_impossible_counters(void)
{
    ring_mem m;
    shmring_queue_ring r;
    mem_new(&m);
    m.tail = CAP + 8; /* more than a ring ahead of head */
    CHECK_EQ(shmring_queue_ring_load(&r, &m.head, &m.tail, m.data, CAP), SHMRING_ERR_CORRUPT);
    m.tail = 12; /* not a multiple of 8 */
    CHECK_EQ(shmring_queue_ring_load(&r, &m.head, &m.tail, m.data, CAP), SHMRING_ERR_CORRUPT);
    m.head = 20;
    m.tail = 8; /* behind head */
    CHECK_EQ(shmring_queue_ring_load(&r, &m.head, &m.tail, m.data, CAP), SHMRING_ERR_CORRUPT);
}

static void a_record_is_invisible_until_committed_and_comes_out_as_it_went_in(void)
{
    ring_mem m;
    shmring_queue_ring r, other;
    ring_new(&m, &r);
    CHECK_EQ(put(&r, 10, 1), SHMRING_OK);
    ring_load(&other, &m);
    CHECK_EQ(take(&other, 0, 0), SHMRING_AGAIN);
    shmring_queue_ring_commit(&r);
    CHECK_EQ(m.tail, 24);
    ring_load(&other, &m);
    CHECK_EQ(take(&other, 10, 1), SHMRING_OK);
    CHECK_EQ(take(&other, 0, 0), SHMRING_AGAIN);
    shmring_queue_ring_commit(&other);
    CHECK_EQ(m.head, 24);
}

static void pads_then_wraps_at_the_end_of_the_ring(void)
{
    ring_mem m;
    shmring_queue_ring r;
    ring_new(&m, &r);
    wrap_behind_padding(&r);
    CHECK_EQ(record_at(&m, 200)->tag, SHMRING_REC_PAD);
    CHECK_EQ(record_at(&m, 200)->len, 56 - 8);
    CHECK_EQ(record_at(&m, 0)->len, 64);
    CHECK_EQ(r.tail, CAP + 72);
    shmring_queue_ring_commit(&r);
    ring_load(&r, &m);
    CHECK_EQ(take(&r, 80, 2), SHMRING_OK);
    CHECK_EQ(take(&r, 64, 3), SHMRING_OK); /* the padding is stepped over */
    CHECK_EQ(r.head, r.tail);
}

static void a_full_ring_pads_only_when_the_padding_and_the_record_both_fit(void)
{
    ring_mem m;
    shmring_queue_ring r;
    ring_new(&m, &r);
    put_up_to_200(&r); /* head 0 */
    CHECK_EQ(put(&r, 64, 3), SHMRING_AGAIN); /* 56 free, all before the end */
    CHECK_EQ(r.tail, 200);                     /* nothing written */
    CHECK_EQ(shmring_queue_ring_fits(&r, 64), 0);
    CHECK_EQ(shmring_queue_ring_fits(&r, 48), 1); /* 56 bytes exactly */
    CHECK_EQ(put(&r, 48, 4), SHMRING_OK);
    CHECK_EQ(r.tail, CAP);
}

static void an_empty_ring_starts_over_at_offset_zero_for_a_record_that_would_not_fit_before_the_end(void)
{
    ring_mem m;
    shmring_queue_ring r;
    ring_new(&m, &r);
    CHECK_EQ(put(&r, 200, 1), SHMRING_OK);
    CHECK_EQ(take(&r, 200, 1), SHMRING_OK);
    shmring_queue_ring_commit(&r); /* empty, 48 bytes before the end */
    ring_load(&r, &m);
    CHECK_EQ(shmring_queue_ring_fits(&r, 200), 1);
    CHECK_EQ(put(&r, 200, 2), SHMRING_OK);
    CHECK_EQ(record_at(&m, 208)->tag, SHMRING_REC_PAD);
    CHECK_EQ(record_at(&m, 208)->len, 48 - 8);
    CHECK_EQ(r.head, CAP); /* head moved past the padding with tail */
    CHECK_EQ(r.tail, CAP + 208);
    shmring_queue_ring_commit(&r);
    CHECK_EQ(m.head, CAP);
    CHECK_EQ(m.tail, CAP + 208);
    ring_load(&r, &m);
    CHECK_EQ(take(&r, 200, 2), SHMRING_OK);
}

static void restart_leaves_a_ring_that_is_not_empty_or_already_at_zero_alone(void)
{
    ring_mem m;
    shmring_queue_ring r;
    ring_new(&m, &r);
    shmring_queue_ring_restart(&r); /* at offset 0 */
    CHECK_EQ(r.tail, 0);
    CHECK_EQ(put(&r, 8, 1), SHMRING_OK);
    shmring_queue_ring_restart(&r); /* not empty */
    CHECK_EQ(r.tail, 16);
    CHECK_EQ(r.head, 0);
}

static void a_record_as_big_as_the_ring_fits_an_empty_ring_exactly(void)
{
    ring_mem m;
    shmring_queue_ring r;
    unsigned char *dst;
    ring_new(&m, &r);
    CHECK_EQ(put(&r, CAP - 7, 1), SHMRING_TOO_BIG);
    CHECK_EQ(shmring_queue_ring_reserve(&r, SHMRING_REC_BYTES, UINT64_C(1) << 33, &dst), SHMRING_TOO_BIG);
    CHECK_EQ(shmring_queue_ring_fits(&r, CAP - 7), 0);
    CHECK_EQ(put(&r, CAP - 8, 1), SHMRING_OK);
    CHECK_EQ(put(&r, 0, 2), SHMRING_AGAIN); /* full */
    CHECK_EQ(shmring_queue_ring_fits(&r, 0), 0);
    CHECK_EQ(take(&r, CAP - 8, 1), SHMRING_OK);
}

static void fits_says_what_reserve_would_do(void)
{
    ring_mem m;
    shmring_queue_ring r;
    uint64_t lens[] = {0, 8, 40, 48, 56, 100, 200, CAP - 8, CAP};
    uint64_t held[64];
    unsigned i, step, first = 0, last = 0;
    ring_new(&m, &r);
    for (step = 0; step < 40; step++) {
        uint64_t len = 8 + (step * 24) % 120;
        for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            shmring_queue_ring copy = r;
            int fits = shmring_queue_ring_fits(&r, lens[i]);
            CHECK_EQ(fits, put(&copy, lens[i], 0) == SHMRING_OK);
        }
        while (put(&r, len, step) != SHMRING_OK) { /* take the oldest until it fits */
            CHECK(first != last);
            CHECK_EQ(take(&r, held[first % 64], first), SHMRING_OK);
            first++;
        }
        held[last % 64] = len;
        last++;
    }
}

static void take_refuses_impossible_records_before_reading_them(void)
{
    /* The header of the one record committed (16 bytes of payload). */
    static const shmring_record impossible[] = {
        {16, SHMRING_REC_DATA},           /* a channel's tag: not a queue's */
        {17, SHMRING_REC_OBJECT},         /* past tail */
        {UINT32_MAX, SHMRING_REC_OBJECT}, /* past the end of the ring */
        {8, SHMRING_REC_PAD},             /* padding must reach the end of the ring */
        {CAP - 8, SHMRING_REC_PAD},       /* it does, past tail */
    };
    ring_mem m;
    shmring_queue_ring r;
    shmring_record *rec;
    unsigned i;
    ring_new(&m, &r);
    rec = (shmring_record *)(void *)m.data;
    CHECK_EQ(put(&r, 16, 1), SHMRING_OK);
    shmring_queue_ring_commit(&r);
    for (i = 0; i < sizeof impossible / sizeof impossible[0]; i++) {
        *rec = impossible[i];
        ring_load(&r, &m);
        CHECK_EQ(take(&r, 0, 0), SHMRING_ERR_CORRUPT);
        CHECK_EQ(r.head, 0);
    }

    ring_load(&r, &m);
    r.tail = r.head + 4; /* less than a record header */
    CHECK_EQ(take(&r, 0, 0), SHMRING_ERR_CORRUPT);
}

static void a_record_said_to_cross_the_end_of_the_ring_is_corruption(void)
{
    ring_mem m;
    shmring_queue_ring r;
    shmring_record *rec;
    ring_new(&m, &r);
    CHECK_EQ(put(&r, 200, 1), SHMRING_OK);
    CHECK_EQ(take(&r, 200, 1), SHMRING_OK);
    CHECK_EQ(put(&r, 8, 2), SHMRING_OK); /* 208..224: not empty, so no restart */
    CHECK_EQ(put(&r, 24, 3), SHMRING_OK); /* 224..256 */
    CHECK_EQ(put(&r, 8, 4), SHMRING_OK);  /* 0..16 */
    CHECK_EQ(take(&r, 8, 2), SHMRING_OK);
    shmring_queue_ring_commit(&r);
    rec = (shmring_record *)(void *)(m.data + 224);
    rec->len = 40; /* 48 bytes: within tail, past the end of the ring */
    ring_load(&r, &m);
    CHECK_EQ(take(&r, 0, 0), SHMRING_ERR_CORRUPT);
}

static void count_counts_records_and_payload_bytes_but_not_padding(void)
{
    ring_mem m;
    shmring_queue_ring r;
    uint64_t items = 0, bytes = 0;
    ring_new(&m, &r);
    wrap_behind_padding(&r);
    shmring_queue_ring_commit(&r);
    ring_load(&r, &m);
    CHECK_EQ(shmring_queue_ring_count(r, &items, &bytes), SHMRING_OK);
    CHECK_EQ(items, 2);
    CHECK_EQ(bytes, 144);
    CHECK_EQ(r.head, 112); /* counted on a copy */
    m.data[112 + 4] = 0x77; /* a bad tag */
    CHECK_EQ(shmring_queue_ring_count(r, &items, &bytes), SHMRING_ERR_CORRUPT);
}

/* -- the control block ------------------------------------------------------- */

typedef struct {
    unsigned char *payload;
    uint64_t size;
    shmring_queue_ctrl *c;
} queue_mem;

static void queue_new(queue_mem *q, uint64_t maxsize)
{
    q->size = shmring_queue_payload_size(CAP);
    q->payload = (unsigned char *)helpers_memory((size_t)q->size);
    shmring_queue_init(q->payload, CAP, maxsize, SHMRING_QUEUE_BOUNDED, 0, 0600);
    q->c = (shmring_queue_ctrl *)(void *)q->payload;
}

static void the_config_check_refuses_every_impossible_field(void)
{
    queue_mem q;
    shmring_queue_ctrl copy, saved;
    memset(&copy, 0, sizeof copy); /* read below even when a check failed */
    queue_new(&q, 0);
    CHECK(q.c->queue_id != 0);
    CHECK_EQ(shmring_queue_check_config(q.c, q.size, &copy), SHMRING_OK);
    CHECK_EQ(copy.capacity, CAP);
    saved = *q.c;
#define REFUSED(field, value) CHECK_REFUSED(q.c, saved, field, value, shmring_queue_check_config(q.c, q.size, &copy))
    REFUSED(data_offset, 0);
    REFUSED(capacity, 32);
    REFUSED(capacity, CAP + 4);
    REFUSED(capacity, CAP + 8); /* larger than the payload */
    REFUSED(capacity, UINT64_C(1) << 40);
    REFUSED(flags, 8); /* the first bit no release knows */
    REFUSED(chunk_mode, 01000);
    REFUSED(spin_ns, SHMRING_MAX_SPIN_NS + 1);
    REFUSED(queue_id, 0);
#undef REFUSED
    *q.c = saved;
    CHECK_EQ(shmring_queue_check_config(q.c, SHMRING_QUEUE_CTRL_SIZE - 1, &copy), SHMRING_ERR_CORRUPT);
}

static void a_chunk_is_checked_against_its_queue_and_index(void)
{
    unsigned char *payload = (unsigned char *)helpers_memory(SHMRING_QUEUE_CHUNK_HEADER_SIZE + CAP);
    shmring_queue_chunk *k = (shmring_queue_chunk *)(void *)payload;
    uint64_t size = SHMRING_QUEUE_CHUNK_HEADER_SIZE + CAP, cap = 0;
    k->capacity = CAP;
    k->data_offset = SHMRING_QUEUE_CHUNK_HEADER_SIZE;
    k->index = 5;
    k->queue_id = 42;
    CHECK_EQ(shmring_queue_chunk_check(k, size, 5, 42, &cap), SHMRING_OK);
    CHECK_EQ(cap, CAP);
    CHECK_EQ(shmring_queue_chunk_check(k, size, 6, 42, &cap), SHMRING_ERR_CORRUPT); /* another index */
    CHECK_EQ(shmring_queue_chunk_check(k, size, 5, 43, &cap), SHMRING_ERR_CORRUPT); /* another queue */
    CHECK_EQ(shmring_queue_chunk_check(k, size - 8, 5, 42, &cap), SHMRING_ERR_CORRUPT);
    k->capacity = CAP + 4;
    CHECK_EQ(shmring_queue_chunk_check(k, size + 4, 5, 42, &cap), SHMRING_ERR_CORRUPT);
}

static void chunk_names_are_spelled_and_parsed_back_by_one_pair_of_functions(void)
{
    /* The tag is SipHash-2-4 of the index's 8 little-endian bytes: with the
     * reference key and index bytes 00..07, the reference vector of 8 bytes. */
    const uint64_t k0 = UINT64_C(0x0706050403020100), k1 = UINT64_C(0x0f0e0d0c0b0a0908);
    char out[NAME_MAX + 2], longname[NAME_MAX + 2];
    uint64_t index = 0;
    CHECK_EQ(shmring_queue_chunk_name_keyed("/jobs", k0, k1, k0, out), SHMRING_OK);
    CHECK(strcmp(out, "/jobs.q506097522914230528.93f5f5799a932462") == 0);
    CHECK_EQ(shmring_queue_chunk_parse(out, "jobs", &index), 1);
    CHECK_EQ(index, k0);
    CHECK_EQ(shmring_queue_chunk_name_keyed("jobs", k0, k1, 12, out), SHMRING_OK);
    CHECK_EQ(shmring_queue_chunk_parse(out + 1, "/jobs", &index), 1);
    CHECK_EQ(index, 12);
    CHECK_EQ(shmring_queue_chunk_parse("/jobs.q0.0123456789abcdef", "jobs", &index), 1);
    CHECK_EQ(index, 0);
    CHECK_EQ(shmring_queue_chunk_parse("jobs.q0", "jobs", &index), 0); /* version 2's names */
    CHECK_EQ(shmring_queue_chunk_parse("jobs.q012.0123456789abcdef", "jobs", &index), 0);
    CHECK_EQ(shmring_queue_chunk_parse("jobs.q.0123456789abcdef", "jobs", &index), 0);
    CHECK_EQ(shmring_queue_chunk_parse("jobs.qx.0123456789abcdef", "jobs", &index), 0);
    CHECK_EQ(shmring_queue_chunk_parse("jobs.q1x.0123456789abcdef", "jobs", &index), 0);
    CHECK_EQ(shmring_queue_chunk_parse("jobs.q1.0123456789abcde", "jobs", &index), 0);
    CHECK_EQ(shmring_queue_chunk_parse("jobs.q1.0123456789abcdef0", "jobs", &index), 0);
    CHECK_EQ(shmring_queue_chunk_parse("jobs.q1.0123456789ABCDEF", "jobs", &index), 0);
    CHECK_EQ(shmring_queue_chunk_parse("jobsx.q1.0123456789abcdef", "jobs", &index), 0);
    CHECK_EQ(shmring_queue_chunk_parse("jobs.q99999999999999999999.0123456789abcdef", "jobs", &index), 0);
    memset(longname, 'a', NAME_MAX - 20);
    longname[NAME_MAX - 20] = '\0';
    CHECK_EQ(shmring_queue_chunk_name_keyed(longname, k0, k1, 1, out), SHMRING_ERR_ARG);
}

static void every_queue_draws_its_own_chunk_key_so_its_names_are_its_own(void)
{
    shmring_queue_ctrl *a = (shmring_queue_ctrl *)helpers_memory(SHMRING_QUEUE_CTRL_SIZE);
    shmring_queue_ctrl *b = (shmring_queue_ctrl *)helpers_memory(SHMRING_QUEUE_CTRL_SIZE);
    char name_a[NAME_MAX + 2], name_b[NAME_MAX + 2], name_a1[NAME_MAX + 2];
    shmring_queue_init(a, CAP, 0, 0, 0, 0600);
    shmring_queue_init(b, CAP, 0, 0, 0, 0600);
    CHECK(a->chunk_key[0] != b->chunk_key[0] || a->chunk_key[1] != b->chunk_key[1]);
    CHECK_EQ(shmring_queue_chunk_name(a, "jobs", 0, name_a), SHMRING_OK);
    CHECK_EQ(shmring_queue_chunk_name(b, "jobs", 0, name_b), SHMRING_OK);
    CHECK_EQ(shmring_queue_chunk_name(a, "jobs", 1, name_a1), SHMRING_OK);
    CHECK(strcmp(name_a, name_b) != 0);
    /* the next index does not share the tag of the one before */
    CHECK(strcmp(strrchr(name_a, '.'), strrchr(name_a1, '.')) != 0);
}

static void the_counters_never_go_below_zero_and_tasks_never_outrun_puts(void)
{
    queue_mem q;
    queue_new(&q, 0);
    shmring_queue_count_add(q.c, 2, 30);
    CHECK_EQ(q.c->count, 2);
    CHECK_EQ(q.c->bytes, 30);
    CHECK_EQ(shmring_queue_count_sub(q.c, 3, 0), SHMRING_ERR_CORRUPT);
    CHECK_EQ(shmring_queue_count_sub(q.c, 1, 31), SHMRING_ERR_CORRUPT);
    CHECK_EQ(shmring_queue_count_sub(q.c, 1, 10), SHMRING_OK);
    CHECK_EQ(q.c->gets, 1);
    CHECK_EQ(shmring_queue_unfinished(q.c), 2);
    CHECK_EQ(shmring_queue_task_done(q.c, 3), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_queue_task_done(q.c, 2), SHMRING_OK);
    CHECK_EQ(shmring_queue_unfinished(q.c), 0);
}

/* -- blocking put and get ------------------------------------------------------ */

static uint64_t soon(void)
{
    return shmring_now_ns() + 2000000u; /* 2 ms */
}

/* The blocking put and get of this process on the queue in q (named
 * "/t-unit"), waiting until soon(). */
static int queue_put(queue_mem *q, uint32_t tag, const void *data, uint64_t len)
{
    return shmring_queue_put(q->c, CAP, "/t-unit", shmring_token_self(), tag, data, len, soon());
}

static int queue_get(queue_mem *q, void *buf, uint64_t cap, uint64_t *len, uint32_t *tag)
{
    return shmring_queue_get(q->c, CAP, "/t-unit", shmring_token_self(), buf, cap, len, tag, soon());
}

static void put_and_get_move_records_through_the_main_ring_in_order(void)
{
    queue_mem q;
    unsigned char in[200], out[200];
    uint64_t len;
    uint32_t tag;
    unsigned i;
    queue_new(&q, 0);
    for (i = 0; i < 40; i++) { /* several laps */
        helpers_fill(in, i * 3, i);
        CHECK_EQ(queue_put(&q, i % 2 ? SHMRING_REC_OBJECT : SHMRING_REC_BYTES, in, i * 3), SHMRING_OK);
        CHECK_EQ(queue_get(&q, out, sizeof out, &len, &tag), SHMRING_OK);
        CHECK_EQ(len, i * 3);
        CHECK_EQ(tag, i % 2 ? SHMRING_REC_OBJECT : SHMRING_REC_BYTES);
        CHECK(helpers_pattern_ok(out, len, i));
    }
    CHECK_EQ(q.c->puts, 40);
    CHECK_EQ(q.c->gets, 40);
    CHECK_EQ(q.c->count, 0);
    CHECK_EQ(q.c->lock.owner, 0);
}

/* A C peer's view of an out-of-band record (shmring/oob.h): put with its
 * tag, it comes out with it; copied into a 64-byte aligned buffer, each of
 * its buffers is 64-byte aligned there. */
static void an_out_of_band_record_comes_out_as_its_pieces_aligned_to_64(void)
{
    static const uint64_t lens[2] = {24, 40};
    queue_mem q;
    unsigned char *in = helpers_memory(512), *out = helpers_memory(512);
    const unsigned char *data = NULL;
    shmring_oob_reader r;
    uint64_t len = 0, blen = 0, rec = shmring_oob_size(2, 5, lens), end = shmring_oob_stream_offset(2) + 5;
    uint32_t tag = 0, flags = 0, i;
    queue_new(&q, 0);
    shmring_oob_write_header(in, 2, 5);
    memcpy(in + shmring_oob_stream_offset(2), "strm.", 5);
    for (i = 0; i < 2; i++) {
        shmring_oob_write_entry(in, i, (uint32_t)lens[i], 0);
        helpers_fill(in + shmring_oob_buffer_offset(end), lens[i], i);
        end = shmring_oob_buffer_offset(end) + lens[i];
    }
    CHECK_EQ(queue_put(&q, SHMRING_REC_BYTES, "x", 1), SHMRING_OK); /* the record lands 8-aligned, not 64 */
    CHECK_EQ(queue_get(&q, out, 512, &len, &tag), SHMRING_OK);
    CHECK_EQ(queue_put(&q, SHMRING_REC_OOB, in, rec), SHMRING_OK);
    CHECK_EQ(queue_get(&q, out, 512, &len, &tag), SHMRING_OK);
    CHECK_EQ(tag, SHMRING_REC_OOB);
    CHECK_EQ(len, rec);
    CHECK_EQ(shmring_oob_open(&r, out, len), SHMRING_OK);
    CHECK(r.stream_len == 5 && memcmp(r.stream, "strm.", 5) == 0);
    for (i = 0; i < 2; i++) {
        CHECK_EQ(shmring_oob_next(&r, &data, &blen, &flags), SHMRING_OK);
        CHECK_EQ(blen, lens[i]);
        CHECK_EQ((uintptr_t)data % 64, 0);
        CHECK(helpers_pattern_ok(data, blen, i));
    }
    CHECK_EQ(shmring_oob_next(&r, &data, &blen, &flags), SHMRING_AGAIN);
}

static void get_times_out_on_an_empty_queue_and_put_on_a_full_one(void)
{
    queue_mem q;
    unsigned char buf[64];
    uint64_t len;
    uint32_t tag;
    queue_new(&q, 0);
    CHECK_EQ(queue_get(&q, buf, sizeof buf, &len, &tag), SHMRING_TIMEOUT);
    while (queue_put(&q, SHMRING_REC_BYTES, buf, 56) == SHMRING_OK)
        ;
    CHECK_EQ(q.c->count, CAP / 64);
    CHECK_EQ(queue_put(&q, SHMRING_REC_BYTES, buf, 56), SHMRING_TIMEOUT);
    CHECK_EQ(q.c->room_waiters, 0); /* every sleeper unregistered */
    CHECK_EQ(q.c->lock.owner, 0);
}

static void maxsize_bounds_the_items_whatever_their_size(void)
{
    queue_mem q;
    unsigned char buf[8] = {0};
    queue_new(&q, 2);
    CHECK_EQ(queue_put(&q, SHMRING_REC_BYTES, buf, 1), SHMRING_OK);
    CHECK_EQ(queue_put(&q, SHMRING_REC_BYTES, buf, 1), SHMRING_OK);
    CHECK_EQ(queue_put(&q, SHMRING_REC_BYTES, buf, 1), SHMRING_TIMEOUT);
}

static void a_record_too_big_for_the_buffer_stays_in_the_queue(void)
{
    queue_mem q;
    unsigned char in[100], out[100];
    uint64_t len = 0;
    uint32_t tag = 0;
    queue_new(&q, 0);
    helpers_fill(in, 100, 7);
    CHECK_EQ(queue_put(&q, SHMRING_REC_BYTES, in, 100), SHMRING_OK);
    CHECK_EQ(queue_get(&q, out, 99, &len, &tag), SHMRING_TOO_BIG);
    CHECK_EQ(len, 100);
    CHECK_EQ(q.c->count, 1);
    CHECK_EQ(queue_get(&q, out, 100, &len, &tag), SHMRING_OK);
    CHECK(helpers_pattern_ok(out, 100, 7));
    CHECK_EQ(queue_put(&q, SHMRING_REC_BYTES, in, CAP), SHMRING_TOO_BIG);
}

static void put_and_get_refuse_a_queue_whose_overflow_chain_is_in_use(void)
{
    queue_mem q;
    unsigned char buf[8] = {0};
    uint64_t len;
    uint32_t tag;
    queue_new(&q, 0);
    q.c->ovf_tail = 1; /* a chunk a C peer does not follow */
    CHECK_EQ(queue_put(&q, SHMRING_REC_BYTES, buf, 8), SHMRING_ERR_ARG);
    CHECK_EQ(queue_get(&q, buf, 8, &len, &tag), SHMRING_ERR_ARG);
    CHECK_EQ(q.c->count, 0);
    CHECK_EQ(q.c->lock.owner, 0);
}

static void the_next_holder_after_a_dead_one_recounts_from_the_records(void)
{
    queue_mem q;
    unsigned char buf[16] = {0};
    uint64_t len;
    uint32_t tag;
    queue_new(&q, 0);
    CHECK_EQ(queue_put(&q, SHMRING_REC_BYTES, buf, 16), SHMRING_OK);
    CHECK_EQ(queue_put(&q, SHMRING_REC_BYTES, buf, 8), SHMRING_OK);
    /* A holder died after moving a ring's counter, before the counters. */
    q.c->count = 7;
    q.c->bytes = 1;
    q.c->puts = 9;
    q.c->lock.owner = helpers_dead_token();
    CHECK_EQ(queue_get(&q, buf, sizeof buf, &len, &tag), SHMRING_OK);
    CHECK_EQ(len, 16);
    CHECK_EQ(q.c->count, 1);
    CHECK_EQ(q.c->bytes, 8);
    CHECK_EQ(q.c->puts - q.c->gets, 1);
    CHECK_EQ(q.c->lock.state, SHMRING_MUTEX_CONSISTENT);
}

/* A payload smaller than the block it claims is refused before a byte past
 * its end is read (the ASan build of this program would see the read). */
static void the_checks_refuse_a_payload_too_small_for_its_block_before_reading_it(void)
{
    unsigned char *payload = (unsigned char *)helpers_memory(1);
    shmring_queue_ctrl copy;
    uint64_t cap = 0;
    CHECK_EQ(shmring_queue_check_config((const shmring_queue_ctrl *)(void *)payload, 1, &copy), SHMRING_ERR_CORRUPT);
    CHECK_EQ(shmring_queue_chunk_check((const shmring_queue_chunk *)(void *)payload, 1, 0, 1, &cap),
             SHMRING_ERR_CORRUPT);
}

int main(void)
{
    RUN(loading_refuses_impossible_counters);
    RUN(a_record_is_invisible_until_committed_and_comes_out_as_it_went_in);
    RUN(pads_then_wraps_at_the_end_of_the_ring);
    RUN(a_full_ring_pads_only_when_the_padding_and_the_record_both_fit);
    RUN(an_empty_ring_starts_over_at_offset_zero_for_a_record_that_would_not_fit_before_the_end);
    RUN(restart_leaves_a_ring_that_is_not_empty_or_already_at_zero_alone);
    RUN(a_record_as_big_as_the_ring_fits_an_empty_ring_exactly);
    RUN(fits_says_what_reserve_would_do);
    RUN(take_refuses_impossible_records_before_reading_them);
    RUN(a_record_said_to_cross_the_end_of_the_ring_is_corruption);
    RUN(count_counts_records_and_payload_bytes_but_not_padding);
    RUN(the_config_check_refuses_every_impossible_field);
    RUN(a_chunk_is_checked_against_its_queue_and_index);
    RUN(the_checks_refuse_a_payload_too_small_for_its_block_before_reading_it);
    RUN(chunk_names_are_spelled_and_parsed_back_by_one_pair_of_functions);
    RUN(every_queue_draws_its_own_chunk_key_so_its_names_are_its_own);
    RUN(the_counters_never_go_below_zero_and_tasks_never_outrun_puts);
    RUN(put_and_get_move_records_through_the_main_ring_in_order);
    RUN(an_out_of_band_record_comes_out_as_its_pieces_aligned_to_64);
    RUN(get_times_out_on_an_empty_queue_and_put_on_a_full_one);
    RUN(maxsize_bounds_the_items_whatever_their_size);
    RUN(a_record_too_big_for_the_buffer_stays_in_the_queue);
    RUN(put_and_get_refuse_a_queue_whose_overflow_chain_is_in_use);
    RUN(the_next_holder_after_a_dead_one_recounts_from_the_records);
    return helpers_finish();
}
