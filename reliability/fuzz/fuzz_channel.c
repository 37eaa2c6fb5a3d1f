/*
 * fuzz_channel.c - the channel (shmring/channel.h, channel_wait.h) with a
 * hostile peer: both ends' steps (peek, consume, publish_head; reserve,
 * commit, publish, pad), the blocking send and recv and the waits with a
 * deadline passed or close, claiming and giving back the ends, and opening
 * an end anew, while the fuzzer rewrites the control block, the records
 * and the segment header between them.
 *
 * A channel made by shmring_channel_init is filled by the producer and
 * partly drained by the consumer (so that the ring has wrapped and holds
 * padding), then the operations run.  Whatever the peer wrote, an
 * operation returns a result code, and a message it hands out lies inside
 * the ring.
 */
#include "fuzz_common.h"

typedef struct end {
    shmring_channel ch;
    int producer;
    int ok; /* attached and started: its steps may run */
} end;

/* Open an end as a process does: attach (the config read once, checked),
 * claim it, start at the shared counter. */
static void end_open(end *e, unsigned char *payload, uint64_t payload_size)
{
    shmring_channel_ctrl *c = (shmring_channel_ctrl *)(void *)payload;
    int rc = fz_rc(shmring_channel_attach(&e->ch, payload, payload_size));
    e->ok = 0;
    if (rc != SHMRING_OK)
        return;
    rc = e->producer ? shmring_channel_claim(&c->producer, &c->producer_handle, fz_token(), 1)
                     : shmring_channel_claim(&c->consumer, &c->consumer_handle, fz_token(), 2);
    if (fz_rc(rc) != SHMRING_OK)
        return;
    rc = e->producer ? shmring_channel_producer_start(&e->ch) : shmring_channel_consumer_start(&e->ch);
    e->ok = fz_rc(rc) == SHMRING_OK;
}

/* The consumer's steps: look at the next message, maybe take it. */
static void consumer_step(fz_input *in, end *e)
{
    const unsigned char *p;
    uint64_t len;
    unsigned what = fz_u8(in) % 3;
    if (what == 0 && fz_rc(shmring_channel_peek(&e->ch, &p, &len)) == SHMRING_OK) {
        (void)fz_inside(e->ch.data, (size_t)e->ch.capacity, p, len);
        if (fz_u8(in) & 1)
            shmring_channel_consume(&e->ch);
    } else if (what == 1) {
        shmring_channel_publish_head(&e->ch);
    } else {
        int r = shmring_channel_readable(&e->ch);
        FZ_ASSERT(r >= -1 && r <= 1);
    }
}

/* The producer's steps: reserve, write and commit a record, publish, pad. */
static void producer_step(fz_input *in, end *e)
{
    unsigned char *dst;
    uint64_t len = fz_range(in, 0, e->ch.capacity);
    unsigned what = fz_u8(in) % 3;
    if (what == 0 && fz_rc(shmring_channel_reserve(&e->ch, len, &dst)) == SHMRING_OK) {
        (void)fz_inside(e->ch.data, (size_t)e->ch.capacity, dst, len);
        memset(dst, 0xA5, (size_t)len);
        shmring_channel_commit(&e->ch, len);
        if (fz_u8(in) & 1)
            shmring_channel_publish(&e->ch);
    } else if (what == 1) {
        shmring_channel_publish(&e->ch);
    } else {
        (void)fz_rc(shmring_channel_pad(&e->ch));
        (void)shmring_channel_place(&e->ch, e->ch.tail, len);
    }
}

/* The blocking calls, with a deadline passed or close (fz_deadline). */
static void blocking_step(fz_input *in, end *e)
{
    unsigned char buf[1024];
    uint64_t len = fz_range(in, 0, sizeof buf);
    uint32_t strategy = (uint32_t)fz_range(in, 0, SHMRING_WAIT_MAX);
    uint64_t deadline = fz_deadline(in);
    unsigned what = fz_u8(in) % 3;
    if (what == 0 && e->producer) {
        memset(buf, 0x5A, (size_t)len);
        (void)fz_rc(shmring_channel_send(&e->ch, buf, len, strategy, deadline));
    } else if (what == 0) {
        (void)fz_rc(shmring_channel_recv(&e->ch, buf, len, &len, strategy, deadline));
    } else if (what == 1) {
        (void)fz_rc(shmring_channel_wait(&e->ch, e->producer, len, strategy == 0 ? e->ch.wait : strategy,
                                         e->ch.spin_ns, deadline));
    } else {
        (void)fz_rc(shmring_channel_wait_sliced(&e->ch, e->producer, len, strategy == 0 ? e->ch.wait : strategy,
                                                e->ch.spin_ns, deadline, NULL));
    }
}

/* Claiming, giving back and closing the ends. */
static void ends_step(fz_input *in, shmring_channel_ctrl *c, end *e)
{
    uint64_t token = fz_u8(in) & 1 ? fz_token() : FZ_DEAD_TOKEN;
    uint64_t handle = e->producer ? 1 : 2;
    unsigned what = fz_u8(in) % 4;
    if (what >= 2 && !e->ok)
        return;
    if (what == 0)
        (void)fz_rc(e->producer ? shmring_channel_claim(&c->producer, &c->producer_handle, token, handle)
                                : shmring_channel_claim(&c->consumer, &c->consumer_handle, token, handle));
    else if (what == 1)
        shmring_channel_unclaim(c, e->producer, token, handle);
    else if (what == 2)
        shmring_channel_mark_closed(&e->ch, e->producer);
    else
        (void)(shmring_channel_writer_closed(&e->ch) | shmring_channel_reader_closed(&e->ch) |
               (shmring_channel_dead_peer(&e->ch, e->producer) != 0));
}

/* A channel with a few messages sent and some of them received. */
static void fill(fz_input *in, end *prod, end *cons)
{
    unsigned char buf[512];
    unsigned i, sent = (unsigned)fz_range(in, 0, 12), taken = (unsigned)fz_range(in, 0, 12);
    uint64_t len;
    for (i = 0; i < sent && prod->ok; i++) {
        len = fz_range(in, 0, prod->ch.capacity / 2);
        memset(buf, (int)i, (size_t)len);
        (void)fz_rc(shmring_channel_send(&prod->ch, buf, len, 0, FZ_PAST));
    }
    for (i = 0; i < taken && cons->ok; i++)
        (void)fz_rc(shmring_channel_recv(&cons->ch, buf, sizeof buf, &len, 0, FZ_PAST));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input in = {data, size, 0};
    uint64_t cap = SHMRING_CHANNEL_MIN_CAPACITY << fz_range(&in, 0, 3), payload_size;
    uint64_t made_size = shmring_channel_payload_size(cap);
    uint32_t wait = (uint32_t)fz_range(&in, 1, SHMRING_WAIT_MAX);
    unsigned char *base = fz_segment_new(SHMRING_KIND_CHANNEL, made_size), *payload = base + SHMRING_HEADER_SIZE;
    shmring_channel_ctrl *c = (shmring_channel_ctrl *)(void *)payload;
    end ends[2];
    fz_region regions[4];

    FZ_ASSERT(shmring_channel_init(payload, made_size, cap, wait, 1000) == SHMRING_OK);
    memset(ends, 0, sizeof ends);
    ends[0].producer = 1;
    end_open(&ends[0], payload, made_size);
    end_open(&ends[1], payload, made_size);
    fill(&in, &ends[0], &ends[1]);

    regions[0].base = payload; /* the control block, twice as likely */
    regions[0].len = SHMRING_CHANNEL_CTRL_SIZE;
    regions[1] = regions[0];
    regions[2].base = payload + SHMRING_CHANNEL_CTRL_SIZE; /* the records */
    regions[2].len = (size_t)cap;
    regions[3].base = base; /* the header fields: seen by the next opener */
    regions[3].len = SHMRING_HEADER_FIELDS_SIZE;

    while (fz_more(&in)) {
        unsigned op = fz_u8(&in) % 6;
        end *e = &ends[fz_u8(&in) & 1];
        if (op == 0) {
            fz_patch(&in, regions, 4);
        } else if (op == 5) {
            /* A process attaching anew reads the header and the config again. */
            if (fz_segment_open(base, SHMRING_HEADER_SIZE + made_size, SHMRING_KIND_CHANNEL, &payload_size) ==
                SHMRING_OK)
                end_open(e, payload, payload_size);
        } else if (op == 4) {
            ends_step(&in, c, e);
        } else if (!e->ok) {
            continue;
        } else if (op == 1) {
            if (e->producer)
                producer_step(&in, e);
            else
                consumer_step(&in, e);
        } else if (op == 2) {
            blocking_step(&in, e);
        } else {
            /* Not checked against its 1 / 0 / -1: on the writer's side it returns
             * the reader's closed flag as the peer wrote it (any non-zero value
             * means closed; see docs/RELIABILITY.md). */
            (void)shmring_channel_ready(&e->ch, e->producer, fz_range(&in, 0, 2 * cap));
        }
    }
    free(base);
    return 0;
}
