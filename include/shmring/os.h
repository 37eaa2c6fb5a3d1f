/*
 * shmring/os.h - what shmring asks of Linux: process identity and liveness
 * (pid + start time, not fooled by pid reuse), process tokens, clocks, the
 * futex, the CPU pause hint, and the asymmetric (membarrier) barriers.
 */
#ifndef SHMRING_OS_H
#define SHMRING_OS_H

#include "base.h"
#include "atomics.h"

#include <sched.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include <linux/membarrier.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Process identity: pid + start time, not fooled by pid reuse               */
/* ------------------------------------------------------------------------ */

/* Start time of a process in clock ticks after boot (field 22 of
 * /proc/PID/stat), and its state letter.  Returns 0; -1 if the process does
 * not exist (ENOENT/ESRCH); -2 if it could not be told (no free fd, /proc
 * hidden or unreadable...): callers must then assume it is alive. */
static inline int shmring_proc_stat(int64_t pid, uint64_t *start_ticks, char *state)
{
    char path[64], buf[1024];
    const char *p;
    ssize_t n;
    int fd, field;

    if (pid <= 0 || pid > INT32_MAX)
        return -1;
    snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ESRCH ? -1 : -2;
    do {
        n = read(fd, buf, sizeof buf - 1);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == ESRCH) {
        close(fd);
        return -1; /* exited between open and read */
    }
    close(fd);
    if (n <= 0)
        return -2;
    buf[n] = '\0';
    /* The command name (field 2) may contain spaces and parentheses: the
     * fields after it start after the last ')'. */
    p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return -2;
    p += 2; /* field 3: state */
    if (state)
        *state = *p;
    for (field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return -2;
        p++;
    }
    if (start_ticks) {
        unsigned long long v = 0;
        while (*p >= '0' && *p <= '9')
            v = v * 10u + (unsigned long long)(*p++ - '0');
        *start_ticks = (uint64_t)v;
    }
    return 0;
}

/* Has a zombie process (state Z) really exited?  A multi-threaded process
 * whose main thread ended shows Z too while its other threads run. */
static inline int shmring_zombie_exited(int64_t pid)
{
    char path[64], buf[4096];
    const char *p;
    ssize_t n;
    int fd;
    snprintf(path, sizeof path, "/proc/%lld/status", (long long)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ESRCH;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    p = strstr(buf, "\nThreads:");
    return p == NULL || strtol(p + 9, NULL, 10) <= 1;
}

/* Is process `pid` running, and since when?  1 with *start_ticks set; 0 if
 * it is not (no such pid, or a zombie that has exited and only waits to be
 * reaped); -1 when /proc cannot tell, and callers must then assume it is
 * alive: declaring a live holder dead would hand its lock or its channel end
 * to a second process. */
static inline int shmring_process_running(int64_t pid, uint64_t *start_ticks)
{
    char state = '?';
    int rc = shmring_proc_stat(pid, start_ticks, &state);
    if (rc == -1)
        return 0;
    if (rc != 0)
        return -1;
    if ((state == 'Z' || state == 'X' || state == 'x') && shmring_zombie_exited(pid))
        return 0;
    return 1;
}

/* Is the process (pid, start_ticks) still running?  A reused pid has another
 * start time.  A start time of 0 means "unknown" and is not compared (the
 * callers that pass one: a segment's creator, shown by inspection). */
static inline int shmring_process_alive(int64_t pid, uint64_t start_ticks)
{
    uint64_t now_start = 0;
    int rc = shmring_process_running(pid, &now_start);
    if (rc != 1)
        return rc != 0;
    return start_ticks == 0 || now_start == start_ticks;
}

/* ------------------------------------------------------------------------ */
/* Process tokens: who holds a channel end, a lock, a roster entry           */
/* ------------------------------------------------------------------------ */

/* A process token packs a pid (high 32 bits) and the low 32 bits of its start
 * time into one word, so that it can be claimed with a single CAS and still
 * tell a live process from a dead one whose pid was reused.  0 = nobody.
 * The start field is never 0 (a start time whose low 32 bits are 0, or one
 * that could not be read, is recorded as 1), so that a word with a start
 * field of 0 is known to be no process's token (shmring_token_alive). */
static inline uint64_t shmring_token_make(int64_t pid, uint64_t start_ticks)
{
    uint64_t start = start_ticks & UINT64_C(0xffffffff);
    return ((uint64_t)(uint32_t)pid << 32) | (start != 0 ? start : 1u);
}

static inline uint64_t shmring_token_self(void)
{
    uint64_t start = 0;
    int64_t pid = (int64_t)getpid();
    shmring_proc_stat(pid, &start, NULL);
    return shmring_token_make(pid, start);
}

static inline int64_t shmring_token_pid(uint64_t token)
{
    return (int64_t)(token >> 32);
}

/* Linux's PID_MAX_LIMIT: no pid is above it, whatever kernel.pid_max says. */
#define SHMRING_PID_LIMIT INT64_C(4194304)

/* Could `token` have been written by shmring_token_make for a real process?
 * Not with a pid of 0 or above SHMRING_PID_LIMIT, nor with a start field of
 * 0: such a word is a stray write (or SHMRING_TOKEN_ABANDONED). */
static inline int shmring_token_plausible(uint64_t token)
{
    int64_t pid = shmring_token_pid(token);
    return pid > 0 && pid <= SHMRING_PID_LIMIT && (token & UINT64_C(0xffffffff)) != 0;
}

/* Is the process named by `token` running?  A token that is not plausible
 * names no process: its holder counts as dead, so a lock or a channel end
 * that a stray write left "held" by it is taken over at the next liveness
 * check instead of looking held for ever.  The start field is compared as
 * shmring_token_make records it (0 as 1). */
static inline int shmring_token_alive(uint64_t token)
{
    uint64_t now_start = 0;
    int rc;
    if (!shmring_token_plausible(token))
        return 0;
    rc = shmring_process_running(shmring_token_pid(token), &now_start);
    if (rc != 1)
        return rc != 0;
    return shmring_token_make(shmring_token_pid(token), now_start) == token;
}

/* A process token that names no process: pid 2^32 - 1 is above any pid_max
 * (shmring_proc_stat refuses pids past INT32_MAX), so a lock it holds is
 * held by a dead process. */
#define SHMRING_TOKEN_ABANDONED UINT64_C(0xffffffff00000000)

/* ------------------------------------------------------------------------ */
/* Clocks                                                                    */
/* ------------------------------------------------------------------------ */

/* Monotonic clock in nanoseconds: deadlines never move with the wall clock. */
static inline uint64_t shmring_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

/* Wall-clock time in nanoseconds: for display only (creation, attach times). */
static inline uint64_t shmring_realtime_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * UINT64_C(1000000000) + (uint64_t)now.tv_nsec;
}

/* A random non-zero 64-bit number (getrandom, else clock, pid and stack). */
static inline uint64_t shmring_random_id(void)
{
    struct timespec ts;
    uint64_t v = 0;
#ifdef SYS_getrandom
    if (syscall(SYS_getrandom, &v, sizeof v, 0) == (long)sizeof v && v != 0)
        return v;
#endif
    clock_gettime(CLOCK_MONOTONIC, &ts);
    v = ((uint64_t)getpid() << 40) ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)&v;
    return v != 0 ? v : 1;
}

/* ------------------------------------------------------------------------ */
/* Futex: sleeping on a 32-bit word of a shared mapping                      */
/* ------------------------------------------------------------------------ */

/* Sleep while *word == expected, for at most `timeout` (relative, measured on
 * CLOCK_MONOTONIC by the kernel; NULL = no limit).  Never FUTEX_PRIVATE_FLAG:
 * the waker is another process.  Returns 0 when woken (or when the value had
 * already changed: EAGAIN), or SHMRING_ERR_SYS with errno ETIMEDOUT or EINTR.
 * Wake-ups can be spurious: callers re-check their condition. */
static inline int shmring_futex_wait(uint32_t *word, uint32_t expected, const struct timespec *timeout)
{
    long rc = syscall(SYS_futex, word, FUTEX_WAIT, expected, timeout, NULL, 0);
    if (rc == 0 || errno == EAGAIN)
        return SHMRING_OK;
    return SHMRING_ERR_SYS;
}

/* Wake up to `n` processes sleeping on `word`.  Returns how many woke, or -1. */
static inline int shmring_futex_wake(uint32_t *word, int n)
{
    return (int)syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* A relative timeout for the futex from an absolute CLOCK_MONOTONIC
 * deadline (0 = none: NULL); *expired = 1 when it has passed. */
static inline struct timespec *shmring_timeout_until(uint64_t deadline_ns, struct timespec *ts, int *expired)
{
    uint64_t now;
    *expired = 0;
    if (deadline_ns == 0)
        return NULL;
    now = shmring_now_ns();
    if (now >= deadline_ns) {
        *expired = 1;
        return NULL;
    }
    ts->tv_sec = (time_t)((deadline_ns - now) / 1000000000u);
    ts->tv_nsec = (long)((deadline_ns - now) % 1000000000u);
    return ts;
}

/* Sleep on `word` while it holds `expected`, until deadline_ns. */
static inline int shmring_futex_wait_until(uint32_t *word, uint32_t expected, uint64_t deadline_ns)
{
    struct timespec ts, *tsp;
    int expired;
    tsp = shmring_timeout_until(deadline_ns, &ts, &expired);
    if (expired)
        return SHMRING_TIMEOUT;
    if (shmring_futex_wait(word, expected, tsp) == SHMRING_OK)
        return SHMRING_OK;
    return errno == ETIMEDOUT ? SHMRING_TIMEOUT : SHMRING_ERR_SYS;
}

/* CPU hint for spin-wait loops: lets the sibling hyperthread run and saves
 * power; a plain compiler barrier elsewhere. */
static inline void shmring_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

/* ------------------------------------------------------------------------ */
/* Asymmetric barriers                                                       */
/* ------------------------------------------------------------------------ */

/* The lost wake-up race between a publisher and a sleeper is Dekker's: each
 * stores its own flag, then loads the other's, and a full barrier must sit
 * between the store and the load on BOTH sides.  Publishing is the hot path
 * and sleeping the cold one, so the barrier is made asymmetric: a process
 * that registered with membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)
 * publishes with a compiler barrier only, and the sleeper pays instead with
 * membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), which makes every running
 * thread of every registered process execute a full barrier.  Where
 * registration fails, the publisher uses a real fence (light = 0). */

/* Register this process for global expedited membarriers.  Returns 1 when
 * its publishers may use the light barrier.  Idempotent. */
static inline int shmring_light_barrier_register(void)
{
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (cmds < 0 || !(cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) ||
        !(cmds & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED))
        return 0;
    return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
}

/* The publisher's side: a full fence, or (light) only a compiler barrier,
 * whose CPU-level half the sleeper supplies with shmring_heavy_barrier. */
static inline void shmring_light_barrier(int light)
{
    if (light)
        shmring_compiler_barrier();
    else
        shmring_fence_seq_cst();
}

/* The sleeper's side: a full fence here and on every CPU running a
 * registered process.  Returns 0, or -1 if membarrier failed: then a light
 * publisher may be missed, and the caller bounds its sleep instead. */
static inline int shmring_heavy_barrier(void)
{
    shmring_fence_seq_cst();
    return syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0 ? 0 : -1;
}

/* Longest sleep when shmring_heavy_barrier failed (a wake may be lost). */
#define SHMRING_UNFENCED_SLEEP_NS 1000000u

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_OS_H */
