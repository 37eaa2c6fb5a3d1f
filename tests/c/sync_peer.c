/*
 * sync_peer: a C process sharing shmring's synchronisation primitives with
 * Python processes, through include/shmring.h only.
 *
 * Usage: sync_peer NAME MODE LOCK_OFFSET COUNTER_OFFSET ITERATIONS [GO_OFFSET]
 *   NAME            the POSIX name, with its leading '/'
 *   MODE            mutex | spin | sem: ITERATIONS times, take the lock at
 *                   payload offset LOCK_OFFSET (a shmring_mutex, a
 *                   shmring_spinlock, or a shmring_sem used as a lock), add
 *                   one to the 8-byte counter at COUNTER_OFFSET with a plain
 *                   (non-atomic) read and write, release;
 *                   hold-mutex | hold-spin: take the lock, print "held",
 *                   and sleep until killed
 *   LOCK_OFFSET, COUNTER_OFFSET   byte offsets in the payload
 *   ITERATIONS      how many increments
 *   GO_OFFSET       if given: wait until the 32-bit word at this payload
 *                   offset is non-zero before starting (so that all the
 *                   processes of a test run their loops at the same time)
 *
 * The process token is shmring_token_self(), as in the Python package, so a
 * lock held by this program is held by its process.
 *
 * Prints "done ITERATIONS" and exits 0 on success.  Exit status: the
 * SHMRING_* code of a failed open, EXIT_LOCK when taking or releasing a lock
 * returns something unexpected (printed on stderr), EXIT_USAGE for bad
 * arguments.
 */
#include "shmring.h" /* first: it selects the POSIX feature macros */

#include <stdlib.h>

#define EXIT_LOCK 40
#define EXIT_USAGE 64

static int lock_mutex(shmring_mutex *m, uint64_t token)
{
    int rc = shmring_mutex_try_acquire(m, token, 0);
    while (rc == SHMRING_AGAIN) {
        rc = shmring_mutex_wait(m, token, 0);
        if (rc == SHMRING_ERR_SYS && errno == EINTR)
            rc = SHMRING_AGAIN;
        if (rc == SHMRING_AGAIN)
            rc = shmring_mutex_try_acquire(m, token, 0);
    }
    return rc;
}

static int lock_sem(shmring_sem *s)
{
    while (!shmring_sem_try_acquire(s)) {
        int rc = shmring_sem_wait(s, 0);
        if (rc != SHMRING_OK && !(rc == SHMRING_ERR_SYS && errno == EINTR))
            return rc;
    }
    return SHMRING_OK;
}

/* Take the lock at `lock`, of kind `mode` ("mutex", "spin" or "sem"). */
static int take_lock(const char *mode, void *lock, uint64_t token)
{
    if (strcmp(mode, "mutex") == 0)
        return lock_mutex((shmring_mutex *)lock, token);
    if (strcmp(mode, "spin") == 0)
        return shmring_spin_acquire((shmring_spinlock *)lock, token, 0);
    return lock_sem((shmring_sem *)lock);
}

/* Release what take_lock took. */
static int give_lock(const char *mode, void *lock, uint64_t token)
{
    if (strcmp(mode, "mutex") == 0)
        return shmring_mutex_release((shmring_mutex *)lock, token);
    if (strcmp(mode, "spin") == 0)
        return shmring_spin_release((shmring_spinlock *)lock, token);
    return shmring_sem_release((shmring_sem *)lock, 1);
}

static int parse_size(const char *text, size_t *out)
{
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0')
        return -1;
    *out = (size_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    shmring_segment seg;
    const char *name, *mode;
    size_t lock_off, counter_off, iterations, go_off = 0, i, payload_size;
    unsigned char *payload;
    volatile uint64_t *counter;
    uint64_t token;
    int rc;

    if ((argc != 6 && argc != 7) || parse_size(argv[3], &lock_off) != 0 ||
        parse_size(argv[4], &counter_off) != 0 || parse_size(argv[5], &iterations) != 0 ||
        (argc == 7 && parse_size(argv[6], &go_off) != 0)) {
        fprintf(stderr, "usage: %s NAME MODE LOCK_OFFSET COUNTER_OFFSET ITERATIONS [GO_OFFSET]\n",
                argc > 0 ? argv[0] : "sync_peer");
        return EXIT_USAGE;
    }
    name = argv[1];
    mode = argv[2];

    rc = shmring_segment_open(name, 0, &seg);
    if (rc != SHMRING_OK) {
        fprintf(stderr, "sync_peer: %s: %s\n", name, shmring_strerror(rc));
        return rc;
    }
    payload = shmring_segment_payload(&seg);
    payload_size = shmring_segment_payload_size(&seg);
    if (lock_off % 8 != 0 || counter_off % 8 != 0 || lock_off + sizeof(shmring_mutex) > payload_size ||
        counter_off + 8 > payload_size || go_off % 4 != 0 || go_off + 4 > payload_size) {
        fprintf(stderr, "sync_peer: offsets out of range or misaligned\n");
        shmring_segment_close(&seg);
        return EXIT_USAGE;
    }
    counter = (volatile uint64_t *)(payload + counter_off);
    token = shmring_token_self();

    if (strcmp(mode, "hold-mutex") == 0 || strcmp(mode, "hold-spin") == 0) {
        rc = take_lock(mode + 5, payload + lock_off, token); /* "mutex" or "spin" */
        if (rc != SHMRING_OK) {
            fprintf(stderr, "sync_peer: acquire: %s (%d)\n", shmring_strerror(rc), rc);
            return EXIT_LOCK;
        }
        *counter = UINT64_C(0xdeadbeef); /* "half-updated" data, for the next holder to repair */
        printf("held\n");
        fflush(stdout);
        for (;;)
            pause();
    }

    if (argc == 7) {
        /* acquire: pairs with the test's (seq_cst) store of the go flag. */
        while (__atomic_load_n((uint32_t *)(payload + go_off), __ATOMIC_ACQUIRE) == 0)
            usleep(100);
    }

    for (i = 0; i < iterations; i++) {
        uint64_t v;
        if (strcmp(mode, "mutex") != 0 && strcmp(mode, "spin") != 0 && strcmp(mode, "sem") != 0) {
            fprintf(stderr, "sync_peer: unknown mode %s\n", mode);
            return EXIT_USAGE;
        }
        rc = take_lock(mode, payload + lock_off, token);
        if (rc != SHMRING_OK) {
            fprintf(stderr, "sync_peer: %s acquire: %s (%d)\n", mode, shmring_strerror(rc), rc);
            return EXIT_LOCK;
        }
        v = *counter;
        *counter = v + 1;
        rc = give_lock(mode, payload + lock_off, token);
        if (rc != SHMRING_OK) {
            fprintf(stderr, "sync_peer: release: %s (%d)\n", shmring_strerror(rc), rc);
            return EXIT_LOCK;
        }
        /* Now and then let another process in while the lock is free. */
        if (i % 64 == 63)
            sched_yield();
    }
    printf("done %zu\n", iterations);
    shmring_segment_close(&seg);
    return 0;
}
