/*
 * The value encoding of queue items (shmring/value.h): the reader takes
 * every kind, refuses every length that runs past the end, and the check
 * accepts exactly one value, tuples nested at most
 * SHMRING_VALUE_MAX_DEPTH deep.
 */
#include "helpers.h"

/* Append a kind letter and a 32-bit count at q; past them. */
static unsigned char *counted(unsigned char *q, char kind, uint32_t n)
{
    *q++ = (unsigned char)kind;
    memcpy(q, &n, 4);
    return q + 4;
}

static void the_reader_takes_every_kind(void)
{
    unsigned char buf[64], *q = buf;
    const unsigned char *p = buf;
    int64_t i = -5;
    double d = 0.25;
    shmring_value v;
    *q++ = 'N';
    *q++ = 'i';
    memcpy(q, &i, 8);
    q += 8;
    *q++ = 'd';
    memcpy(q, &d, 8);
    q += 8;
    q = counted(q, 's', 2);
    memcpy(q, "hi", 2);
    q += 2;
    q = counted(q, 't', 1);
    *q++ = 'T';
    CHECK_EQ(shmring_value_next(&p, q, &v), SHMRING_OK);
    CHECK_EQ(v.kind, 'N');
    CHECK_EQ(shmring_value_next(&p, q, &v), SHMRING_OK);
    CHECK(v.kind == 'i' && v.i == -5);
    CHECK_EQ(shmring_value_next(&p, q, &v), SHMRING_OK);
    CHECK(v.kind == 'd' && v.d == 0.25);
    CHECK_EQ(shmring_value_next(&p, q, &v), SHMRING_OK);
    CHECK(v.kind == 's' && v.n == 2 && memcmp(v.data, "hi", 2) == 0);
    CHECK_EQ(shmring_value_next(&p, q, &v), SHMRING_OK);
    CHECK(v.kind == 't' && v.n == 1);
    CHECK_EQ(shmring_value_next(&p, q, &v), SHMRING_OK);
    CHECK_EQ(v.kind, 'T');
    CHECK(p == q);
    CHECK_EQ(shmring_value_next(&p, q, &v), SHMRING_ERR_CORRUPT); /* nothing left */
}

static void lengths_past_the_end_are_refused(void)
{
    unsigned char buf[16];
    shmring_value v;
    const unsigned char *p;
    unsigned char *end = counted(buf, 'b', 3);
    memcpy(end, "ab", 2); /* one byte short */
    p = buf;
    CHECK_EQ(shmring_value_next(&p, end + 2, &v), SHMRING_ERR_CORRUPT);
    CHECK(p == buf); /* not moved */
    end = counted(buf, 't', 0xFFFFFFFFu);
    *end = 'N';
    p = buf;
    CHECK_EQ(shmring_value_next(&p, end + 1, &v), SHMRING_ERR_CORRUPT); /* more values than bytes */
    buf[0] = 'i';
    p = buf;
    CHECK_EQ(shmring_value_next(&p, buf + 8, &v), SHMRING_ERR_CORRUPT); /* 7 bytes of an int64 */
    buf[0] = '?';
    p = buf;
    CHECK_EQ(shmring_value_next(&p, buf + 16, &v), SHMRING_ERR_CORRUPT);
}

static void the_check_takes_exactly_one_value(void)
{
    unsigned char buf[256], *q;
    unsigned i;
    q = counted(buf, 't', 2);
    *q++ = 'N';
    q = counted(q, 't', 0);
    CHECK_EQ(shmring_value_check(buf, (uint64_t)(q - buf)), SHMRING_OK);
    *q++ = 'N'; /* a second value after the first */
    CHECK_EQ(shmring_value_check(buf, (uint64_t)(q - buf)), SHMRING_ERR_CORRUPT);
    CHECK_EQ(shmring_value_check(buf, 7), SHMRING_ERR_CORRUPT); /* the tuple cut short */
    CHECK_EQ(shmring_value_check(buf, 0), SHMRING_ERR_CORRUPT);
    /* 16 tuples deep is the most */
    q = buf;
    for (i = 0; i < SHMRING_VALUE_MAX_DEPTH; i++)
        q = counted(q, 't', 1);
    *q++ = 'F';
    CHECK_EQ(shmring_value_check(buf, (uint64_t)(q - buf)), SHMRING_OK);
    q = buf;
    for (i = 0; i < SHMRING_VALUE_MAX_DEPTH + 1; i++)
        q = counted(q, 't', 1);
    *q++ = 'F';
    CHECK_EQ(shmring_value_check(buf, (uint64_t)(q - buf)), SHMRING_ERR_CORRUPT);
}

int main(void)
{
    RUN(the_reader_takes_every_kind);
    RUN(lengths_past_the_end_are_refused);
    RUN(the_check_takes_exactly_one_value);
    return helpers_finish();
}
