/*
 * shmring/record.h - what the three rings have in common: records start
 * with a length and a tag, at aligned offsets, and never wrap around the
 * end of a ring (a padding record fills the rest, and the record starts
 * again at offset 0).
 *
 * The channel (shmring/channel.h) and the queue (shmring/queue.h) use the
 * 8-byte record header below at 8-byte aligned offsets; the topic
 * (shmring/topic.h) extends it with a message number to 16 bytes at
 * 16-byte aligned offsets (shmring_topic_record).  The tags are shared.
 */
#ifndef SHMRING_RECORD_H
#define SHMRING_RECORD_H

#include "base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every record of a channel or queue starts with this 8-byte header at an
 * 8-byte aligned offset. */
typedef struct shmring_record {
    uint32_t len; /* payload bytes (data records); bytes after the header (PAD) */
    uint32_t tag; /* SHMRING_REC_* */
} shmring_record;
SHMRING_STATIC_ASSERT(sizeof(shmring_record) == 8, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_record, tag) == 4, "layout");

#define SHMRING_REC_DATA 0x52u   /* 'R': a channel message */
#define SHMRING_REC_PAD 0x50u    /* 'P': filler up to the end of the ring (every ring) */
#define SHMRING_REC_OBJECT 0x4Fu /* 'O': a serialized object (queue, topic) */
#define SHMRING_REC_BYTES 0x42u  /* 'B': raw bytes (queue put_bytes, topic) */
#define SHMRING_REC_VALUE 0x56u  /* 'V': a value-encoded object (queue; shmring/value.h) */
#define SHMRING_REC_OOB 0x4Du    /* 'M': a stream and its out-of-band buffers (queue; shmring/oob.h) */
#define SHMRING_REC_GAP 0x47u    /* 'G': a gap marker, messages lost before they reached the ring (topic) */

static inline uint64_t shmring_align8(uint64_t n)
{
    return (n + 7u) & ~(uint64_t)7u;
}

/* Ring bytes one record of `len` payload bytes takes in a channel or a
 * queue (without the padding that may precede it). */
static inline uint64_t shmring_record_size(uint64_t len)
{
    return sizeof(shmring_record) + shmring_align8(len);
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_RECORD_H */
