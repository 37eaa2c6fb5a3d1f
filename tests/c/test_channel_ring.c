/*
 * The channel's ring (shmring/channel.h, channel_wait.h) on plain memory:
 * one producer and one consumer handle in this thread, the control block
 * and the data in a malloc'd buffer.  Wrap-around, padding, exact fit,
 * full and empty rings, and every counter and record header read from the
 * ring checked before it is used.
 */
#include "helpers.h"

#define CAP 256u

typedef struct {
    unsigned char *payload;
    uint64_t size;
    shmring_channel prod, cons;
    shmring_channel_ctrl *ctrl;
} ring;

static void ring_new(ring *r, uint64_t capacity, uint32_t wait)
{
    r->size = shmring_channel_payload_size(capacity);
    r->payload = (unsigned char *)helpers_memory((size_t)r->size);
    CHECK_EQ(shmring_channel_init(r->payload, r->size, capacity, wait, 0), SHMRING_OK);
    CHECK_EQ(shmring_channel_attach(&r->prod, r->payload, r->size), SHMRING_OK);
    CHECK_EQ(shmring_channel_attach(&r->cons, r->payload, r->size), SHMRING_OK);
    CHECK_EQ(shmring_channel_producer_start(&r->prod), SHMRING_OK);
    CHECK_EQ(shmring_channel_consumer_start(&r->cons), SHMRING_OK);
    r->ctrl = r->prod.ctrl;
}

/* Reserve, fill, commit and publish one message. */
static int put(ring *r, uint64_t len, unsigned seed)
{
    unsigned char *dst;
    int rc = shmring_channel_reserve(&r->prod, len, &dst);
    if (rc != SHMRING_OK)
        return rc;
    helpers_fill(dst, len, seed);
    shmring_channel_commit(&r->prod, len);
    shmring_channel_publish(&r->prod);
    return SHMRING_OK;
}

/* Peek the next message, check its length and bytes, consume it and
 * publish head. */
static int get(ring *r, uint64_t want_len, unsigned seed)
{
    const unsigned char *src;
    uint64_t len;
    int rc = shmring_channel_peek(&r->cons, &src, &len);
    if (rc != SHMRING_OK)
        return rc;
    CHECK_EQ(len, want_len);
    CHECK(helpers_pattern_ok(src, len, seed));
    shmring_channel_consume(&r->cons);
    shmring_channel_publish_head(&r->cons);
    return SHMRING_OK;
}

/* put, and when there is no room, do what a waiting producer does first:
 * publish the padding it may have written, so that the consumer can step
 * over it and give its bytes back; then put again. */
static int put_after_padding(ring *r, uint64_t len, unsigned seed)
{
    const unsigned char *src;
    uint64_t n;
    int rc = put(r, len, seed);
    if (rc != SHMRING_AGAIN)
        return rc;
    shmring_channel_publish(&r->prod);
    CHECK_EQ(shmring_channel_peek(&r->cons, &src, &n), SHMRING_AGAIN);
    shmring_channel_publish_head(&r->cons);
    return put(r, len, seed);
}

/* The sliced wait of one end (writer = 1: for `need` bytes of room), no
 * spin, no hooks, for at most `ns` from now (0: no deadline). */
static int wait_sliced(shmring_channel *ch, int writer, uint64_t need, uint32_t strategy, uint64_t ns)
{
    return shmring_channel_wait_sliced(ch, writer, need, strategy, 0, ns != 0 ? shmring_now_ns() + ns : 0, NULL);
}

static const shmring_record *record_at(ring *r, uint64_t offset)
{
    return (const shmring_record *)(const void *)(r->payload + SHMRING_CHANNEL_CTRL_SIZE + offset);
}

static void an_empty_ring_has_nothing_to_read(void)
{
    ring r;
    const unsigned char *src;
    uint64_t len;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    CHECK_EQ(shmring_channel_peek(&r.cons, &src, &len), SHMRING_AGAIN);
    CHECK_EQ(shmring_channel_readable(&r.cons), 0);
    CHECK_EQ(shmring_channel_ready(&r.cons, 0, 0), 0);
    CHECK_EQ(shmring_channel_ready(&r.prod, 1, CAP), 1); /* all of it is free */
}

static void a_message_comes_out_as_it_went_in(void)
{
    ring r;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    CHECK_EQ(put(&r, 10, 1), SHMRING_OK);
    CHECK_EQ(shmring_channel_readable(&r.cons), 1);
    CHECK_EQ(get(&r, 10, 1), SHMRING_OK);
    CHECK_EQ(get(&r, 0, 0), SHMRING_AGAIN);
    CHECK_EQ(r.ctrl->head, r.ctrl->tail);
}

static void records_start_at_eight_byte_aligned_offsets(void)
{
    /* Messages put in turn, and the tail after each. */
    static const uint64_t lens[] = {1, 8, 0 /* a header alone */}, tails[] = {16, 32, 40};
    ring r;
    unsigned i;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    for (i = 0; i < 3; i++) {
        CHECK_EQ(put(&r, lens[i], i), SHMRING_OK);
        CHECK_EQ(r.ctrl->tail, tails[i]);
    }
    CHECK_EQ(record_at(&r, 0)->len, 1);
    CHECK_EQ(record_at(&r, 0)->tag, SHMRING_REC_DATA);
    for (i = 0; i < 3; i++)
        CHECK_EQ(get(&r, lens[i], i), SHMRING_OK);
}

static void a_message_as_big_as_the_ring_fits_an_empty_ring_exactly(void)
{
    ring r;
    unsigned char *dst;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    CHECK_EQ(shmring_channel_max_message(CAP), CAP - 8);
    CHECK_EQ(shmring_channel_reserve(&r.prod, CAP - 7, &dst), SHMRING_TOO_BIG);
    CHECK_EQ(put(&r, CAP - 8, 4), SHMRING_OK);
    CHECK_EQ(r.ctrl->tail, CAP);
    CHECK_EQ(shmring_channel_reserve(&r.prod, 0, &dst), SHMRING_AGAIN); /* full */
    CHECK_EQ(get(&r, CAP - 8, 4), SHMRING_OK);
    CHECK_EQ(put(&r, CAP - 8, 5), SHMRING_OK); /* and again, from offset 0 */
    CHECK_EQ(get(&r, CAP - 8, 5), SHMRING_OK);
}

static void a_full_ring_takes_more_only_once_the_consumer_publishes_head(void)
{
    ring r;
    const unsigned char *src;
    uint64_t len;
    unsigned i;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    for (i = 0; i < CAP / 32; i++)
        CHECK_EQ(put(&r, 24, i), SHMRING_OK);
    CHECK_EQ(put(&r, 24, 99), SHMRING_AGAIN);
    CHECK_EQ(shmring_channel_ready(&r.prod, 1, 32), 0);
    CHECK_EQ(shmring_channel_peek(&r.cons, &src, &len), SHMRING_OK);
    shmring_channel_consume(&r.cons); /* consumed locally: the producer cannot know yet */
    CHECK_EQ(put(&r, 24, 99), SHMRING_AGAIN);
    shmring_channel_publish_head(&r.cons);
    CHECK_EQ(shmring_channel_ready(&r.prod, 1, 32), 1);
    CHECK_EQ(put(&r, 24, 99), SHMRING_OK);
    for (i = 1; i < CAP / 32; i++)
        CHECK_EQ(get(&r, 24, i), SHMRING_OK);
    CHECK_EQ(get(&r, 24, 99), SHMRING_OK);
}

static void pads_then_wraps_at_the_end_of_the_ring(void)
{
    ring r;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    CHECK_EQ(put(&r, 200, 1), SHMRING_OK); /* 208 bytes: 48 left before the end */
    CHECK_EQ(get(&r, 200, 1), SHMRING_OK);
    CHECK_EQ(put(&r, 64, 2), SHMRING_OK); /* 72 bytes do not fit in 48 */
    CHECK_EQ(record_at(&r, 208)->tag, SHMRING_REC_PAD);
    CHECK_EQ(record_at(&r, 208)->len, 48 - 8);
    CHECK_EQ(record_at(&r, 0)->tag, SHMRING_REC_DATA);
    CHECK_EQ(record_at(&r, 0)->len, 64);
    CHECK_EQ(r.ctrl->tail, CAP + 72);
    CHECK_EQ(get(&r, 64, 2), SHMRING_OK); /* the padding is stepped over */
    CHECK_EQ(r.ctrl->head, CAP + 72);
}

static void a_record_that_ends_exactly_at_the_end_needs_no_padding(void)
{
    ring r;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    CHECK_EQ(put(&r, 200, 1), SHMRING_OK);
    CHECK_EQ(put(&r, 40, 2), SHMRING_OK); /* 48 bytes: exactly what is left */
    CHECK_EQ(record_at(&r, 208)->tag, SHMRING_REC_DATA);
    CHECK_EQ(r.ctrl->tail, CAP);
    CHECK_EQ(get(&r, 200, 1), SHMRING_OK);
    CHECK_EQ(put(&r, 8, 3), SHMRING_OK); /* the next starts at offset 0 */
    CHECK_EQ(record_at(&r, 0)->len, 8);
    CHECK_EQ(r.ctrl->tail, CAP + 16);
    CHECK_EQ(get(&r, 40, 2), SHMRING_OK);
    CHECK_EQ(get(&r, 8, 3), SHMRING_OK);
}

static void padding_written_before_the_room_came_is_published_with_the_next_record(void)
{
    ring r;
    unsigned char *dst;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    CHECK_EQ(put(&r, 200, 1), SHMRING_OK);
    /* 48 bytes free, all before the end: the padding fits, the record not. */
    CHECK_EQ(shmring_channel_reserve(&r.prod, 64, &dst), SHMRING_AGAIN);
    CHECK_EQ(r.prod.tail, CAP);      /* the padding is written locally */
    CHECK_EQ(r.ctrl->tail, 208);     /* and not visible */
    CHECK_EQ(get(&r, 200, 1), SHMRING_OK);
    CHECK_EQ(put(&r, 64, 2), SHMRING_OK);
    CHECK_EQ(r.ctrl->tail, CAP + 72);
    CHECK_EQ(get(&r, 64, 2), SHMRING_OK);
}

static void unpublished_padding_holds_its_bytes_until_it_is_published(void)
{
    ring r;
    unsigned char *dst;
    const unsigned char *src;
    uint64_t len;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    CHECK_EQ(put(&r, 88, 1), SHMRING_OK); /* 96 bytes */
    CHECK_EQ(get(&r, 88, 1), SHMRING_OK); /* empty, 160 bytes before the end */
    /* 208 bytes do not fit before the end: padding, then no room, because
     * the consumer cannot step over padding it does not see yet. */
    CHECK_EQ(shmring_channel_reserve(&r.prod, 200, &dst), SHMRING_AGAIN);
    CHECK_EQ(r.prod.tail, CAP);
    CHECK_EQ(shmring_channel_peek(&r.cons, &src, &len), SHMRING_AGAIN);
    shmring_channel_publish(&r.prod); /* what a producer does before it waits */
    CHECK_EQ(shmring_channel_peek(&r.cons, &src, &len), SHMRING_AGAIN);
    CHECK_EQ(r.cons.head, CAP); /* stepped over, locally */
    CHECK_EQ(shmring_channel_reserve(&r.prod, 200, &dst), SHMRING_AGAIN);
    shmring_channel_publish_head(&r.cons); /* what a consumer does before it waits */
    CHECK_EQ(put(&r, 200, 2), SHMRING_OK);
    CHECK_EQ(get(&r, 200, 2), SHMRING_OK);
}

static void place_says_where_reserve_will_put_a_record(void)
{
    ring r;
    uint64_t lens[] = {0, 1, 7, 8, 40, 41, 100, 200, CAP - 8};
    unsigned i;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint64_t before = r.prod.tail, want = shmring_channel_place(&r.prod, before, lens[i]);
        CHECK_EQ(put_after_padding(&r, lens[i], i), SHMRING_OK);
        CHECK_EQ(r.prod.tail, want);
        CHECK_EQ(get(&r, lens[i], i), SHMRING_OK);
    }
}

static void a_batch_becomes_visible_with_one_publish(void)
{
    ring r;
    unsigned char *dst;
    const unsigned char *src;
    uint64_t len;
    unsigned i;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    for (i = 0; i < 3; i++) {
        CHECK_EQ(shmring_channel_reserve(&r.prod, 16, &dst), SHMRING_OK);
        helpers_fill(dst, 16, i);
        shmring_channel_commit(&r.prod, 16);
    }
    CHECK_EQ(shmring_channel_peek(&r.cons, &src, &len), SHMRING_AGAIN);
    shmring_channel_publish(&r.prod);
    CHECK_EQ(r.ctrl->sent_msgs, 3);
    CHECK_EQ(r.ctrl->sent_bytes, 48);
    for (i = 0; i < 3; i++)
        CHECK_EQ(get(&r, 16, i), SHMRING_OK);
    CHECK_EQ(r.ctrl->recv_msgs, 3);
    CHECK_EQ(r.ctrl->recv_bytes, 48);
}

static void impossible_counters_are_corruption(void)
{
    ring r;
    const unsigned char *src;
    unsigned char *dst;
    uint64_t len;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    r.ctrl->tail = 12; /* not a multiple of 8 */
    CHECK_EQ(shmring_channel_peek(&r.cons, &src, &len), SHMRING_ERR_CORRUPT);
    CHECK_EQ(shmring_channel_readable(&r.cons), -1);
    r.ctrl->tail = CAP + 8; /* more than a ring ahead of head */
    CHECK_EQ(shmring_channel_peek(&r.cons, &src, &len), SHMRING_ERR_CORRUPT);
    CHECK_EQ(shmring_channel_consumer_start(&r.cons), SHMRING_ERR_CORRUPT);
    r.ctrl->tail = 0;

    CHECK_EQ(put(&r, CAP - 8, 1), SHMRING_OK); /* full: the next reserve loads head */
    r.ctrl->head = CAP + 8;                    /* ahead of tail */
    CHECK_EQ(shmring_channel_reserve(&r.prod, 8, &dst), SHMRING_ERR_CORRUPT);
    CHECK_EQ(shmring_channel_has_room(&r.prod, 8), -1);
    r.ctrl->head = 4;
    CHECK_EQ(shmring_channel_reserve(&r.prod, 8, &dst), SHMRING_ERR_CORRUPT);
    CHECK_EQ(shmring_channel_producer_start(&r.prod), SHMRING_ERR_CORRUPT);
}

static void impossible_record_headers_are_corruption_before_anything_is_read(void)
{
    /* The header of the one record put (16 bytes of payload: 24 of ring). */
    static const shmring_record impossible[] = {
        {16, 0x99},                     /* unknown tag */
        {17, SHMRING_REC_DATA},         /* 32 bytes: past tail (24) */
        {UINT32_MAX, SHMRING_REC_DATA}, /* past the end of the ring */
        {16, SHMRING_REC_PAD},          /* padding must reach exactly to the end of the ring */
        {CAP - 8, SHMRING_REC_PAD},     /* to the end, but past tail */
    };
    ring r;
    shmring_record *rec;
    const unsigned char *src = NULL;
    uint64_t len = 0;
    unsigned i;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    rec = (shmring_record *)(void *)(r.payload + SHMRING_CHANNEL_CTRL_SIZE);
    CHECK_EQ(put(&r, 16, 1), SHMRING_OK);
    for (i = 0; i < sizeof impossible / sizeof impossible[0]; i++) {
        *rec = impossible[i];
        CHECK_EQ(shmring_channel_peek(&r.cons, &src, &len), SHMRING_ERR_CORRUPT);
        CHECK(src == NULL && len == 0);
        CHECK_EQ(r.cons.head, 0);
    }
}

static void a_record_said_to_cross_the_end_of_the_ring_is_corruption(void)
{
    ring r;
    shmring_record *rec;
    const unsigned char *src = NULL;
    uint64_t len = 0;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    CHECK_EQ(put(&r, 200, 1), SHMRING_OK);
    CHECK_EQ(get(&r, 200, 1), SHMRING_OK);
    CHECK_EQ(put(&r, 40, 2), SHMRING_OK); /* 208..256 */
    CHECK_EQ(put(&r, 8, 3), SHMRING_OK);  /* 0..16: 64 bytes readable */
    rec = (shmring_record *)(void *)(r.payload + SHMRING_CHANNEL_CTRL_SIZE + 208);
    rec->len = 56; /* 64 bytes: within what is readable, past the end of the ring */
    CHECK_EQ(shmring_channel_peek(&r.cons, &src, &len), SHMRING_ERR_CORRUPT);
    CHECK(src == NULL);
}

static void attach_refuses_an_impossible_config_and_tames_the_strategy(void)
{
    uint64_t size = shmring_channel_payload_size(CAP);
    unsigned char *payload = (unsigned char *)helpers_memory((size_t)size);
    shmring_channel_ctrl *c = (shmring_channel_ctrl *)(void *)payload;
    shmring_channel ch;
    CHECK_EQ(shmring_channel_init(payload, size, CAP, SHMRING_WAIT_BLOCK, 0), SHMRING_OK);
    CHECK_EQ(shmring_channel_attach(&ch, payload, size), SHMRING_OK);
    CHECK_EQ(ch.wait, SHMRING_WAIT_BLOCK);
    CHECK_EQ(shmring_channel_attach(&ch, payload, size - 1), SHMRING_ERR_CORRUPT);
    CHECK_EQ(shmring_channel_attach(&ch, payload, SHMRING_CHANNEL_CTRL_SIZE - 1), SHMRING_ERR_CORRUPT);
    c->capacity = CAP + 8; /* not a power of two */
    CHECK_EQ(shmring_channel_attach(&ch, payload, size), SHMRING_ERR_CORRUPT);
    c->capacity = 32; /* below the minimum */
    CHECK_EQ(shmring_channel_attach(&ch, payload, size), SHMRING_ERR_CORRUPT);
    c->capacity = UINT64_C(1) << 40; /* above the maximum */
    CHECK_EQ(shmring_channel_attach(&ch, payload, size), SHMRING_ERR_CORRUPT);
    c->capacity = CAP;
    c->data_offset = 0;
    CHECK_EQ(shmring_channel_attach(&ch, payload, size), SHMRING_ERR_CORRUPT);
    c->data_offset = SHMRING_CHANNEL_CTRL_SIZE;
    c->wait = 77;
    c->spin_ns = UINT32_MAX;
    CHECK_EQ(shmring_channel_attach(&ch, payload, size), SHMRING_OK);
    CHECK_EQ(ch.wait, SHMRING_WAIT_ADAPTIVE);
    CHECK_EQ(ch.spin_ns, SHMRING_CHANNEL_DEFAULT_SPIN_NS);
}

static void init_refuses_bad_arguments(void)
{
    uint64_t size = shmring_channel_payload_size(CAP);
    unsigned char *payload = (unsigned char *)helpers_memory((size_t)size);
    CHECK_EQ(shmring_channel_init(payload, size, CAP + 1, SHMRING_WAIT_SPIN, 0), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_channel_init(payload, size, 32, SHMRING_WAIT_SPIN, 0), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_channel_init(payload, size, CAP, 0, 0), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_channel_init(payload, size, CAP, SHMRING_WAIT_MAX + 1, 0), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_channel_init(payload, size - 1, CAP, SHMRING_WAIT_SPIN, 0), SHMRING_ERR_ARG);
}

static void an_end_is_held_by_one_handle_and_taken_over_from_a_dead_process(void)
{
    ring r;
    uint64_t me = shmring_token_self();
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    CHECK_EQ(shmring_channel_claim(&r.ctrl->producer, &r.ctrl->producer_handle, me, 1), SHMRING_OK);
    CHECK_EQ(shmring_channel_claim(&r.ctrl->producer, &r.ctrl->producer_handle, me, 1), SHMRING_OK);
    CHECK_EQ(shmring_channel_claim(&r.ctrl->producer, &r.ctrl->producer_handle, me, 2), SHMRING_ROLE_TAKEN);
    shmring_channel_unclaim(r.ctrl, 1, me, 2); /* not the holder: nothing happens */
    CHECK_EQ(r.ctrl->producer, me);
    shmring_channel_unclaim(r.ctrl, 1, me, 1);
    CHECK_EQ(r.ctrl->producer, 0);

    r.ctrl->consumer = helpers_live_token();
    CHECK_EQ(shmring_channel_claim(&r.ctrl->consumer, &r.ctrl->consumer_handle, me, 1), SHMRING_ROLE_TAKEN);
    r.ctrl->consumer = helpers_dead_token();
    CHECK_EQ(shmring_channel_claim(&r.ctrl->consumer, &r.ctrl->consumer_handle, me, 1), SHMRING_OK);
    CHECK_EQ(r.ctrl->consumer, me);
}

static void a_closed_end_makes_the_other_side_ready(void)
{
    ring r;
    ring_new(&r, CAP, SHMRING_WAIT_SPIN);
    CHECK_EQ(put(&r, CAP - 8, 1), SHMRING_OK); /* full */
    CHECK_EQ(shmring_channel_ready(&r.prod, 1, 8), 0);
    shmring_channel_mark_closed(&r.cons, 0);
    CHECK_EQ(shmring_channel_reader_closed(&r.prod), 1);
    CHECK_EQ(shmring_channel_ready(&r.prod, 1, 8), 1); /* a writer waits no more */
    CHECK_EQ(get(&r, CAP - 8, 1), SHMRING_OK);
    CHECK_EQ(shmring_channel_readable(&r.cons), 0);
    shmring_channel_mark_closed(&r.prod, 1);
    CHECK_EQ(shmring_channel_writer_closed(&r.cons), 1);
    CHECK_EQ(shmring_channel_readable(&r.cons), 1); /* the end of the stream is readable */
}

static void the_sliced_wait_times_out_on_an_empty_ring_with_a_live_writer(void)
{
    ring r;
    ring_new(&r, CAP, SHMRING_WAIT_BLOCK);
    r.ctrl->producer = helpers_live_token();
    CHECK_EQ(wait_sliced(&r.cons, 0, 0, SHMRING_WAIT_BLOCK, 2000000u), SHMRING_TIMEOUT);
    CHECK_EQ(wait_sliced(&r.cons, 0, 0, SHMRING_WAIT_SPIN, 1000000u), SHMRING_TIMEOUT);
    CHECK_EQ(wait_sliced(&r.cons, 0, 0, SHMRING_WAIT_SEMAPHORE, 1000000u), SHMRING_TIMEOUT);
}

static void the_sliced_wait_returns_at_once_when_the_condition_holds(void)
{
    ring r;
    ring_new(&r, CAP, SHMRING_WAIT_BLOCK);
    CHECK_EQ(put(&r, 8, 1), SHMRING_OK);
    CHECK_EQ(wait_sliced(&r.cons, 0, 0, SHMRING_WAIT_BLOCK, 0), SHMRING_OK);
    CHECK_EQ(wait_sliced(&r.prod, 1, 16, SHMRING_WAIT_BLOCK, 0), SHMRING_OK);
}

static void the_sliced_wait_reports_a_dead_peer_after_the_last_message(void)
{
    ring r;
    ring_new(&r, CAP, SHMRING_WAIT_BLOCK);
    r.ctrl->producer = helpers_dead_token();
    CHECK_EQ(put(&r, 8, 1), SHMRING_OK);
    /* What the dead writer committed is read first... */
    CHECK_EQ(wait_sliced(&r.cons, 0, 0, SHMRING_WAIT_BLOCK, 1000000u), SHMRING_OK);
    CHECK_EQ(get(&r, 8, 1), SHMRING_OK);
    /* ...then its death. */
    CHECK_EQ(wait_sliced(&r.cons, 0, 0, SHMRING_WAIT_BLOCK, 1000000u), SHMRING_PEER_GONE);
    ring_new(&r, CAP, SHMRING_WAIT_BLOCK);
    r.ctrl->consumer = helpers_dead_token();
    CHECK_EQ(put(&r, CAP - 8, 2), SHMRING_OK); /* full */
    CHECK_EQ(wait_sliced(&r.prod, 1, 16, SHMRING_WAIT_BLOCK, 1000000u), SHMRING_PEER_GONE);
}

static void an_interrupt_word_ends_the_sliced_wait(void)
{
    ring r;
    uint32_t stop = 1;
    ring_new(&r, CAP, SHMRING_WAIT_BLOCK);
    r.cons.interrupt = &stop;
    errno = 0;
    CHECK_EQ(wait_sliced(&r.cons, 0, 0, SHMRING_WAIT_BLOCK, 0), SHMRING_ERR_SYS);
    CHECK_EQ(errno, EINTR);
}

static void send_and_recv_copy_messages_through_the_ring(void)
{
    ring r;
    unsigned char in[100], out[100];
    uint64_t len = 0;
    unsigned i;
    ring_new(&r, CAP, SHMRING_WAIT_BLOCK);
    for (i = 0; i < 20; i++) { /* several laps of the ring */
        helpers_fill(in, 1 + i * 4, i);
        CHECK_EQ(shmring_channel_send(&r.prod, in, 1 + i * 4, 0, shmring_now_ns() + 1000000000u), SHMRING_OK);
        CHECK_EQ(shmring_channel_recv(&r.cons, out, sizeof out, &len, 0, shmring_now_ns() + 1000000000u),
                 SHMRING_OK);
        CHECK_EQ(len, 1 + i * 4);
        CHECK(helpers_pattern_ok(out, len, i));
    }
    CHECK_EQ(shmring_channel_send(&r.prod, in, 50, 0, 0), SHMRING_OK);
    CHECK_EQ(shmring_channel_recv(&r.cons, out, 49, &len, 0, 0), SHMRING_TOO_BIG);
    CHECK_EQ(len, 50); /* and it stays */
    CHECK_EQ(shmring_channel_recv(&r.cons, out, 50, &len, 0, 0), SHMRING_OK);
    CHECK_EQ(shmring_channel_send(&r.prod, in, CAP, 0, 0), SHMRING_TOO_BIG);
    shmring_channel_mark_closed(&r.prod, 1);
    CHECK_EQ(shmring_channel_recv(&r.cons, out, sizeof out, &len, 0, 0), SHMRING_CLOSED);
    shmring_channel_mark_closed(&r.cons, 0);
    CHECK_EQ(shmring_channel_send(&r.prod, in, 8, 0, 0), SHMRING_CLOSED);
}

int main(void)
{
    RUN(an_empty_ring_has_nothing_to_read);
    RUN(a_message_comes_out_as_it_went_in);
    RUN(records_start_at_eight_byte_aligned_offsets);
    RUN(a_message_as_big_as_the_ring_fits_an_empty_ring_exactly);
    RUN(a_full_ring_takes_more_only_once_the_consumer_publishes_head);
    RUN(pads_then_wraps_at_the_end_of_the_ring);
    RUN(a_record_that_ends_exactly_at_the_end_needs_no_padding);
    RUN(padding_written_before_the_room_came_is_published_with_the_next_record);
    RUN(unpublished_padding_holds_its_bytes_until_it_is_published);
    RUN(place_says_where_reserve_will_put_a_record);
    RUN(a_batch_becomes_visible_with_one_publish);
    RUN(impossible_counters_are_corruption);
    RUN(impossible_record_headers_are_corruption_before_anything_is_read);
    RUN(a_record_said_to_cross_the_end_of_the_ring_is_corruption);
    RUN(attach_refuses_an_impossible_config_and_tames_the_strategy);
    RUN(init_refuses_bad_arguments);
    RUN(an_end_is_held_by_one_handle_and_taken_over_from_a_dead_process);
    RUN(a_closed_end_makes_the_other_side_ready);
    RUN(the_sliced_wait_times_out_on_an_empty_ring_with_a_live_writer);
    RUN(the_sliced_wait_returns_at_once_when_the_condition_holds);
    RUN(the_sliced_wait_reports_a_dead_peer_after_the_last_message);
    RUN(an_interrupt_word_ends_the_sliced_wait);
    RUN(send_and_recv_copy_messages_through_the_ring);
    return helpers_finish();
}
