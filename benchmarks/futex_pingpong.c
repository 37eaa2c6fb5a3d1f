/* futex_pingpong.c: round-trip latency floor between two processes.
 *
 * bench_channel.py compiles this at run time (gcc -O2) into a temporary
 * folder.  Two processes (fork) share one anonymous MAP_SHARED page holding
 * two 32-bit words: "ping" written by the parent, "pong" by the child.  Each
 * round trip i (1, 2, ...): the parent stores i in ping and wakes the child,
 * then waits until pong == i; the child waits until ping == i, stores i in
 * pong and wakes the parent.  The values are the content check: a word that
 * holds anything else than i or i - 1 fails the run.
 *
 *   futex_pingpong MODE N WARMUP [WORK_NS]
 *     MODE "futex": wait with FUTEX_WAIT (the floor for a blocking wait)
 *     MODE "spin":  busy-wait with a pause instruction (the floor for spinning)
 *     WORK_NS: busy work before every post (default 0).  With 0, a reply
 *     usually lands before the peer has gone to sleep, so "futex" measures
 *     a peer that hardly ever sleeps; about 1000 ns (what a Python caller
 *     spends between a receive and the next send) makes every post wake a
 *     sleeping peer: the floor for a blocking wait that really blocks.
 *
 * Prints one JSON object: {"mode":..., "n":..., "p50_ns":..., "p99_ns":...,
 * "p999_ns":..., "mean_ns":..., "min_ns":..., "max_ns":...}.
 * Exit status 0 on success, 1 on a bad argument or a failed check, 2 when the
 * child failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    uint32_t ping;
    uint32_t pad[15]; /* keep the two words on different cache lines */
    uint32_t pong;
} shared_words;

static long futex(uint32_t *addr, int op, uint32_t val) {
    /* Not FUTEX_PRIVATE_FLAG: the words are shared between two processes. */
    return syscall(SYS_futex, addr, op, val, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int use_futex;

/* Wait until *word == want; fail if it holds anything but want or want - 1. */
static int wait_for(uint32_t *word, uint32_t want) {
    for (;;) {
        uint32_t v = __atomic_load_n(word, __ATOMIC_ACQUIRE);
        if (v == want) return 0;
        if (v != want - 1) {
            fprintf(stderr, "futex_pingpong: expected %u or %u, read %u\n", want - 1, want, v);
            return -1;
        }
        if (use_futex) {
            if (futex(word, FUTEX_WAIT, v) == -1 && errno != EAGAIN && errno != EINTR) {
                perror("futex_pingpong: FUTEX_WAIT");
                return -1;
            }
        } else {
            cpu_relax();
        }
    }
}

static long work_ns;

static void busy_work(void) {
    struct timespec a, b;
    if (work_ns <= 0) return;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < work_ns);
}

static void post(uint32_t *word, uint32_t value) {
    busy_work();
    __atomic_store_n(word, value, __ATOMIC_RELEASE);
    if (use_futex) futex(word, FUTEX_WAKE, 1);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t pct(const uint64_t *sorted, long n, double p) {
    long i = (long)(p * (double)(n - 1) + 0.5);
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    return sorted[i];
}

int main(int argc, char **argv) {
    if ((argc != 4 && argc != 5) || (strcmp(argv[1], "futex") != 0 && strcmp(argv[1], "spin") != 0)) {
        fprintf(stderr, "usage: %s futex|spin N WARMUP [WORK_NS]\n", argv[0]);
        return 1;
    }
    work_ns = argc == 5 ? strtol(argv[4], NULL, 10) : 0;
    use_futex = strcmp(argv[1], "futex") == 0;
    long n = strtol(argv[2], NULL, 10), warm = strtol(argv[3], NULL, 10);
    if (n < 1 || warm < 0 || n + warm >= (long)UINT32_MAX) {
        fprintf(stderr, "futex_pingpong: bad N or WARMUP\n");
        return 1;
    }
    shared_words *w = mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED) {
        perror("futex_pingpong: mmap");
        return 1;
    }
    memset(w, 0, sizeof *w);
    uint64_t *lat = malloc(sizeof(uint64_t) * (size_t)n);
    if (!lat) {
        perror("futex_pingpong: malloc");
        return 1;
    }
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) {
        perror("futex_pingpong: fork");
        return 1;
    }
    uint32_t total = (uint32_t)(n + warm);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the parent */
        for (uint32_t i = 1; i <= total; i++) {
            if (wait_for(&w->ping, i) != 0) _exit(1);
            post(&w->pong, i);
        }
        _exit(0);
    }
    int failed = 0;
    for (uint32_t i = 1; i <= total; i++) {
        uint64_t t0 = now_ns();
        post(&w->ping, i);
        if (wait_for(&w->pong, i) != 0) {
            failed = 1;
            break;
        }
        uint64_t t1 = now_ns();
        if (i > (uint32_t)warm) lat[i - 1 - warm] = t1 - t0;
    }
    if (failed) kill(child, SIGKILL);
    int status = 0;
    if (waitpid(child, &status, 0) < 0) {
        perror("futex_pingpong: waitpid");
        return 2;
    }
    if (failed) return 1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "futex_pingpong: child failed (status %d)\n", status);
        return 2;
    }
    double sum = 0;
    for (long i = 0; i < n; i++) sum += (double)lat[i];
    qsort(lat, (size_t)n, sizeof lat[0], cmp_u64);
    printf("{\"mode\": \"%s\", \"n\": %ld, \"p50_ns\": %llu, \"p99_ns\": %llu, \"p999_ns\": %llu, "
           "\"mean_ns\": %.1f, \"min_ns\": %llu, \"max_ns\": %llu}\n",
           argv[1], n, (unsigned long long)pct(lat, n, 0.50), (unsigned long long)pct(lat, n, 0.99),
           (unsigned long long)pct(lat, n, 0.999), sum / (double)n, (unsigned long long)lat[0],
           (unsigned long long)lat[n - 1]);
    free(lat);
    munmap(w, sizeof *w);
    return 0;
}
