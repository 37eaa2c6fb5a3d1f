/*
 * fuzz_common.h - what the libFuzzer targets of reliability/fuzz/ share.
 *
 * Every target reads shared memory the way a shmring process does, except
 * that the "mapping" is heap memory of exactly the size its segment header
 * states (AddressSanitizer then reports any byte read or written outside
 * it), and a hostile peer is played by the fuzzer: its bytes are written
 * into a valid object (made by the headers' own create and init functions)
 * at offsets it chooses, between the operations it chooses.  An operation
 * may refuse (SHMRING_ERR_CORRUPT, SHMRING_LAGGED...) but must return a
 * shmring result code, never leave the mapping, and never hang (libFuzzer's
 * -timeout catches that).
 *
 * The input is read front to back as a stream of small integers
 * (fz_take); past its end every read yields 0, so any input is valid.
 *
 * A finding still open (docs/RELIABILITY.md, "Findings") stops every run
 * that reaches it.  Built with -DFZ_SKIP_KNOWN (make fuzz
 * FUZZ_SKIP_KNOWN=1), the targets step around each one where a guard
 * naming it says, so that fuzzing goes on past it; a guard goes with its
 * fix.  None is open now (F1 was the last; its guard went with its fix).
 */
#ifndef SHMRING_FUZZ_COMMON_H
#define SHMRING_FUZZ_COMMON_H

#include "shmring.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>

/* -- the input stream ------------------------------------------------------ */

typedef struct fz_input {
    const uint8_t *p;
    size_t n;
    unsigned waits; /* deadlines in the future handed out (fz_deadline) */
} fz_input;

/* The next `bytes` (1 to 8) bytes of the input, little-endian; 0 past its end. */
static inline uint64_t fz_take(fz_input *in, unsigned bytes)
{
    uint64_t v = 0;
    unsigned i;
    for (i = 0; i < bytes && in->n > 0; i++, in->p++, in->n--)
        v |= (uint64_t)in->p[0] << (8 * i);
    return v;
}

static inline unsigned fz_u8(fz_input *in)
{
    return (unsigned)fz_take(in, 1);
}

/* A number in [lo, hi] taken from one byte (two when the range needs it). */
static inline uint64_t fz_range(fz_input *in, uint64_t lo, uint64_t hi)
{
    uint64_t span = hi - lo + 1;
    return lo + fz_take(in, span > 256 ? 2 : 1) % span;
}

static inline int fz_more(const fz_input *in)
{
    return in->n > 0;
}

/* -- failing ----------------------------------------------------------------- */

/* A broken promise of the headers: print it and abort, which libFuzzer
 * reports as a crash with the input that caused it. */
#define FZ_ASSERT(cond)                                                                        \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz: %s:%d: promise broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* Every shmring function returns one of the codes of enum shmring_result. */
static inline int fz_rc(int rc)
{
    FZ_ASSERT((rc >= SHMRING_OK && rc <= SHMRING_ERR_BUSY) || (rc >= SHMRING_AGAIN && rc <= SHMRING_GAP));
    return rc;
}

/* A pointer and length an operation handed out lie inside [base, base + size);
 * the bytes are read (so that ASan sees a read out of bounds even when the
 * caller of the header would not touch them). */
static inline uint64_t fz_inside(const unsigned char *base, size_t size, const unsigned char *p, uint64_t len)
{
    uint64_t sum = 0, i;
    FZ_ASSERT(p >= base && len <= size && (size_t)(p - base) <= size - len);
    for (i = 0; i < len; i++)
        sum += p[i];
    return sum;
}

/* A deadline already passed: blocking calls make their last look and return
 * (a deadline of 0 would wait for ever). */
#define FZ_PAST 1u

/* The deadline of a blocking call: passed, or 20 microseconds away (long
 * enough to poll and to sleep once on the futex, so that the looks after a
 * sleep run too).  At most FZ_WAITS of the latter per input: sleeping is
 * what makes an execution slow. */
#define FZ_WAITS 4u
static inline uint64_t fz_deadline(fz_input *in)
{
    if (!(fz_u8(in) & 1) || in->waits >= FZ_WAITS)
        return FZ_PAST;
    in->waits++;
    return shmring_now_ns() + 20000u;
}

/* libFuzzer calls this once, before the first input (this header is
 * included by exactly one file per target).  A timer slack of 1 us: the
 * short waits of fz_deadline sleep about as long as they ask, not the
 * default 50 us more. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    (void)prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
    return 0;
}

/* -- the hostile peer ---------------------------------------------------------- */

/* A part of a mapping the fuzzer may write into. */
typedef struct fz_region {
    unsigned char *base;
    size_t len;
} fz_region;

/* Values a corrupted counter or length likes to hold. */
static const uint64_t fz_values[] = {
    0, 1, 7, 8, 15, 16, 63, 64, 127, 128, 640, 4096, 0x7fffffffu, 0x80000000u, 0xfffffff8u, 0xffffffffu,
    UINT64_C(0x100000000), UINT64_C(0x7fffffffffffffff), UINT64_C(0x8000000000000000), UINT64_C(0xfffffffffffffff0),
    UINT64_C(0xfffffffffffffff8), UINT64_MAX};
#define FZ_NVALUES (sizeof fz_values / sizeof fz_values[0])

/* One write of the hostile peer into one of `n` regions: raw bytes, an
 * interesting 32- or 64-bit value at an aligned offset, or a counter moved
 * by a small multiple of 8 (the records' alignment).  Never outside the
 * region it picked. */
static inline void fz_patch(fz_input *in, const fz_region *regions, unsigned n)
{
    const fz_region *r = &regions[fz_u8(in) % n];
    unsigned mode = fz_u8(in) % 4;
    size_t off = (size_t)(fz_take(in, 2) % r->len);
    unsigned char *p = r->base;
    if (mode == 0) {
        size_t k = 1 + fz_u8(in) % 8, i;
        for (i = 0; i < k && off + i < r->len; i++)
            p[off + i] = (unsigned char)fz_u8(in);
    } else if (mode == 1) {
        uint32_t v = (uint32_t)fz_values[fz_u8(in) % FZ_NVALUES];
        off &= ~(size_t)3;
        if (off + 4 <= r->len)
            memcpy(p + off, &v, 4);
    } else {
        uint64_t v;
        off &= ~(size_t)7;
        if (off + 8 > r->len)
            return;
        if (mode == 2) {
            v = fz_values[fz_u8(in) % FZ_NVALUES];
        } else {
            memcpy(&v, p + off, 8);
            v += (uint64_t)(int64_t)(int8_t)fz_u8(in) * 8u;
        }
        memcpy(p + off, &v, 8);
    }
}

/* -- segments on plain memory ----------------------------------------------------- */

/* This process's token (read from /proc once), and one that names no
 * process (an owner the liveness check finds dead). */
static inline uint64_t fz_token(void)
{
    static uint64_t token;
    if (token == 0)
        token = shmring_token_self();
    return token;
}
#define FZ_DEAD_TOKEN SHMRING_TOKEN_ABANDONED

/* A published header page for a segment of `kind` and `total` bytes, as
 * shmring_segment_create writes it (built once per kind and size: it reads
 * /proc). */
static inline const unsigned char *fz_header_template(uint32_t kind, uint64_t total)
{
    static unsigned char pages[SHMRING_KIND_MAX + 1][SHMRING_HEADER_SIZE];
    static uint64_t totals[SHMRING_KIND_MAX + 1];
    unsigned char *page = pages[kind % (SHMRING_KIND_MAX + 1)];
    if (totals[kind % (SHMRING_KIND_MAX + 1)] != total) {
        shmring_segment seg;
        memset(page, 0, SHMRING_HEADER_SIZE);
        memset(&seg, 0, sizeof seg);
        shmring_segment_fill_header_(page, kind, total, &seg);
        seg.base = page;
        shmring_segment_publish(&seg);
        totals[kind % (SHMRING_KIND_MAX + 1)] = total;
    }
    return page;
}

/* A new segment of `kind` with `payload_size` zeroed bytes after its header,
 * in heap memory of exactly that size (free it with free()). */
static inline unsigned char *fz_segment_new(uint32_t kind, uint64_t payload_size)
{
    size_t total = (size_t)(SHMRING_HEADER_SIZE + payload_size);
    unsigned char *base = (unsigned char *)malloc(total);
    FZ_ASSERT(base != NULL);
    memcpy(base, fz_header_template(kind, total), SHMRING_HEADER_SIZE);
    memset(base + SHMRING_HEADER_SIZE, 0, (size_t)payload_size);
    return base;
}

/* What an opener does before it looks at the payload: validate the header
 * against the size of the object (`avail` bytes at `base`) and check the
 * kind.  SHMRING_OK with *payload_size set, or the refusal. */
static inline int fz_segment_open(const unsigned char *base, uint64_t avail, uint32_t kind, uint64_t *payload_size)
{
    shmring_segment_header h;
    int rc = fz_rc(shmring_header_check_copy((const shmring_segment_header *)(const void *)base, avail, &h));
    if (rc != SHMRING_OK)
        return rc;
    FZ_ASSERT(h.total_size > SHMRING_HEADER_SIZE && h.total_size <= avail);
    if (h.kind != kind)
        return SHMRING_ERR_ARG;
    *payload_size = h.total_size - SHMRING_HEADER_SIZE;
    return SHMRING_OK;
}

#endif /* SHMRING_FUZZ_COMMON_H */
