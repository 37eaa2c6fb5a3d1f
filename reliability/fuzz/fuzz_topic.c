/*
 * fuzz_topic.c - the topic (shmring/topic.h) with a hostile peer:
 * publishing (the lock, making room under both policies, padding, the
 * commit), subscribers reading with their own cursors (next, still_valid,
 * oldest after falling behind, advance), the subscriber table (subscribe,
 * unsubscribe, the slowest cursor and the reaping of dead subscribers), and
 * the checks of a new opener, while the fuzzer rewrites the control block,
 * the subscriber table, the records and the header between them, and also
 * between a publisher's reserve and its commit.
 */
#include "fuzz_common.h"

#define MAX_SUBS 4u

typedef struct reader {
    int slot; /* -1: not subscribed */
    uint64_t cursor, next_seq;
} reader;

/* Subscribe as the extension does: the lock held, the cursor read back. */
static void subscribe(shmring_topic *t, reader *r)
{
    int rc = fz_rc(shmring_mutex_lock(&t->ctrl->lock, fz_token(), 0, 1000000u, FZ_PAST));
    if (rc == SHMRING_OWNER_DIED)
        rc = fz_rc(shmring_mutex_consistent(&t->ctrl->lock, fz_token()));
    if (rc != SHMRING_OK)
        return;
    r->slot = shmring_topic_subscribe(t, fz_token());
    FZ_ASSERT(r->slot >= -1 && r->slot < (int)t->max_subscribers);
    if (r->slot >= 0) {
        r->cursor = t->subs[r->slot].cursor;
        r->next_seq = t->subs[r->slot].next_seq;
    }
    (void)fz_rc(shmring_mutex_release(&t->ctrl->lock, fz_token()));
}

/* Read the next message as a subscriber does: find it, copy it, check the
 * copy was not reclaimed meanwhile, move on; after falling behind, resume
 * at the oldest message held. */
static void read_step(shmring_topic *t, reader *r)
{
    const unsigned char *p;
    uint64_t len, seq, size, pos;
    uint32_t tag;
    int rc = fz_rc(shmring_topic_next(t, &r->cursor, &tag, &p, &len, &seq, &size));
    if (rc == SHMRING_OK) {
        (void)fz_inside(t->data, (size_t)t->capacity, p, len);
        if (shmring_topic_still_valid(t, r->cursor) == SHMRING_OK) {
            r->cursor += size;
            r->next_seq = seq + 1;
        }
    } else if (rc == SHMRING_GAP) {
        uint64_t missed = 0;
        (void)fz_inside(t->data, (size_t)t->capacity, p, len);
        if (fz_rc(shmring_topic_gap_count(t, r->cursor, p, seq, &missed)) == SHMRING_OK) {
            FZ_ASSERT(missed >= 1 && missed <= UINT64_MAX - seq);
            r->cursor += size;
            r->next_seq = seq + missed;
        }
    } else if (rc == SHMRING_LAGGED && fz_rc(shmring_topic_oldest(t, &pos, &seq)) == SHMRING_OK) {
        r->cursor = pos;
        r->next_seq = seq;
    }
    if (shmring_topic_advance(t, r->slot, r->cursor, r->next_seq))
        shmring_topic_wake_publishers(t);
}

/* Publish as the extension does: reserve under the lock (waiting for room
 * until a deadline passed or close), write, commit, release, wake.  The peer
 * may write between the reserve and the commit. */
static void publish_step(fz_input *in, shmring_topic *t, const fz_region *regions, unsigned nregions)
{
    uint64_t len = fz_range(in, 0, t->capacity), pos;
    uint32_t tag = fz_u8(in) & 1 ? SHMRING_REC_BYTES : SHMRING_REC_OBJECT;
    unsigned char *dst;
    int wake;
    if (fz_u8(in) % 4 == 0) { /* a gap marker now and then, of any count */
        (void)fz_rc(shmring_topic_publish_gap(t, fz_token(), fz_u8(in) & 1 ? fz_range(in, 0, 3) : UINT64_MAX,
                                              fz_deadline(in)));
        return;
    }
    if (fz_rc(shmring_topic_reserve_wait(t, fz_token(), tag, len, fz_deadline(in), &dst, &pos)) != SHMRING_OK)
        return;
    (void)fz_inside(t->data, (size_t)t->capacity, dst, len);
    memset(dst, 0x42, (size_t)len);
    if (fz_u8(in) & 1)
        fz_patch(in, regions, nregions);
    wake = shmring_topic_commit(t, pos);
    (void)fz_rc(shmring_mutex_release(&t->ctrl->lock, fz_token()));
    if (wake)
        shmring_topic_wake_subscribers(t);
}

/* The table under the lock: the slowest cursor (reaping the dead), room. */
static void table_step(fz_input *in, shmring_topic *t)
{
    uint64_t tail;
    if (fz_rc(shmring_mutex_lock(&t->ctrl->lock, fz_token(), 0, 1000000u, FZ_PAST)) != SHMRING_OK)
        return;
    tail = t->ctrl->tail;
    if (fz_u8(in) & 1)
        (void)shmring_topic_min_cursor(t, tail, 1);
    else
        (void)fz_rc(shmring_topic_make_room(t, tail, 16 * fz_range(in, 1, 16), (int)(fz_u8(in) & 1)));
    (void)fz_rc(shmring_mutex_release(&t->ctrl->lock, fz_token()));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input in = {data, size, 0};
    uint64_t cap = 16 * fz_range(&in, 8, 64), opened_size;
    uint32_t subs = (uint32_t)fz_range(&in, 1, MAX_SUBS);
    uint32_t policy = fz_u8(&in) & 1 ? SHMRING_TOPIC_OVERWRITE : SHMRING_TOPIC_BLOCK;
    uint64_t payload_size = shmring_topic_payload_size(cap, subs);
    unsigned char *base = fz_segment_new(SHMRING_KIND_TOPIC, payload_size), *payload = base + SHMRING_HEADER_SIZE;
    shmring_topic t, again;
    reader readers[MAX_SUBS];
    fz_region regions[5];
    unsigned i, n;

    shmring_topic_init(payload, cap, policy, subs, 0);
    FZ_ASSERT(shmring_topic_attach(&t, payload, payload_size) == SHMRING_OK);
    for (i = 0; i < MAX_SUBS; i++) {
        readers[i].slot = -1;
        if (i < subs && fz_u8(&in) & 1)
            subscribe(&t, &readers[i]);
    }
    n = (unsigned)fz_range(&in, 0, 12);
    for (i = 0; i < n; i++) {
        unsigned char msg[96];
        memset(msg, (int)i, sizeof msg);
        (void)fz_rc(shmring_topic_publish(&t, fz_token(), SHMRING_REC_BYTES, msg, fz_range(&in, 0, sizeof msg),
                                          FZ_PAST));
    }

    regions[0].base = payload; /* the control block, twice as likely */
    regions[0].len = SHMRING_TOPIC_CTRL_SIZE;
    regions[1] = regions[0];
    regions[2].base = (unsigned char *)t.subs; /* the subscriber table */
    regions[2].len = subs * sizeof(shmring_topic_sub);
    regions[3].base = t.data; /* the records */
    regions[3].len = (size_t)cap;
    regions[4].base = base; /* the header fields */
    regions[4].len = SHMRING_HEADER_FIELDS_SIZE;

    while (fz_more(&in)) {
        unsigned op = fz_u8(&in) % 6;
        reader *r = &readers[fz_u8(&in) % MAX_SUBS];
        if (op == 0) {
            fz_patch(&in, regions, 5);
        } else if (op == 1) {
            publish_step(&in, &t, regions, 5);
        } else if (op == 2 && r->slot >= 0) {
            read_step(&t, r);
        } else if (op == 3) {
            if (r->slot >= 0) {
                shmring_topic_unsubscribe(&t, r->slot, fz_token());
                r->slot = -1;
            } else if (r - readers < (long)subs) {
                subscribe(&t, r);
            }
        } else if (op == 4) {
            table_step(&in, &t);
        } else if (op == 5 && fz_segment_open(base, SHMRING_HEADER_SIZE + payload_size, SHMRING_KIND_TOPIC,
                                              &opened_size) == SHMRING_OK &&
                   fz_rc(shmring_topic_attach(&again, payload, opened_size)) == SHMRING_OK) {
            /* A new opener: the header, then the config, read once. */
            FZ_ASSERT(again.data + again.capacity <= payload + opened_size);
        }
    }
    free(base);
    return 0;
}
