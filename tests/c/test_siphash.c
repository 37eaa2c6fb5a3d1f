/*
 * SipHash-2-4 (shmring/siphash.h) against the reference vectors published
 * with its specification: key bytes 00 01 ... 0f, message i the i bytes
 * 00 01 ... (i-1), output read as a little-endian 64-bit word.  Messages
 * of 0 to 15 bytes: an empty one, a partial last word of every length,
 * exactly one word, and a word plus a partial one.
 */
#include "helpers.h"

#define K0 UINT64_C(0x0706050403020100)
#define K1 UINT64_C(0x0f0e0d0c0b0a0908)

static const uint64_t reference[16] = {
    UINT64_C(0x726fdb47dd0e0e31), UINT64_C(0x74f839c593dc67fd), UINT64_C(0x0d6c8009d9a94f5a),
    UINT64_C(0x85676696d7fb7e2d), UINT64_C(0xcf2794e0277187b7), UINT64_C(0x18765564cd99a68d),
    UINT64_C(0xcbc9466e58fee3ce), UINT64_C(0xab0200f58b01d137), UINT64_C(0x93f5f5799a932462),
    UINT64_C(0x9e0082df0ba9e4b0), UINT64_C(0x7a5dbbc594ddb9f3), UINT64_C(0xf4b32f46226bada7),
    UINT64_C(0x751e8fbc860ee5fb), UINT64_C(0x14ea5627c0843d90), UINT64_C(0xf723ca908e7af2ee),
    UINT64_C(0xa129ca6149be45e5),
};

static void siphash24_gives_the_published_reference_vectors(void)
{
    unsigned char msg[16];
    size_t i;
    for (i = 0; i < sizeof msg; i++)
        msg[i] = (unsigned char)i;
    for (i = 0; i < 16; i++)
        CHECK_EQ(shmring_siphash24(K0, K1, msg, i), reference[i]);
}

static void another_key_gives_another_value(void)
{
    unsigned char msg[8] = {0};
    CHECK(shmring_siphash24(K0, K1, msg, 8) != shmring_siphash24(K0 ^ 1u, K1, msg, 8));
    CHECK(shmring_siphash24(K0, K1, msg, 8) != shmring_siphash24(K0, K1 ^ (UINT64_C(1) << 63), msg, 8));
}

int main(void)
{
    RUN(siphash24_gives_the_published_reference_vectors);
    RUN(another_key_gives_another_value);
    return helpers_finish();
}
