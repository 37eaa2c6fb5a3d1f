/*
 * The out-of-band record of a queue (shmring/oob.h): a record written with
 * the helpers reads back piece by piece, each buffer at a multiple of 64
 * from the payload's start; the reader refuses every count and length that
 * does not fit the payload, and every payload that does not end exactly
 * with its last buffer.
 */
#include "helpers.h"

#define NBUF 3u

static const uint64_t LENS[NBUF] = {100, 0, 4096};
static const uint32_t FLAGS[NBUF] = {0, SHMRING_OOB_READONLY, 0};
static const char STREAM[] = "a stream of 27 bytes, say.";

/* Write the record of STREAM and NBUF buffers of LENS (buffer i filled
 * with seed i) at `p` as a writer does; its length. */
static uint64_t write_record(unsigned char *p)
{
    uint64_t end = shmring_oob_stream_offset(NBUF) + sizeof STREAM;
    unsigned i;
    shmring_oob_write_header(p, NBUF, (uint32_t)sizeof STREAM);
    memcpy(p + shmring_oob_stream_offset(NBUF), STREAM, sizeof STREAM);
    for (i = 0; i < NBUF; i++) {
        uint64_t at = shmring_oob_buffer_offset(end);
        shmring_oob_write_entry(p, i, (uint32_t)LENS[i], FLAGS[i]);
        memset(p + end, 0, (size_t)(at - end));
        helpers_fill(p + at, LENS[i], i);
        end = at + LENS[i];
    }
    return end;
}

static void a_record_reads_back_piece_by_piece_each_buffer_aligned_to_64(void)
{
    unsigned char *p = helpers_memory(8192);
    uint64_t len = write_record(p), blen = 0;
    const unsigned char *data = NULL;
    shmring_oob_reader r;
    uint32_t flags = 0;
    unsigned i;
    CHECK_EQ(len, shmring_oob_size(NBUF, sizeof STREAM, LENS));
    CHECK_EQ(shmring_oob_check(p, len), SHMRING_OK);
    CHECK_EQ(shmring_oob_open(&r, p, len), SHMRING_OK);
    CHECK_EQ(r.nbuf, NBUF);
    CHECK_EQ(r.stream_len, sizeof STREAM);
    CHECK(r.stream == p + 8 + 8 * NBUF && memcmp(r.stream, STREAM, sizeof STREAM) == 0);
    for (i = 0; i < NBUF; i++) {
        CHECK_EQ(shmring_oob_next(&r, &data, &blen, &flags), SHMRING_OK);
        CHECK_EQ(blen, LENS[i]);
        CHECK_EQ(flags, FLAGS[i]);
        CHECK_EQ((uint64_t)(data - p) % SHMRING_OOB_ALIGN, 0);
        CHECK(helpers_pattern_ok(data, blen, i));
    }
    CHECK_EQ(shmring_oob_next(&r, &data, &blen, &flags), SHMRING_AGAIN);
    /* 8 + 24 + 27 = 59 -> buffer 0 at 64 (100 bytes) -> buffer 1 at 192 (empty) -> buffer 2 at 192 */
    CHECK_EQ(len, 192 + 4096);
}

static void every_truncation_and_every_extra_byte_is_refused(void)
{
    unsigned char *p = helpers_memory(8192);
    uint64_t len = write_record(p), cut;
    for (cut = 0; cut < len; cut++)
        CHECK_EQ(shmring_oob_check(p, cut), SHMRING_ERR_CORRUPT);
    CHECK_EQ(shmring_oob_check(p, len + 1), SHMRING_ERR_CORRUPT);
    CHECK_EQ(shmring_oob_check(p, len + 64), SHMRING_ERR_CORRUPT);
}

/* Overwrite the u32 at `offset` of a fresh record; the check's result. */
static int check_with(unsigned char *p, uint64_t offset, uint32_t value)
{
    uint64_t len = write_record(p);
    memcpy(p + offset, &value, 4);
    return shmring_oob_check(p, len);
}

static void counts_lengths_and_flags_that_do_not_fit_are_refused(void)
{
    unsigned char *p = helpers_memory(8192);
    uint64_t entry0 = SHMRING_OOB_HEADER_SIZE, entry2 = entry0 + 2 * SHMRING_OOB_ENTRY_SIZE;
    CHECK_EQ(check_with(p, 0, 0), SHMRING_ERR_CORRUPT);           /* no buffer */
    CHECK_EQ(check_with(p, 0, UINT32_MAX), SHMRING_ERR_CORRUPT);  /* more entries than bytes */
    CHECK_EQ(check_with(p, 0, 2), SHMRING_ERR_CORRUPT);           /* fewer: bytes left over */
    CHECK_EQ(check_with(p, 0, 4), SHMRING_ERR_CORRUPT);           /* more */
    CHECK_EQ(check_with(p, 4, UINT32_MAX), SHMRING_ERR_CORRUPT);  /* the stream past the end */
    CHECK_EQ(check_with(p, 4, 5000), SHMRING_ERR_CORRUPT);
    CHECK_EQ(check_with(p, 4, 40), SHMRING_ERR_CORRUPT);          /* longer: the buffers move, the last past the end */
    CHECK_EQ(check_with(p, entry0, UINT32_MAX), SHMRING_ERR_CORRUPT); /* a buffer past the end */
    CHECK_EQ(check_with(p, entry0, 200), SHMRING_ERR_CORRUPT);
    CHECK_EQ(check_with(p, entry2, 4095), SHMRING_ERR_CORRUPT);   /* the last one short of the end */
    CHECK_EQ(check_with(p, entry2 + 4, 2), SHMRING_ERR_CORRUPT);  /* an unknown flag */
    CHECK_EQ(check_with(p, entry0 + 4, 0x80000000u), SHMRING_ERR_CORRUPT);
    CHECK_EQ(check_with(p, entry2, 0), SHMRING_ERR_CORRUPT);      /* the bytes after it left over */
}

static void a_reader_stops_at_the_first_buffer_that_does_not_fit(void)
{
    unsigned char *p = helpers_memory(8192);
    uint64_t len = write_record(p), blen = 0;
    uint32_t bad = 1u << 20, flags = 0;
    const unsigned char *data = NULL;
    shmring_oob_reader r;
    memcpy(p + SHMRING_OOB_HEADER_SIZE + SHMRING_OOB_ENTRY_SIZE, &bad, 4); /* buffer 1 */
    CHECK_EQ(shmring_oob_open(&r, p, len), SHMRING_OK);
    CHECK_EQ(shmring_oob_next(&r, &data, &blen, &flags), SHMRING_OK);
    CHECK_EQ(shmring_oob_next(&r, &data, &blen, &flags), SHMRING_ERR_CORRUPT);
    CHECK_EQ(r.next, 1); /* not moved past it */
}

static void a_header_shorter_than_8_bytes_is_refused_before_it_is_read(void)
{
    unsigned char *p = helpers_memory(64);
    shmring_oob_reader r;
    uint64_t len;
    for (len = 0; len < SHMRING_OOB_HEADER_SIZE; len++)
        CHECK_EQ(shmring_oob_open(&r, p, len), SHMRING_ERR_CORRUPT);
}

int main(void)
{
    RUN(a_record_reads_back_piece_by_piece_each_buffer_aligned_to_64);
    RUN(every_truncation_and_every_extra_byte_is_refused);
    RUN(counts_lengths_and_flags_that_do_not_fit_are_refused);
    RUN(a_reader_stops_at_the_first_buffer_that_does_not_fit);
    RUN(a_header_shorter_than_8_bytes_is_refused_before_it_is_read);
    return helpers_finish();
}
