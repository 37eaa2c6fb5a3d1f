/*
 * shmring/copy.h - copying a large message into a ring with streaming
 * (non-temporal) stores: they write whole cache lines to memory without
 * first reading them (no read-for-ownership of ring lines that the reader's
 * core holds) and without filling the writer's cache with bytes only the
 * reader will use.
 *
 * Measured on a 2-vCPU AMD EPYC VM (32 MiB L3, 1 MiB L2 a core; docs/
 * BENCHMARKS.md section 10), the reader in another process, medians per
 * call: into a ring of 16 or 32 MiB, whose lines do not stay in the cache,
 * a 1 MiB send from a source not in the cache took ~57-74 us streamed
 * against ~110-155 us with memcpy (256 KiB: ~17 against ~25-34 us), from a
 * source in the cache about the same or less, while the reader's copy out
 * took ~45-70 against ~28-54 us (it reads from memory instead of the
 * writer's cache): end to end ~1.8x faster from a cold source, up to ~30%
 * slower from a hot one.  Into a ring of 4 or 8 MiB, which stays in the
 * cache, the reader's copy out was ~2x slower streamed and a send gained
 * little or nothing.  So producers stream messages of SHMRING_STREAM_MIN
 * bytes and more into rings of SHMRING_STREAM_RING_MIN bytes and more
 * (shmring_copy_should_stream).
 *
 * Streaming stores are weakly ordered, even on x86: a later release store
 * (the tail [S2]) does not order them.  shmring_copy_streaming ends with a
 * store fence, so that a record copied with it is complete in memory before
 * the producer publishes it.
 */
#ifndef SHMRING_COPY_H
#define SHMRING_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__SSE2__)
#include <emmintrin.h>
#define SHMRING_HAVE_STREAMING_COPY 1
#else
#define SHMRING_HAVE_STREAMING_COPY 0
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Messages at least this large, into rings at least this large, are
 * copied with shmring_copy_streaming (see above: measured on one machine). */
#define SHMRING_STREAM_MIN (UINT64_C(256) << 10)
#define SHMRING_STREAM_RING_MIN (UINT64_C(16) << 20)

/* Should a message of `len` bytes go into a ring of `capacity` bytes with
 * streaming stores?  (Only a speed matter: either copy is correct.) */
static inline int shmring_copy_should_stream(uint64_t capacity, uint64_t len)
{
    return SHMRING_HAVE_STREAMING_COPY && len >= SHMRING_STREAM_MIN && capacity >= SHMRING_STREAM_RING_MIN;
}

/* memcpy with streaming stores where the CPU has them (plain memcpy
 * elsewhere); for copies of many cache lines.  Not inlined: it is only
 * worth calling for large copies, where a call costs nothing, and inlined
 * beside a small constant-size copy it led compilers' bounds checks astray
 * (a false -Warray-bounds at -O1). */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((noinline, unused)) static void shmring_copy_streaming(
#else
static inline void shmring_copy_streaming(
#endif
    void *dst, const void *src, size_t n)
{
#if SHMRING_HAVE_STREAMING_COPY
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    size_t i = (size_t)(-(uintptr_t)d & 15u); /* bytes up to the first 16-byte boundary of dst */
    if (n < 256) {
        memcpy(d, s, n);
        return;
    }
    memcpy(d, s, i);
    for (; n - i >= 64; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
        _mm_stream_si128((__m128i *)(d + i), a);
        _mm_stream_si128((__m128i *)(d + i + 16), b);
        _mm_stream_si128((__m128i *)(d + i + 32), c);
        _mm_stream_si128((__m128i *)(d + i + 48), e);
    }
    memcpy(d + i, s + i, n - i);
    /* sfence [S2]: the streamed bytes are globally visible before any
     * later store, the release of tail that publishes them included. */
    _mm_sfence();
#else
    memcpy(dst, src, n);
#endif
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_COPY_H */
