/*
 * The array message (shmring/array.h): the header a writer lays out, the
 * item sizes of the type strings, and a reader that refuses every field
 * that does not add up, at any alignment of the message.
 */
#include "helpers.h"

#define MSG_MAX 4096

/* A 3x4 float32 array message, C order, written at `msg`: its length. */
static uint64_t write_floats(unsigned char *msg)
{
    const uint64_t shape[2] = {3, 4};
    float v[12];
    unsigned i;
    for (i = 0; i < 12; i++)
        v[i] = (float)i * 0.5f;
    CHECK_EQ(shmring_array_write_header(msg, "<f4", 'C', 2, shape), SHMRING_OK);
    memcpy(msg + shmring_array_data_offset(2), v, sizeof v);
    return shmring_array_data_offset(2) + sizeof v;
}

static void the_data_starts_at_sixteen_bytes_past_the_shape(void)
{
    CHECK_EQ(sizeof(shmring_array_header), 32);
    CHECK_EQ(shmring_array_data_offset(0), 32);
    CHECK_EQ(shmring_array_data_offset(1), 48);
    CHECK_EQ(shmring_array_data_offset(2), 48);
    CHECK_EQ(shmring_array_data_offset(3), 64);
    CHECK_EQ(shmring_array_data_offset(32), 288);
}

static void item_sizes_follow_the_type_strings(void)
{
    CHECK_EQ(shmring_array_itemsize("<f4\0\0\0\0\0"), 4);
    CHECK_EQ(shmring_array_itemsize("|u1\0\0\0\0\0"), 1);
    CHECK_EQ(shmring_array_itemsize("|b1\0\0\0\0\0"), 1);
    CHECK_EQ(shmring_array_itemsize(">c16\0\0\0\0"), 16);
    CHECK_EQ(shmring_array_itemsize("<U5\0\0\0\0\0"), 20);
    CHECK_EQ(shmring_array_itemsize("|S10\0\0\0\0"), 10);
    CHECK_EQ(shmring_array_itemsize("<M8[ns]\0"), 8);
    CHECK_EQ(shmring_array_itemsize("<m8\0\0\0\0\0"), 8);
    CHECK_EQ(shmring_array_itemsize("<M8[D]\0\0"), 8);
    CHECK_EQ(shmring_array_itemsize("<m8[2s]\0"), 8);
    /* refused: objects, structures, no size, a zero size, units on a
     * number, an unclosed unit, garbage after the size, no byte order */
    CHECK_EQ(shmring_array_itemsize("|O8\0\0\0\0\0"), 0);
    CHECK_EQ(shmring_array_itemsize("|V12\0\0\0\0"), 0);
    CHECK_EQ(shmring_array_itemsize("<f\0\0\0\0\0\0"), 0);
    CHECK_EQ(shmring_array_itemsize("<f0\0\0\0\0\0"), 0);
    CHECK_EQ(shmring_array_itemsize("<f4[ns]\0"), 0);
    CHECK_EQ(shmring_array_itemsize("<M8[nsxx"), 0);
    CHECK_EQ(shmring_array_itemsize("<M8[n-]\0"), 0);
    CHECK_EQ(shmring_array_itemsize("<f4x\0\0\0\0"), 0);
    CHECK_EQ(shmring_array_itemsize("f4\0\0\0\0\0\0"), 0);
}

static void a_written_message_checks_out_at_any_alignment(void)
{
    unsigned char *mem = (unsigned char *)helpers_memory(MSG_MAX + 8);
    shmring_array_header h;
    uint64_t shape[SHMRING_ARRAY_MAX_NDIM];
    unsigned shift;
    for (shift = 0; shift < 8; shift++) {
        uint64_t len = write_floats(mem + shift);
        float first_row[4];
        CHECK_EQ(shmring_array_check(mem + shift, len, &h, shape), SHMRING_OK);
        CHECK_EQ(h.ndim, 2);
        CHECK_EQ(h.order, 'C');
        CHECK_EQ(shape[0], 3);
        CHECK_EQ(shape[1], 4);
        CHECK_EQ(h.nbytes, 48);
        CHECK(memcmp(h.typestr, "<f4", 4) == 0);
        memcpy(first_row, mem + shift + h.data_offset, sizeof first_row);
        CHECK(first_row[3] == 1.5f);
    }
}

static void every_field_that_does_not_add_up_is_refused(void)
{
    unsigned char *msg = (unsigned char *)helpers_memory(MSG_MAX);
    unsigned char saved[MSG_MAX];
    shmring_array_header h;
    uint64_t shape[SHMRING_ARRAY_MAX_NDIM], big;
    uint64_t len = write_floats(msg);
    memcpy(saved, msg, MSG_MAX);
#define REFUSED_WITH(offset, byte)                                         \
    do {                                                                   \
        memcpy(msg, saved, MSG_MAX);                                       \
        msg[offset] = (unsigned char)(byte);                               \
        CHECK_EQ(shmring_array_check(msg, len, &h, shape), SHMRING_ERR_CORRUPT); \
    } while (0)
    REFUSED_WITH(0, 'X');  /* magic */
    REFUSED_WITH(4, 2);    /* version */
    REFUSED_WITH(5, 33);   /* ndim over the limit */
    REFUSED_WITH(5, 1);    /* ndim that moves the data offset */
    REFUSED_WITH(5, 3);
    REFUSED_WITH(6, 'A');  /* order */
    REFUSED_WITH(7, 1);    /* reserved */
    REFUSED_WITH(9, 'O');  /* typestr: objects */
    REFUSED_WITH(10, '8'); /* typestr: another item size */
    REFUSED_WITH(16, 64);  /* data offset */
    REFUSED_WITH(24, 47);  /* nbytes */
    REFUSED_WITH(32, 4);   /* shape[0]: 4x4 is not 48 bytes */
#undef REFUSED_WITH
    memcpy(msg, saved, MSG_MAX);
    CHECK_EQ(shmring_array_check(msg, len - 1, &h, shape), SHMRING_ERR_CORRUPT); /* shorter */
    CHECK_EQ(shmring_array_check(msg, len + 4, &h, shape), SHMRING_ERR_CORRUPT); /* longer */
    CHECK_EQ(shmring_array_check(msg, 31, &h, shape), SHMRING_ERR_CORRUPT);      /* not even a header */
    /* shapes whose product overflows 64 bits must not wrap to the length */
    big = UINT64_C(1) << 62;
    memcpy(msg + 32, &big, 8);
    memcpy(msg + 40, &big, 8);
    CHECK_EQ(shmring_array_check(msg, len, &h, shape), SHMRING_ERR_CORRUPT);
}

static void empty_and_zero_dimensional_arrays(void)
{
    unsigned char *msg = (unsigned char *)helpers_memory(MSG_MAX);
    shmring_array_header h;
    uint64_t shape[SHMRING_ARRAY_MAX_NDIM];
    const uint64_t empty[2] = {0, 5};
    CHECK_EQ(shmring_array_write_header(msg, "<f8", 'F', 2, empty), SHMRING_OK);
    CHECK_EQ(shmring_array_check(msg, shmring_array_data_offset(2), &h, shape), SHMRING_OK);
    CHECK_EQ(h.nbytes, 0);
    CHECK_EQ(h.order, 'F');
    CHECK_EQ(shmring_array_write_header(msg, "<i8", 'C', 0, NULL), SHMRING_OK);
    CHECK_EQ(shmring_array_check(msg, 32 + 8, &h, shape), SHMRING_OK);
    CHECK_EQ(h.ndim, 0);
    CHECK_EQ(h.nbytes, 8);
    {   /* a zero dimension anywhere makes it empty (the others within bounds) */
        const uint64_t zero_last[3] = {2, 7, 0}, huge_then_zero[2] = {UINT64_C(1) << 40, 0};
        uint64_t n = 1;
        CHECK_EQ(shmring_array_nbytes(4, 3, zero_last, &n), SHMRING_OK);
        CHECK_EQ(n, 0);
        CHECK_EQ(shmring_array_nbytes(4, 2, huge_then_zero, &n), SHMRING_OK);
        CHECK_EQ(n, 0);
        CHECK_EQ(shmring_array_write_header(msg, "|b1", 'C', 3, zero_last), SHMRING_OK);
        CHECK_EQ(shmring_array_check(msg, shmring_array_data_offset(3), &h, shape), SHMRING_OK);
    }
    {   /* no dimension, nor product, beyond what an array index holds */
        const uint64_t too_long[1] = {(uint64_t)INT64_MAX + 1};
        const uint64_t too_many[2] = {UINT64_C(1) << 31, UINT64_C(1) << 31};
        uint64_t n;
        CHECK_EQ(shmring_array_nbytes(1, 1, too_long, &n), SHMRING_ERR_ARG);
        CHECK_EQ(shmring_array_nbytes(4, 2, too_many, &n), SHMRING_ERR_ARG); /* 2**64 bytes */
        CHECK_EQ(shmring_array_nbytes(1, 2, too_many, &n), SHMRING_OK);
        CHECK_EQ(n, UINT64_C(1) << 62);
    }
}

static void the_writer_refuses_what_no_reader_takes(void)
{
    unsigned char *msg = (unsigned char *)helpers_memory(MSG_MAX);
    const uint64_t shape[2] = {UINT64_C(1) << 62, 8};
    CHECK_EQ(shmring_array_write_header(msg, "|O8", 'C', 1, shape), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_array_write_header(msg, "<f4", 'X', 1, shape), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_array_write_header(msg, "<f4", 'C', 33, shape), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_array_write_header(msg, "<M8[ns]xx", 'C', 1, shape), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_array_write_header(msg, "<f4", 'C', 2, shape), SHMRING_ERR_ARG); /* 2**65 elements */
}

int main(void)
{
    RUN(the_data_starts_at_sixteen_bytes_past_the_shape);
    RUN(item_sizes_follow_the_type_strings);
    RUN(a_written_message_checks_out_at_any_alignment);
    RUN(every_field_that_does_not_add_up_is_refused);
    RUN(empty_and_zero_dimensional_arrays);
    RUN(the_writer_refuses_what_no_reader_takes);
    return helpers_finish();
}
