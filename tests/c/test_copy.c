/*
 * The streaming copy of large messages into a ring (shmring/copy.h): the
 * same bytes as memcpy for every length and alignment around its 16-byte
 * and 64-byte steps, nothing written outside the destination, and the
 * choice between the two copies.
 */
#include "helpers.h"

#include <stdlib.h>

#define AREA 4096u
#define GUARD 64u

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    size_t i;
    for (i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 131u + seed * 17u + 7u) & 0xFFu);
}

static void a_streamed_copy_is_memcpy_for_every_length_and_alignment(void)
{
    unsigned char *src = malloc(AREA + GUARD), *dst = malloc(AREA + 2 * GUARD);
    size_t len, doff, soff, i;
    CHECK(src != NULL && dst != NULL);
    fill(src, AREA + GUARD, 1);
    for (doff = 0; doff < 24; doff += 5)
        for (soff = 0; soff < 24; soff += 7)
            for (len = 0; len + soff <= AREA && len + doff + GUARD <= AREA; len += len < 300 ? 1 : 61) {
                memset(dst, 0xEE, AREA + 2 * GUARD);
                shmring_copy_streaming(dst + GUARD + doff, src + soff, len);
                CHECK(memcmp(dst + GUARD + doff, src + soff, len) == 0);
                for (i = 0; i < GUARD + doff; i++)
                    CHECK_EQ(dst[i], 0xEE);
                for (i = GUARD + doff + len; i < AREA + 2 * GUARD; i++)
                    CHECK_EQ(dst[i], 0xEE);
            }
    free(src);
    free(dst);
}

static void only_large_messages_into_large_rings_are_streamed(void)
{
    CHECK_EQ(shmring_copy_should_stream(SHMRING_STREAM_RING_MIN, SHMRING_STREAM_MIN), SHMRING_HAVE_STREAMING_COPY);
    CHECK_EQ(shmring_copy_should_stream(SHMRING_STREAM_RING_MIN, SHMRING_STREAM_MIN - 1), 0);
    CHECK_EQ(shmring_copy_should_stream(SHMRING_STREAM_RING_MIN / 2, SHMRING_STREAM_MIN), 0);
    CHECK_EQ(shmring_copy_should_stream(UINT64_C(1) << 32, 64), 0);
}

int main(void)
{
    RUN(a_streamed_copy_is_memcpy_for_every_length_and_alignment);
    RUN(only_large_messages_into_large_rings_are_streamed);
    return helpers_finish();
}
