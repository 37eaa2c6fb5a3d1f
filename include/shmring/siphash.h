/*
 * shmring/siphash.h - SipHash-2-4, the keyed 64-bit pseudo-random function
 * of Aumasson and Bernstein ("SipHash: a fast short-input PRF", 2012),
 * written from its specification.  The queue names its overflow chunks with
 * it (shmring/queue.h): without the queue's secret key nobody can predict
 * the name of a chunk that does not exist yet.
 */
#ifndef SHMRING_SIPHASH_H
#define SHMRING_SIPHASH_H

#include "base.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHMRING_SIP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

/* One SipRound on the state v[0..3]. */
static inline void shmring_sipround(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = SHMRING_SIP_ROTL(v[1], 13);
    v[1] ^= v[0];
    v[0] = SHMRING_SIP_ROTL(v[0], 32);
    v[2] += v[3];
    v[3] = SHMRING_SIP_ROTL(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = SHMRING_SIP_ROTL(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = SHMRING_SIP_ROTL(v[1], 17);
    v[1] ^= v[2];
    v[2] = SHMRING_SIP_ROTL(v[2], 32);
}

/* SipHash-2-4 of the `len` bytes at `msg` under the 128-bit key whose
 * little-endian halves are k0 (key bytes 0-7) and k1 (bytes 8-15). */
static inline uint64_t shmring_siphash24(uint64_t k0, uint64_t k1, const void *msg, size_t len)
{
    const unsigned char *p = (const unsigned char *)msg;
    uint64_t v[4], m;
    size_t i, left = len;
    v[0] = k0 ^ UINT64_C(0x736f6d6570736575);
    v[1] = k1 ^ UINT64_C(0x646f72616e646f6d);
    v[2] = k0 ^ UINT64_C(0x6c7967656e657261);
    v[3] = k1 ^ UINT64_C(0x7465646279746573);
    for (; left >= 8; left -= 8, p += 8) {
        for (m = 0, i = 0; i < 8; i++)
            m |= (uint64_t)p[i] << (8 * i); /* little-endian words, on any host */
        v[3] ^= m;
        shmring_sipround(v);
        shmring_sipround(v);
        v[0] ^= m;
    }
    /* The last word: the remaining bytes, and the length mod 256 on top. */
    for (m = (uint64_t)(len & 0xffu) << 56, i = 0; i < left; i++)
        m |= (uint64_t)p[i] << (8 * i);
    v[3] ^= m;
    shmring_sipround(v);
    shmring_sipround(v);
    v[0] ^= m;
    v[2] ^= 0xffu;
    for (i = 0; i < 4; i++)
        shmring_sipround(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

#undef SHMRING_SIP_ROTL

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_SIPHASH_H */
