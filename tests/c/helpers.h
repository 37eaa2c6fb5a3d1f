/*
 * helpers.h - what the unit tests of tests/c/test_*.c share: checks that
 * report and go on, a runner that names each test, and aligned, zeroed
 * plain memory to lay rings out in (no segment, no other process).
 *
 * A test program is a list of functions named for the behaviour they check
 * (pads_then_wraps_at_the_end_of_the_ring), run by RUN() from main(), which
 * ends with `return helpers_finish();`: it prints one line per test and a
 * summary, and exits non-zero if any check failed.
 */
#ifndef SHMRING_TEST_HELPERS_H
#define SHMRING_TEST_HELPERS_H

#include "shmring.h"

/* Check a condition; on failure print it with its place, and go on. */
#define CHECK(cond) helpers_check((cond) != 0, #cond, __FILE__, __LINE__)
/* Check two integers are equal; on failure print both values. */
#define CHECK_EQ(a, b) helpers_check_eq((uint64_t)(a), (uint64_t)(b), #a, #b, __FILE__, __LINE__)
/* Check that a control block or header refuses one impossible field:
 * restore *block from `saved`, set its `field` to `value`, and check that
 * `check` (an expression that reads the block) is SHMRING_ERR_CORRUPT.  A
 * macro because `field` is a member's name. */
#define CHECK_REFUSED(block, saved, field, value, check) \
    do {                                                 \
        *(block) = (saved);                              \
        (block)->field = (value);                        \
        CHECK_EQ((check), SHMRING_ERR_CORRUPT);          \
    } while (0)
/* Run one test function, named by its own name. */
#define RUN(test) helpers_run(#test, test)

void helpers_check(int ok, const char *what, const char *file, int line);
void helpers_check_eq(uint64_t a, uint64_t b, const char *a_text, const char *b_text, const char *file, int line);
void helpers_run(const char *name, void (*test)(void));
int helpers_finish(void);

/* `size` bytes of zeroed memory aligned to 128 bytes (freed by
 * helpers_run after each test). */
void *helpers_memory(size_t size);

/* A process token of a process that is alive for the whole test (the
 * parent: the test runner), and one that names no live process. */
uint64_t helpers_live_token(void);
uint64_t helpers_dead_token(void);

/* Fill `n` bytes with a pattern derived from `seed`; check it. */
void helpers_fill(unsigned char *p, uint64_t n, unsigned seed);
int helpers_pattern_ok(const unsigned char *p, uint64_t n, unsigned seed);

#endif /* SHMRING_TEST_HELPERS_H */
