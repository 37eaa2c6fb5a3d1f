/*
 * The topic's broadcast ring (shmring/topic.h) on plain memory: publishing
 * (reserve and commit), subscribers' cursors, the two reclaim policies,
 * wrap-around with padding, exact fit, lagging readers, and every counter,
 * cursor and record header read from the ring checked before it is used.
 */
#include "helpers.h"

#define CAP 256u
#define SUBS 4u

typedef struct {
    unsigned char *payload;
    uint64_t size;
    shmring_topic t;
    shmring_topic_ctrl *c;
} topic_mem;

static void topic_new(topic_mem *m, uint32_t policy)
{
    m->size = shmring_topic_payload_size(CAP, SUBS);
    m->payload = (unsigned char *)helpers_memory((size_t)m->size);
    shmring_topic_init(m->payload, CAP, policy, SUBS, 0);
    CHECK_EQ(shmring_topic_attach(&m->t, m->payload, m->size), SHMRING_OK);
    m->c = m->t.ctrl;
}

/* Reserve, fill and commit one message (the lock is not needed: one thread). */
static int publish(topic_mem *m, uint64_t len, unsigned seed, int reap)
{
    unsigned char *dst;
    uint64_t pos;
    int rc = shmring_topic_reserve(&m->t, SHMRING_REC_BYTES, len, reap, &dst, &pos);
    if (rc != SHMRING_OK)
        return rc;
    helpers_fill(dst, len, seed);
    shmring_topic_commit(&m->t, pos);
    return SHMRING_OK;
}

/* Read the message at *cursor, check it, and move the cursor past it. */
static int read_next(topic_mem *m, uint64_t *cursor, uint64_t want_len, uint64_t want_seq, unsigned seed)
{
    const unsigned char *p = NULL;
    uint64_t len, seq, size;
    uint32_t tag;
    int rc = shmring_topic_next(&m->t, cursor, &tag, &p, &len, &seq, &size);
    if (rc != SHMRING_OK)
        return rc;
    CHECK_EQ(tag, SHMRING_REC_BYTES);
    CHECK_EQ(len, want_len);
    CHECK_EQ(seq, want_seq);
    CHECK_EQ(size, shmring_topic_record_size(len));
    CHECK(helpers_pattern_ok(p, len, seed));
    CHECK_EQ(shmring_topic_still_valid(&m->t, *cursor), SHMRING_OK);
    *cursor += size;
    return SHMRING_OK;
}

static shmring_topic_record *record_at(topic_mem *m, uint64_t offset)
{
    return (shmring_topic_record *)(void *)(m->t.data + offset);
}

static void a_new_subscriber_starts_at_the_tail(void)
{
    topic_mem m;
    uint64_t cursor;
    int slot;
    topic_new(&m, SHMRING_TOPIC_OVERWRITE);
    CHECK_EQ(publish(&m, 10, 1, 0), SHMRING_OK);
    slot = shmring_topic_subscribe(&m.t, shmring_token_self());
    CHECK(slot >= 0);
    cursor = m.t.subs[slot].cursor;
    CHECK_EQ(cursor, m.c->tail);
    CHECK_EQ(m.t.subs[slot].next_seq, 1);
    CHECK_EQ(read_next(&m, &cursor, 0, 0, 0), SHMRING_AGAIN);
}

static void messages_come_out_in_order_with_their_numbers(void)
{
    topic_mem m;
    uint64_t cursor = 0;
    unsigned i;
    topic_new(&m, SHMRING_TOPIC_OVERWRITE);
    for (i = 0; i < 3; i++)
        CHECK_EQ(publish(&m, 5 + i, i, 0), SHMRING_OK);
    CHECK_EQ(m.c->tail, 3 * 32); /* 16-byte header, 16-byte aligned records */
    CHECK_EQ(m.c->last_pos, 2 * 32);
    for (i = 0; i < 3; i++)
        CHECK_EQ(read_next(&m, &cursor, 5 + i, i, i), SHMRING_OK);
    CHECK_EQ(read_next(&m, &cursor, 0, 0, 0), SHMRING_AGAIN);
}

static void pads_then_wraps_at_the_end_of_the_ring(void)
{
    topic_mem m;
    uint64_t cursor = 0;
    topic_new(&m, SHMRING_TOPIC_OVERWRITE);
    CHECK_EQ(publish(&m, 200, 1, 0), SHMRING_OK); /* 224 bytes: 32 left before the end */
    CHECK_EQ(read_next(&m, &cursor, 200, 0, 1), SHMRING_OK);
    CHECK_EQ(publish(&m, 40, 2, 0), SHMRING_OK); /* 64 bytes */
    CHECK_EQ(record_at(&m, 224)->tag, SHMRING_REC_PAD);
    CHECK_EQ(record_at(&m, 224)->len, 32 - 16);
    CHECK_EQ(record_at(&m, 224)->seq, 1); /* the next message's number */
    CHECK_EQ(record_at(&m, 0)->len, 40);
    CHECK_EQ(m.c->tail, CAP + 64);
    CHECK_EQ(read_next(&m, &cursor, 40, 1, 2), SHMRING_OK); /* the padding is stepped over */
    CHECK_EQ(cursor, CAP + 64);
}

static void a_record_as_big_as_the_ring_fits_it_exactly(void)
{
    topic_mem m;
    uint64_t cursor = 0;
    topic_new(&m, SHMRING_TOPIC_BLOCK);
    CHECK_EQ(publish(&m, CAP - 15, 1, 0), SHMRING_TOO_BIG);
    CHECK_EQ(publish(&m, CAP - 16, 1, 0), SHMRING_OK);
    CHECK_EQ(m.c->tail, CAP);
    CHECK_EQ(read_next(&m, &cursor, CAP - 16, 0, 1), SHMRING_OK);
    CHECK_EQ(publish(&m, CAP - 16, 2, 0), SHMRING_OK); /* no subscriber holds it back */
    CHECK_EQ(m.c->head, CAP);
}

static void overwrite_reclaims_whole_records_and_a_slow_subscriber_lags(void)
{
    topic_mem m;
    uint64_t cursor = 0, pos = 0, seq = 0;
    unsigned i;
    topic_new(&m, SHMRING_TOPIC_OVERWRITE);
    for (i = 0; i < 20; i++)
        CHECK_EQ(publish(&m, 24, i, 0), SHMRING_OK); /* 48 bytes each */
    CHECK(m.c->head > 0);
    CHECK_EQ(m.c->head % 16, 0);
    CHECK(m.c->tail - m.c->head <= CAP);
    CHECK_EQ(read_next(&m, &cursor, 24, 0, 0), SHMRING_LAGGED);
    CHECK_EQ(shmring_topic_still_valid(&m.t, 0), SHMRING_LAGGED);
    CHECK_EQ(shmring_topic_oldest(&m.t, &pos, &seq), SHMRING_OK);
    CHECK_EQ(pos, m.c->head);
    cursor = pos;
    for (i = (unsigned)seq; i < 20; i++)
        CHECK_EQ(read_next(&m, &cursor, 24, i, i), SHMRING_OK);
    CHECK_EQ(cursor, m.c->tail);
}

static void block_waits_for_the_slowest_live_subscriber_and_reaps_dead_ones(void)
{
    topic_mem m;
    uint64_t cursor;
    int slow, dead;
    topic_new(&m, SHMRING_TOPIC_BLOCK);
    slow = shmring_topic_subscribe(&m.t, helpers_live_token());
    CHECK(slow >= 0);
    cursor = m.t.subs[slow].cursor;
    while (publish(&m, 48, 1, 0) == SHMRING_OK)
        ;
    CHECK_EQ(publish(&m, 48, 1, 1), SHMRING_AGAIN); /* alive: never reaped */
    CHECK_EQ(read_next(&m, &cursor, 48, 0, 1), SHMRING_OK);
    CHECK_EQ(shmring_topic_advance(&m.t, slow, cursor, 1), 0); /* no publisher sleeps */
    CHECK_EQ(publish(&m, 48, 1, 0), SHMRING_OK);

    m.t.subs[slow].token = helpers_dead_token(); /* it dies at its cursor */
    dead = slow;
    CHECK_EQ(publish(&m, 48, 1, 0), SHMRING_AGAIN);
    CHECK_EQ(publish(&m, 48, 1, 1), SHMRING_OK); /* reaped */
    CHECK_EQ(m.t.subs[dead].token, 0);
}

static void a_full_table_of_live_subscribers_takes_no_more(void)
{
    topic_mem m;
    unsigned i;
    int slot;
    topic_new(&m, SHMRING_TOPIC_BLOCK);
    for (i = 0; i < SUBS; i++)
        CHECK(shmring_topic_subscribe(&m.t, helpers_live_token()) >= 0);
    CHECK_EQ(shmring_topic_subscribe(&m.t, shmring_token_self()), -1);
    m.t.subs[2].token = helpers_dead_token();
    slot = shmring_topic_subscribe(&m.t, shmring_token_self());
    CHECK_EQ(slot, 2); /* a dead subscriber's slot */
    shmring_topic_unsubscribe(&m.t, slot, shmring_token_self());
    CHECK_EQ(m.t.subs[2].token, 0);
}

static void impossible_counters_and_cursors_are_corruption(void)
{
    topic_mem m;
    uint64_t cursor, pos, seq;
    topic_new(&m, SHMRING_TOPIC_OVERWRITE);
    CHECK_EQ(publish(&m, 8, 1, 0), SHMRING_OK);
    cursor = 8; /* not on a record boundary */
    CHECK_EQ(read_next(&m, &cursor, 0, 0, 0), SHMRING_ERR_CORRUPT);
    cursor = 64; /* past tail */
    CHECK_EQ(read_next(&m, &cursor, 0, 0, 0), SHMRING_ERR_CORRUPT);
    /* A valid-looking header at a cursor off the 16-byte grid. */
    record_at(&m, 8)->len = 0;
    record_at(&m, 8)->tag = SHMRING_REC_BYTES;
    record_at(&m, 8)->seq = 0;
    cursor = 8;
    CHECK_EQ(read_next(&m, &cursor, 0, 0, 0), SHMRING_ERR_CORRUPT);
    m.c->tail = 2 * CAP; /* more than a ring ahead of the cursor */
    cursor = 0;
    CHECK_EQ(read_next(&m, &cursor, 0, 0, 0), SHMRING_ERR_CORRUPT);
    CHECK_EQ(shmring_topic_oldest(&m.t, &pos, &seq), SHMRING_ERR_CORRUPT);
    m.c->tail = 40; /* not a multiple of 16 */
    CHECK_EQ(publish(&m, 8, 2, 0), SHMRING_ERR_CORRUPT);
    m.c->tail = 32;
    m.c->head = 8; /* not on a record boundary */
    CHECK_EQ(publish(&m, CAP - 16, 2, 0), SHMRING_ERR_CORRUPT);
}

static void impossible_record_headers_are_corruption_before_anything_is_read(void)
{
    topic_mem m;
    uint64_t cursor;
    shmring_topic_record *r;
    topic_new(&m, SHMRING_TOPIC_OVERWRITE);
    r = record_at(&m, 0);
    CHECK_EQ(publish(&m, 8, 1, 0), SHMRING_OK);
    r->tag = SHMRING_REC_DATA; /* a channel's tag */
    cursor = 0;
    CHECK_EQ(read_next(&m, &cursor, 0, 0, 0), SHMRING_ERR_CORRUPT);
    r->tag = SHMRING_REC_BYTES;
    r->len = 100; /* past tail */
    CHECK_EQ(read_next(&m, &cursor, 0, 0, 0), SHMRING_ERR_CORRUPT);
    r->len = UINT32_MAX; /* past the end of the ring */
    CHECK_EQ(read_next(&m, &cursor, 0, 0, 0), SHMRING_ERR_CORRUPT);
    r->tag = SHMRING_REC_PAD;
    r->len = 0; /* padding must reach the end of the ring */
    CHECK_EQ(read_next(&m, &cursor, 0, 0, 0), SHMRING_ERR_CORRUPT);
    CHECK_EQ(cursor, 0);
    /* A publisher reclaiming records under OVERWRITE walks them too. */
    r->tag = SHMRING_REC_BYTES;
    r->len = UINT32_MAX;
    CHECK_EQ(publish(&m, CAP - 16, 2, 0), SHMRING_ERR_CORRUPT);
}

static void a_record_said_to_cross_the_end_of_the_ring_is_corruption(void)
{
    topic_mem m;
    uint64_t cursor = 0;
    topic_new(&m, SHMRING_TOPIC_OVERWRITE);
    CHECK_EQ(publish(&m, 176, 1, 0), SHMRING_OK); /* 0..192 */
    CHECK_EQ(read_next(&m, &cursor, 176, 0, 1), SHMRING_OK);
    CHECK_EQ(publish(&m, 16, 2, 0), SHMRING_OK); /* 192..224 */
    CHECK_EQ(publish(&m, 16, 3, 0), SHMRING_OK); /* 224..256 */
    CHECK_EQ(publish(&m, 16, 4, 0), SHMRING_OK); /* 0..32 */
    CHECK_EQ(read_next(&m, &cursor, 16, 1, 2), SHMRING_OK);
    record_at(&m, 224)->len = 48; /* 64 bytes: within tail, past the end of the ring */
    CHECK_EQ(read_next(&m, &cursor, 0, 0, 0), SHMRING_ERR_CORRUPT);
}

static void the_config_check_refuses_every_impossible_field(void)
{
    topic_mem m;
    shmring_topic_ctrl copy, saved;
    topic_new(&m, SHMRING_TOPIC_BLOCK);
    CHECK_EQ(shmring_topic_check_config(m.c, m.size, &copy), SHMRING_OK);
    saved = *m.c;
#define REFUSED(field, value) CHECK_REFUSED(m.c, saved, field, value, shmring_topic_check_config(m.c, m.size, &copy))
    REFUSED(max_subscribers, 0);
    REFUSED(max_subscribers, SHMRING_TOPIC_MAX_SUBSCRIBERS + 1);
    REFUSED(max_subscribers, SUBS + 1); /* the data offset no longer matches */
    REFUSED(data_offset, 0);
    REFUSED(policy, 3);
    REFUSED(spin_ns, SHMRING_MAX_SPIN_NS + 1);
    REFUSED(capacity, 64);
    REFUSED(capacity, CAP + 8);
    REFUSED(capacity, CAP + 16); /* larger than the payload */
#undef REFUSED
    *m.c = saved;
    CHECK_EQ(shmring_topic_attach(&m.t, m.payload, SHMRING_TOPIC_CTRL_SIZE - 1), SHMRING_ERR_CORRUPT);
}

static void publish_times_out_behind_a_slow_live_subscriber_and_keeps_nothing_held(void)
{
    topic_mem m;
    unsigned char buf[48] = {0};
    uint64_t me = shmring_token_self();
    uint32_t stop = 1;
    topic_new(&m, SHMRING_TOPIC_BLOCK);
    CHECK(shmring_topic_subscribe(&m.t, helpers_live_token()) >= 0);
    CHECK_EQ(shmring_topic_publish(&m.t, me, SHMRING_REC_BYTES, buf, 48, 0), SHMRING_OK);
    while (shmring_topic_publish(&m.t, me, SHMRING_REC_BYTES, buf, 48, shmring_now_ns() + 2000000u) == SHMRING_OK)
        ;
    CHECK_EQ(shmring_topic_publish(&m.t, me, SHMRING_REC_BYTES, buf, 48, shmring_now_ns() + 2000000u),
             SHMRING_TIMEOUT);
    CHECK_EQ(m.c->lock.owner, 0);
    CHECK_EQ(m.c->room_waiters, 0);
    m.t.interrupt = &stop;
    errno = 0;
    CHECK_EQ(shmring_topic_publish(&m.t, me, SHMRING_REC_BYTES, buf, 48, 0), SHMRING_ERR_SYS);
    CHECK_EQ(errno, EINTR);
    CHECK_EQ(m.c->lock.owner, 0);
    CHECK_EQ(shmring_topic_publish(&m.t, me, SHMRING_REC_BYTES, buf, CAP, 0), SHMRING_TOO_BIG);
}

static void a_gap_marker_takes_its_count_of_numbers_and_is_read_as_a_gap(void)
{
    topic_mem m;
    uint64_t me = shmring_token_self(), cursor = 0, len = 0, seq = 0, size = 0, missed = 0, last;
    const unsigned char *p = NULL;
    uint32_t tag = 0;
    topic_new(&m, SHMRING_TOPIC_OVERWRITE);
    CHECK_EQ(publish(&m, 8, 1, 0), SHMRING_OK);
    last = m.c->last_pos;
    CHECK_EQ(shmring_topic_publish_gap(&m.t, me, 0, 0), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_topic_publish_gap(&m.t, me, 5, 0), SHMRING_OK);
    CHECK_EQ(m.c->next_seq, 6);      /* the message, then the 5 lost */
    CHECK_EQ(m.c->last_pos, last);   /* the newest message is still the one before */
    CHECK_EQ(m.c->lock.owner, 0);
    CHECK_EQ(publish(&m, 8, 2, 0), SHMRING_OK);
    CHECK_EQ(read_next(&m, &cursor, 8, 0, 1), SHMRING_OK);
    CHECK_EQ(shmring_topic_next(&m.t, &cursor, &tag, &p, &len, &seq, &size), SHMRING_GAP);
    CHECK_EQ(tag, SHMRING_REC_GAP);
    CHECK_EQ(seq, 1);
    CHECK_EQ(size, 32);
    CHECK_EQ(shmring_topic_gap_count(&m.t, cursor, p, seq, &missed), SHMRING_OK);
    CHECK_EQ(missed, 5);
    cursor += size;
    CHECK_EQ(read_next(&m, &cursor, 8, 6, 2), SHMRING_OK);
    /* No room for the count past 2^64 - 1: refused, nothing published, the lock released. */
    m.c->next_seq = UINT64_MAX - 2;
    CHECK_EQ(shmring_topic_publish_gap(&m.t, me, 3, 0), SHMRING_ERR_ARG);
    CHECK_EQ(m.c->tail, cursor);
    CHECK_EQ(m.c->lock.owner, 0);
}

static void a_gap_marker_of_the_wrong_size_or_count_is_corruption(void)
{
    topic_mem m;
    uint64_t me = shmring_token_self(), cursor = 0, len = 0, seq = 0, size = 0, missed = 0, zero = 0;
    const unsigned char *p = NULL;
    uint32_t tag = 0;
    topic_new(&m, SHMRING_TOPIC_OVERWRITE);
    CHECK_EQ(shmring_topic_publish_gap(&m.t, me, 3, 0), SHMRING_OK);
    record_at(&m, 0)->len = 16; /* still inside the ring and tail: only the size is wrong */
    CHECK_EQ(shmring_topic_next(&m.t, &cursor, &tag, &p, &len, &seq, &size), SHMRING_ERR_CORRUPT);
    record_at(&m, 0)->len = 8;
    memcpy(m.t.data + sizeof(shmring_topic_record), &zero, sizeof(zero)); /* a gap of nothing */
    CHECK_EQ(shmring_topic_next(&m.t, &cursor, &tag, &p, &len, &seq, &size), SHMRING_GAP);
    CHECK_EQ(shmring_topic_gap_count(&m.t, cursor, p, seq, &missed), SHMRING_ERR_CORRUPT);
    record_at(&m, 0)->seq = UINT64_MAX - 1; /* 3 numbers from there pass 2^64 - 1 */
    memcpy(m.t.data + sizeof(shmring_topic_record), &(uint64_t){3}, sizeof(uint64_t));
    CHECK_EQ(shmring_topic_next(&m.t, &cursor, &tag, &p, &len, &seq, &size), SHMRING_GAP);
    CHECK_EQ(shmring_topic_gap_count(&m.t, cursor, p, seq, &missed), SHMRING_ERR_CORRUPT);
}

/* A payload smaller than the control block it claims is refused before a
 * byte past its end is read (the ASan build of this program would see it). */
static void the_config_check_refuses_a_payload_too_small_for_its_block_before_reading_it(void)
{
    unsigned char *payload = (unsigned char *)helpers_memory(1);
    shmring_topic_ctrl copy;
    CHECK_EQ(shmring_topic_check_config((const shmring_topic_ctrl *)(void *)payload, 1, &copy), SHMRING_ERR_CORRUPT);
}

int main(void)
{
    RUN(a_new_subscriber_starts_at_the_tail);
    RUN(messages_come_out_in_order_with_their_numbers);
    RUN(pads_then_wraps_at_the_end_of_the_ring);
    RUN(a_record_as_big_as_the_ring_fits_it_exactly);
    RUN(overwrite_reclaims_whole_records_and_a_slow_subscriber_lags);
    RUN(block_waits_for_the_slowest_live_subscriber_and_reaps_dead_ones);
    RUN(a_full_table_of_live_subscribers_takes_no_more);
    RUN(impossible_counters_and_cursors_are_corruption);
    RUN(impossible_record_headers_are_corruption_before_anything_is_read);
    RUN(a_record_said_to_cross_the_end_of_the_ring_is_corruption);
    RUN(the_config_check_refuses_every_impossible_field);
    RUN(the_config_check_refuses_a_payload_too_small_for_its_block_before_reading_it);
    RUN(publish_times_out_behind_a_slow_live_subscriber_and_keeps_nothing_held);
    RUN(a_gap_marker_takes_its_count_of_numbers_and_is_read_as_a_gap);
    RUN(a_gap_marker_of_the_wrong_size_or_count_is_corruption);
    return helpers_finish();
}
