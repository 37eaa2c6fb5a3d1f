/* helpers.c - see helpers.h. */
#include "helpers.h"

#define HELPERS_MAX_BLOCKS 64

static int checks, failures, test_failures, tests, failed_tests;
static void *blocks[HELPERS_MAX_BLOCKS];
static int nblocks;

void helpers_check(int ok, const char *what, const char *file, int line)
{
    checks++;
    if (!ok) {
        failures++;
        test_failures++;
        printf("    %s:%d: check failed: %s\n", file, line, what);
    }
}

void helpers_check_eq(uint64_t a, uint64_t b, const char *a_text, const char *b_text, const char *file, int line)
{
    checks++;
    if (a != b) {
        failures++;
        test_failures++;
        printf("    %s:%d: check failed: %s == %s (%llu != %llu)\n", file, line, a_text, b_text,
               (unsigned long long)a, (unsigned long long)b);
    }
}

void helpers_run(const char *name, void (*test)(void))
{
    int i;
    test_failures = 0;
    test();
    tests++;
    if (test_failures)
        failed_tests++;
    printf("%s %s\n", test_failures ? "FAIL" : "ok  ", name);
    for (i = 0; i < nblocks; i++)
        free(blocks[i]);
    nblocks = 0;
    fflush(stdout);
}

int helpers_finish(void)
{
    printf("%d tests, %d checks, %d failed\n", tests, checks, failed_tests);
    return failures == 0 && tests > 0 ? 0 : 1;
}

void *helpers_memory(size_t size)
{
    void *p = NULL;
    if (nblocks == HELPERS_MAX_BLOCKS || posix_memalign(&p, 128, size) != 0) {
        printf("out of test memory\n");
        exit(2);
    }
    memset(p, 0, size);
    blocks[nblocks++] = p;
    return p;
}

uint64_t helpers_live_token(void)
{
    uint64_t start = 0;
    int64_t pid = (int64_t)getppid();
    if (shmring_proc_stat(pid, &start, NULL) != 0) {
        printf("cannot read the parent's start time\n");
        exit(2);
    }
    return shmring_token_make(pid, start);
}

uint64_t helpers_dead_token(void)
{
    return SHMRING_TOKEN_ABANDONED; /* pid 2^32 - 1: above any pid_max */
}

void helpers_fill(unsigned char *p, uint64_t n, unsigned seed)
{
    uint64_t i;
    for (i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 31u + seed * 7u + 1u) & 0xffu);
}

int helpers_pattern_ok(const unsigned char *p, uint64_t n, unsigned seed)
{
    uint64_t i;
    for (i = 0; i < n; i++)
        if (p[i] != (unsigned char)((i * 31u + seed * 7u + 1u) & 0xffu))
            return 0;
    return 1;
}
