/*
 * fuzz_segment.c - the checks an opener makes before it uses a segment
 * (shmring/segment.h): the header against the size of the object behind
 * it, then the config of its kind's payload (the channel's attach, the
 * queue's and topic's config checks, an overflow chunk's stamp), and the
 * roster of attached processes.
 *
 * The object is `avail` bytes of heap memory (the st_size an opener sees:
 * the size the header states, or more, or less), holding a segment of a
 * kind made by that kind's init function.  The hostile peer may rewrite
 * any byte and recompute the checksum (it is not an authentication code).
 * Once the header passes, the payload checks run on a copy of exactly the
 * size the header states, so that a check reading past it is reported.
 */
#include "fuzz_common.h"

#define CHUNK_INDEX 3u
#define CHUNK_QUEUE_ID UINT64_C(0x5eed5eed5eed5eed)

/* Payload bytes the kind's init function needs for a ring of `cap` bytes. */
static uint64_t payload_for(uint32_t kind, uint64_t cap)
{
    switch (kind) {
    case SHMRING_KIND_CHANNEL: return shmring_channel_payload_size(cap);
    case SHMRING_KIND_QUEUE: return shmring_queue_payload_size(cap);
    case SHMRING_KIND_TOPIC: return shmring_topic_payload_size(cap * 2, 4);
    case SHMRING_KIND_QUEUE_CHUNK: return SHMRING_QUEUE_CHUNK_HEADER_SIZE + cap;
    default: return cap;
    }
}

/* Initialise the payload of a new segment of `kind`, as its creator does. */
static void init_payload(uint32_t kind, unsigned char *payload, uint64_t size)
{
    switch (kind) {
    case SHMRING_KIND_CHANNEL:
        (void)shmring_channel_init(payload, size, size - SHMRING_CHANNEL_CTRL_SIZE, SHMRING_WAIT_ADAPTIVE,
                                   SHMRING_CHANNEL_DEFAULT_SPIN_NS);
        break;
    case SHMRING_KIND_QUEUE:
        shmring_queue_init(payload, size - SHMRING_QUEUE_CTRL_SIZE, 0, 0, 0, 0600);
        break;
    case SHMRING_KIND_TOPIC:
        shmring_topic_init(payload, size - shmring_topic_data_offset(4), SHMRING_TOPIC_OVERWRITE, 4, 0);
        break;
    case SHMRING_KIND_QUEUE_CHUNK: {
        /* As the extension stamps a new chunk (the headers have no init). */
        shmring_queue_chunk *k = (shmring_queue_chunk *)(void *)payload;
        k->capacity = size - SHMRING_QUEUE_CHUNK_HEADER_SIZE;
        k->data_offset = SHMRING_QUEUE_CHUNK_HEADER_SIZE;
        k->index = CHUNK_INDEX;
        k->queue_id = CHUNK_QUEUE_ID;
        break;
    }
    default:
        break;
    }
}

/* The kind's own check of its payload, on `size` payload bytes. */
static void check_payload(uint32_t kind, unsigned char *base, uint64_t size)
{
    unsigned char *payload = base + SHMRING_HEADER_SIZE;
    switch (kind) {
    case SHMRING_KIND_CHANNEL: {
        shmring_channel ch;
        if (fz_rc(shmring_channel_attach(&ch, payload, size)) == SHMRING_OK)
            FZ_ASSERT(ch.data + ch.capacity <= payload + size);
        break;
    }
    case SHMRING_KIND_QUEUE: {
        shmring_queue_ctrl cfg;
        if (fz_rc(shmring_queue_check_config((const shmring_queue_ctrl *)(const void *)payload, size, &cfg)) ==
            SHMRING_OK)
            FZ_ASSERT(SHMRING_QUEUE_CTRL_SIZE + cfg.capacity <= size);
        (void)shmring_queue_id_of(base, (size_t)(SHMRING_HEADER_SIZE + size));
        break;
    }
    case SHMRING_KIND_TOPIC: {
        shmring_topic t;
        if (fz_rc(shmring_topic_attach(&t, payload, size)) == SHMRING_OK)
            FZ_ASSERT(t.data + t.capacity <= payload + size &&
                      (unsigned char *)(t.subs + t.max_subscribers) <= t.data);
        break;
    }
    case SHMRING_KIND_QUEUE_CHUNK: {
        uint64_t cap;
        if (fz_rc(shmring_queue_chunk_check((const shmring_queue_chunk *)(const void *)payload, size, CHUNK_INDEX,
                                            CHUNK_QUEUE_ID, &cap)) == SHMRING_OK)
            FZ_ASSERT(SHMRING_QUEUE_CHUNK_HEADER_SIZE + cap <= size);
        break;
    }
    default:
        break;
    }
}

/* Open the object as an opener does: the header, then the payload of the
 * kind the header names, on a copy of exactly the size it states. */
static void open_object(const unsigned char *obj, uint64_t avail)
{
    shmring_segment_header h;
    unsigned char *exact;
    if (fz_rc(shmring_header_check_copy((const shmring_segment_header *)(const void *)obj, avail, &h)) !=
        SHMRING_OK)
        return;
    FZ_ASSERT(h.total_size > SHMRING_HEADER_SIZE && h.total_size <= avail && h.kind >= 1 &&
              h.kind <= SHMRING_KIND_MAX);
    exact = (unsigned char *)malloc((size_t)h.total_size);
    FZ_ASSERT(exact != NULL);
    memcpy(exact, obj, (size_t)h.total_size);
    check_payload(h.kind, exact, h.total_size - SHMRING_HEADER_SIZE);
    free(exact);
}

/* Attach and leave through the roster (the header must have passed). */
static void roster_op(fz_input *in, unsigned char *obj, int *slot, uint64_t *token)
{
    if (*slot >= 0 || fz_u8(in) & 1) {
        shmring_roster_remove(obj, *slot, *token);
        *slot = -1;
        return;
    }
    *token = fz_u8(in) & 1 ? fz_token() : fz_take(in, 8);
    *slot = shmring_roster_add(obj, *token);
    FZ_ASSERT(*slot >= -1 && *slot < (int)SHMRING_ROSTER_SLOTS);
}

/* Names are untrusted too: a directory listing of /dev/shm. */
static void names_op(fz_input *in)
{
    char entry[24], name[24], out[NAME_MAX + 2];
    uint64_t index;
    size_t i, ne = fz_range(in, 0, sizeof entry - 1), nn = fz_range(in, 0, sizeof name - 1);
    for (i = 0; i < ne; i++)
        entry[i] = (char)fz_u8(in);
    entry[ne] = '\0';
    for (i = 0; i < nn; i++)
        name[i] = (char)fz_u8(in);
    name[nn] = '\0';
    (void)fz_rc(shmring_name_check(entry));
    if (shmring_queue_chunk_parse(entry, name, &index))
        (void)fz_rc(shmring_queue_chunk_name_keyed(name, fz_take(in, 8), fz_take(in, 8), index, out));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input in = {data, size, 0};
    uint32_t kind = (uint32_t)fz_range(&in, 1, SHMRING_KIND_MAX);
    uint64_t payload = fz_u8(&in) & 1 ? payload_for(kind, 64u << fz_range(&in, 0, 3)) : fz_range(&in, 1, 1024);
    uint64_t total = SHMRING_HEADER_SIZE + payload, avail, token = 0;
    unsigned char *made = fz_segment_new(kind, payload), *obj;
    int slot = -1;
    unsigned mode = fz_u8(&in) % 4;
    fz_region regions[3];

    /* A small payload is still made, unchecked: its creator's business. */
    if (payload >= payload_for(kind, 64))
        init_payload(kind, made + SHMRING_HEADER_SIZE, payload);
    avail = mode == 0 ? total : mode == 1 ? total + fz_u8(&in) : mode == 2 ? fz_take(&in, 2) % total : fz_u8(&in) % 16;
    obj = (unsigned char *)malloc(avail ? (size_t)avail : 1);
    FZ_ASSERT(obj != NULL);
    memset(obj, 0, (size_t)avail);
    memcpy(obj, made, (size_t)(avail < total ? avail : total));
    free(made);

    regions[0].base = obj; /* the header fields */
    regions[0].len = avail < SHMRING_HEADER_FIELDS_SIZE ? (size_t)avail : SHMRING_HEADER_FIELDS_SIZE;
    regions[1].base = obj; /* anywhere: the roster, the payload */
    regions[1].len = (size_t)avail;
    regions[2].base = obj + (avail > SHMRING_HEADER_SIZE ? SHMRING_HEADER_SIZE : 0); /* the payload's config */
    regions[2].len = avail > SHMRING_HEADER_SIZE ? (size_t)(avail - SHMRING_HEADER_SIZE) : (size_t)avail;
    if (regions[2].len > 128)
        regions[2].len = 128;

    while (fz_more(&in)) {
        unsigned op = fz_u8(&in) % 5;
        if (op == 0 && avail > 0) {
            fz_patch(&in, regions, 3);
        } else if (op == 1 && avail >= offsetof(shmring_segment_header, checksum) + 8) {
            shmring_segment_header *h = (shmring_segment_header *)(void *)obj;
            h->checksum = shmring_header_checksum(h); /* a hostile peer can recompute it */
        } else if (op == 2) {
            open_object(obj, avail);
        } else if (op == 3 && fz_rc(shmring_header_check((const shmring_segment_header *)(const void *)obj,
                                                          avail)) == SHMRING_OK) {
            roster_op(&in, obj, &slot, &token);
        } else if (op == 4) {
            names_op(&in);
        }
    }
    open_object(obj, avail);
    free(obj);
    return 0;
}
