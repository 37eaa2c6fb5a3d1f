/*
 * shmring/oob.h - the out-of-band record of a queue (record tag
 * SHMRING_REC_OOB, 'M'): a serialized stream (for Python, a pickle of
 * protocol 5) and the raw buffers it refers to (an array's elements),
 * each buffer written once, straight from where it lies, and read once.
 * A queue writes such records only when its SHMRING_QUEUE_OOB flag is set;
 * docs/PROTOCOL.md section 5.2.
 *
 * The payload (integers in native byte order, offsets from the start of
 * the payload):
 *
 *   0              u32 nbuf        buffers: at least 1
 *   4              u32 stream_len  bytes of the stream
 *   8              nbuf entries {u32 len, u32 flags}, one per buffer, in order
 *   8 + 8 * nbuf   the stream (stream_len bytes)
 *   then each buffer, in order, at the first multiple of SHMRING_OOB_ALIGN
 *   (64) at or after the end of what precedes it (the stream, or the
 *   previous buffer); the bytes skipped are zero.  The payload ends exactly
 *   at the end of the last buffer.
 *
 * Entry flags: bit 0 SHMRING_OOB_READONLY, the buffer was read-only where
 * it came from (a reader in Python hands the stream a bytes object for it,
 * a bytearray otherwise); other bits are zero.
 *
 * In a ring a payload starts at an 8-byte aligned address, so the buffers
 * are 8-byte aligned there; a reader that copies the payload to a 64-byte
 * aligned address (shmring_queue_get into such a buffer) has every buffer
 * 64-byte aligned.  Plain bytes in a record: no atomics.  A reader checks
 * every count and length against the payload's length before it uses it
 * (shmring_oob_open, shmring_oob_next), reading each field once.
 */
#ifndef SHMRING_OOB_H
#define SHMRING_OOB_H

#include "base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHMRING_OOB_ALIGN 64u
#define SHMRING_OOB_HEADER_SIZE 8u /* nbuf, stream_len */
#define SHMRING_OOB_ENTRY_SIZE 8u  /* len, flags */
#define SHMRING_OOB_READONLY 1u    /* entry flags: the buffer was read-only at its writer */
#define SHMRING_OOB_FLAGS_KNOWN 1u

/* Where the stream of a record of `nbuf` buffers starts. */
static inline uint64_t shmring_oob_stream_offset(uint64_t nbuf)
{
    return SHMRING_OOB_HEADER_SIZE + SHMRING_OOB_ENTRY_SIZE * nbuf;
}

/* Where a buffer goes that follows bytes ending at `end`. */
static inline uint64_t shmring_oob_buffer_offset(uint64_t end)
{
    return (end + (SHMRING_OOB_ALIGN - 1u)) & ~(uint64_t)(SHMRING_OOB_ALIGN - 1u);
}

/* Payload bytes of a record: the stream and `nbuf` buffers of `buf_len[i]`
 * bytes.  The caller checks the result against the record limit
 * (UINT32_MAX). */
static inline uint64_t shmring_oob_size(uint32_t nbuf, uint64_t stream_len, const uint64_t *buf_len)
{
    uint64_t end = shmring_oob_stream_offset(nbuf) + stream_len;
    uint32_t i;
    for (i = 0; i < nbuf; i++)
        end = shmring_oob_buffer_offset(end) + buf_len[i];
    return end;
}

/* Write the header of a record of `nbuf` buffers and a stream of
 * `stream_len` bytes at `payload` (the entries, the stream and the buffers
 * follow: shmring_oob_write_entry, shmring_oob_stream_offset,
 * shmring_oob_buffer_offset). */
static inline void shmring_oob_write_header(void *payload, uint32_t nbuf, uint32_t stream_len)
{
    unsigned char *p = (unsigned char *)payload;
    memcpy(p, &nbuf, 4);
    memcpy(p + 4, &stream_len, 4);
}

/* Write entry `i`: buffer i has `len` bytes and `flags` (SHMRING_OOB_*). */
static inline void shmring_oob_write_entry(void *payload, uint32_t i, uint32_t len, uint32_t flags)
{
    unsigned char *p = (unsigned char *)payload + SHMRING_OOB_HEADER_SIZE + (uint64_t)SHMRING_OOB_ENTRY_SIZE * i;
    memcpy(p, &len, 4);
    memcpy(p + 4, &flags, 4);
}

/* A record being read: the stream, then the buffers one at a time. */
typedef struct shmring_oob_reader {
    const unsigned char *payload;
    uint64_t len;                /* payload bytes */
    uint32_t nbuf;               /* buffers (checked against len) */
    uint32_t next;               /* the buffer shmring_oob_next reads */
    const unsigned char *stream; /* the stream and its length */
    uint64_t stream_len;
    uint64_t end; /* end of the stream or of the last buffer read */
} shmring_oob_reader;

/* Start reading the record of `len` bytes at `payload`: SHMRING_OK with the
 * stream in r->stream and r->stream_len, or SHMRING_ERR_CORRUPT when the
 * header does not fit, nbuf is 0 or more entries than the payload holds,
 * or the stream runs past the end. */
static inline int shmring_oob_open(shmring_oob_reader *r, const void *payload, uint64_t len)
{
    uint32_t nbuf, stream_len;
    memset(r, 0, sizeof *r);
    if (len < SHMRING_OOB_HEADER_SIZE)
        return SHMRING_ERR_CORRUPT;
    memcpy(&nbuf, payload, 4); /* each field read once: the mapping is untrusted */
    memcpy(&stream_len, (const unsigned char *)payload + 4, 4);
    if (nbuf == 0 || nbuf > (len - SHMRING_OOB_HEADER_SIZE) / SHMRING_OOB_ENTRY_SIZE ||
        stream_len > len - shmring_oob_stream_offset(nbuf))
        return SHMRING_ERR_CORRUPT;
    r->payload = (const unsigned char *)payload;
    r->len = len;
    r->nbuf = nbuf;
    r->stream = r->payload + shmring_oob_stream_offset(nbuf);
    r->stream_len = stream_len;
    r->end = shmring_oob_stream_offset(nbuf) + stream_len;
    return SHMRING_OK;
}

/* The next buffer: SHMRING_OK with its bytes in *data, *len and its flags
 * in *flags; SHMRING_AGAIN when every buffer was read; SHMRING_ERR_CORRUPT
 * for unknown flags, a buffer that runs past the payload, or (at the last
 * one) a payload that does not end with it. */
static inline int shmring_oob_next(shmring_oob_reader *r, const unsigned char **data, uint64_t *len,
                                   uint32_t *flags)
{
    const unsigned char *entry;
    uint32_t blen, bflags;
    uint64_t at;
    if (r->next >= r->nbuf)
        return SHMRING_AGAIN;
    entry = r->payload + SHMRING_OOB_HEADER_SIZE + (uint64_t)SHMRING_OOB_ENTRY_SIZE * r->next;
    memcpy(&blen, entry, 4);
    memcpy(&bflags, entry + 4, 4);
    at = shmring_oob_buffer_offset(r->end);
    if ((bflags & ~SHMRING_OOB_FLAGS_KNOWN) != 0 || at > r->len || blen > r->len - at)
        return SHMRING_ERR_CORRUPT;
    if (r->next + 1 == r->nbuf && at + blen != r->len)
        return SHMRING_ERR_CORRUPT; /* bytes after the last buffer */
    r->next++;
    r->end = at + blen;
    *data = r->payload + at;
    *len = blen;
    *flags = bflags;
    return SHMRING_OK;
}

/* Check a whole record: SHMRING_OK or SHMRING_ERR_CORRUPT. */
static inline int shmring_oob_check(const void *payload, uint64_t len)
{
    shmring_oob_reader r;
    const unsigned char *data;
    uint64_t blen;
    uint32_t flags;
    int rc = shmring_oob_open(&r, payload, len);
    while (rc == SHMRING_OK)
        rc = shmring_oob_next(&r, &data, &blen, &flags);
    return rc == SHMRING_AGAIN ? SHMRING_OK : SHMRING_ERR_CORRUPT;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_OOB_H */
