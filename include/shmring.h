/*
 * shmring.h - the shmring shared-memory protocol, header-only.
 *
 * One header holds the binary layout of a shmring segment and every operation
 * that touches shared memory, so that the CPython extension, C programs and
 * C++ programs speak exactly the same protocol.  docs/PROTOCOL.md describes
 * the same layout in prose; the _Static_asserts below are the authority.
 *
 * Requirements: C99 or C++11 and later, GCC or Clang (__atomic builtins),
 * Linux (futex, /proc).  Under a strict -std=c99/c11/c17 it may come first or
 * after any ISO C header (<stdio.h>, <string.h>, <time.h>...); a POSIX header
 * included before it then needs -D_DEFAULT_SOURCE (see below).
 *
 * Conventions
 * - Functions return 0 on success.  System failures return SHMRING_ERR_SYS
 *   with errno set; protocol failures return one of the positive
 *   SHMRING_ERR_* codes (see shmring_strerror).
 * - Everything read from shared memory is untrusted: another process can
 *   write anything into the mapping, so every field is validated before it
 *   is used to index memory.
 * - Every atomic names its memory order and, in a comment, the operation it
 *   pairs with, using labels of the form [S1].
 */
#ifndef SHMRING_H
#define SHMRING_H

/* The POSIX and Linux declarations this header needs (O_CLOEXEC, ftruncate,
 * posix_fallocate, clock_gettime, CLOCK_MONOTONIC, syscall, NAME_MAX...) are
 * hidden by a strict -std=c99/c11/c17 unless a feature-test macro asks for
 * them, and glibc reads those macros once, in <features.h>, when the first
 * libc header of the translation unit is included.  Defining
 * _DEFAULT_SOURCE here is enough when this header comes first; when a
 * program included <stdio.h> or <string.h> before it, <features.h> has
 * already decided, and a late #define changes nothing.  So, on glibc only,
 * when the features in force lack what we need, <features.h> is read again:
 * it starts by undefining every __USE_* macro ("a clean slate") and derives
 * them anew from the feature-test macros, now including _DEFAULT_SOURCE, so
 * every libc header included after this point declares the POSIX and Linux
 * API.  (The alternatives were worse: asking every user for -D_DEFAULT_SOURCE
 * is what the documented "include it after <stdio.h>" promise rules out, and
 * declaring the functions ourselves would clash with glibc's own declarations
 * and its 64-bit time_t redirections.)  Headers that the program included
 * before this one keep what they declared: what this header needs from
 * <time.h> and <limits.h>, ISO C headers a program may well include first, is
 * supplied below if they hid it; a POSIX header (<unistd.h>, <fcntl.h>, ...)
 * included first under a strict -std= without a feature-test macro is
 * reported by an #error with the fix.  C++ compilers define _GNU_SOURCE, so
 * none of this happens there. */
#if !defined(_DEFAULT_SOURCE) && !defined(_GNU_SOURCE)
#define _DEFAULT_SOURCE 1
#endif
#if defined(__GLIBC__) && defined(_FEATURES_H) && (!defined(__USE_MISC) || !defined(__USE_XOPEN2K8))
#undef _FEATURES_H
#include <features.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sched.h>
#include <sys/types.h>
#include <dirent.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <linux/membarrier.h>

#if defined(__GLIBC__) && !defined(O_CLOEXEC)
#error "shmring.h: a POSIX header (<fcntl.h>, <unistd.h>, ...) was included before it under a strict -std= without a feature-test macro; include shmring.h first, or compile with -D_DEFAULT_SOURCE"
#endif
#if !defined(NAME_MAX)
/* <limits.h> was included first under a strict -std=: take the kernel's. */
#include <linux/limits.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if !defined(CLOCK_MONOTONIC) && !defined(__cplusplus)
/* <time.h> was included first under a strict -std=, which hid its POSIX part.
 * The clock ids are the Linux ABI's; clock_gettime is declared as POSIX
 * does (only here, where glibc's own declaration was left out; a 32-bit
 * build with 64-bit time_t needs glibc's redirected one). */
#if defined(__USE_TIME_BITS64)
#error "shmring.h: include it before <time.h>, or compile with -D_DEFAULT_SOURCE"
#endif
#define CLOCK_REALTIME 0
#define CLOCK_MONOTONIC 1
extern int clock_gettime(clockid_t clock_id, struct timespec *tp);
#endif

/* ------------------------------------------------------------------------ */
/* Portability helpers                                                       */
/* ------------------------------------------------------------------------ */

/* Compile-time assertions under every supported standard: C++11
 * static_assert, C11 _Static_assert, and for C99 a negative array size. */
#define SHMRING_CAT_(a, b) a##b
#define SHMRING_CAT(a, b) SHMRING_CAT_(a, b)
#if defined(__cplusplus)
#define SHMRING_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define SHMRING_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#else
#define SHMRING_STATIC_ASSERT(cond, msg) \
    typedef char SHMRING_CAT(shmring_static_assert_, __LINE__)[(cond) ? 1 : -1]
#endif

#if !defined(__GNUC__) && !defined(__clang__)
#error "shmring.h needs GCC or Clang (__atomic builtins)"
#endif

/* Only lock-free atomics are valid between processes: a lock-based fallback
 * would use a lock private to one process. */
#if __GCC_ATOMIC_LLONG_LOCK_FREE != 2 || __GCC_ATOMIC_INT_LOCK_FREE != 2
#error "shmring.h needs lock-free 32-bit and 64-bit atomics"
#endif

#define SHMRING_CACHE_LINE 64u

/* ------------------------------------------------------------------------ */
/* Error codes                                                               */
/* ------------------------------------------------------------------------ */

enum shmring_error {
    SHMRING_OK = 0,
    SHMRING_ERR_SYS = 1,       /* a system call failed; errno says why */
    SHMRING_ERR_FOREIGN = 2,   /* the object is not a shmring segment (bad magic) */
    SHMRING_ERR_NOT_READY = 3, /* empty or not yet published by its creator */
    SHMRING_ERR_TRUNCATED = 4, /* smaller than its header says it is */
    SHMRING_ERR_VERSION = 5,   /* a layout version this code does not speak */
    SHMRING_ERR_ABI = 6,       /* written by a different pointer size or byte order */
    SHMRING_ERR_CHECKSUM = 7,  /* header checksum mismatch: corrupted header */
    SHMRING_ERR_CORRUPT = 8,   /* header fields inconsistent with each other */
    SHMRING_ERR_OWNER = 9,     /* owned by another user */
    SHMRING_ERR_ARG = 10,      /* invalid argument (name, size, kind) */
    SHMRING_ERR_BUSY = 11      /* held exclusively by another process for too long (being removed?) */
};

/* More results of channel operations (beside enum shmring_error). */
#define SHMRING_AGAIN 20      /* nothing to read / no room now: wait and retry */
#define SHMRING_CLOSED 21     /* the other end closed the channel */
#define SHMRING_TOO_BIG 22    /* the message can never fit in this ring */
#define SHMRING_TIMEOUT 23    /* a wait reached its deadline */
#define SHMRING_ROLE_TAKEN 24 /* another live process (or handle) holds that end */
#define SHMRING_PEER_GONE 25  /* the process at the other end died without closing */
#define SHMRING_OWNER_DIED 26      /* lock granted, but its previous holder died holding it */
#define SHMRING_NOT_RECOVERABLE 27 /* a lock abandoned in an inconsistent state */
#define SHMRING_NOT_OWNER 28       /* release of a lock this process does not hold */
#define SHMRING_LAGGED 29          /* a topic subscriber fell behind an overwrite */

static inline const char *shmring_strerror(int code)
{
    switch (code) {
    case SHMRING_OK: return "success";
    case SHMRING_ERR_SYS: return "system call failed";
    case SHMRING_ERR_FOREIGN: return "not a shmring segment (bad magic)";
    case SHMRING_ERR_NOT_READY: return "segment is empty or not yet initialised by its creator";
    case SHMRING_ERR_TRUNCATED: return "segment is smaller than its header says (truncated)";
    case SHMRING_ERR_VERSION: return "segment has an unsupported layout version";
    case SHMRING_ERR_ABI: return "segment was written with a different ABI (pointer size or byte order)";
    case SHMRING_ERR_CHECKSUM: return "segment header checksum mismatch (corrupted header)";
    case SHMRING_ERR_CORRUPT: return "segment header fields are inconsistent (corrupted header)";
    case SHMRING_ERR_OWNER: return "segment is owned by another user";
    case SHMRING_ERR_ARG: return "invalid argument";
    case SHMRING_ERR_BUSY: return "segment is locked exclusively by another process (being removed, or a tool holds it)";
    case SHMRING_AGAIN: return "would block: no message or no room now";
    case SHMRING_CLOSED: return "the other end closed the channel";
    case SHMRING_TOO_BIG: return "message too big";
    case SHMRING_TIMEOUT: return "timed out";
    case SHMRING_ROLE_TAKEN: return "that end of the channel is held by another live process";
    case SHMRING_PEER_GONE: return "the process at the other end died";
    case SHMRING_OWNER_DIED: return "the previous holder of the lock died holding it";
    case SHMRING_NOT_RECOVERABLE: return "the lock is not recoverable: a holder died and it was never marked consistent";
    case SHMRING_NOT_OWNER: return "the lock is not held by this process";
    case SHMRING_LAGGED: return "the subscriber fell behind: messages were overwritten";
    default: return "unknown shmring error";
    }
}

/* ------------------------------------------------------------------------ */
/* Segment header: the first page of every shmring segment                   */
/* ------------------------------------------------------------------------ */

/* Layout version of everything in this header.  Bump on any layout change.
 * Version 2 added the attachment roster, the removal state and the
 * persistent mark, and moved the payload to the first page boundary. */
#define SHMRING_LAYOUT_VERSION 2u

/* Offset of the payload from the start of the mapping: the 128 bytes of
 * header fields, then the roster of attached processes, then (page aligned)
 * the payload. */
#define SHMRING_HEADER_SIZE 4096u
#define SHMRING_HEADER_FIELDS_SIZE 128u

/* Segment kinds: what the payload holds. */
enum shmring_kind {
    SHMRING_KIND_RAW = 1,     /* a plain Segment: the payload is the user's */
    SHMRING_KIND_CHANNEL = 2, /* SPSC channel */
    SHMRING_KIND_SYNC = 3,    /* a named synchronisation primitive */
    SHMRING_KIND_QUEUE = 4,   /* MPMC queue */
    SHMRING_KIND_TOPIC = 5,   /* broadcast topic */
    SHMRING_KIND_QUEUE_CHUNK = 6 /* overflow chunk of a queue */
};
#define SHMRING_KIND_MAX 6u

/* ABI word: 0xA5 marker, pointer size, byte-order tag.  A peer of the other
 * byte order reads it byte-swapped and so never mistakes it for its own. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define SHMRING_ENDIAN_TAG 0x42u /* 'B' */
#else
#define SHMRING_ENDIAN_TAG 0x4Cu /* 'L' */
#endif
#define SHMRING_ABI_WORD \
    ((uint32_t)0xA5000000u | ((uint32_t)sizeof(void *) << 16) | (uint32_t)SHMRING_ENDIAN_TAG)

/* Flags in shmring_segment_header.flags (none defined yet; must be zero). */
#define SHMRING_SEGMENT_FLAGS_KNOWN 0u

/* shmring_segment_header.state */
#define SHMRING_STATE_LIVE 0u
#define SHMRING_STATE_REMOVED 1u /* its last user removed it: attaching fails [S9] */

typedef struct shmring_segment_header {
    uint64_t magic;         /* the 8 bytes "SHMRING\1"; stored last, release [S1] */
    uint32_t version;       /* SHMRING_LAYOUT_VERSION */
    uint32_t abi;           /* SHMRING_ABI_WORD */
    uint32_t kind;          /* enum shmring_kind */
    uint32_t header_size;   /* offset of the payload: SHMRING_HEADER_SIZE */
    uint64_t total_size;    /* header + payload in bytes: the true size */
    int64_t creator_pid;    /* pid of the creating process */
    uint64_t creator_start; /* its start time, clock ticks after boot (/proc/PID/stat field 22) */
    uint64_t created_ns;    /* creation time, CLOCK_REALTIME nanoseconds */
    uint32_t creator_uid;   /* effective uid of the creator */
    uint32_t flags;         /* SHMRING_SEGMENT_FLAGS_KNOWN bits only */
    uint64_t checksum;      /* FNV-1a 64 of bytes [8, 64): every field above but magic */
    /* Mutable fields (not in the checksum): */
    uint32_t state;           /* SHMRING_STATE_*: written once, by the remover [S9] */
    uint32_t persistent;      /* 1: the last user to leave does not remove it */
    uint32_t roster_overflow; /* attachments that found the roster full */
    uint32_t reserved0;
    uint8_t reserved[40]; /* zero; room for later fields */
} shmring_segment_header;

SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, magic) == 0, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, version) == 8, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, abi) == 12, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, kind) == 16, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, header_size) == 20, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, total_size) == 24, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, creator_pid) == 32, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, creator_start) == 40, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, created_ns) == 48, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, creator_uid) == 56, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, flags) == 60, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, checksum) == 64, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, state) == 72, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, persistent) == 76, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, roster_overflow) == 80, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, reserved) == 88, "layout");
SHMRING_STATIC_ASSERT(sizeof(shmring_segment_header) == SHMRING_HEADER_FIELDS_SIZE, "layout");

/* The roster: one entry per attachment, after the header fields.  Display
 * only (who uses the segment); whether anybody does is the lease's job. */
typedef struct shmring_roster_entry {
    uint64_t token;       /* process token of the attached process; 0 = free [S10] */
    uint64_t attached_ns; /* CLOCK_REALTIME nanoseconds of the attach (display) */
} shmring_roster_entry;

#define SHMRING_ROSTER_OFFSET SHMRING_HEADER_FIELDS_SIZE
#define SHMRING_ROSTER_SLOTS ((SHMRING_HEADER_SIZE - SHMRING_ROSTER_OFFSET) / 16u)
SHMRING_STATIC_ASSERT(sizeof(shmring_roster_entry) == 16, "layout");
SHMRING_STATIC_ASSERT(SHMRING_ROSTER_SLOTS == 248, "layout");

#define SHMRING_CHECKSUM_BEGIN 8u
#define SHMRING_CHECKSUM_END 64u

/* The magic as a native integer whose bytes in memory are "SHMRING\1" on
 * either byte order. */
static inline uint64_t shmring_magic(void)
{
    static const unsigned char bytes[8] = {'S', 'H', 'M', 'R', 'I', 'N', 'G', 1};
    uint64_t v;
    memcpy(&v, bytes, sizeof v);
    return v;
}

/* FNV-1a, 64 bit: cheap, dependency-free, detects stray writes to the header
 * (not an authentication code: a hostile peer can recompute it). */
static inline uint64_t shmring_fnv1a64(const void *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    size_t i;
    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static inline uint64_t shmring_header_checksum(const shmring_segment_header *h)
{
    return shmring_fnv1a64((const unsigned char *)h + SHMRING_CHECKSUM_BEGIN,
                           SHMRING_CHECKSUM_END - SHMRING_CHECKSUM_BEGIN);
}

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

/* Is the process (pid, start_ticks) still running?  A reused pid has another
 * start time; a zombie has exited and only waits to be reaped.  When /proc
 * cannot tell, the answer is "alive": declaring a live holder dead would
 * hand its lock or its channel end to a second process.  `start_mask`
 * selects the bits of the start time that were recorded; a recorded start
 * time of 0 means "unknown" and is not compared. */
static inline int shmring_process_alive_masked(int64_t pid, uint64_t start_ticks, uint64_t start_mask)
{
    uint64_t now_start = 0;
    char state = '?';
    int rc = shmring_proc_stat(pid, &now_start, &state);
    if (rc == -1)
        return 0;
    if (rc != 0)
        return 1;
    if ((state == 'Z' || state == 'X' || state == 'x') && shmring_zombie_exited(pid))
        return 0;
    return (start_ticks & start_mask) == 0 || (now_start & start_mask) == (start_ticks & start_mask);
}

static inline int shmring_process_alive(int64_t pid, uint64_t start_ticks)
{
    return shmring_process_alive_masked(pid, start_ticks, UINT64_MAX);
}

/* ------------------------------------------------------------------------ */
/* Process tokens: who holds a channel end, a lock, a roster entry           */
/* ------------------------------------------------------------------------ */

/* A process token packs a pid (high 32 bits) and the low 32 bits of its start
 * time into one word, so that it can be claimed with a single CAS and still
 * tell a live process from a dead one whose pid was reused.  0 = nobody. */
static inline uint64_t shmring_token_make(int64_t pid, uint64_t start_ticks)
{
    return ((uint64_t)(uint32_t)pid << 32) | (start_ticks & UINT64_C(0xffffffff));
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

static inline int shmring_token_alive(uint64_t token)
{
    if (token == 0)
        return 0;
    return shmring_process_alive_masked(shmring_token_pid(token), token, UINT64_C(0xffffffff));
}

/* ------------------------------------------------------------------------ */
/* Segments: create, attach, leave, remove                                   */
/* ------------------------------------------------------------------------ */
/*
 * Lifetime.  A segment lives while any live process is attached to it.  An
 * attachment holds a *lease*: an open-file-description (OFD) read lock on
 * byte 0 of the object, through a descriptor kept open for as long as the
 * attachment lasts.  The kernel drops the lock when the last descriptor of
 * that description closes, which also happens when the process dies, however
 * it dies; a child made by fork, or handed the descriptor (SCM_RIGHTS,
 * spawn's descriptor passing), shares the description and so the lease.
 * The memory is never mapped through the lease's description (a mapping
 * keeps its description, and so a lock on it, alive until it is unmapped):
 * it is mapped through a second description of the same object.
 *
 * Leaving: the process gives back its roster entry and closes its lease,
 * then opens a fresh description of the object and asks for the write lock
 * without waiting.  Granted means that no lease is left anywhere: unless the
 * segment is persistent, the leaver removes it (`state` becomes REMOVED
 * [S9], what depends on it goes, and the name is unlinked if it still names
 * this object).  Refused means somebody else still uses it.
 *
 * Attaching takes the read lock first (waiting while a remover holds the
 * write lock), then reads `state`: REMOVED means it came too late, and it
 * fails as if the name did not exist.  So an object is never removed under a
 * process that is attached to it, and nobody attaches to a removed one.
 *
 * The roster after the header fields lists who is attached, for tools; it
 * is best effort (a full roster only counts the extra attachments).
 */

/* A process's attachment to (or look at) one mapped segment. */
typedef struct shmring_segment {
    unsigned char *base; /* start of the mapping: the header */
    size_t map_size;     /* usable bytes: header.total_size, as validated */
    size_t map_len;      /* bytes actually mapped (what munmap gets) */
    int writable;        /* mapped PROT_WRITE */
    int lease_fd;        /* descriptor holding the lease; -1: not attached (looked at, or left) */
    int roster_slot;     /* our roster entry, -1 for none */
    uint64_t token;      /* the process token in that entry */
    uint64_t dev, ino;   /* identity of the object: a later object of the same name is another one */
    char name[NAME_MAX + 2]; /* "/NAME" */
} shmring_segment;

#define SHMRING_OPEN_READONLY 1u          /* map read-only */
#define SHMRING_OPEN_ALLOW_OTHER_OWNER 2u /* accept a segment owned by another uid */
#define SHMRING_OPEN_NO_ATTACH 4u         /* look only: no lease, no roster entry (tools, queue chunks) */

/* How long attaching waits for a remover (or a tool) holding the write lock. */
#define SHMRING_LEASE_WAIT_NS UINT64_C(2000000000)

/* Open-file-description locks (Linux 3.15); glibc declares them only under
 * _GNU_SOURCE, and the values are the same on every architecture. */
#ifndef F_OFD_GETLK
#define F_OFD_GETLK 36
#define F_OFD_SETLK 37
#endif

/* Payload (the part after the header) of a mapped segment. */
static inline unsigned char *shmring_segment_payload(const shmring_segment *s)
{
    return s->base + SHMRING_HEADER_SIZE;
}

static inline size_t shmring_segment_payload_size(const shmring_segment *s)
{
    return s->map_size - SHMRING_HEADER_SIZE;
}

static inline shmring_roster_entry *shmring_segment_roster(unsigned char *base)
{
    return (shmring_roster_entry *)(void *)(base + SHMRING_ROSTER_OFFSET);
}

/* POSIX shared-memory names: "/" followed by 1 to NAME_MAX-1 characters from
 * [A-Za-z0-9._-], not starting with '.'.  Returns 0 if valid. */
static inline int shmring_name_check(const char *name)
{
    size_t i, n;
    if (name == NULL || name[0] != '/')
        return SHMRING_ERR_ARG;
    n = strlen(name);
    if (n < 2 || n > NAME_MAX || name[1] == '.')
        return SHMRING_ERR_ARG;
    for (i = 1; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok)
            return SHMRING_ERR_ARG;
    }
    return 0;
}

/* Validate a mapped header against the size of the object behind it.
 * `avail` is how many bytes of the object exist (its st_size).  The header
 * is copied out once and only the copy is checked and used (to `copy`, if
 * not NULL): a peer rewriting the live header cannot change a value between
 * its check and its use. */
static inline int shmring_header_check_copy(const shmring_segment_header *live, uint64_t avail,
                                            shmring_segment_header *copy)
{
    shmring_segment_header local;
    const shmring_segment_header *h = &local;
    uint64_t magic;
    if (copy == NULL)
        copy = &local;
    if (avail == 0)
        return SHMRING_ERR_NOT_READY;
    if (avail < sizeof(magic))
        return SHMRING_ERR_FOREIGN; /* too small to hold even the magic: not ours */
    /* [S1] acquire: pairs with the creator's release store of magic, so that
     * every header field written before it is visible in the copy below. */
    magic = __atomic_load_n(&live->magic, __ATOMIC_ACQUIRE);
    if (magic == 0 && avail >= SHMRING_HEADER_SIZE)
        return SHMRING_ERR_NOT_READY;
    if (magic != shmring_magic())
        return SHMRING_ERR_FOREIGN;
    if (avail < SHMRING_HEADER_SIZE)
        return SHMRING_ERR_TRUNCATED;
    memcpy(&local, (const void *)live, sizeof local);
    local.magic = magic;
    if (h->abi != SHMRING_ABI_WORD)
        return SHMRING_ERR_ABI;
    if (h->version != SHMRING_LAYOUT_VERSION)
        return SHMRING_ERR_VERSION;
    if (h->checksum != shmring_header_checksum(h))
        return SHMRING_ERR_CHECKSUM;
    if (h->header_size != SHMRING_HEADER_SIZE || h->total_size <= SHMRING_HEADER_SIZE ||
        h->kind == 0 || h->kind > SHMRING_KIND_MAX ||
        (h->flags & ~(uint32_t)SHMRING_SEGMENT_FLAGS_KNOWN) != 0)
        return SHMRING_ERR_CORRUPT;
    if (h->total_size > avail)
        return SHMRING_ERR_TRUNCATED;
    if (copy != &local)
        *copy = local;
    return SHMRING_OK;
}

static inline int shmring_header_check(const shmring_segment_header *h, uint64_t avail)
{
    return shmring_header_check_copy(h, avail, NULL);
}

/* -- leases ------------------------------------------------------------------- */

/* Lock byte 0 of the object behind `fd`, shared (a lease) or exclusive (a
 * remover), without waiting.  0, or -1 with errno: EAGAIN when another
 * description holds a conflicting lock, EBADF for an exclusive lock through
 * a read-only descriptor. */
static inline int shmring_lease_lock(int fd, int exclusive)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = exclusive ? F_WRLCK : F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    for (;;) {
        if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
            return 0;
        if (errno != EINTR)
            break;
    }
    if (errno == EACCES)
        errno = EAGAIN;
    return -1;
}

/* Does any description hold a lease (or the remover's lock) on the object
 * behind `fd`, which holds none itself?  1 yes, 0 no, -1 with errno.  Takes
 * no lock: attaching processes are not disturbed. */
static inline int shmring_lease_probe(int fd)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0)
        return -1;
    return fl.l_type != F_UNLCK;
}

/* Take a lease on `fd`, waiting up to SHMRING_LEASE_WAIT_NS while a
 * remover or a tool holds the write lock.  SHMRING_OK, SHMRING_ERR_BUSY, or
 * SHMRING_ERR_SYS. */
static inline int shmring_lease_take(int fd)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        if (shmring_lease_lock(fd, 0) == 0)
            return SHMRING_OK;
        if (errno != EAGAIN)
            return SHMRING_ERR_SYS;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((uint64_t)(now.tv_sec - start.tv_sec) * UINT64_C(1000000000) + (uint64_t)now.tv_nsec -
                (uint64_t)start.tv_nsec >=
            SHMRING_LEASE_WAIT_NS)
            return SHMRING_ERR_BUSY;
        poll(NULL, 0, 1); /* 1 ms between tries */
    }
}

/* A new open file description of the object behind `fd` (not a dup: locks
 * taken on it are its own): through /proc/self/fd, else by `name` if that
 * still names the same object.  -1 with errno otherwise. */
static inline int shmring_fd_reopen(int fd, const char *name, int writable)
{
    char path[64];
    struct stat st, mine;
    int fresh, oflags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    fresh = open(path, oflags);
    if (fresh >= 0 || errno == EACCES)
        return fresh;
    if (fstat(fd, &mine) != 0 || (fresh = shm_open(name, oflags, 0)) < 0)
        return -1;
    if (fstat(fresh, &st) != 0 || st.st_dev != mine.st_dev || st.st_ino != mine.st_ino) {
        close(fresh);
        errno = ENOENT;
        return -1;
    }
    return fresh;
}

/* -- the roster ------------------------------------------------------------- */

static inline uint64_t shmring_realtime_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * UINT64_C(1000000000) + (uint64_t)now.tv_nsec;
}

/* Enter `token` in the roster of the segment at `base`: a free entry, else
 * the entry of a dead process.  Returns the entry, or -1 when the roster is
 * full (the attachment is then only counted in roster_overflow). */
static inline int shmring_roster_add(unsigned char *base, uint64_t token)
{
    shmring_roster_entry *r = shmring_segment_roster(base);
    shmring_segment_header *h = (shmring_segment_header *)(void *)base;
    unsigned i, pass;
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < SHMRING_ROSTER_SLOTS; i++) {
            /* relaxed: a first guess for the CAS. */
            uint64_t cur = __atomic_load_n(&r[i].token, __ATOMIC_RELAXED);
            if (cur != 0 && (pass == 0 || shmring_token_alive(cur)))
                continue;
            /* acq_rel [S10]: the entry is ours; pairs with the release CAS
             * of shmring_roster_remove by its previous holder. */
            if (__atomic_compare_exchange_n(&r[i].token, &cur, token, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
                /* relaxed: display only. */
                __atomic_store_n(&r[i].attached_ns, shmring_realtime_ns(), __ATOMIC_RELAXED);
                return (int)i;
            }
        }
    }
    /* relaxed: a count for display. */
    __atomic_fetch_add(&h->roster_overflow, 1u, __ATOMIC_RELAXED);
    return -1;
}

/* Take `token` out of entry `slot` (or out of the overflow count). */
static inline void shmring_roster_remove(unsigned char *base, int slot, uint64_t token)
{
    shmring_segment_header *h = (shmring_segment_header *)(void *)base;
    if (slot >= 0 && (unsigned)slot < SHMRING_ROSTER_SLOTS) {
        uint64_t expected = token;
        /* release [S10]: pairs with the acq_rel CAS of the next roster_add.
         * Fails harmlessly if a reaper took the entry meanwhile. */
        __atomic_compare_exchange_n(&shmring_segment_roster(base)[slot].token, &expected, 0, 0, __ATOMIC_RELEASE,
                                    __ATOMIC_RELAXED);
        return;
    }
    {
        /* relaxed: a display count, never taken below zero. */
        uint32_t n = __atomic_load_n(&h->roster_overflow, __ATOMIC_RELAXED);
        while (n > 0 && !__atomic_compare_exchange_n(&h->roster_overflow, &n, n - 1, 0, __ATOMIC_RELAXED,
                                                     __ATOMIC_RELAXED)) {
        }
    }
}

/* -- create ----------------------------------------------------------------- */

/* Create a new segment with `payload_size` bytes after the header, every
 * header field filled in but the magic: nobody can open it yet.  The
 * creator is attached (its lease is taken before anything else, and it is
 * the first roster entry).  Initialise the payload, then call
 * shmring_segment_publish.  O_EXCL: an existing name fails with
 * SHMRING_ERR_SYS/EEXIST and is left untouched.  The pages are reserved with
 * posix_fallocate, so that a full /dev/shm fails here (ENOSPC) instead of
 * raising SIGBUS on first touch later.  On any failure the half-made object
 * is unlinked. */
static inline int shmring_segment_create_unpublished(const char *name, uint64_t payload_size, uint32_t kind,
                                                     mode_t mode, shmring_segment *out)
{
    shmring_segment_header *h;
    shmring_roster_entry *r;
    struct stat st;
    uint64_t total, start = 0;
    void *base;
    int fd, lease = -1, rc, saved;

    memset(out, 0, sizeof *out);
    out->lease_fd = out->roster_slot = -1;
    if (shmring_name_check(name) != 0 || kind == 0 || kind > SHMRING_KIND_MAX ||
        payload_size == 0 || payload_size > (uint64_t)INT64_MAX - SHMRING_HEADER_SIZE ||
        (mode & ~(mode_t)0777) != 0)
        return SHMRING_ERR_ARG;
    total = payload_size + SHMRING_HEADER_SIZE;
    if (total > (uint64_t)SIZE_MAX)
        return SHMRING_ERR_ARG;

    fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, mode);
    if (fd < 0)
        return SHMRING_ERR_SYS;
    /* The lease first, on a description of its own: from now on a tool sees
     * the object as in use. */
    lease = shmring_fd_reopen(fd, name, 0);
    if (lease < 0 || shmring_lease_lock(lease, 0) != 0)
        goto fail;
    /* shm_open applied the umask; the caller asked for exactly `mode`. */
    if (fchmod(fd, mode) != 0 || ftruncate(fd, (off_t)total) != 0 || fstat(fd, &st) != 0)
        goto fail;
    do {
        rc = posix_fallocate(fd, 0, (off_t)total);
    } while (rc == EINTR);
    if (rc != 0 && rc != EOPNOTSUPP) {
        errno = rc;
        goto fail;
    }
    base = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        goto fail;
    close(fd);

    h = (shmring_segment_header *)base;
    h->version = SHMRING_LAYOUT_VERSION;
    h->abi = SHMRING_ABI_WORD;
    h->kind = kind;
    h->header_size = SHMRING_HEADER_SIZE;
    h->total_size = total;
    h->creator_pid = (int64_t)getpid();
    shmring_proc_stat(h->creator_pid, &start, NULL);
    h->creator_start = start;
    h->created_ns = shmring_realtime_ns();
    h->creator_uid = (uint32_t)geteuid();
    h->flags = 0;
    h->checksum = shmring_header_checksum(h);

    out->token = shmring_token_make(h->creator_pid, start);
    r = shmring_segment_roster((unsigned char *)base);
    r[0].token = out->token; /* published with the magic [S1] */
    r[0].attached_ns = h->created_ns;
    out->roster_slot = 0;
    out->base = (unsigned char *)base;
    out->map_size = out->map_len = (size_t)total;
    out->writable = 1;
    out->lease_fd = lease;
    out->dev = (uint64_t)st.st_dev;
    out->ino = (uint64_t)st.st_ino;
    memcpy(out->name, name, strlen(name) + 1);
    return SHMRING_OK;

fail:
    saved = errno;
    close(fd);
    if (lease >= 0)
        close(lease);
    shm_unlink(name); /* ours: O_EXCL guarantees we made it */
    errno = saved;
    return SHMRING_ERR_SYS;
}

/* Make a segment made by shmring_segment_create_unpublished visible to
 * openers: everything written to it so far is visible to them. */
static inline void shmring_segment_publish(shmring_segment *s)
{
    shmring_segment_header *h = (shmring_segment_header *)s->base;
    /* release [S1]: pairs with the acquire load in shmring_header_check, so
     * that an opener that sees the magic sees the header and payload. */
    __atomic_store_n(&h->magic, shmring_magic(), __ATOMIC_RELEASE);
}

/* Create and publish a segment whose payload starts zeroed. */
static inline int shmring_segment_create(const char *name, uint64_t payload_size, uint32_t kind, mode_t mode,
                                         shmring_segment *out)
{
    int rc = shmring_segment_create_unpublished(name, payload_size, kind, mode, out);
    if (rc == SHMRING_OK)
        shmring_segment_publish(out);
    return rc;
}

/* -- attach ----------------------------------------------------------------- */

/* Attach to (or, with SHMRING_OPEN_NO_ATTACH, look at) the object behind
 * `fd`, an open descriptor of it that this call takes over (it is kept as
 * the lease, or closed).  `name` ("/NAME") is remembered for leaving.  The
 * owner check comes first, before a byte is read. */
static inline int shmring_segment_attach_fd(int fd, const char *name, unsigned flags, shmring_segment *out)
{
    shmring_segment_header hdr;
    struct stat st;
    void *base;
    size_t map;
    int rc, saved, map_fd, attach = !(flags & SHMRING_OPEN_NO_ATTACH), writable = !(flags & SHMRING_OPEN_READONLY);

    memset(out, 0, sizeof *out);
    out->lease_fd = out->roster_slot = -1;
    if (name == NULL || strlen(name) > NAME_MAX) {
        close(fd);
        return SHMRING_ERR_ARG;
    }
    if (fstat(fd, &st) != 0)
        goto fail_sys;
    if (!(flags & SHMRING_OPEN_ALLOW_OTHER_OWNER) && st.st_uid != geteuid()) {
        rc = SHMRING_ERR_OWNER;
        goto fail;
    }
    if (attach && (rc = shmring_lease_take(fd)) != SHMRING_OK) {
        if (rc == SHMRING_ERR_SYS)
            goto fail_sys;
        goto fail;
    }
    if (st.st_size <= 0) {
        rc = SHMRING_ERR_NOT_READY;
        goto fail;
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        rc = SHMRING_ERR_CORRUPT;
        goto fail;
    }
    /* Map what exists.  Bytes of a short object's last page past its end read
     * as zero, so a short header is still safe to inspect.  An attachment
     * maps through a second description: `fd` is the lease. */
    map = (size_t)st.st_size;
    map_fd = attach ? shmring_fd_reopen(fd, name, writable) : fd;
    if (map_fd < 0)
        goto fail_sys;
    base = mmap(NULL, map, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, map_fd, 0);
    saved = errno;
    if (map_fd != fd)
        close(map_fd);
    errno = saved;
    if (base == MAP_FAILED)
        goto fail_sys;
    rc = shmring_header_check_copy((const shmring_segment_header *)base, (uint64_t)st.st_size, &hdr);
    if (rc == SHMRING_OK && attach &&
        /* acquire [S9]: pairs with the remover's release store, made while
         * it held the write lock that our lease had to wait for. */
        __atomic_load_n(&((shmring_segment_header *)base)->state, __ATOMIC_ACQUIRE) != SHMRING_STATE_LIVE) {
        munmap(base, map);
        close(fd);
        errno = ENOENT; /* removed by its last user: as good as gone */
        return SHMRING_ERR_SYS;
    }
    if (rc != SHMRING_OK) {
        munmap(base, map);
        goto fail;
    }
    out->base = (unsigned char *)base;
    out->map_size = (size_t)hdr.total_size; /* <= map: checked on the copy */
    out->map_len = map;
    out->writable = writable;
    out->dev = (uint64_t)st.st_dev;
    out->ino = (uint64_t)st.st_ino;
    memcpy(out->name, name, strlen(name) + 1);
    if (attach) {
        /* Close-on-exec: a descriptor handed over by a parent (spawn's
         * pass_fds clears the flag) must not keep the lease in programs this
         * process executes. */
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
        out->lease_fd = fd;
        if (writable) {
            out->token = shmring_token_self();
            out->roster_slot = shmring_roster_add(out->base, out->token);
        }
    } else {
        close(fd);
    }
    return SHMRING_OK;

fail_sys:
    rc = SHMRING_ERR_SYS;
fail:
    saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* Attach to an existing segment by name and validate it.  `flags` is a mask
 * of SHMRING_OPEN_*. */
static inline int shmring_segment_open(const char *name, unsigned flags, shmring_segment *out)
{
    int fd, rc, tries;
    memset(out, 0, sizeof *out);
    out->lease_fd = out->roster_slot = -1;
    if (shmring_name_check(name) != 0)
        return SHMRING_ERR_ARG;
    for (tries = 0;; tries++) {
        fd = shm_open(name, ((flags & SHMRING_OPEN_READONLY) ? O_RDONLY : O_RDWR) | O_CLOEXEC, 0);
        if (fd < 0)
            return SHMRING_ERR_SYS;
        rc = shmring_segment_attach_fd(fd, name, flags, out);
        /* ENOENT after a successful shm_open: the object was removed by its
         * last user as we attached; a new one may have the name already. */
        if (rc != SHMRING_ERR_SYS || errno != ENOENT || tries > 0)
            return rc;
    }
}

/* A fresh open file description of the object `s` is attached to (even if
 * its name was unlinked meanwhile); -1 with errno. */
static inline int shmring_segment_fresh_fd(const shmring_segment *s, int writable)
{
    if (s->lease_fd < 0) {
        errno = EBADF;
        return -1;
    }
    return shmring_fd_reopen(s->lease_fd, s->name, writable);
}

/* A second attachment to the object `s` is attached to, independent of the
 * first (its own lease and roster entry), even if the name was unlinked. */
static inline int shmring_segment_reopen(const shmring_segment *s, unsigned flags, shmring_segment *out)
{
    int fd = shmring_segment_fresh_fd(s, !(flags & SHMRING_OPEN_READONLY));
    if (fd < 0) {
        memset(out, 0, sizeof *out);
        out->lease_fd = out->roster_slot = -1;
        return SHMRING_ERR_SYS;
    }
    return shmring_segment_attach_fd(fd, s->name, flags, out);
}

/* In a child made by fork: the lease is shared with the parent already (the
 * descriptor is inherited); enter the child in the roster as well. */
static inline void shmring_segment_after_fork(shmring_segment *s)
{
    if (s->base == NULL || s->lease_fd < 0 || !s->writable)
        return;
    s->token = shmring_token_self();
    s->roster_slot = shmring_roster_add(s->base, s->token);
}

/* -- leave and remove ---------------------------------------------------- */

static inline int shmring_queue_remove_chunks(const char *queue_name, uint64_t queue_id);
static inline uint64_t shmring_queue_id_of(const unsigned char *base, size_t len);

/* Does `name` name the object (dev, ino)?  1 yes, 0 no (gone, or another
 * object took the name), -1 with errno. */
static inline int shmring_segment_named(const char *name, uint64_t dev, uint64_t ino)
{
    struct stat st;
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0), r;
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    r = fstat(fd, &st);
    close(fd);
    if (r != 0)
        return -1;
    return (uint64_t)st.st_dev == dev && (uint64_t)st.st_ino == ino;
}

/* Unlink `name` if it still names the object (dev, ino).  SHMRING_OK when
 * the name no longer names it (unlinked now, or gone, or another object's);
 * SHMRING_ERR_SYS when the unlink failed (EPERM: another user's object in
 * the sticky /dev/shm).  Between the check and the unlink the name can
 * change hands: POSIX has no "unlink if it is still this file"; a name
 * taken over in those microseconds would lose its new object's name. */
static inline int shmring_segment_unlink_if_same(const char *name, uint64_t dev, uint64_t ino)
{
    int named = shmring_segment_named(name, dev, ino);
    if (named <= 0)
        return named == 0 ? SHMRING_OK : SHMRING_ERR_SYS;
    return shm_unlink(name) == 0 || errno == ENOENT ? SHMRING_OK : SHMRING_ERR_SYS;
}

/* Remove the object behind `fd`, whose write lock the caller holds (so
 * nobody is attached): unlink `name` if it still names this object, and
 * only once that worked (an object whose name cannot be removed stays
 * usable), mark it REMOVED for late attachers [S9] and remove what depends
 * on it (a queue's overflow chunks). */
static inline int shmring_segment_remove_locked(int fd, const char *name)
{
    struct stat st;
    size_t len;
    unsigned char *base;
    uint64_t queue_id = 0;
    if (fstat(fd, &st) != 0)
        return SHMRING_ERR_SYS;
    if (shmring_segment_unlink_if_same(name, (uint64_t)st.st_dev, (uint64_t)st.st_ino) != SHMRING_OK)
        return SHMRING_ERR_SYS;
    len = (uint64_t)st.st_size < (uint64_t)(2u * SHMRING_HEADER_SIZE) ? (size_t)st.st_size
                                                                       : (size_t)(2u * SHMRING_HEADER_SIZE);
    if (len >= SHMRING_HEADER_FIELDS_SIZE) {
        base = (unsigned char *)mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base != MAP_FAILED) {
            shmring_segment_header *h = (shmring_segment_header *)(void *)base;
            /* acquire [S1]: the kind below was written before the magic. */
            if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) == shmring_magic()) {
                /* release [S9]: pairs with the acquire load of an attacher
                 * that waited for our write lock. */
                __atomic_store_n(&h->state, SHMRING_STATE_REMOVED, __ATOMIC_RELEASE);
                if (h->kind == SHMRING_KIND_QUEUE)
                    queue_id = shmring_queue_id_of(base, len);
            }
            munmap(base, len);
        }
    }
    if (queue_id != 0 && shmring_queue_remove_chunks(name, queue_id) != SHMRING_OK)
        return SHMRING_ERR_SYS;
    return SHMRING_OK;
}

/* Give up the attachment without asking whether it was the last one: for
 * segments whose lifetime something else decides (a queue's overflow chunks
 * live as long as they are in its chain), and the first half of leaving. */
static inline void shmring_segment_forget_lease(shmring_segment *s)
{
    if (s->base == NULL || s->lease_fd < 0)
        return;
    if (s->writable)
        shmring_roster_remove(s->base, s->roster_slot, s->token);
    s->roster_slot = -1;
    close(s->lease_fd);
    s->lease_fd = -1;
}

/* Give this attachment back (roster entry and lease); then, if nobody else
 * is attached, remove the segment, unless it is persistent and still has
 * its name (persistent keeps a segment until its name is unlinked) or is a
 * queue's overflow chunk (it belongs to its queue's chain).  The mapping
 * stays usable (shmring_segment_close unmaps).  Idempotent.  SHMRING_OK, or
 * SHMRING_ERR_SYS when a removal failed (the attachment is given back all
 * the same; `shmring gc` can retry). */
static inline int shmring_segment_leave(shmring_segment *s)
{
    shmring_segment_header *h = (shmring_segment_header *)(void *)s->base;
    int probe, rc = SHMRING_OK;
    if (s->base == NULL || s->lease_fd < 0)
        return SHMRING_OK;
    /* A fresh description, opened while our lease is still open (so that
     * /proc/self/fd has it), to ask for the write lock.  It fails without
     * write permission on the object: then the next leaver or `shmring gc`
     * removes it. */
    probe = shmring_segment_fresh_fd(s, 1);
    shmring_segment_forget_lease(s);
    if (probe < 0)
        return SHMRING_OK;
    if (h->kind != SHMRING_KIND_QUEUE_CHUNK && shmring_lease_lock(probe, 1) == 0 &&
        /* relaxed: read with the write lock held, which a setter that has
         * left released after its store (the kernel's lock orders them). */
        (__atomic_load_n(&h->persistent, __ATOMIC_RELAXED) == 0 ||
         shmring_segment_named(s->name, s->dev, s->ino) == 0))
        rc = shmring_segment_remove_locked(probe, s->name);
    close(probe);
    return rc;
}

/* Leave (shmring_segment_leave), then unmap. */
static inline int shmring_segment_close(shmring_segment *s)
{
    int rc = shmring_segment_leave(s);
    if (s->base != NULL) {
        if (munmap(s->base, s->map_len) != 0)
            rc = SHMRING_ERR_SYS;
        s->base = NULL;
        s->map_size = s->map_len = 0;
    }
    return rc;
}

/* Mark the segment persistent (1: the last user to leave keeps it) or not. */
static inline void shmring_segment_set_persistent(shmring_segment *s, int persistent)
{
    shmring_segment_header *h = (shmring_segment_header *)(void *)s->base;
    /* relaxed: read by leavers with the write lock, which orders it. */
    __atomic_store_n(&h->persistent, persistent ? 1u : 0u, __ATOMIC_RELAXED);
}

/* Remove a segment's name now.  Attached processes keep their mappings; the
 * last of them to leave removes what depends on it. */
static inline int shmring_segment_unlink(const char *name)
{
    if (shmring_name_check(name) != 0)
        return SHMRING_ERR_ARG;
    return shm_unlink(name) == 0 ? SHMRING_OK : SHMRING_ERR_SYS;
}

/* For tools: is anybody attached to segment `name`?  1 yes, 0 no, or
 * -SHMRING_ERR_* on failure.  Takes no lock. */
static inline int shmring_segment_in_use(const char *name)
{
    int fd, r;
    if (shmring_name_check(name) != 0)
        return -SHMRING_ERR_ARG;
    fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return -SHMRING_ERR_SYS;
    r = shmring_lease_probe(fd);
    close(fd);
    return r < 0 ? -SHMRING_ERR_SYS : r;
}

/* For tools: does any process hold a lock on the object (dev, ino) (a lease
 * on a segment whose name may be gone)?  From /proc/locks: 1 yes, 0 no, -1
 * when it cannot be read. */
static inline int shmring_object_locked(uint64_t dev, uint64_t ino)
{
    char line[256];
    int found = 0;
    FILE *f = fopen("/proc/locks", "re");
    if (f == NULL)
        return -1;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        /* "N: OFDLCK ADVISORY READ -1 MAJ:MIN:INO START END" (hex device
         * numbers); waiters' lines ("N: -> ...") hold nothing. */
        char kind[16], dummy[16], mode[16], pid[16];
        unsigned int maj, min;
        unsigned long long i;
        if (strstr(line, "->") != NULL ||
            sscanf(line, "%15s %15s %15s %15s %15s %x:%x:%llu", dummy, kind, mode, dummy, pid, &maj, &min, &i) != 8)
            continue;
        found = (uint64_t)i == ino && (uint64_t)makedev(maj, min) == dev;
    }
    fclose(f);
    return found;
}

/* For tools: is `name` a shmring segment whose maker never published it
 * (died creating it)?  Provably ours: the header fields it writes before
 * the magic are there and checksummed, and the magic is still 0.  1 yes,
 * 0 no. */
static inline int shmring_segment_unpublished(const char *name)
{
    shmring_segment_header h;
    struct stat st;
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0), ok;
    if (fd < 0)
        return 0;
    ok = fstat(fd, &st) == 0 && (uint64_t)st.st_size >= SHMRING_HEADER_SIZE &&
         pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h && h.magic == 0 && h.version == SHMRING_LAYOUT_VERSION &&
         h.abi == SHMRING_ABI_WORD && h.header_size == SHMRING_HEADER_SIZE && h.checksum == shmring_header_checksum(&h);
    close(fd);
    return ok;
}

/* For tools (`shmring gc`): remove segment `name` if nobody is attached
 * and it is not persistent (or `even_persistent`).  SHMRING_OK when removed,
 * SHMRING_AGAIN when kept (in use, or persistent), else an error. */
static inline int shmring_segment_remove_unused(const char *name, int even_persistent)
{
    shmring_segment_header h;
    int fd, rc;
    if (shmring_name_check(name) != 0)
        return SHMRING_ERR_ARG;
    fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return SHMRING_ERR_SYS;
    if (shmring_lease_lock(fd, 1) != 0) {
        rc = errno == EAGAIN ? SHMRING_AGAIN : SHMRING_ERR_SYS;
        close(fd);
        return rc;
    }
    if (!even_persistent && pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h && h.magic == shmring_magic() &&
        h.persistent != 0) {
        close(fd);
        return SHMRING_AGAIN;
    }
    rc = shmring_segment_remove_locked(fd, name);
    close(fd);
    return rc;
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

/* Monotonic clock in nanoseconds: deadlines never move with the wall clock. */
static inline uint64_t shmring_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
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
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
    else
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* The sleeper's side: a full fence here and on every CPU running a
 * registered process.  Returns 0, or -1 if membarrier failed: then a light
 * publisher may be missed, and the caller bounds its sleep instead. */
static inline int shmring_heavy_barrier(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0 ? 0 : -1;
}

/* Longest sleep when shmring_heavy_barrier failed (a wake may be lost). */
#define SHMRING_UNFENCED_SLEEP_NS 1000000u

/* ------------------------------------------------------------------------ */
/* Process-shared synchronisation primitives                                 */
/* ------------------------------------------------------------------------ */

/* Each primitive is a small struct that lives at an 8-byte aligned offset of
 * any shared mapping, next to the data it guards.  Blocking is a futex wait
 * on one of its 32-bit words; callers pass an absolute CLOCK_MONOTONIC
 * deadline (0 = none) and get SHMRING_OK when the condition may hold (they
 * retry), SHMRING_TIMEOUT, or SHMRING_ERR_SYS with errno EINTR.  A waiter
 * announces itself in `waiters` before it re-checks and sleeps, and a waker
 * looks at `waiters` after it publishes: seq_cst operations on both sides
 * (Dekker), so that no wake-up is lost and an uncontended release makes no
 * system call.  Owners are process tokens (shmring_token_make), so a dead
 * holder is told from a live one. */

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

/* -- counting semaphore (8 bytes) ------------------------------------------ */

typedef struct shmring_sem {
    uint32_t count;   /* permits; the futex word */
    uint32_t waiters; /* processes/threads about to sleep or sleeping [Y1] */
} shmring_sem;
SHMRING_STATIC_ASSERT(sizeof(shmring_sem) == 8, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_sem, waiters) == 4, "layout");

#define SHMRING_SEM_MAX 0x7fffffffu

static inline void shmring_sem_init(shmring_sem *s, uint32_t value)
{
    /* relaxed: the memory is published with its segment [S1]. */
    __atomic_store_n(&s->count, value, __ATOMIC_RELAXED);
    __atomic_store_n(&s->waiters, 0u, __ATOMIC_RELAXED);
}

/* Take a permit if there is one.  Returns 1 or 0. */
static inline int shmring_sem_try_acquire(shmring_sem *s)
{
    /* relaxed: only a first guess for the CAS. */
    uint32_t c = __atomic_load_n(&s->count, __ATOMIC_RELAXED);
    while (c > 0) {
        /* A count no release can produce was written by a hostile or broken
         * peer: take it as one post and reset it, rather than never sleeping
         * again (shmring_sem_wait sleeps only on 0). */
        uint32_t next = c <= SHMRING_SEM_MAX ? c - 1 : 0;
        /* acquire [Y2]: pairs with the release of shmring_sem_release, so
         * what the releaser did before posting is visible to us. */
        if (__atomic_compare_exchange_n(&s->count, &c, next, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 1;
    }
    return 0;
}

/* Sleep until a permit may be available (then retry try_acquire). */
static inline int shmring_sem_wait(shmring_sem *s, uint64_t deadline_ns)
{
    int rc = SHMRING_OK;
    /* seq_cst [Y1]: announce before re-checking; pairs with the releaser's
     * seq_cst add-then-load in shmring_sem_release. */
    __atomic_fetch_add(&s->waiters, 1u, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&s->count, __ATOMIC_SEQ_CST) == 0)
        rc = shmring_futex_wait_until(&s->count, 0, deadline_ns);
    /* relaxed: a hint for releasers; a stale count costs one wake call. */
    __atomic_fetch_sub(&s->waiters, 1u, __ATOMIC_RELAXED);
    return rc;
}

/* Add n permits and wake up to n sleepers.  SHMRING_ERR_ARG if the count
 * would pass SHMRING_SEM_MAX. */
static inline int shmring_sem_release(shmring_sem *s, uint32_t n)
{
    uint32_t c = __atomic_load_n(&s->count, __ATOMIC_RELAXED);
    do {
        if (n > SHMRING_SEM_MAX || c > SHMRING_SEM_MAX - n)
            return SHMRING_ERR_ARG;
        /* seq_cst [Y1][Y2]: release for the acquirer's CAS; seq_cst so that
         * the load of waiters below cannot miss an announced sleeper. */
    } while (!__atomic_compare_exchange_n(&s->count, &c, c + n, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    if (__atomic_load_n(&s->waiters, __ATOMIC_SEQ_CST) != 0)
        shmring_futex_wake(&s->count, n > (uint32_t)INT_MAX ? INT_MAX : (int)n);
    return SHMRING_OK;
}

/* Make the semaphore's count 1 (a "something happened" signal that does not
 * accumulate) and wake a sleeper.  The exchange is unconditional: a waiter
 * that takes this post synchronises with it, and so sees what the poster
 * published before it [Y2]. */
static inline void shmring_sem_signal(shmring_sem *s)
{
    /* seq_cst [Y1][Y2]: release for the taker; ordered before the load of
     * waiters. */
    if (__atomic_exchange_n(&s->count, 1u, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&s->waiters, __ATOMIC_SEQ_CST) != 0)
        shmring_futex_wake(&s->count, 1);
}

/* -- spin lock (16 bytes) ----------------------------------------------------- */

typedef struct shmring_spinlock {
    uint64_t owner;    /* process token of the holder, 0 = free [Y3] */
    uint64_t reserved; /* zero */
} shmring_spinlock;
SHMRING_STATIC_ASSERT(sizeof(shmring_spinlock) == 16, "layout");

/* One attempt.  SHMRING_OK (taken), SHMRING_AGAIN (held by a live process),
 * SHMRING_OWNER_DIED (taken from a dead holder: repair the data). */
static inline int shmring_spin_try_acquire(shmring_spinlock *l, uint64_t token, int check_holder)
{
    uint64_t cur = 0;
    /* acquire [Y3]: pairs with the release store of shmring_spin_release:
     * the previous holder's writes to the guarded data are visible. */
    if (__atomic_compare_exchange_n(&l->owner, &cur, token, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return SHMRING_OK;
    /* acquire [Y3]: the dead holder's writes are as visible as they will
     * ever be; the CAS fails if anyone else took the lock over first. */
    if (check_holder && cur != token && !shmring_token_alive(cur) &&
        __atomic_compare_exchange_n(&l->owner, &cur, token, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return SHMRING_OWNER_DIED;
    return SHMRING_AGAIN;
}

/* Test-and-test-and-set with the pause hint and bounded exponential backoff,
 * until deadline_ns; looks at the holder's liveness about every millisecond.
 * Returns as shmring_spin_try_acquire, or SHMRING_TIMEOUT. */
static inline int shmring_spin_acquire(shmring_spinlock *l, uint64_t token, uint64_t deadline_ns)
{
    unsigned backoff = 1, i;
    uint64_t next_check = shmring_now_ns() + 1000000u, now;
    for (;;) {
        /* relaxed: test before test-and-set, so waiters spin on a shared
         * copy of the line instead of bouncing it with failed CASes. */
        if (__atomic_load_n(&l->owner, __ATOMIC_RELAXED) == 0) {
            int rc = shmring_spin_try_acquire(l, token, 0);
            if (rc == SHMRING_OK)
                return rc;
        }
        for (i = 0; i < backoff; i++)
            shmring_cpu_relax();
        if (backoff < 1024)
            backoff <<= 1;
        else {
            now = shmring_now_ns();
            if (deadline_ns && now >= deadline_ns)
                return SHMRING_TIMEOUT;
            if (now >= next_check) {
                int rc = shmring_spin_try_acquire(l, token, 1);
                if (rc != SHMRING_AGAIN)
                    return rc;
                next_check = now + 1000000u;
            }
        }
    }
}

static inline int shmring_spin_release(shmring_spinlock *l, uint64_t token)
{
    uint64_t cur = token;
    /* release [Y3]: pairs with the acquire CAS of the next holder. */
    if (!__atomic_compare_exchange_n(&l->owner, &cur, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        return SHMRING_NOT_OWNER;
    return SHMRING_OK;
}

/* A process token that names no process: pid 2^32 - 1 is above any pid_max
 * (shmring_proc_stat refuses pids past INT32_MAX), so a lock it holds is
 * held by a dead process. */
#define SHMRING_TOKEN_ABANDONED UINT64_C(0xffffffff00000000)

/* Give up a spin lock taken with SHMRING_OWNER_DIED without repairing the
 * data: it passes to a holder that names no process, so the next acquirer
 * takes it over as from a dead holder and is told SHMRING_OWNER_DIED again
 * (a spin lock has no state word to keep "owner died" in).  Waiters take it
 * over within their next liveness check (about 1 ms). */
static inline int shmring_spin_abandon(shmring_spinlock *l, uint64_t token)
{
    uint64_t cur = token;
    /* release [Y3]: pairs with the acquire CAS of the take-over. */
    if (!__atomic_compare_exchange_n(&l->owner, &cur, SHMRING_TOKEN_ABANDONED, 0, __ATOMIC_RELEASE,
                                     __ATOMIC_RELAXED))
        return SHMRING_NOT_OWNER;
    return SHMRING_OK;
}

/* -- robust mutex (24 bytes) ------------------------------------------------- */

#define SHMRING_MUTEX_CONSISTENT 0u
#define SHMRING_MUTEX_OWNER_DIED 1u      /* held; the data may be inconsistent */
#define SHMRING_MUTEX_NOT_RECOVERABLE 2u /* released while inconsistent: unusable */

typedef struct shmring_mutex {
    uint64_t owner;   /* process token of the holder, 0 = free [Y4] */
    uint32_t seq;     /* futex word: bumped at every release [Y5] */
    uint32_t waiters; /* announced sleepers [Y5] */
    uint32_t state;   /* SHMRING_MUTEX_*; written by the holder only */
    uint32_t reserved;
} shmring_mutex;
SHMRING_STATIC_ASSERT(sizeof(shmring_mutex) == 24, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_mutex, seq) == 8, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_mutex, waiters) == 12, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_mutex, state) == 16, "layout");

/* After the owner CAS succeeded: report the lock's state to the new holder. */
static inline int shmring_mutex_granted(shmring_mutex *m, int took_from_dead)
{
    /* relaxed: state is written only by holders, ordered by [Y4]. */
    uint32_t state = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
    if (state == SHMRING_MUTEX_NOT_RECOVERABLE) {
        /* release [Y4]: give it back untouched; everyone gets the error. */
        __atomic_store_n(&m->owner, 0, __ATOMIC_RELEASE);
        return SHMRING_NOT_RECOVERABLE;
    }
    if (took_from_dead) {
        /* relaxed: only holders write state; published by the release of
         * owner [Y4] to the next holder. */
        __atomic_store_n(&m->state, SHMRING_MUTEX_OWNER_DIED, __ATOMIC_RELAXED);
        return SHMRING_OWNER_DIED;
    }
    return state == SHMRING_MUTEX_OWNER_DIED ? SHMRING_OWNER_DIED : SHMRING_OK;
}

/* One attempt.  SHMRING_OK, SHMRING_AGAIN, SHMRING_OWNER_DIED (granted; call
 * shmring_mutex_consistent once the data is repaired) or
 * SHMRING_NOT_RECOVERABLE. */
static inline int shmring_mutex_try_acquire(shmring_mutex *m, uint64_t token, int check_holder)
{
    uint64_t cur = 0;
    /* acquire [Y4]: pairs with the release store of owner = 0 in
     * shmring_mutex_release: the last holder's writes are visible. */
    if (__atomic_compare_exchange_n(&m->owner, &cur, token, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return shmring_mutex_granted(m, 0);
    /* acquire [Y4]: take over a dead holder's lock; the CAS fails if anyone
     * else took it over first, so only one process is told OwnerDied. */
    if (check_holder && cur != token && !shmring_token_alive(cur) &&
        __atomic_compare_exchange_n(&m->owner, &cur, token, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return shmring_mutex_granted(m, 1);
    /* relaxed: an early answer; a racing holder's state is re-read later. */
    if (__atomic_load_n(&m->state, __ATOMIC_RELAXED) == SHMRING_MUTEX_NOT_RECOVERABLE)
        return SHMRING_NOT_RECOVERABLE;
    return SHMRING_AGAIN;
}

/* Before sleeping: spin for up to `spin_ns` while the mutex is held, trying
 * again whenever it looks free (test-and-test-and-set).  Critical sections
 * are usually shorter than a wake-up (tens of microseconds on a VM), and a
 * spinning waiter is not announced, so the holder's release makes no system
 * call.  Returns as shmring_mutex_try_acquire (without the liveness check). */
static inline int shmring_mutex_spin_acquire(shmring_mutex *m, uint64_t token, uint64_t spin_ns)
{
    uint64_t until = shmring_now_ns() + spin_ns;
    unsigned i;
    for (i = 1;; i++) {
        /* relaxed: a hint; the CAS in try_acquire is the acquire [Y4]. */
        if (__atomic_load_n(&m->owner, __ATOMIC_RELAXED) == 0) {
            int rc = shmring_mutex_try_acquire(m, token, 0);
            if (rc != SHMRING_AGAIN)
                return rc;
        }
        shmring_cpu_relax();
        if ((i & 63u) == 0 && shmring_now_ns() >= until)
            return SHMRING_AGAIN;
    }
}

/* Sleep until the mutex may be free, looking at the holder first: a dead
 * holder's lock is taken over here.  Returns as try_acquire (SHMRING_AGAIN:
 * woken, retry), or SHMRING_TIMEOUT / SHMRING_ERR_SYS (EINTR). */
static inline int shmring_mutex_wait(shmring_mutex *m, uint64_t token, uint64_t deadline_ns)
{
    uint32_t seq;
    int rc;
    /* seq_cst [Y5]: announce, then read seq and owner; pairs with the
     * releaser's store of owner, bump of seq and load of waiters. */
    __atomic_fetch_add(&m->waiters, 1u, __ATOMIC_SEQ_CST);
    seq = __atomic_load_n(&m->seq, __ATOMIC_SEQ_CST);
    rc = shmring_mutex_try_acquire(m, token, 1);
    if (rc == SHMRING_AGAIN) {
        rc = shmring_futex_wait_until(&m->seq, seq, deadline_ns);
        if (rc == SHMRING_OK)
            rc = SHMRING_AGAIN;
    }
    /* relaxed: a hint for releasers; a stale count costs one wake call. */
    __atomic_fetch_sub(&m->waiters, 1u, __ATOMIC_RELAXED);
    return rc;
}

/* Mark the data repaired after SHMRING_OWNER_DIED. */
static inline int shmring_mutex_consistent(shmring_mutex *m, uint64_t token)
{
    /* relaxed: we hold the lock; owner is ours to read. */
    if (__atomic_load_n(&m->owner, __ATOMIC_RELAXED) != token ||
        __atomic_load_n(&m->state, __ATOMIC_RELAXED) != SHMRING_MUTEX_OWNER_DIED)
        return SHMRING_ERR_ARG;
    __atomic_store_n(&m->state, SHMRING_MUTEX_CONSISTENT, __ATOMIC_RELAXED);
    return SHMRING_OK;
}

static inline int shmring_mutex_release(shmring_mutex *m, uint64_t token)
{
    int all = 0;
    /* relaxed: we hold the lock (checked right below). */
    if (__atomic_load_n(&m->owner, __ATOMIC_RELAXED) != token)
        return SHMRING_NOT_OWNER;
    if (__atomic_load_n(&m->state, __ATOMIC_RELAXED) == SHMRING_MUTEX_OWNER_DIED) {
        /* Released without repair: nobody may trust the data again. */
        __atomic_store_n(&m->state, SHMRING_MUTEX_NOT_RECOVERABLE, __ATOMIC_RELAXED);
        all = 1;
    }
    /* seq_cst [Y4][Y5]: release for the next holder's acquire CAS; seq_cst
     * so that the load of waiters cannot miss an announced sleeper. */
    __atomic_store_n(&m->owner, 0, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&m->seq, 1u, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&m->waiters, __ATOMIC_SEQ_CST) != 0)
        shmring_futex_wake(&m->seq, all ? INT_MAX : 1);
    return SHMRING_OK;
}

/* Release after SHMRING_OWNER_DIED without repairing, for a reason that may
 * pass (out of memory or descriptors): the state stays "owner died", so the
 * next holder is told and tries the repair again.  (shmring_mutex_release
 * would make the lock unusable for good.) */
static inline int shmring_mutex_abandon(shmring_mutex *m, uint64_t token)
{
    /* relaxed: we hold the lock (checked right below). */
    if (__atomic_load_n(&m->owner, __ATOMIC_RELAXED) != token)
        return SHMRING_NOT_OWNER;
    /* seq_cst [Y4][Y5]: as in shmring_mutex_release. */
    __atomic_store_n(&m->owner, 0, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&m->seq, 1u, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&m->waiters, __ATOMIC_SEQ_CST) != 0)
        shmring_futex_wake(&m->seq, 1);
    return SHMRING_OK;
}

/* Take a robust mutex: spin `spin_ns`, then sleep, checking the holder's
 * liveness every `check_ns`.  Returns as shmring_mutex_try_acquire, or
 * SHMRING_TIMEOUT / SHMRING_ERR_SYS (EINTR: a signal; call again). */
static inline int shmring_mutex_lock(shmring_mutex *m, uint64_t token, uint64_t spin_ns, uint64_t check_ns,
                                     uint64_t deadline_ns)
{
    int rc = shmring_mutex_try_acquire(m, token, 0);
    if (rc != SHMRING_AGAIN)
        return rc;
    rc = shmring_mutex_spin_acquire(m, token, spin_ns);
    if (rc != SHMRING_AGAIN)
        return rc;
    for (;;) {
        uint64_t until = shmring_now_ns() + check_ns;
        uint32_t seq;
        if (deadline_ns && deadline_ns < until)
            until = deadline_ns;
        /* seq_cst [Y5]: announce, then re-read; pairs with mutex_release. */
        __atomic_fetch_add(&m->waiters, 1u, __ATOMIC_SEQ_CST);
        seq = __atomic_load_n(&m->seq, __ATOMIC_SEQ_CST);
        rc = shmring_mutex_try_acquire(m, token, 0);
        if (rc == SHMRING_AGAIN) {
            rc = shmring_futex_wait_until(&m->seq, seq, until);
            if (rc == SHMRING_TIMEOUT) {
                /* A whole slice without the lock: is its holder alive? */
                rc = shmring_mutex_try_acquire(m, token, 1);
                if (rc == SHMRING_AGAIN && deadline_ns && shmring_now_ns() >= deadline_ns)
                    rc = SHMRING_TIMEOUT;
            } else if (rc == SHMRING_OK) {
                rc = shmring_mutex_try_acquire(m, token, 0);
            }
        }
        /* relaxed: a hint for releasers; a stale count costs one wake call. */
        __atomic_fetch_sub(&m->waiters, 1u, __ATOMIC_RELAXED);
        if (rc != SHMRING_AGAIN)
            return rc;
    }
}

/* -- event (16 bytes) ---------------------------------------------------------- */

typedef struct shmring_event {
    uint32_t flag;     /* 0 clear, 1 set [Y6] */
    uint32_t waiters;  /* [Y6] */
    uint32_t gen;      /* futex word: bumped by every set, so that a set
                          followed at once by a clear still wakes the
                          waiters of that moment [Y6] */
    uint32_t reserved;
} shmring_event;
SHMRING_STATIC_ASSERT(sizeof(shmring_event) == 16, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_event, gen) == 8, "layout");

static inline int shmring_event_is_set(shmring_event *e)
{
    /* acquire [Y6]: pairs with the release in shmring_event_set. */
    return __atomic_load_n(&e->flag, __ATOMIC_ACQUIRE) != 0;
}

/* A waiter's starting point: its wait ends when the event is set or when
 * the generation moves on from this value. */
static inline uint32_t shmring_event_generation(shmring_event *e)
{
    /* acquire [Y6]: pairs with the bump in shmring_event_set. */
    return __atomic_load_n(&e->gen, __ATOMIC_ACQUIRE);
}

static inline void shmring_event_set(shmring_event *e)
{
    /* seq_cst [Y6]: release for is_set; then bump the generation and look
     * for announced sleepers (seq_cst, so none is missed). */
    __atomic_store_n(&e->flag, 1u, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&e->gen, 1u, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&e->waiters, __ATOMIC_SEQ_CST) != 0)
        shmring_futex_wake(&e->gen, INT_MAX);
}

static inline void shmring_event_clear(shmring_event *e)
{
    /* relaxed: clearing publishes nothing. */
    __atomic_store_n(&e->flag, 0u, __ATOMIC_RELAXED);
}

/* Sleep while the event is clear and the generation is still `gen`. */
static inline int shmring_event_wait(shmring_event *e, uint32_t gen, uint64_t deadline_ns)
{
    int rc = SHMRING_OK;
    /* seq_cst [Y6]: announce, then re-check. */
    __atomic_fetch_add(&e->waiters, 1u, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&e->flag, __ATOMIC_SEQ_CST) == 0 && __atomic_load_n(&e->gen, __ATOMIC_SEQ_CST) == gen)
        rc = shmring_futex_wait_until(&e->gen, gen, deadline_ns);
    /* relaxed: a hint for setters. */
    __atomic_fetch_sub(&e->waiters, 1u, __ATOMIC_RELAXED);
    return rc;
}

/* -- condition variable over a shmring_mutex (16 bytes) ------------------------ */

typedef struct shmring_cond {
    uint32_t seq;     /* futex word: bumped by every notify [Y7] */
    uint32_t waiters; /* registered waiters [Y7] */
    uint32_t wakeups; /* notifications not yet taken, at most `waiters` [Y7] */
    uint32_t reserved;
} shmring_cond;
SHMRING_STATIC_ASSERT(sizeof(shmring_cond) == 16, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_cond, wakeups) == 8, "layout");

/* Step 1 of a wait, with the mutex held: register, and return the
 * generation (seq) at registration.  Then release the mutex, wait with
 * shmring_cond_take / shmring_cond_sleep until a notification is taken (or
 * the deadline), call shmring_cond_done, take the mutex again. */
static inline uint32_t shmring_cond_prepare(shmring_cond *c)
{
    /* seq_cst [Y7]: a notify after this point counts us in `waiters`. */
    __atomic_fetch_add(&c->waiters, 1u, __ATOMIC_SEQ_CST);
    return __atomic_load_n(&c->seq, __ATOMIC_SEQ_CST);
}

/* Take one pending notification, if one was made after this waiter
 * registered (`current` is the seq just read, `registered` the one
 * shmring_cond_prepare returned): a waiter that arrives after a notify
 * cannot take it from the waiters it was meant for.  Returns 1 or 0. */
static inline int shmring_cond_take(shmring_cond *c, uint32_t registered, uint32_t current)
{
    uint32_t w;
    if (current == registered)
        return 0;
    /* seq_cst [Y7]: first guess for the CAS below, ordered after the read
     * of seq (shmring_cond_seq). */
    w = __atomic_load_n(&c->wakeups, __ATOMIC_SEQ_CST);
    while (w > 0) {
        /* seq_cst [Y7]: pairs with the notifier's add to wakeups. */
        if (__atomic_compare_exchange_n(&c->wakeups, &w, w - 1, 1, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return 1;
    }
    return 0;
}

/* The value to sleep on: read it BEFORE shmring_cond_take, so that a
 * notification the take just missed has changed it. */
static inline uint32_t shmring_cond_seq(shmring_cond *c)
{
    /* seq_cst [Y7]: ordered before the take that follows. */
    return __atomic_load_n(&c->seq, __ATOMIC_SEQ_CST);
}

static inline int shmring_cond_sleep(shmring_cond *c, uint32_t seq, uint64_t deadline_ns)
{
    return shmring_futex_wait_until(&c->seq, seq, deadline_ns);
}

/* Unregister (after a take, a timeout or an error).  Notifications beyond
 * the remaining waiters are dropped, so a late waiter cannot take a stale one. */
static inline void shmring_cond_done(shmring_cond *c)
{
    /* seq_cst [Y7]: unregister, then clamp wakeups to the waiters left
     * (pairs with the notifier's reads of waiters and wakeups). */
    uint32_t left = __atomic_sub_fetch(&c->waiters, 1u, __ATOMIC_SEQ_CST);
    uint32_t w = __atomic_load_n(&c->wakeups, __ATOMIC_SEQ_CST);
    while (w > left && !__atomic_compare_exchange_n(&c->wakeups, &w, left, 1, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
}

/* Wake up to n of the registered waiters. */
static inline void shmring_cond_notify(shmring_cond *c, int n)
{
    uint32_t waiters = __atomic_load_n(&c->waiters, __ATOMIC_SEQ_CST);
    uint32_t w = __atomic_load_n(&c->wakeups, __ATOMIC_SEQ_CST), next;
    do {
        uint64_t want = (uint64_t)w + (uint64_t)(n > 0 ? n : 0);
        next = want > waiters ? (w > waiters ? w : waiters) : (uint32_t)want;
        if (next == w)
            return; /* every registered waiter already has one (or none waits) */
        /* seq_cst [Y7]: the wakeups before the seq bump, so that a waiter
         * whose take missed them sees seq change. */
    } while (!__atomic_compare_exchange_n(&c->wakeups, &w, next, 1, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    __atomic_fetch_add(&c->seq, 1u, __ATOMIC_SEQ_CST);
    shmring_futex_wake(&c->seq, n);
}

/* ------------------------------------------------------------------------ */
/* Channel: lock-free single-producer/single-consumer ring of records        */
/* ------------------------------------------------------------------------ */


/* Wait strategies. */
enum shmring_wait {
    SHMRING_WAIT_SPIN = 1,     /* busy-poll with the CPU pause hint */
    SHMRING_WAIT_YIELD = 2,    /* poll, calling sched_yield between polls */
    SHMRING_WAIT_BLOCK = 3,    /* sleep on a futex at once */
    SHMRING_WAIT_ADAPTIVE = 4, /* spin for spin_ns, then sleep on the futex */
    SHMRING_WAIT_SEMAPHORE = 5 /* producer posts a semaphore after writing; the consumer waits on it */
};
#define SHMRING_WAIT_MAX 5u

#define SHMRING_CHANNEL_CTRL_SIZE 640u    /* control block before the data */
#define SHMRING_CHANNEL_MIN_CAPACITY 64u
#define SHMRING_CHANNEL_MAX_CAPACITY (UINT64_C(1) << 32) /* record lengths are 32-bit */
#define SHMRING_CHANNEL_DEFAULT_SPIN_NS 20000u

/* Control block at the start of a channel segment's payload.  Fields are
 * grouped by writer on 128-byte blocks (two cache lines, so that the adjacent
 * line prefetcher does not couple them): the producer's counters, the
 * consumer's counters, and the two sleep words are each written by one side
 * only, and the sleep words only when someone sleeps. */
typedef struct shmring_channel_ctrl {
    /* Config: written at creation (before the segment is published); the
     * close flags are written once each. */
    uint64_t capacity;      /* data bytes: a power of two */
    uint64_t data_offset;   /* from the payload start: SHMRING_CHANNEL_CTRL_SIZE */
    uint32_t wait;          /* enum shmring_wait: the default strategy */
    uint32_t spin_ns;       /* adaptive spin window */
    uint32_t writer_closed; /* 1: end of stream, set by the producer [S4] */
    uint32_t reader_closed; /* 1: the consumer is gone for good [S4] */
    uint32_t claim_seq;     /* futex word: bumped when an end is given back and somebody waits [S11] */
    uint32_t claim_waiters; /* processes (threads) waiting for an end to be given back [S11] */
    uint8_t pad0[88];
    /* Producer block. */
    uint64_t tail;             /* bytes committed, ever [S2] */
    uint64_t producer;         /* token of the producing process, CAS-claimed [S3] */
    uint64_t producer_handle;  /* which handle of that process */
    uint64_t sent_msgs;        /* statistics, written by the producer only */
    uint64_t sent_bytes;
    uint64_t producer_blocked; /* times the producer slept on a full ring (futex) */
    uint8_t pad1[80];
    /* Consumer block. */
    uint64_t head;             /* bytes released, ever [S5] */
    uint64_t consumer;         /* token of the consuming process [S3] */
    uint64_t consumer_handle;
    uint64_t recv_msgs;
    uint64_t recv_bytes;
    uint64_t consumer_blocked; /* times the consumer slept on an empty ring (futex) */
    uint8_t pad2[80];
    /* Consumer's sleep: futex word bumped by the producer to wake it. */
    uint32_t data_seq;         /* [S6] */
    uint32_t consumer_waiting; /* 1 while the consumer may sleep on data_seq [S6] */
    shmring_sem data_sem;      /* "semaphore" channels: posted after every publish [S8] */
    uint8_t pad3[112];
    /* Producer's sleep. */
    uint32_t space_seq;        /* [S7] */
    uint32_t producer_waiting; /* [S7] */
    shmring_sem space_sem;     /* "semaphore" channels: posted after every release [S8] */
    uint8_t pad4[112];
} shmring_channel_ctrl;

SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, capacity) == 0, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, data_offset) == 8, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, wait) == 16, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, spin_ns) == 20, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, writer_closed) == 24, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, reader_closed) == 28, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, claim_seq) == 32, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, claim_waiters) == 36, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, tail) == 128, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, producer) == 136, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, producer_handle) == 144, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, sent_msgs) == 152, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, sent_bytes) == 160, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, producer_blocked) == 168, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, head) == 256, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, consumer) == 264, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, consumer_handle) == 272, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, recv_msgs) == 280, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, recv_bytes) == 288, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, consumer_blocked) == 296, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, data_seq) == 384, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, consumer_waiting) == 388, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, space_seq) == 512, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, producer_waiting) == 516, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, data_sem) == 392, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_channel_ctrl, space_sem) == 520, "layout");
SHMRING_STATIC_ASSERT(sizeof(shmring_channel_ctrl) == SHMRING_CHANNEL_CTRL_SIZE, "layout");

/* Every record starts with this 8-byte header at an 8-byte aligned offset. */
typedef struct shmring_record {
    uint32_t len; /* payload bytes (DATA); bytes after the header (PAD) */
    uint32_t tag; /* SHMRING_REC_DATA or SHMRING_REC_PAD */
} shmring_record;
SHMRING_STATIC_ASSERT(sizeof(shmring_record) == 8, "layout");

#define SHMRING_REC_DATA 0x52u /* 'R': a message */
#define SHMRING_REC_PAD 0x50u  /* 'P': filler up to the end of the ring */

static inline uint64_t shmring_align8(uint64_t n)
{
    return (n + 7u) & ~(uint64_t)7u;
}

/* Largest message a ring of `capacity` bytes can carry. */
static inline uint64_t shmring_channel_max_message(uint64_t capacity)
{
    return capacity - sizeof(shmring_record);
}

/* Payload bytes a channel segment needs for a ring of `capacity`. */
static inline uint64_t shmring_channel_payload_size(uint64_t capacity)
{
    return SHMRING_CHANNEL_CTRL_SIZE + capacity;
}

/* Process-local state of one channel handle.  Each side keeps its own
 * counter and a cached copy of the other side's, so that the common case
 * touches no cache line the other side writes. */
typedef struct shmring_channel {
    shmring_channel_ctrl *ctrl;
    unsigned char *data;
    uint64_t capacity, mask;
    /* producer */
    uint64_t tail;           /* local tail: committed records, maybe unpublished */
    uint64_t tail_published; /* last value stored to ctrl->tail */
    uint64_t head_cache;     /* last head read from ctrl */
    uint64_t batch_msgs, batch_bytes; /* committed since the last publish */
    /* consumer */
    uint64_t head;           /* local head: released records, maybe unpublished */
    uint64_t head_published;
    uint64_t tail_cache;
    uint64_t current_size;   /* bytes of the record peek returned */
    uint64_t current_len;
    uint64_t released_msgs, released_bytes;
    int light; /* this process publishes with the light barrier */
    /* the channel's default strategy, read once at attach */
    uint32_t wait, spin_ns;
    /* Optional, process-local (NULL after attach): a word another thread of
     * this process sets (release) to make shmring_channel_wait return early
     * with SHMRING_ERR_SYS / EINTR, e.g. to close the handle; it then calls
     * shmring_channel_interrupt_waiters. */
    const uint32_t *interrupt;
} shmring_channel;


/* Initialise a fresh channel in `payload` (a new segment, not yet published). */
static inline int shmring_channel_init(void *payload, uint64_t payload_size, uint64_t capacity,
                                       uint32_t wait, uint32_t spin_ns)
{
    shmring_channel_ctrl *c = (shmring_channel_ctrl *)payload;
    if (capacity < SHMRING_CHANNEL_MIN_CAPACITY || capacity > SHMRING_CHANNEL_MAX_CAPACITY ||
        (capacity & (capacity - 1)) != 0 || wait == 0 || wait > SHMRING_WAIT_MAX ||
        payload_size < shmring_channel_payload_size(capacity))
        return SHMRING_ERR_ARG;
    memset(c, 0, sizeof *c);
    c->capacity = capacity;
    c->data_offset = SHMRING_CHANNEL_CTRL_SIZE;
    c->wait = wait;
    c->spin_ns = spin_ns;
    return SHMRING_OK;
}

/* Attach local state to a validated segment's payload.  The config is read
 * once, checked, and kept locally: it is never re-read from shared memory. */
static inline int shmring_channel_attach(shmring_channel *ch, void *payload, uint64_t payload_size)
{
    shmring_channel_ctrl *c = (shmring_channel_ctrl *)payload;
    uint64_t cap, off;
    memset(ch, 0, sizeof *ch);
    if (payload_size < SHMRING_CHANNEL_CTRL_SIZE)
        return SHMRING_ERR_CORRUPT;
    cap = c->capacity;
    off = c->data_offset;
    if (cap < SHMRING_CHANNEL_MIN_CAPACITY || cap > SHMRING_CHANNEL_MAX_CAPACITY ||
        (cap & (cap - 1)) != 0 || off != SHMRING_CHANNEL_CTRL_SIZE ||
        payload_size < shmring_channel_payload_size(cap))
        return SHMRING_ERR_CORRUPT;
    ch->ctrl = c;
    ch->data = (unsigned char *)payload + off;
    ch->capacity = cap;
    ch->mask = cap - 1;
    ch->wait = c->wait;
    ch->spin_ns = c->spin_ns;
    if (ch->wait == 0 || ch->wait > SHMRING_WAIT_MAX)
        ch->wait = SHMRING_WAIT_ADAPTIVE; /* untrusted: fall back to the default */
    if (ch->spin_ns > 100000000u)
        ch->spin_ns = SHMRING_CHANNEL_DEFAULT_SPIN_NS;
    return SHMRING_OK;
}

/* Claim an end ([S3]): `slot` is &ctrl->producer or &ctrl->consumer, `handle`
 * the matching *_handle field.  Succeeds when the end is free, already ours,
 * or held by a dead process.  Within one process, only one handle may hold
 * an end: callers serialise claims (the GIL does in Python). */
static inline int shmring_channel_claim(uint64_t *slot, uint64_t *handle, uint64_t token, uint64_t handle_id)
{
    /* acquire: pairs with the release CAS of a previous claimer [S3], so
     * that its handle id is visible below. */
    uint64_t cur = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    for (;;) {
        if (cur == token) {
            /* relaxed: the id was written by this very process. */
            if (__atomic_load_n(handle, __ATOMIC_RELAXED) == handle_id)
                return SHMRING_OK;
            return SHMRING_ROLE_TAKEN;
        }
        if (cur != 0 && shmring_token_alive(cur))
            return SHMRING_ROLE_TAKEN;
        /* acq_rel [S3]: acquire pairs with the releasing store of the
         * previous holder (its counter updates happen-before our reads of
         * them); release publishes our claim. */
        if (__atomic_compare_exchange_n(slot, &cur, token, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            /* relaxed: read only by this process (see cur == token above). */
            __atomic_store_n(handle, handle_id, __ATOMIC_RELAXED);
            return SHMRING_OK;
        }
        /* cur now holds the competing value: look again. */
    }
}

/* Give an end back ([S3]), if this handle still holds it; wake whoever
 * waits for an end ([S11]). */
static inline void shmring_channel_unclaim(shmring_channel_ctrl *c, int producer, uint64_t token,
                                           uint64_t handle_id)
{
    uint64_t *slot = producer ? &c->producer : &c->consumer;
    uint64_t *handle = producer ? &c->producer_handle : &c->consumer_handle;
    uint64_t expected = token;
    /* relaxed: written by this process in shmring_channel_claim. */
    if (__atomic_load_n(handle, __ATOMIC_RELAXED) != handle_id)
        return;
    /* release [S3]: pairs with the acquire of the next claimer, so that our
     * last counter stores are visible to it. */
    if (!__atomic_compare_exchange_n(slot, &expected, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        return;
    /* seq_cst fence [S11]: the free slot is visible before we look for
     * waiters; pairs with the waiter's fence between its registration and
     * its new look at the slot (shmring_channel_claim_wait_prepare). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    /* relaxed: ordered by the fence above. */
    if (__atomic_load_n(&c->claim_waiters, __ATOMIC_RELAXED) != 0) {
        /* release [S11]: a waiter's futex wait returns at once if the bump
         * came between its read of claim_seq and its sleep. */
        __atomic_fetch_add(&c->claim_seq, 1u, __ATOMIC_RELEASE);
        shmring_futex_wake(&c->claim_seq, INT_MAX);
    }
}

/* Waiting for an end another live process holds [S11]: register, then
 * claim again (shmring_channel_claim); if still taken, sleep on claim_seq
 * with the returned value (shmring_futex_wait_until) for at most a slice,
 * since a holder that dies never gives its end back (the next claim takes
 * it over), then unregister (shmring_channel_claim_wait_done).  Returns the
 * value to sleep on. */
static inline uint32_t shmring_channel_claim_wait_prepare(shmring_channel_ctrl *c)
{
    uint32_t seq;
    /* relaxed: a count; the fence below orders it. */
    __atomic_fetch_add(&c->claim_waiters, 1u, __ATOMIC_RELAXED);
    /* acquire: pairs with the releaser's bump. */
    seq = __atomic_load_n(&c->claim_seq, __ATOMIC_ACQUIRE);
    /* seq_cst fence [S11]: registered (and seq read) before the caller looks
     * at the slot again; pairs with the fence in shmring_channel_unclaim. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return seq;
}

static inline void shmring_channel_claim_wait_done(shmring_channel_ctrl *c)
{
    /* relaxed: a hint; a waiter killed asleep leaves it one too high, which
     * only costs releasers a spare wake call. */
    __atomic_fetch_sub(&c->claim_waiters, 1u, __ATOMIC_RELAXED);
}

/* Start producing: load the shared tail (after a claim). */
static inline int shmring_channel_producer_start(shmring_channel *ch)
{
    /* acquire [S2]: our own (or a dead predecessor's) release of tail. */
    uint64_t tail = __atomic_load_n(&ch->ctrl->tail, __ATOMIC_ACQUIRE);
    /* acquire [S5]: pairs with the consumer's release of head. */
    uint64_t head = __atomic_load_n(&ch->ctrl->head, __ATOMIC_ACQUIRE);
    if ((tail & 7u) != 0 || (head & 7u) != 0 || tail - head > ch->capacity)
        return SHMRING_ERR_CORRUPT;
    ch->tail = ch->tail_published = tail;
    ch->head_cache = head;
    ch->batch_msgs = ch->batch_bytes = 0;
    ch->light = shmring_light_barrier_register();
    return SHMRING_OK;
}

/* Start consuming: load the shared head (after a claim). */
static inline int shmring_channel_consumer_start(shmring_channel *ch)
{
    /* acquire [S5]: our own (or a dead predecessor's) release of head. */
    uint64_t head = __atomic_load_n(&ch->ctrl->head, __ATOMIC_ACQUIRE);
    /* acquire [S2]: pairs with the producer's release of tail. */
    uint64_t tail = __atomic_load_n(&ch->ctrl->tail, __ATOMIC_ACQUIRE);
    if ((tail & 7u) != 0 || (head & 7u) != 0 || tail - head > ch->capacity)
        return SHMRING_ERR_CORRUPT;
    ch->head = ch->head_published = head;
    ch->tail_cache = tail;
    ch->current_size = 0;
    ch->released_msgs = ch->released_bytes = 0;
    ch->light = shmring_light_barrier_register();
    return SHMRING_OK;
}

/* Is there room for `n` more bytes at the local tail?  Refreshes the cached
 * head only when the cached value says no.  Returns 1, 0, or -1 (corrupt). */
static inline int shmring_channel_has_room(shmring_channel *ch, uint64_t n)
{
    uint64_t head;
    if (ch->capacity - (ch->tail - ch->head_cache) >= n)
        return 1;
    /* acquire [S5]: pairs with the consumer's release of head, so that the
     * consumer has finished reading the bytes we are about to overwrite. */
    head = __atomic_load_n(&ch->ctrl->head, __ATOMIC_ACQUIRE);
    /* Untrusted: head must lie within one capacity behind our tail. */
    if ((head & 7u) != 0 || ch->tail - head > ch->capacity)
        return -1;
    ch->head_cache = head;
    return ch->capacity - (ch->tail - head) >= n;
}

/* Fill the rest of the ring with a padding record, so that the next record
 * starts at offset 0 (not yet visible: see shmring_channel_publish).
 * Returns SHMRING_OK (also when the local tail is at offset 0 already),
 * SHMRING_AGAIN when the padding does not fit yet, or SHMRING_ERR_CORRUPT. */
static inline int shmring_channel_pad(shmring_channel *ch)
{
    uint64_t pos = ch->tail & ch->mask, contig = ch->capacity - pos;
    shmring_record *rec;
    int room;
    if (pos == 0)
        return SHMRING_OK;
    room = shmring_channel_has_room(ch, contig);
    if (room <= 0)
        return room < 0 ? SHMRING_ERR_CORRUPT : SHMRING_AGAIN;
    rec = (shmring_record *)(ch->data + pos);
    rec->len = (uint32_t)(contig - sizeof(shmring_record));
    rec->tag = SHMRING_REC_PAD;
    ch->tail += contig; /* published with the next record [S2] */
    return SHMRING_OK;
}

/* The stream offset after a record of `len` payload bytes placed at `pos`
 * the way shmring_channel_reserve places it (behind a padding record when it
 * would cross the end of the ring): to size a batch before writing it. */
static inline uint64_t shmring_channel_place(const shmring_channel *ch, uint64_t pos, uint64_t len)
{
    uint64_t need = sizeof(shmring_record) + shmring_align8(len), contig = ch->capacity - (pos & ch->mask);
    return (need > contig ? pos + contig : pos) + need;
}

/* Reserve room for a record of `len` payload bytes at the local tail.
 * Returns SHMRING_OK with *out set to where the payload goes (commit with
 * shmring_channel_commit), SHMRING_AGAIN when the ring has no room now,
 * SHMRING_TOO_BIG, or SHMRING_ERR_CORRUPT.  A record never wraps: when it
 * does not fit before the end of the ring, a padding record fills the rest
 * and the record starts again at offset 0. */
static inline int shmring_channel_reserve(shmring_channel *ch, uint64_t len, unsigned char **out)
{
    uint64_t need;
    int room;
    if (len > shmring_channel_max_message(ch->capacity))
        return SHMRING_TOO_BIG;
    need = sizeof(shmring_record) + shmring_align8(len);
    if (need > ch->capacity - (ch->tail & ch->mask)) {
        int rc = shmring_channel_pad(ch); /* need <= capacity: the tail is not at offset 0 */
        if (rc != SHMRING_OK)
            return rc;
    }
    room = shmring_channel_has_room(ch, need);
    if (room <= 0)
        return room < 0 ? SHMRING_ERR_CORRUPT : SHMRING_AGAIN;
    *out = ch->data + (ch->tail & ch->mask) + sizeof(shmring_record);
    return SHMRING_OK;
}

/* Commit the record reserved last with `len` payload bytes (written at the
 * pointer reserve returned).  Not yet visible: see shmring_channel_publish. */
static inline void shmring_channel_commit(shmring_channel *ch, uint64_t len)
{
    shmring_record *rec = (shmring_record *)(ch->data + (ch->tail & ch->mask));
    rec->len = (uint32_t)len;
    rec->tag = SHMRING_REC_DATA;
    ch->tail += sizeof(shmring_record) + shmring_align8(len);
    ch->batch_msgs++;
    ch->batch_bytes += len;
}

/* Make every committed record visible to the consumer, and wake it if it
 * sleeps.  One call can publish a whole batch. */
static inline void shmring_channel_publish(shmring_channel *ch)
{
    shmring_channel_ctrl *c = ch->ctrl;
    if (ch->tail == ch->tail_published)
        return;
    /* relaxed: statistics only, read with relaxed loads. */
    __atomic_store_n(&c->sent_msgs, __atomic_load_n(&c->sent_msgs, __ATOMIC_RELAXED) + ch->batch_msgs,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&c->sent_bytes, __atomic_load_n(&c->sent_bytes, __ATOMIC_RELAXED) + ch->batch_bytes,
                     __ATOMIC_RELAXED);
    ch->batch_msgs = ch->batch_bytes = 0;
    /* release [S2]: pairs with the consumer's acquire load of tail: the
     * records (headers and payloads) written above are visible before it. */
    __atomic_store_n(&c->tail, ch->tail, __ATOMIC_RELEASE);
    ch->tail_published = ch->tail;
    /* light or full barrier [S6]: pairs with the consumer's heavy barrier
     * between setting consumer_waiting and re-reading tail: either it sees
     * our tail, or we see its flag and wake it (lost wake-up race). */
    shmring_light_barrier(ch->light);
    /* relaxed: ordered by the fence above. */
    if (__atomic_load_n(&c->consumer_waiting, __ATOMIC_RELAXED)) {
        /* release [S6]: the futex word changes after tail did. */
        __atomic_fetch_add(&c->data_seq, 1u, __ATOMIC_RELEASE);
        shmring_futex_wake(&c->data_seq, 1);
    }
    if (ch->wait == SHMRING_WAIT_SEMAPHORE)
        shmring_sem_signal(&c->data_sem); /* [S8]: after the tail store above */
}

/* The next message, without consuming it.  Returns SHMRING_OK with *out and
 * *len set, SHMRING_AGAIN when the ring is empty, or SHMRING_ERR_CORRUPT when
 * a counter or record header read from shared memory is impossible.  Padding
 * records are skipped on the way. */
static inline int shmring_channel_peek(shmring_channel *ch, const unsigned char **out, uint64_t *len)
{
    for (;;) {
        uint64_t avail = ch->tail_cache - ch->head, pos, size, room;
        const shmring_record *rec;
        uint32_t rlen, rtag;
        if (avail == 0) {
            /* acquire [S2]: pairs with the producer's release of tail, so
             * the records below it are fully written. */
            uint64_t tail = __atomic_load_n(&ch->ctrl->tail, __ATOMIC_ACQUIRE);
            if ((tail & 7u) != 0 || tail - ch->head > ch->capacity)
                return SHMRING_ERR_CORRUPT;
            ch->tail_cache = tail;
            avail = tail - ch->head;
            if (avail == 0)
                return SHMRING_AGAIN;
        }
        pos = ch->head & ch->mask;
        room = ch->capacity - pos;
        rec = (const shmring_record *)(ch->data + pos);
        /* relaxed: ordered by the acquire of tail above; read once each into
         * locals so that a peer rewriting them cannot change what we check. */
        rlen = __atomic_load_n(&rec->len, __ATOMIC_RELAXED);
        rtag = __atomic_load_n(&rec->tag, __ATOMIC_RELAXED);
        if (rtag == SHMRING_REC_PAD) {
            if ((uint64_t)rlen + sizeof(shmring_record) != room || room > avail)
                return SHMRING_ERR_CORRUPT;
            ch->head += room; /* published with the next release [S5] */
            continue;
        }
        size = sizeof(shmring_record) + shmring_align8(rlen);
        if (rtag != SHMRING_REC_DATA || size > room || size > avail)
            return SHMRING_ERR_CORRUPT;
        ch->current_size = size;
        ch->current_len = rlen;
        *out = ch->data + pos + sizeof(shmring_record);
        *len = rlen;
        return SHMRING_OK;
    }
}

/* Consume the message peek returned (locally: see shmring_channel_release_publish). */
static inline void shmring_channel_release(shmring_channel *ch)
{
    ch->head += ch->current_size;
    ch->released_msgs++;
    ch->released_bytes += ch->current_len;
    ch->current_size = 0;
}

/* Give the consumed bytes back to the producer, and wake it if it sleeps. */
static inline void shmring_channel_release_publish(shmring_channel *ch)
{
    shmring_channel_ctrl *c = ch->ctrl;
    if (ch->head == ch->head_published)
        return;
    /* relaxed: statistics only. */
    __atomic_store_n(&c->recv_msgs, __atomic_load_n(&c->recv_msgs, __ATOMIC_RELAXED) + ch->released_msgs,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&c->recv_bytes, __atomic_load_n(&c->recv_bytes, __ATOMIC_RELAXED) + ch->released_bytes,
                     __ATOMIC_RELAXED);
    ch->released_msgs = ch->released_bytes = 0;
    /* release [S5]: pairs with the producer's acquire load of head: our
     * reads of the released bytes complete before it may overwrite them. */
    __atomic_store_n(&c->head, ch->head, __ATOMIC_RELEASE);
    ch->head_published = ch->head;
    /* light or full barrier [S7]: pairs with the producer's heavy barrier
     * between setting producer_waiting and re-reading head. */
    shmring_light_barrier(ch->light);
    /* relaxed: ordered by the fence above. */
    if (__atomic_load_n(&c->producer_waiting, __ATOMIC_RELAXED)) {
        /* release [S7]: the futex word changes after head did. */
        __atomic_fetch_add(&c->space_seq, 1u, __ATOMIC_RELEASE);
        shmring_futex_wake(&c->space_seq, 1);
    }
    if (ch->wait == SHMRING_WAIT_SEMAPHORE)
        shmring_sem_signal(&c->space_sem); /* [S8]: after the head store above */
}

/* Mark one end closed ([S4]) and wake the other end if it sleeps. */
static inline void shmring_channel_close_end(shmring_channel *ch, int writer)
{
    shmring_channel_ctrl *c = ch->ctrl;
    /* release [S4]: pairs with the acquire load of the flag by the other
     * end; everything we published before closing is visible first. */
    __atomic_store_n(writer ? &c->writer_closed : &c->reader_closed, 1u, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* [S6]/[S7]: as in publish */
    /* release [S6]/[S7]: unconditional bump, so a sleeper re-checks. */
    __atomic_fetch_add(writer ? &c->data_seq : &c->space_seq, 1u, __ATOMIC_RELEASE);
    shmring_futex_wake(writer ? &c->data_seq : &c->space_seq, INT_MAX);
    shmring_sem_signal(writer ? &c->data_sem : &c->space_sem);
}

static inline int shmring_channel_writer_closed(const shmring_channel *ch)
{
    /* acquire [S4]: pairs with the producer's release in close_end. */
    return (int)__atomic_load_n(&ch->ctrl->writer_closed, __ATOMIC_ACQUIRE);
}

static inline int shmring_channel_reader_closed(const shmring_channel *ch)
{
    /* acquire [S4]: pairs with the consumer's release in close_end. */
    return (int)__atomic_load_n(&ch->ctrl->reader_closed, __ATOMIC_ACQUIRE);
}

/* Has another thread of this process asked this waiter to stop? */
static inline int shmring_channel_interrupted(const shmring_channel *ch)
{
    /* acquire: pairs with the interrupting thread's release store, made
     * before it calls shmring_channel_interrupt_waiters. */
    return ch->interrupt != NULL && __atomic_load_n(ch->interrupt, __ATOMIC_ACQUIRE) != 0;
}

/* Wake this process's thread sleeping in shmring_channel_wait on the
 * `writer` side, after setting *ch->interrupt.  The words it sleeps on keep
 * their values (the peer's protocol is untouched), so a waiter caught
 * between its last look at *interrupt and its sleep sleeps until its
 * deadline: callers wait in slices. */
static inline void shmring_channel_interrupt_waiters(shmring_channel *ch, int writer)
{
    shmring_channel_ctrl *c = ch->ctrl;
    shmring_futex_wake(writer ? &c->space_seq : &c->data_seq, INT_MAX);
    shmring_futex_wake(writer ? &c->space_sem.count : &c->data_sem.count, INT_MAX);
    shmring_futex_wake(&c->claim_seq, INT_MAX); /* a wait for an end held elsewhere [S11] */
}

/* Is data readable (or the stream over) without blocking?  Refreshes the
 * cached tail.  Returns 1, 0, or -1 (corrupt). */
static inline int shmring_channel_readable(shmring_channel *ch)
{
    uint64_t tail;
    if (ch->tail_cache != ch->head)
        return 1;
    /* acquire [S2]: pairs with the producer's release of tail. */
    tail = __atomic_load_n(&ch->ctrl->tail, __ATOMIC_ACQUIRE);
    if ((tail & 7u) != 0 || tail - ch->head > ch->capacity)
        return -1;
    ch->tail_cache = tail;
    return tail != ch->head || shmring_channel_writer_closed(ch);
}

/* The condition a waiting side waits for: data (or the end of the stream)
 * for the consumer; `need` free bytes (or a closed reader) for the producer.
 * Returns 1, 0, or -1 (corrupt). */
static inline int shmring_channel_ready(shmring_channel *ch, int writer, uint64_t need)
{
    int r;
    if (!writer)
        return shmring_channel_readable(ch);
    r = shmring_channel_has_room(ch, need);
    return r != 0 ? r : shmring_channel_reader_closed(ch);
}

/* Wait until shmring_channel_ready(ch, writer, need) says yes, or until
 * `deadline_ns` (CLOCK_MONOTONIC; 0 = no limit).  `strategy` and `spin_ns`
 * choose how.  The consumer sleeps on data_seq announced by
 * consumer_waiting [S6] (or on data_sem [S8]); the producer on space_seq,
 * producer_waiting [S7] (or space_sem), after publishing what it committed
 * so that the consumer can make room.  Returns SHMRING_OK, SHMRING_TIMEOUT,
 * SHMRING_ERR_CORRUPT, or SHMRING_ERR_SYS with errno EINTR when a signal
 * arrived or ch->interrupt was set (the caller checks for both). */
static inline int shmring_channel_wait(shmring_channel *ch, int writer, uint64_t need, uint32_t strategy,
                                       uint32_t spin_ns, uint64_t deadline_ns)
{
    shmring_channel_ctrl *c = ch->ctrl;
    uint32_t *seq_word = writer ? &c->space_seq : &c->data_seq;
    uint32_t *waiting = writer ? &c->producer_waiting : &c->consumer_waiting;
    uint64_t *blocked = writer ? &c->producer_blocked : &c->consumer_blocked;
    shmring_sem *sem = writer ? &c->space_sem : &c->data_sem;
    uint64_t spin_until, now;
    unsigned i = 0;
    int r;
    if (writer)
        shmring_channel_publish(ch);
    if ((r = shmring_channel_ready(ch, writer, need)) != 0)
        return r > 0 ? SHMRING_OK : SHMRING_ERR_CORRUPT;
    if (strategy == SHMRING_WAIT_SEMAPHORE) {
        /* [S8]: a post is sticky, so no announcement is needed: take a post
         * (acquire: pairs with the other side's exchange, so its counter is
         * visible), re-check, sleep while there is none. */
        for (;;) {
            if (shmring_channel_interrupted(ch)) {
                errno = EINTR;
                return SHMRING_ERR_SYS;
            }
            if (shmring_sem_try_acquire(sem)) {
                if ((r = shmring_channel_ready(ch, writer, need)) != 0)
                    return r > 0 ? SHMRING_OK : SHMRING_ERR_CORRUPT;
            } else {
                r = shmring_sem_wait(sem, deadline_ns);
                if (r != SHMRING_OK)
                    return r;
            }
            if (deadline_ns && shmring_now_ns() >= deadline_ns)
                return SHMRING_TIMEOUT;
        }
    }
    now = shmring_now_ns();
    if (strategy == SHMRING_WAIT_SPIN || strategy == SHMRING_WAIT_YIELD)
        spin_until = deadline_ns ? deadline_ns : UINT64_MAX;
    else if (strategy == SHMRING_WAIT_ADAPTIVE)
        spin_until = deadline_ns && deadline_ns < now + spin_ns ? deadline_ns : now + spin_ns;
    else
        spin_until = now;
    while (now < spin_until) {
        if (strategy == SHMRING_WAIT_YIELD)
            sched_yield();
        else
            shmring_cpu_relax();
        if ((r = shmring_channel_ready(ch, writer, need)) != 0)
            return r > 0 ? SHMRING_OK : SHMRING_ERR_CORRUPT;
        if ((++i & 63u) == 0 || strategy == SHMRING_WAIT_YIELD) {
            if (shmring_channel_interrupted(ch)) {
                errno = EINTR;
                return SHMRING_ERR_SYS;
            }
            now = shmring_now_ns();
        }
    }
    if (strategy == SHMRING_WAIT_SPIN || strategy == SHMRING_WAIT_YIELD)
        return SHMRING_TIMEOUT;
    for (;;) {
        struct timespec ts, *tsp = NULL;
        uint64_t sleep_until = deadline_ns;
        /* acquire [S6]/[S7]: read the futex word before announcing ourselves,
         * so that a bump after this point makes FUTEX_WAIT return at once. */
        uint32_t seq = __atomic_load_n(seq_word, __ATOMIC_ACQUIRE);
        /* relaxed + heavy barrier [S6]/[S7]: pairs with the light (or full)
         * barrier between the other side's counter store and its load of
         * our flag (publish / release_publish). */
        __atomic_store_n(waiting, 1u, __ATOMIC_RELAXED);
        if (shmring_heavy_barrier() != 0) {
            now = shmring_now_ns();
            if (!sleep_until || sleep_until > now + SHMRING_UNFENCED_SLEEP_NS)
                sleep_until = now + SHMRING_UNFENCED_SLEEP_NS;
        }
        r = shmring_channel_ready(ch, writer, need);
        if (r == 0 && shmring_channel_interrupted(ch)) {
            /* relaxed: withdraw the hint [S6]/[S7]. */
            __atomic_store_n(waiting, 0u, __ATOMIC_RELAXED);
            errno = EINTR;
            return SHMRING_ERR_SYS;
        }
        if (r == 0 && sleep_until) {
            now = shmring_now_ns();
            if (now >= sleep_until) {
                /* relaxed: withdraw the hint [S6]/[S7]; a stale 1 costs one wake. */
                __atomic_store_n(waiting, 0u, __ATOMIC_RELAXED);
                if (deadline_ns && now >= deadline_ns)
                    return SHMRING_TIMEOUT;
                continue;
            }
            ts.tv_sec = (time_t)((sleep_until - now) / 1000000000u);
            ts.tv_nsec = (long)((sleep_until - now) % 1000000000u);
            tsp = &ts;
        }
        if (r == 0) {
            /* relaxed: statistics only, written by this side alone. */
            __atomic_store_n(blocked, __atomic_load_n(blocked, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
            if (shmring_futex_wait(seq_word, seq, tsp) != SHMRING_OK && errno == EINTR) {
                __atomic_store_n(waiting, 0u, __ATOMIC_RELAXED);
                return SHMRING_ERR_SYS;
            }
            r = shmring_channel_ready(ch, writer, need);
        }
        /* relaxed: only a hint to the other side; a stale 1 costs one wake. */
        __atomic_store_n(waiting, 0u, __ATOMIC_RELAXED);
        if (r != 0)
            return r > 0 ? SHMRING_OK : SHMRING_ERR_CORRUPT;
        if (deadline_ns && shmring_now_ns() >= deadline_ns)
            return SHMRING_TIMEOUT;
    }
}

/* Wait for data or the end of the stream (see shmring_channel_wait). */
static inline int shmring_channel_wait_readable(shmring_channel *ch, uint32_t strategy, uint32_t spin_ns,
                                                uint64_t deadline_ns)
{
    return shmring_channel_wait(ch, 0, 0, strategy, spin_ns, deadline_ns);
}

/* Wait for `n` free bytes or a closed reader (see shmring_channel_wait). */
static inline int shmring_channel_wait_writable(shmring_channel *ch, uint64_t n, uint32_t strategy,
                                                uint32_t spin_ns, uint64_t deadline_ns)
{
    return shmring_channel_wait(ch, 1, n, strategy, spin_ns, deadline_ns);
}

/* ------------------------------------------------------------------------ */
/* Blocking channel calls for C and C++ programs                             */
/* ------------------------------------------------------------------------ */

/* These wrap the steps above the way the Python package does: claim the end
 * once, wait in slices of at most 50 ms, and check between slices whether
 * the other end's process died.  A deadline of 0 waits without limit.
 * Interrupted waits (EINTR) simply continue; check your own flags around
 * the calls if you need to stop on a signal. */

#define SHMRING_C_SLICE_NS (50u * 1000u * 1000u)

/* Attach `ch` to a mapped channel segment and claim one end (producer = 1
 * or consumer = 0) for this process.  One end per process and channel. */
static inline int shmring_channel_open_end(shmring_channel *ch, const shmring_segment *seg, int producer)
{
    const shmring_segment_header *h = (const shmring_segment_header *)seg->base;
    shmring_channel_ctrl *c;
    uint64_t token = shmring_token_self();
    int rc;
    if (h->kind != SHMRING_KIND_CHANNEL || !seg->writable)
        return SHMRING_ERR_ARG;
    rc = shmring_channel_attach(ch, shmring_segment_payload(seg), shmring_segment_payload_size(seg));
    if (rc != SHMRING_OK)
        return rc;
    c = ch->ctrl;
    rc = producer ? shmring_channel_claim(&c->producer, &c->producer_handle, token, 1)
                  : shmring_channel_claim(&c->consumer, &c->consumer_handle, token, 1);
    if (rc != SHMRING_OK)
        return rc;
    return producer ? shmring_channel_producer_start(ch) : shmring_channel_consumer_start(ch);
}

/* Give the end back; a producer's close ends the stream. */
static inline void shmring_channel_close_end_of(shmring_channel *ch, int producer)
{
    shmring_channel_ctrl *c = ch->ctrl;
    uint64_t token = shmring_token_self();
    if (producer) {
        shmring_channel_publish(ch);
        shmring_channel_close_end(ch, 1);
        shmring_channel_unclaim(c, 1, token, 1);
    } else {
        shmring_channel_release_publish(ch);
        shmring_channel_close_end(ch, 0);
        shmring_channel_unclaim(c, 0, token, 1);
    }
}

/* Copy a message in and publish it.  `strategy` 0 means the channel's
 * default (ch->wait).  Returns SHMRING_OK, SHMRING_TOO_BIG,
 * SHMRING_CLOSED (the reader closed), SHMRING_PEER_GONE, SHMRING_TIMEOUT or
 * SHMRING_ERR_CORRUPT. */
static inline int shmring_channel_send(shmring_channel *ch, const void *data, uint64_t len, uint32_t strategy,
                                       uint64_t deadline_ns)
{
    unsigned char *dst;
    if (strategy == 0)
        strategy = ch->wait;
    for (;;) {
        uint64_t slice;
        int rc;
        if (shmring_channel_reader_closed(ch))
            return SHMRING_CLOSED;
        rc = shmring_channel_reserve(ch, len, &dst);
        if (rc == SHMRING_OK)
            break;
        if (rc != SHMRING_AGAIN)
            return rc;
        slice = shmring_now_ns() + SHMRING_C_SLICE_NS;
        if (deadline_ns && deadline_ns < slice)
            slice = deadline_ns;
        rc = shmring_channel_wait_writable(ch, sizeof(shmring_record) + shmring_align8(len), strategy,
                                           ch->spin_ns, slice);
        if (rc == SHMRING_ERR_CORRUPT)
            return rc;
        if (rc != SHMRING_OK) {
            /* relaxed: a snapshot for a liveness check. */
            uint64_t peer = __atomic_load_n(&ch->ctrl->consumer, __ATOMIC_RELAXED);
            if (peer != 0 && !shmring_token_alive(peer))
                return SHMRING_PEER_GONE;
            if (deadline_ns && shmring_now_ns() >= deadline_ns)
                return SHMRING_TIMEOUT;
        }
    }
    memcpy(dst, data, (size_t)len);
    shmring_channel_commit(ch, len);
    shmring_channel_publish(ch);
    return SHMRING_OK;
}

/* Copy the next message out into buf (of `cap` bytes); *len gets its size.
 * Returns SHMRING_OK, SHMRING_TOO_BIG (buf too small: *len says how big the
 * message is, and it stays in the ring), SHMRING_CLOSED (the writer closed
 * and everything was read), SHMRING_PEER_GONE (the writer died and
 * everything it committed was read), SHMRING_TIMEOUT or SHMRING_ERR_CORRUPT. */
static inline int shmring_channel_recv(shmring_channel *ch, void *buf, uint64_t cap, uint64_t *len,
                                       uint32_t strategy, uint64_t deadline_ns)
{
    const unsigned char *src;
    if (strategy == 0)
        strategy = ch->wait;
    for (;;) {
        uint64_t slice;
        int rc = shmring_channel_peek(ch, &src, len);
        if (rc == SHMRING_OK)
            break;
        if (rc != SHMRING_AGAIN)
            return rc;
        shmring_channel_release_publish(ch); /* padding skipped on the way */
        if (shmring_channel_writer_closed(ch)) {
            rc = shmring_channel_peek(ch, &src, len); /* published right before closing? */
            if (rc == SHMRING_OK)
                break;
            return rc == SHMRING_AGAIN ? SHMRING_CLOSED : rc;
        }
        slice = shmring_now_ns() + SHMRING_C_SLICE_NS;
        if (deadline_ns && deadline_ns < slice)
            slice = deadline_ns;
        rc = shmring_channel_wait_readable(ch, strategy, ch->spin_ns, slice);
        if (rc == SHMRING_ERR_CORRUPT)
            return rc;
        if (rc != SHMRING_OK) {
            /* relaxed: a snapshot for a liveness check. */
            uint64_t peer = __atomic_load_n(&ch->ctrl->producer, __ATOMIC_RELAXED);
            if (peer != 0 && !shmring_token_alive(peer) && shmring_channel_readable(ch) == 0)
                return SHMRING_PEER_GONE;
            if (deadline_ns && shmring_now_ns() >= deadline_ns)
                return SHMRING_TIMEOUT;
        }
    }
    if (*len > cap)
        return SHMRING_TOO_BIG;
    memcpy(buf, src, (size_t)*len);
    shmring_channel_release(ch);
    shmring_channel_release_publish(ch);
    return SHMRING_OK;
}

/* ========================================================================== */
/* MPMC queue                                                                 */
/* ========================================================================== */
/*
 * Many producers and many consumers share one ring of records (the record
 * format of the channel, with tags for what the payload is).  Every change
 * to the ring happens under the queue's robust mutex [Q1], and each change
 * becomes visible by a single store (the new tail or head; a put that
 * restarts an empty ring stores tail, then head, and either state is a valid
 * ring: shmring_qring_commit), so a process killed anywhere leaves either the
 * old state or the new one: the next holder is told OWNER_DIED, recounts
 * (shmring_queue_recount) and goes on.
 *
 * Overflow (queues not created SHMRING_QUEUE_BOUNDED): when the main ring
 * has no room, producers open a chain of overflow chunks, each its own
 * segment named "<queue>.<index>" holding a ring of the same format.  While
 * the chain is not empty every new record goes to its newest chunk (FIFO is
 * kept); consumers drain the main ring, then the chunks from the oldest,
 * unlinking each once empty.  The chunk handling lives in the extension;
 * the helpers here work on any ring (main or chunk).  A C peer that does not
 * follow chunks should use bounded queues, whose chain stays empty unless a
 * single record is larger than the whole ring (see docs/PROTOCOL.md).
 */

#define SHMRING_MAX_SPIN_NS 50000000u /* 50 ms: longer polls are refused as corrupt */
#define SHMRING_QUEUE_CTRL_SIZE 384u
#define SHMRING_QUEUE_CHUNK_HEADER_SIZE 64u
#define SHMRING_QUEUE_MIN_CAPACITY 64u
#define SHMRING_QUEUE_MAX_CAPACITY (UINT64_C(1) << 32)
#define SHMRING_QUEUE_MAX_CHUNKS 65536u  /* chunks held at once; more is corruption */
#define SHMRING_QUEUE_BOUNDED 1u         /* ctrl.flags: the ring's bytes bound producers */
#define SHMRING_QUEUE_FLAGS_KNOWN 1u

#define SHMRING_REC_OBJECT 0x4Fu /* 'O': a serialized object */
#define SHMRING_REC_BYTES 0x42u  /* 'B': raw bytes (put_bytes) */

typedef struct shmring_queue_ctrl {
    /* Config: written before the segment is published. */
    uint64_t capacity;    /* main ring bytes: a multiple of 8 */
    uint64_t data_offset; /* from the payload start: SHMRING_QUEUE_CTRL_SIZE */
    uint64_t maxsize;     /* item bound; 0 = unbounded */
    uint32_t flags;       /* SHMRING_QUEUE_* */
    uint32_t spin_ns;     /* how long a waiter polls before sleeping */
    uint32_t closed;      /* 1 once any process called close() [Q4] */
    uint32_t chunk_mode;  /* permission bits of the overflow chunks */
    uint64_t queue_id;    /* random, non-zero: stamped on every chunk of this queue */
    uint8_t pad0[80];
    /* Ring state: read and written under the lock only, except count and
     * bytes, which lock-free readers (qsize, a polling waiter) load relaxed. */
    shmring_mutex lock;  /* [Q1] */
    uint64_t head;       /* main ring: bytes released, ever */
    uint64_t tail;       /* main ring: bytes committed, ever */
    uint64_t count;      /* items held in all rings */
    uint64_t bytes;      /* payload bytes held in all rings */
    uint64_t ovf_head;   /* oldest overflow chunk still held */
    uint64_t ovf_tail;   /* one past the newest chunk */
    uint64_t puts;       /* items ever put */
    uint64_t gets;       /* items ever taken */
    uint64_t done;       /* task_done() calls, ever: puts - done tasks are unfinished [Q3] */
    uint8_t pad1[32];
    /* Sleep words: a waiter registers under the lock [Q2]. */
    uint32_t items_seq;     /* bumped after items were added */
    uint32_t items_waiters; /* consumers that may sleep on items_seq */
    uint32_t room_seq;      /* bumped after items were taken */
    uint32_t room_waiters;  /* producers that may sleep on room_seq */
    uint32_t done_seq;      /* bumped when done reaches puts [Q3] */
    uint32_t done_waiters;  /* join() callers */
    uint8_t pad2[104];
} shmring_queue_ctrl;

SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, maxsize) == 16, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, flags) == 24, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, closed) == 32, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, chunk_mode) == 36, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, queue_id) == 40, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, lock) == 128, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, head) == 152, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, count) == 168, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, ovf_head) == 184, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, done) == 216, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, items_seq) == 256, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_ctrl, done_waiters) == 276, "layout");
SHMRING_STATIC_ASSERT(sizeof(shmring_queue_ctrl) == SHMRING_QUEUE_CTRL_SIZE, "layout");

/* Payload header of an overflow chunk segment (kind QUEUE_CHUNK). */
typedef struct shmring_queue_chunk {
    uint64_t capacity;    /* ring bytes: a multiple of 8 */
    uint64_t data_offset; /* SHMRING_QUEUE_CHUNK_HEADER_SIZE */
    uint64_t index;       /* its number in the queue's chain */
    uint64_t head;        /* under the queue lock, as ctrl.head */
    uint64_t tail;
    uint64_t queue_id;    /* its queue's ctrl.queue_id: whose chunk this is */
    uint64_t queue_dev;   /* its queue's object (st_dev, st_ino): whether anybody */
    uint64_t queue_ino;   /* still uses it, once its name is gone (tools) */
} shmring_queue_chunk;
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_chunk, index) == 16, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_chunk, tail) == 32, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_chunk, queue_id) == 40, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_chunk, queue_dev) == 48, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_queue_chunk, queue_ino) == 56, "layout");
SHMRING_STATIC_ASSERT(sizeof(shmring_queue_chunk) == SHMRING_QUEUE_CHUNK_HEADER_SIZE, "layout");

static inline uint64_t shmring_queue_payload_size(uint64_t capacity)
{
    return SHMRING_QUEUE_CTRL_SIZE + capacity;
}

/* Ring bytes one record of `len` payload bytes takes (without padding). */
static inline uint64_t shmring_queue_record_size(uint64_t len)
{
    return sizeof(shmring_record) + shmring_align8(len);
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

static inline void shmring_queue_init(void *payload, uint64_t capacity, uint64_t maxsize, uint32_t flags,
                                      uint32_t spin_ns, uint32_t chunk_mode)
{
    shmring_queue_ctrl *c = (shmring_queue_ctrl *)payload;
    memset(c, 0, sizeof(*c));
    c->queue_id = shmring_random_id();
    c->capacity = capacity;
    c->data_offset = SHMRING_QUEUE_CTRL_SIZE;
    c->maxsize = maxsize;
    c->flags = flags;
    c->spin_ns = spin_ns;
    c->chunk_mode = chunk_mode;
}

/* Check the config of an attached queue (a hostile peer may have written
 * it; the config is read once, here, and the checked copy used after). */
static inline int shmring_queue_check_config(const shmring_queue_ctrl *c, uint64_t payload_size,
                                             shmring_queue_ctrl *copy)
{
    memcpy(copy, c, sizeof(*copy));
    if (payload_size < SHMRING_QUEUE_CTRL_SIZE || copy->data_offset != SHMRING_QUEUE_CTRL_SIZE ||
        copy->capacity < SHMRING_QUEUE_MIN_CAPACITY || copy->capacity > SHMRING_QUEUE_MAX_CAPACITY ||
        (copy->capacity & 7u) != 0 || copy->capacity > payload_size - SHMRING_QUEUE_CTRL_SIZE ||
        (copy->flags & ~SHMRING_QUEUE_FLAGS_KNOWN) != 0 || (copy->chunk_mode & ~0777u) != 0 ||
        copy->spin_ns > SHMRING_MAX_SPIN_NS || copy->queue_id == 0)
        return SHMRING_ERR_CORRUPT;
    return SHMRING_OK;
}

/* Check chunk `index` of the queue whose id is `queue_id` (its config is
 * read once, here; *capacity gets the checked ring size). */
static inline int shmring_queue_chunk_check(const shmring_queue_chunk *k, uint64_t payload_size, uint64_t index,
                                            uint64_t queue_id, uint64_t *capacity)
{
    /* relaxed: config written before the chunk was published. */
    uint64_t cap = __atomic_load_n(&k->capacity, __ATOMIC_RELAXED);
    if (payload_size < SHMRING_QUEUE_CHUNK_HEADER_SIZE ||
        __atomic_load_n(&k->data_offset, __ATOMIC_RELAXED) != SHMRING_QUEUE_CHUNK_HEADER_SIZE ||
        __atomic_load_n(&k->queue_id, __ATOMIC_RELAXED) != queue_id ||
        __atomic_load_n(&k->index, __ATOMIC_RELAXED) != index || cap < SHMRING_QUEUE_MIN_CAPACITY ||
        cap > SHMRING_QUEUE_MAX_CAPACITY || (cap & 7u) != 0 || cap > payload_size - SHMRING_QUEUE_CHUNK_HEADER_SIZE)
        return SHMRING_ERR_CORRUPT;
    *capacity = cap;
    return SHMRING_OK;
}

/* One ring (the main one or a chunk), seen by the holder of the queue lock.
 * head/tail are working copies: records are written (read) at the copy, and
 * become visible to the next holder when shmring_qring_commit stores them,
 * so a batch is all or nothing. */
typedef struct shmring_qring {
    uint64_t *head_p;
    uint64_t *tail_p;
    unsigned char *data;
    uint64_t capacity;
    uint64_t head;
    uint64_t tail;
} shmring_qring;

/* Load a ring's counters (lock held) and check them. */
static inline int shmring_qring_load(shmring_qring *r, uint64_t *head_p, uint64_t *tail_p, unsigned char *data,
                                     uint64_t capacity)
{
    r->head_p = head_p;
    r->tail_p = tail_p;
    r->data = data;
    r->capacity = capacity;
    /* relaxed: under the lock [Q1]; its acquire ordered the last holder's stores. */
    r->head = __atomic_load_n(head_p, __ATOMIC_RELAXED);
    r->tail = __atomic_load_n(tail_p, __ATOMIC_RELAXED);
    if (r->tail - r->head > capacity || ((r->head | r->tail) & 7u) != 0)
        return SHMRING_ERR_CORRUPT;
    return SHMRING_OK;
}

/* Make the working head and tail the ring's (lock held).  A put moves tail
 * and a get head; a put that restarted an empty ring (shmring_qring_restart)
 * moves both, tail first: a holder killed between the two stores leaves
 * tail moved and head not, a valid ring whose padding record the next reader
 * skips (the other order would leave head past tail). */
static inline void shmring_qring_commit(shmring_qring *r)
{
    /* relaxed: under the lock; the lock's release [Q1] publishes both. */
    __atomic_store_n(r->tail_p, r->tail, __ATOMIC_RELAXED);
    /* release [Q1]: keeps the tail store before this one in the holder's
     * own order (a holder killed in between, above); the next holder reads
     * both after its acquire of the lock. */
    __atomic_store_n(r->head_p, r->head, __ATOMIC_RELEASE);
}

/* An empty ring (working head == tail) whose tail is not at offset 0 has
 * all its bytes free, but split by the end of the ring: a record longer
 * than the part before the end would wait for ever for room it has.  Start
 * over at offset 0: a padding record covers the bytes to the end, and tail
 * and head both move past it (committed tail first: shmring_qring_commit).
 * Does nothing to a ring that is not empty or already at offset 0. */
static inline void shmring_qring_restart(shmring_qring *r)
{
    uint64_t pos = r->tail % r->capacity;
    shmring_record *rec;
    if (r->tail != r->head || pos == 0)
        return;
    rec = (shmring_record *)(r->data + pos);
    rec->len = (uint32_t)(r->capacity - pos - sizeof(shmring_record));
    rec->tag = SHMRING_REC_PAD;
    r->tail += r->capacity - pos;
    r->head = r->tail;
}

/* Reserve a record of `len` payload bytes at the working tail and return
 * where its payload goes; SHMRING_AGAIN when there is no room now,
 * SHMRING_TOO_BIG when it could never fit.  A record that fits the ring
 * (record size <= capacity) always fits an empty one. */
static inline int shmring_qring_reserve(shmring_qring *r, uint32_t tag, uint64_t len, unsigned char **out)
{
    uint64_t need = shmring_queue_record_size(len);
    uint64_t pos = r->tail % r->capacity;
    uint64_t contig = r->capacity - pos;
    uint64_t room = r->capacity - (r->tail - r->head);
    shmring_record *rec;
    if (len > UINT32_MAX || need > r->capacity)
        return SHMRING_TOO_BIG;
    if (contig < need && r->tail == r->head) {
        shmring_qring_restart(r);
        pos = 0;
        contig = room = r->capacity;
    }
    if (contig < need) {
        if (room < contig + need)
            return SHMRING_AGAIN;
        rec = (shmring_record *)(r->data + pos);
        rec->len = (uint32_t)(contig - sizeof(shmring_record));
        rec->tag = SHMRING_REC_PAD;
        r->tail += contig;
        pos = 0;
    } else if (room < need) {
        return SHMRING_AGAIN;
    }
    rec = (shmring_record *)(r->data + pos);
    rec->len = (uint32_t)len;
    rec->tag = tag;
    r->tail += need;
    *out = r->data + pos + sizeof(shmring_record);
    return SHMRING_OK;
}

/* Whether shmring_qring_reserve would place a record of `len` bytes now
 * (for waiters: no side effects).  An empty ring takes any record that fits
 * the ring (it restarts at offset 0). */
static inline int shmring_qring_fits(const shmring_qring *r, uint64_t len)
{
    uint64_t need = shmring_queue_record_size(len);
    uint64_t pos = r->tail % r->capacity;
    uint64_t contig = r->capacity - pos;
    uint64_t room = r->capacity - (r->tail - r->head);
    if (len > UINT32_MAX || need > r->capacity)
        return 0;
    if (r->tail == r->head)
        return 1;
    return need <= (contig < need ? (room >= contig ? room - contig : 0) : room);
}

/* Take the record at the working head: its tag, payload and length stay
 * valid until the lock is released.  Padding is skipped.  SHMRING_AGAIN when
 * the ring is empty; SHMRING_ERR_CORRUPT for a record that does not fit
 * between head and tail (checked before anything is read past it). */
static inline int shmring_qring_take(shmring_qring *r, uint32_t *tag, const unsigned char **payload, uint64_t *len)
{
    for (;;) {
        uint64_t avail = r->tail - r->head, pos, contig, need;
        const shmring_record *rec;
        uint32_t rlen, rtag;
        if (avail == 0)
            return SHMRING_AGAIN;
        pos = r->head % r->capacity;
        contig = r->capacity - pos;
        if (avail < sizeof(shmring_record))
            return SHMRING_ERR_CORRUPT;
        rec = (const shmring_record *)(r->data + pos);
        rlen = rec->len; /* read once: the mapping is untrusted */
        rtag = rec->tag;
        if (rtag == SHMRING_REC_PAD) {
            if ((uint64_t)rlen + sizeof(shmring_record) != contig || contig > avail)
                return SHMRING_ERR_CORRUPT;
            r->head += contig;
            continue;
        }
        need = shmring_queue_record_size(rlen);
        if ((rtag != SHMRING_REC_OBJECT && rtag != SHMRING_REC_BYTES) || need > contig || need > avail)
            return SHMRING_ERR_CORRUPT;
        *tag = rtag;
        *len = rlen;
        *payload = r->data + pos + sizeof(shmring_record);
        r->head += need;
        return SHMRING_OK;
    }
}

/* Count the records of a ring (lock held, after OWNER_DIED). */
static inline int shmring_qring_count(shmring_qring r, uint64_t *items, uint64_t *bytes)
{
    for (;;) {
        uint32_t tag;
        const unsigned char *p;
        uint64_t len;
        int rc = shmring_qring_take(&r, &tag, &p, &len);
        if (rc == SHMRING_AGAIN)
            return SHMRING_OK;
        if (rc != SHMRING_OK)
            return rc;
        *items += 1;
        *bytes += len;
    }
}

static inline void shmring_queue_main_ring(shmring_queue_ctrl *c, uint64_t capacity, shmring_qring *r, int *rc)
{
    *rc = shmring_qring_load(r, &c->head, &c->tail, (unsigned char *)c + SHMRING_QUEUE_CTRL_SIZE, capacity);
}

/* Add `n` items of `len` payload bytes in all to the counters (lock held).
 * A holder killed part-way leaves some of them behind: shmring_queue_recount
 * redoes count and bytes from the records and puts or gets from those. */
static inline void shmring_queue_count_add(shmring_queue_ctrl *c, uint64_t n, uint64_t len)
{
    /* relaxed: under the lock [Q1]; lock-free readers only want a snapshot. */
    __atomic_store_n(&c->count, c->count + n, __ATOMIC_RELAXED);
    __atomic_store_n(&c->bytes, c->bytes + len, __ATOMIC_RELAXED);
    /* release [Q3]: task_done() and join() compare done with puts. */
    __atomic_store_n(&c->puts, c->puts + n, __ATOMIC_RELEASE);
}

static inline int shmring_queue_count_sub(shmring_queue_ctrl *c, uint64_t n, uint64_t len)
{
    /* relaxed: under the lock [Q1]. */
    uint64_t count = __atomic_load_n(&c->count, __ATOMIC_RELAXED);
    uint64_t bytes = __atomic_load_n(&c->bytes, __ATOMIC_RELAXED);
    if (count < n || bytes < len)
        return SHMRING_ERR_CORRUPT;
    __atomic_store_n(&c->count, count - n, __ATOMIC_RELAXED);
    __atomic_store_n(&c->bytes, bytes - len, __ATOMIC_RELAXED);
    __atomic_store_n(&c->gets, c->gets + n, __ATOMIC_RELAXED);
    return SHMRING_OK;
}

static inline int shmring_queue_lock(shmring_queue_ctrl *c, uint64_t token, uint64_t spin_ns, uint64_t check_ns,
                                     uint64_t deadline_ns)
{
    return shmring_mutex_lock(&c->lock, token, spin_ns, check_ns, deadline_ns);
}

static inline void shmring_queue_unlock(shmring_queue_ctrl *c, uint64_t token)
{
    (void)shmring_mutex_release(&c->lock, token);
}

/* Register as a sleeper on `seq` (lock held) and return the value to sleep
 * on.  [Q2]: the register happens under the lock, and a waker reads the
 * waiter count under the lock after its change, so either the sleeper saw
 * the change before sleeping or the waker sees the sleeper and bumps seq. */
static inline uint32_t shmring_queue_register(uint32_t *seq, uint32_t *waiters)
{
    /* relaxed [Q2]: ordered by the lock. */
    __atomic_fetch_add(waiters, 1u, __ATOMIC_RELAXED);
    return __atomic_load_n(seq, __ATOMIC_RELAXED);
}

/* After the sleep, without the lock: an atomic decrement (other processes
 * change the count at the same time: registrations under the lock, other
 * waiters' decrements outside it). */
static inline void shmring_queue_unregister(uint32_t *waiters)
{
    /* relaxed: a hint; a stale count (a waiter killed asleep) costs a spare wake call. */
    __atomic_fetch_sub(waiters, 1u, __ATOMIC_RELAXED);
}

/* After the lock is released: wake up to `n` sleepers on `seq` if the
 * count read under the lock [Q2] said there were any. */
static inline void shmring_queue_wake(uint32_t *seq, uint32_t waiters_seen, int n)
{
    if (waiters_seen == 0)
        return;
    /* release [Q2]: the sleeper re-takes the lock anyway; the bump only has
     * to differ from the value it read under the lock. */
    __atomic_fetch_add(seq, 1u, __ATOMIC_RELEASE);
    shmring_futex_wake(seq, n);
}

/* task_done(): SHMRING_ERR_ARG when called more often than items were put. */
static inline int shmring_queue_task_done(shmring_queue_ctrl *c, uint64_t n)
{
    /* relaxed: a first guess for the CAS. */
    uint64_t cur = __atomic_load_n(&c->done, __ATOMIC_RELAXED), puts;
    do {
        /* acquire [Q3]: pairs with the release store of puts in count_add. */
        puts = __atomic_load_n(&c->puts, __ATOMIC_ACQUIRE);
        if (cur + n > puts)
            return SHMRING_ERR_ARG;
        /* acq_rel [Q3]: pairs with join()'s load of done. */
    } while (!__atomic_compare_exchange_n(&c->done, &cur, cur + n, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    if (cur + n == puts) {
        /* seq_cst [Q3]: bump, then read the sleepers join() announced
         * before re-reading done and puts. */
        __atomic_fetch_add(&c->done_seq, 1u, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&c->done_waiters, __ATOMIC_SEQ_CST) != 0)
            shmring_futex_wake(&c->done_seq, INT_MAX);
    }
    return SHMRING_OK;
}

/* Tasks put and not yet done (a snapshot). */
static inline uint64_t shmring_queue_unfinished(shmring_queue_ctrl *c)
{
    /* acquire [Q3]: done first, so that puts read after it is not older. */
    uint64_t done = __atomic_load_n(&c->done, __ATOMIC_ACQUIRE);
    uint64_t puts = __atomic_load_n(&c->puts, __ATOMIC_ACQUIRE);
    return puts > done ? puts - done : 0;
}

/* Overflow chunks are named "<queue>.q<index>" (index in decimal): these
 * two functions are the only places that spell it. */

/* Name of overflow chunk `index` of queue `name` ("/name" or "name") in
 * `out` ("/name.qN", NAME_MAX + 2 bytes).  0, or SHMRING_ERR_ARG if too long. */
static inline int shmring_queue_chunk_name(const char *name, uint64_t index, char *out)
{
    int n = snprintf(out, NAME_MAX + 2, "%s%s.q%llu", name[0] == '/' ? "" : "/", name, (unsigned long long)index);
    return n > 0 && n <= NAME_MAX ? SHMRING_OK : SHMRING_ERR_ARG;
}

/* Is `entry` ("x.qN" or "/x.qN") named like chunk N of queue `name`?  1 with
 * *index = N, else 0.  Only the name: the chunk's stamp says whose it is. */
static inline int shmring_queue_chunk_parse(const char *entry, const char *name, uint64_t *index)
{
    size_t n;
    uint64_t v = 0;
    const char *p;
    if (entry[0] == '/')
        entry++;
    if (name[0] == '/')
        name++;
    n = strlen(name);
    if (strncmp(entry, name, n) != 0 || entry[n] != '.' || entry[n + 1] != 'q')
        return 0;
    p = entry + n + 2;
    if (*p < '0' || *p > '9' || (*p == '0' && p[1] != '\0'))
        return 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9u) / 10u)
            return 0;
        v = v * 10u + (uint64_t)(*p - '0');
    }
    *index = v;
    return 1;
}

/* The id of the queue whose segment's first `len` bytes are at `base`
 * (0 if too short to tell). */
static inline uint64_t shmring_queue_id_of(const unsigned char *base, size_t len)
{
    const shmring_queue_ctrl *c = (const shmring_queue_ctrl *)(const void *)(base + SHMRING_HEADER_SIZE);
    if (len < SHMRING_HEADER_SIZE + sizeof(shmring_queue_ctrl))
        return 0;
    /* relaxed: config, published with the segment [S1]. */
    return __atomic_load_n(&c->queue_id, __ATOMIC_RELAXED);
}

/* The stamp of a chunk: which queue's it is, and where it stands. */
typedef struct shmring_chunk_stamp {
    uint64_t queue_id;           /* 0: not a published, well-formed chunk */
    uint64_t index;
    uint64_t queue_dev, queue_ino; /* the queue's object */
} shmring_chunk_stamp;

/* Read the stamp of chunk segment `path` ("/x.qN"), looking only. */
static inline shmring_chunk_stamp shmring_queue_chunk_stamp(const char *path)
{
    shmring_chunk_stamp st;
    shmring_segment seg;
    memset(&st, 0, sizeof st);
    if (shmring_segment_open(path, SHMRING_OPEN_READONLY | SHMRING_OPEN_ALLOW_OTHER_OWNER | SHMRING_OPEN_NO_ATTACH,
                             &seg) != SHMRING_OK)
        return st;
    if (((const shmring_segment_header *)(const void *)seg.base)->kind == SHMRING_KIND_QUEUE_CHUNK &&
        shmring_segment_payload_size(&seg) >= SHMRING_QUEUE_CHUNK_HEADER_SIZE) {
        const shmring_queue_chunk *k = (const shmring_queue_chunk *)(const void *)shmring_segment_payload(&seg);
        /* relaxed: config, published with the chunk [S1]. */
        st.queue_id = __atomic_load_n(&k->queue_id, __ATOMIC_RELAXED);
        st.index = __atomic_load_n(&k->index, __ATOMIC_RELAXED);
        st.queue_dev = __atomic_load_n(&k->queue_dev, __ATOMIC_RELAXED);
        st.queue_ino = __atomic_load_n(&k->queue_ino, __ATOMIC_RELAXED);
    }
    shmring_segment_close(&seg);
    return st;
}

/* Unlink every overflow chunk of queue `queue_name` stamped `queue_id`
 * (found by name under /dev/shm, kept only if the stamp matches: a segment
 * merely named like a chunk is left alone). */
static inline int shmring_queue_remove_chunks(const char *queue_name, uint64_t queue_id)
{
    struct dirent *e;
    int rc = SHMRING_OK;
    DIR *d = opendir("/dev/shm");
    if (d == NULL)
        return errno == ENOENT ? SHMRING_OK : SHMRING_ERR_SYS;
    while ((e = readdir(d)) != NULL) {
        char path[NAME_MAX + 2];
        uint64_t index;
        if (!shmring_queue_chunk_parse(e->d_name, queue_name, &index) || strlen(e->d_name) > NAME_MAX - 1)
            continue;
        path[0] = '/';
        memcpy(path + 1, e->d_name, strlen(e->d_name) + 1);
        (void)index; /* (a damaged chunk may say another index: its stamp is what counts) */
        if (shmring_queue_chunk_stamp(path).queue_id == queue_id && shm_unlink(path) != 0 && errno != ENOENT)
            rc = SHMRING_ERR_SYS;
    }
    closedir(d);
    return rc;
}

/* Recount `count` and `bytes` from the records of the main ring and of every
 * overflow chunk of queue `name` (lock held: after OWNER_DIED, or after a
 * chunk was found missing).  Consumers move ovf_head before they unlink a
 * drained chunk, so a chunk missing from the chain was removed by someone
 * else, and its items are lost: it is counted in *lost (may be NULL) and
 * skipped, and ovf_head moves past missing chunks at the head.  SHMRING_OK,
 * SHMRING_ERR_CORRUPT or SHMRING_ERR_SYS. */
static inline int shmring_queue_recount(shmring_queue_ctrl *c, uint64_t capacity, const char *name, uint64_t *lost)
{
    uint64_t items = 0, bytes = 0, h, t, i, missing = 0;
    /* relaxed: config, published with the segment [S1]. */
    uint64_t queue_id = __atomic_load_n(&c->queue_id, __ATOMIC_RELAXED);
    shmring_qring r;
    int rc;
    shmring_queue_main_ring(c, capacity, &r, &rc);
    if (rc != SHMRING_OK || shmring_qring_count(r, &items, &bytes) != SHMRING_OK)
        return SHMRING_ERR_CORRUPT;
    /* relaxed: under the lock [Q1]. */
    h = __atomic_load_n(&c->ovf_head, __ATOMIC_RELAXED);
    t = __atomic_load_n(&c->ovf_tail, __ATOMIC_RELAXED);
    if (t - h > SHMRING_QUEUE_MAX_CHUNKS)
        return SHMRING_ERR_CORRUPT;
    for (i = h; i != t; i++) {
        char path[NAME_MAX + 2];
        shmring_segment seg;
        uint64_t cap;
        shmring_queue_chunk *k;
        if (shmring_queue_chunk_name(name, i, path) != SHMRING_OK)
            return SHMRING_ERR_ARG;
        rc = shmring_segment_open(path, SHMRING_OPEN_ALLOW_OTHER_OWNER | SHMRING_OPEN_NO_ATTACH, &seg);
        if (rc == SHMRING_ERR_SYS && errno == ENOENT) {
            missing++;
            if (i == h)
                /* relaxed: under the lock [Q1]. */
                __atomic_store_n(&c->ovf_head, ++h, __ATOMIC_RELAXED);
            continue;
        }
        if (rc != SHMRING_OK)
            return rc;
        k = (shmring_queue_chunk *)shmring_segment_payload(&seg);
        rc = ((shmring_segment_header *)seg.base)->kind == SHMRING_KIND_QUEUE_CHUNK
                 ? shmring_queue_chunk_check(k, shmring_segment_payload_size(&seg), i, queue_id, &cap)
                 : SHMRING_ERR_CORRUPT;
        if (rc == SHMRING_OK)
            rc = shmring_qring_load(&r, &k->head, &k->tail, (unsigned char *)k + SHMRING_QUEUE_CHUNK_HEADER_SIZE, cap);
        if (rc == SHMRING_OK)
            rc = shmring_qring_count(r, &items, &bytes);
        shmring_segment_close(&seg);
        if (rc != SHMRING_OK)
            return SHMRING_ERR_CORRUPT;
    }
    /* The dead holder's last operation moved a ring's tail (a put) or head
     * (a get) and maybe not the counters after it: puts - gets must equal the
     * items held; the side that lags is the one it did not finish. */
    {
        /* relaxed: under the lock [Q1]. */
        uint64_t puts = __atomic_load_n(&c->puts, __ATOMIC_RELAXED);
        uint64_t gets = __atomic_load_n(&c->gets, __ATOMIC_RELAXED);
        if (puts - gets < items)
            __atomic_store_n(&c->puts, gets + items, __ATOMIC_RELEASE); /* [Q3] as in count_add */
        else if (puts - gets > items)
            __atomic_store_n(&c->gets, puts - items, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&c->count, items, __ATOMIC_RELAXED);
    __atomic_store_n(&c->bytes, bytes, __ATOMIC_RELAXED);
    if (lost != NULL)
        *lost = missing;
    return SHMRING_OK;
}

/* Take the lock for a plain C peer of queue `name`: after OWNER_DIED,
 * recount and mark the lock consistent.  Returns as shmring_queue_lock. */
static inline int shmring_queue_lock_repair(shmring_queue_ctrl *c, uint64_t capacity, const char *name,
                                            uint64_t token, uint64_t deadline_ns)
{
    int rc = shmring_queue_lock(c, token, 2000u, 10000000u, deadline_ns);
    if (rc == SHMRING_OWNER_DIED) {
        rc = shmring_queue_recount(c, capacity, name, NULL);
        if (rc == SHMRING_ERR_SYS) {
            int saved = errno;
            shmring_mutex_abandon(&c->lock, token); /* may pass: the next holder retries */
            errno = saved;
            return rc;
        }
        if (rc != SHMRING_OK) {
            shmring_queue_unlock(c, token); /* unrepaired: not recoverable, for everyone */
            return rc;
        }
        shmring_mutex_consistent(&c->lock, token);
    }
    return rc;
}

/* Blocking put and get for plain C and C++ peers, on the main ring.  They
 * need a queue whose overflow chain is empty (bounded queues with records
 * that fit the ring): while it is not, they return SHMRING_ERR_ARG and change
 * nothing.  put: SHMRING_OK, SHMRING_TOO_BIG, SHMRING_TIMEOUT, lock errors.
 * get copies the next record into buf (`cap` bytes; *len gets its length,
 * *tag its tag): SHMRING_OK, SHMRING_TOO_BIG (buf too small: the record
 * stays), SHMRING_TIMEOUT, SHMRING_ERR_CORRUPT.  deadline_ns 0 = forever. */
static inline int shmring_queue_put(shmring_queue_ctrl *c, uint64_t capacity, const char *name, uint64_t token,
                                    uint32_t tag, const void *data, uint64_t len, uint64_t deadline_ns)
{
    int slept = 0;
    for (;;) {
        shmring_qring r;
        unsigned char *dst;
        uint32_t seq, consumers, producers;
        uint64_t count, slice;
        int rc = shmring_queue_lock_repair(c, capacity, name, token, deadline_ns);
        if (rc != SHMRING_OK)
            return rc;
        /* relaxed: under the lock [Q1]. */
        count = __atomic_load_n(&c->count, __ATOMIC_RELAXED);
        if (__atomic_load_n(&c->ovf_head, __ATOMIC_RELAXED) != __atomic_load_n(&c->ovf_tail, __ATOMIC_RELAXED)) {
            rc = SHMRING_ERR_ARG;
        } else if (c->maxsize && count >= c->maxsize) {
            rc = SHMRING_AGAIN;
        } else {
            shmring_queue_main_ring(c, capacity, &r, &rc);
            if (rc == SHMRING_OK)
                rc = shmring_qring_reserve(&r, tag, len, &dst);
            if (rc == SHMRING_OK) {
                memcpy(dst, data, (size_t)len);
                shmring_qring_commit(&r);
                shmring_queue_count_add(c, 1, len);
                /* relaxed [Q2]: read under the lock, after the change. */
                consumers = __atomic_load_n(&c->items_waiters, __ATOMIC_RELAXED);
                producers = __atomic_load_n(&c->room_waiters, __ATOMIC_RELAXED);
                shmring_queue_unlock(c, token);
                shmring_queue_wake(&c->items_seq, consumers, 1);
                if (!c->maxsize || count + 1 < c->maxsize)
                    shmring_queue_wake(&c->room_seq, producers, 1);
                return SHMRING_OK;
            }
        }
        if (rc != SHMRING_AGAIN || (deadline_ns && shmring_now_ns() >= deadline_ns)) {
            /* relaxed [Q2]: read under the lock. */
            producers = __atomic_load_n(&c->room_waiters, __ATOMIC_RELAXED);
            shmring_queue_unlock(c, token);
            if (slept) /* a wake taken before giving up goes on to another producer */
                shmring_queue_wake(&c->room_seq, producers, 1);
            return rc == SHMRING_AGAIN ? SHMRING_TIMEOUT : rc;
        }
        seq = shmring_queue_register(&c->room_seq, &c->room_waiters);
        shmring_queue_unlock(c, token);
        slice = shmring_now_ns() + SHMRING_C_SLICE_NS;
        shmring_futex_wait_until(&c->room_seq, seq, deadline_ns && deadline_ns < slice ? deadline_ns : slice);
        shmring_queue_unregister(&c->room_waiters);
        slept = 1;
    }
}

static inline int shmring_queue_get(shmring_queue_ctrl *c, uint64_t capacity, const char *name, uint64_t token,
                                    void *buf, uint64_t cap, uint64_t *len, uint32_t *tag, uint64_t deadline_ns)
{
    int slept = 0;
    *len = 0;
    *tag = 0;
    for (;;) {
        shmring_qring r;
        const unsigned char *src = NULL;
        uint32_t seq, consumers, producers;
        uint64_t slice;
        int rc = shmring_queue_lock_repair(c, capacity, name, token, deadline_ns);
        if (rc != SHMRING_OK)
            return rc;
        shmring_queue_main_ring(c, capacity, &r, &rc);
        if (rc == SHMRING_OK)
            rc = shmring_qring_take(&r, tag, &src, len);
        /* relaxed: under the lock [Q1]. */
        if (rc == SHMRING_AGAIN &&
            __atomic_load_n(&c->ovf_head, __ATOMIC_RELAXED) != __atomic_load_n(&c->ovf_tail, __ATOMIC_RELAXED))
            rc = SHMRING_ERR_ARG;
        if (rc == SHMRING_OK && *len > cap)
            rc = SHMRING_TOO_BIG;
        if (rc == SHMRING_OK) {
            memcpy(buf, src, (size_t)*len);
            shmring_qring_commit(&r);
            if (shmring_queue_count_sub(c, 1, *len) != SHMRING_OK) {
                shmring_queue_unlock(c, token);
                return SHMRING_ERR_CORRUPT;
            }
            /* relaxed [Q2]: read under the lock, after the change. */
            consumers = __atomic_load_n(&c->items_waiters, __ATOMIC_RELAXED);
            producers = __atomic_load_n(&c->room_waiters, __ATOMIC_RELAXED);
            rc = __atomic_load_n(&c->count, __ATOMIC_RELAXED) != 0;
            shmring_queue_unlock(c, token);
            shmring_queue_wake(&c->room_seq, producers, 1);
            if (rc)
                shmring_queue_wake(&c->items_seq, consumers, 1);
            return SHMRING_OK;
        }
        if (rc != SHMRING_AGAIN || (deadline_ns && shmring_now_ns() >= deadline_ns)) {
            /* relaxed [Q2]: read under the lock. */
            consumers = __atomic_load_n(&c->items_waiters, __ATOMIC_RELAXED);
            shmring_queue_unlock(c, token);
            if (slept) /* a wake taken before giving up goes on to another consumer */
                shmring_queue_wake(&c->items_seq, consumers, 1);
            return rc == SHMRING_AGAIN ? SHMRING_TIMEOUT : rc;
        }
        seq = shmring_queue_register(&c->items_seq, &c->items_waiters);
        shmring_queue_unlock(c, token);
        slice = shmring_now_ns() + SHMRING_C_SLICE_NS;
        shmring_futex_wait_until(&c->items_seq, seq, deadline_ns && deadline_ns < slice ? deadline_ns : slice);
        shmring_queue_unregister(&c->items_waiters);
        slept = 1;
    }
}

/* ========================================================================== */
/* Broadcast topic                                                            */
/* ========================================================================== */
/*
 * Publishers append records to one ring under the topic's robust mutex;
 * every subscriber reads them with its own cursor, without a lock.  Records
 * have a 16-byte header {len, tag, seq} and start at 16-byte aligned offsets;
 * `seq` numbers the messages, so a subscriber that fell behind knows how many
 * it missed.
 *
 * head is the reclaim point: bytes before it may be overwritten.  Policy
 * BLOCK moves it only up to the slowest live subscriber's cursor (publishers
 * wait for room); OVERWRITE moves it as far as a publish needs.  A reader
 * copies a record, then re-reads head [T2]: if head has passed the record,
 * the copy may be torn and is discarded (SHMRING_LAGGED).  Layout and
 * algorithm: docs/PROTOCOL.md section 6.
 */


#define SHMRING_TOPIC_BLOCK 1u
#define SHMRING_TOPIC_OVERWRITE 2u
#define SHMRING_TOPIC_CTRL_SIZE 384u
#define SHMRING_TOPIC_MIN_CAPACITY 128u
#define SHMRING_TOPIC_MAX_CAPACITY (UINT64_C(1) << 32)
#define SHMRING_TOPIC_MAX_SUBSCRIBERS 4096u
#define SHMRING_TOPIC_NO_RECORD UINT64_MAX

typedef struct shmring_topic_ctrl {
    /* Config: written before the segment is published. */
    uint64_t capacity;         /* ring bytes: a multiple of 16 */
    uint64_t data_offset;      /* from the payload start */
    uint32_t policy;           /* SHMRING_TOPIC_BLOCK or _OVERWRITE */
    uint32_t max_subscribers;  /* entries in the subscriber table */
    uint32_t spin_ns;          /* how long a waiter polls before sleeping */
    uint32_t reserved0;
    uint8_t pad0[32];
    /* The publishers' lock, on a cache line of its own: subscribers poll
     * tail, and should not see the lock's two writes per publish too. */
    shmring_mutex lock; /* [T3] */
    uint8_t pad1[40];
    /* Publishers' state: written under the lock, read by subscribers. */
    uint64_t tail;      /* bytes published, ever [T1] */
    uint64_t head;      /* reclaim point: bytes before it may be overwritten [T2] */
    uint64_t next_seq;  /* number of the next message */
    uint64_t last_pos;  /* offset of the newest record, or NO_RECORD [T1] */
    uint8_t pad2[96];
    /* Sleep words. */
    uint32_t data_seq;     /* bumped after a publish when subscribers sleep [T4] */
    uint32_t data_waiters;
    uint32_t room_seq;     /* bumped after a subscriber moved on, for BLOCK publishers [T5] */
    uint32_t room_waiters;
    uint8_t pad3[112];
} shmring_topic_ctrl;
SHMRING_STATIC_ASSERT(offsetof(shmring_topic_ctrl, lock) == 64, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_topic_ctrl, tail) == 128, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_topic_ctrl, head) == 136, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_topic_ctrl, next_seq) == 144, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_topic_ctrl, last_pos) == 152, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_topic_ctrl, data_seq) == 256, "layout");
SHMRING_STATIC_ASSERT(sizeof(shmring_topic_ctrl) == SHMRING_TOPIC_CTRL_SIZE, "layout");

/* One subscriber: the table follows the control block. */
typedef struct shmring_topic_sub {
    uint64_t token;    /* owning process, 0 = free [T6] */
    uint64_t cursor;   /* next byte to read [T5] */
    uint64_t next_seq; /* number of the next message it expects (its own) */
    uint64_t lagged;   /* messages it missed, ever (statistics) */
} shmring_topic_sub;
SHMRING_STATIC_ASSERT(sizeof(shmring_topic_sub) == 32, "layout");

typedef struct shmring_trecord {
    uint32_t len; /* payload bytes (DATA); bytes after the header (PAD) */
    uint32_t tag; /* SHMRING_REC_OBJECT, _BYTES or _PAD */
    uint64_t seq; /* message number (PAD: the next message's) */
} shmring_trecord;
SHMRING_STATIC_ASSERT(sizeof(shmring_trecord) == 16, "layout");

static inline uint64_t shmring_topic_data_offset(uint32_t max_subscribers)
{
    uint64_t end = SHMRING_TOPIC_CTRL_SIZE + (uint64_t)max_subscribers * sizeof(shmring_topic_sub);
    return (end + 127u) & ~(uint64_t)127u;
}

static inline uint64_t shmring_topic_payload_size(uint64_t capacity, uint32_t max_subscribers)
{
    return shmring_topic_data_offset(max_subscribers) + capacity;
}

static inline uint64_t shmring_topic_record_size(uint64_t len)
{
    return (sizeof(shmring_trecord) + len + 15u) & ~(uint64_t)15u;
}

static inline void shmring_topic_init(void *payload, uint64_t capacity, uint32_t policy, uint32_t max_subscribers,
                                      uint32_t spin_ns)
{
    shmring_topic_ctrl *c = (shmring_topic_ctrl *)payload;
    memset(c, 0, sizeof(*c));
    c->capacity = capacity;
    c->data_offset = shmring_topic_data_offset(max_subscribers);
    c->policy = policy;
    c->max_subscribers = max_subscribers;
    c->spin_ns = spin_ns;
    c->last_pos = SHMRING_TOPIC_NO_RECORD;
}

static inline int shmring_topic_check_config(const shmring_topic_ctrl *c, uint64_t payload_size,
                                             shmring_topic_ctrl *copy)
{
    memcpy(copy, c, sizeof(*copy));
    if (payload_size < SHMRING_TOPIC_CTRL_SIZE || copy->max_subscribers == 0 ||
        copy->max_subscribers > SHMRING_TOPIC_MAX_SUBSCRIBERS ||
        copy->data_offset != shmring_topic_data_offset(copy->max_subscribers) ||
        (copy->policy != SHMRING_TOPIC_BLOCK && copy->policy != SHMRING_TOPIC_OVERWRITE) ||
        copy->spin_ns > SHMRING_MAX_SPIN_NS ||
        copy->capacity < SHMRING_TOPIC_MIN_CAPACITY || copy->capacity > SHMRING_TOPIC_MAX_CAPACITY ||
        (copy->capacity & 15u) != 0 || copy->data_offset > payload_size ||
        copy->capacity > payload_size - copy->data_offset)
        return SHMRING_ERR_CORRUPT;
    return SHMRING_OK;
}

/* A topic as one process sees it: pointers and the checked config. */
typedef struct shmring_topic {
    shmring_topic_ctrl *ctrl;
    shmring_topic_sub *subs;
    unsigned char *data;
    uint64_t capacity;
    uint32_t policy;
    uint32_t max_subscribers;
    /* Optional, process-local (NULL after attach): as in shmring_channel, a
     * word another thread of this process sets (release) to make
     * shmring_topic_reserve_wait return early (SHMRING_ERR_SYS, EINTR). */
    const uint32_t *interrupt;
} shmring_topic;

static inline int shmring_topic_attach(shmring_topic *t, void *payload, uint64_t payload_size)
{
    shmring_topic_ctrl cfg;
    int rc = shmring_topic_check_config((const shmring_topic_ctrl *)payload, payload_size, &cfg);
    if (rc != SHMRING_OK)
        return rc;
    t->ctrl = (shmring_topic_ctrl *)payload;
    t->subs = (shmring_topic_sub *)((unsigned char *)payload + SHMRING_TOPIC_CTRL_SIZE);
    t->data = (unsigned char *)payload + cfg.data_offset;
    t->capacity = cfg.capacity;
    t->policy = cfg.policy;
    t->max_subscribers = cfg.max_subscribers;
    t->interrupt = NULL;
    return SHMRING_OK;
}

/* -- publishing (the lock held) ------------------------------------------- */

/* Lowest cursor of the live subscribers (tail if none); frees the slots of
 * dead ones when `reap`. */
static inline uint64_t shmring_topic_min_cursor(shmring_topic *t, uint64_t tail, int reap)
{
    uint64_t low = tail;
    uint32_t i;
    for (i = 0; i < t->max_subscribers; i++) {
        shmring_topic_sub *s = &t->subs[i];
        /* acquire [T6]: pairs with the CAS that claimed or freed the slot;
         * a new subscriber sets its cursor under the lock we hold. */
        uint64_t token = __atomic_load_n(&s->token, __ATOMIC_ACQUIRE), cur;
        if (token == 0)
            continue;
        /* seq_cst [T5]: pairs with the subscriber's store of its cursor and
         * load of room_waiters. */
        cur = __atomic_load_n(&s->cursor, __ATOMIC_SEQ_CST);
        if (tail - cur > t->capacity)
            cur = tail - t->capacity; /* corrupt or far behind: never below what we hold */
        if (cur < low) {
            if (reap && !shmring_token_alive(token)) {
                /* release [T6]: a dead subscriber never blocks publishers. */
                __atomic_compare_exchange_n(&s->token, &token, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
                continue;
            }
            low = cur;
        }
    }
    return low;
}

/* Make `need` bytes free after `tail`, moving head as the policy allows.
 * SHMRING_AGAIN: BLOCK and a live subscriber is too far behind. */
static inline int shmring_topic_make_room(shmring_topic *t, uint64_t tail, uint64_t need, int reap)
{
    shmring_topic_ctrl *c = t->ctrl;
    /* relaxed: under the lock [T3]. */
    uint64_t head = __atomic_load_n(&c->head, __ATOMIC_RELAXED), target;
    if (tail - head > t->capacity || (head & 15u) != 0)
        return SHMRING_ERR_CORRUPT;
    if (t->capacity - (tail - head) >= need)
        return SHMRING_OK;
    target = tail + need - t->capacity;
    if (t->policy == SHMRING_TOPIC_BLOCK) {
        uint64_t low = shmring_topic_min_cursor(t, tail, reap);
        if (low < target)
            return SHMRING_AGAIN;
    } else {
        /* Whole records only, so that head always sits on a record. */
        uint64_t h = head;
        while (h < target) {
            /* h is 16-aligned and capacity a multiple of 16: the header fits. */
            const shmring_trecord *r = (const shmring_trecord *)(t->data + h % t->capacity);
            uint32_t len = r->len, tag = r->tag; /* read once: the mapping is untrusted */
            uint64_t size = tag == SHMRING_REC_PAD ? sizeof(shmring_trecord) + (uint64_t)len
                                                   : shmring_topic_record_size(len);
            if (size > tail - h || (size & 15u) != 0 || size == 0 || h % t->capacity + size > t->capacity)
                return SHMRING_ERR_CORRUPT;
            h += size;
        }
        target = h;
    }
    /* relaxed + release fence [T2]: head is visible before any byte of the
     * space it frees is overwritten; pairs with the reader's acquire fence
     * before it re-reads head. */
    __atomic_store_n(&c->head, target, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    return SHMRING_OK;
}

/* Reserve a record of `len` bytes; *out gets where its payload goes and
 * *pos where the record starts.  A record never wraps: a padding record is
 * published alone first when it would.  SHMRING_OK, SHMRING_AGAIN (BLOCK:
 * no room), SHMRING_TOO_BIG or SHMRING_ERR_CORRUPT. */
static inline int shmring_topic_reserve(shmring_topic *t, uint32_t tag, uint64_t len, int reap, unsigned char **out,
                                        uint64_t *pos)
{
    shmring_topic_ctrl *c = t->ctrl;
    uint64_t need = shmring_topic_record_size(len), tail, off, contig;
    shmring_trecord *r;
    int rc;
    if (len > UINT32_MAX || need > t->capacity)
        return SHMRING_TOO_BIG;
    /* relaxed: under the lock [T3]. */
    tail = __atomic_load_n(&c->tail, __ATOMIC_RELAXED);
    if ((tail & 15u) != 0)
        return SHMRING_ERR_CORRUPT;
    off = tail % t->capacity;
    contig = t->capacity - off;
    if (contig < need) {
        rc = shmring_topic_make_room(t, tail, contig, reap);
        if (rc != SHMRING_OK)
            return rc;
        r = (shmring_trecord *)(t->data + off);
        r->len = (uint32_t)(contig - sizeof(shmring_trecord));
        r->tag = SHMRING_REC_PAD;
        r->seq = c->next_seq;
        tail += contig;
        /* seq_cst [T1][T4]: the padding is readable before tail says so;
         * sleeping subscribers must move past it before BLOCK can reclaim it. */
        __atomic_store_n(&c->tail, tail, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&c->data_waiters, __ATOMIC_SEQ_CST) != 0) {
            __atomic_fetch_add(&c->data_seq, 1u, __ATOMIC_SEQ_CST);
            shmring_futex_wake(&c->data_seq, INT_MAX);
        }
        off = 0;
    }
    rc = shmring_topic_make_room(t, tail, need, reap);
    if (rc != SHMRING_OK)
        return rc;
    r = (shmring_trecord *)(t->data + off);
    r->len = (uint32_t)len;
    r->tag = tag;
    r->seq = c->next_seq;
    *out = t->data + off + sizeof(shmring_trecord);
    *pos = tail;
    return SHMRING_OK;
}

/* Publish the record reserved at `pos`.  Returns whether subscribers may
 * sleep (the caller then calls shmring_topic_wake_subscribers). */
static inline int shmring_topic_commit(shmring_topic *t, uint64_t pos)
{
    shmring_topic_ctrl *c = t->ctrl;
    const shmring_trecord *r = (const shmring_trecord *)(t->data + pos % t->capacity);
    /* relaxed: under the lock [T3]. */
    __atomic_store_n(&c->next_seq, c->next_seq + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&c->last_pos, pos, __ATOMIC_RELAXED);
    /* seq_cst [T1][T4]: release for readers' acquire of tail; seq_cst so
     * that the load of data_waiters below cannot miss an announced sleeper. */
    __atomic_store_n(&c->tail, pos + shmring_topic_record_size(r->len), __ATOMIC_SEQ_CST);
    return __atomic_load_n(&c->data_waiters, __ATOMIC_SEQ_CST) != 0;
}

static inline void shmring_topic_wake_subscribers(shmring_topic *t)
{
    /* seq_cst [T4]: the sleeper re-reads tail after reading data_seq. */
    __atomic_fetch_add(&t->ctrl->data_seq, 1u, __ATOMIC_SEQ_CST);
    shmring_futex_wake(&t->ctrl->data_seq, INT_MAX);
}

/* -- subscribing ---------------------------------------------------------- */

/* Claim a subscriber slot (the lock held, so that no publish moves head
 * between reading tail and publishing the cursor).  Returns the slot index,
 * or -1 when the table is full of live subscribers. */
static inline int shmring_topic_subscribe(shmring_topic *t, uint64_t token)
{
    shmring_topic_ctrl *c = t->ctrl;
    uint32_t i, pass;
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < t->max_subscribers; i++) {
            shmring_topic_sub *s = &t->subs[i];
            /* relaxed: a first look; the CAS decides. */
            uint64_t cur = __atomic_load_n(&s->token, __ATOMIC_RELAXED);
            if (cur != 0 && (pass == 0 || shmring_token_alive(cur)))
                continue;
            /* acquire [T6]: take the slot (free, or a dead process's). */
            if (!__atomic_compare_exchange_n(&s->token, &cur, token, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                continue;
            /* relaxed under the lock; seq_cst for the cursor [T5]. */
            __atomic_store_n(&s->next_seq, __atomic_load_n(&c->next_seq, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
            __atomic_store_n(&s->lagged, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&s->cursor, __atomic_load_n(&c->tail, __ATOMIC_RELAXED), __ATOMIC_SEQ_CST);
            return (int)i;
        }
    }
    return -1;
}

static inline void shmring_topic_unsubscribe(shmring_topic *t, int slot, uint64_t token)
{
    uint64_t cur = token;
    /* release [T6]: the slot is free once nobody reads through it. */
    __atomic_compare_exchange_n(&t->subs[slot].token, &cur, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

/* The record at `cursor`, skipping padding (*cursor moves past it).
 * SHMRING_OK (the payload may still be torn: check with
 * shmring_topic_still_valid after copying), SHMRING_AGAIN (nothing new),
 * SHMRING_LAGGED (head passed the cursor) or SHMRING_ERR_CORRUPT. */
static inline int shmring_topic_next(shmring_topic *t, uint64_t *cursor, uint32_t *tag, const unsigned char **payload,
                                     uint64_t *len, uint64_t *seq, uint64_t *size)
{
    shmring_topic_ctrl *c = t->ctrl;
    for (;;) {
        /* acquire [T1]: pairs with the publisher's store of tail. */
        uint64_t tail = __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE);
        /* acquire [T2]: pairs with the release fence after head moved. */
        uint64_t head = __atomic_load_n(&c->head, __ATOMIC_ACQUIRE);
        uint64_t cur = *cursor, off, contig;
        const shmring_trecord *r;
        shmring_trecord copy;
        if (cur == tail)
            return SHMRING_AGAIN;
        if (cur < head)
            return SHMRING_LAGGED;
        if (cur > tail || tail - cur > t->capacity || (cur & 15u) != 0)
            return SHMRING_ERR_CORRUPT;
        off = cur % t->capacity;
        contig = t->capacity - off;
        r = (const shmring_trecord *)(t->data + off);
        memcpy(&copy, r, sizeof(copy)); /* once: the mapping is untrusted */
        __atomic_thread_fence(__ATOMIC_ACQUIRE); /* [T2]: the header before head */
        /* relaxed after the fence [T2]. */
        if (__atomic_load_n(&c->head, __ATOMIC_RELAXED) > cur)
            return SHMRING_LAGGED;
        if (copy.tag == SHMRING_REC_PAD) {
            if ((uint64_t)copy.len + sizeof(shmring_trecord) != contig || contig > tail - cur)
                return SHMRING_ERR_CORRUPT;
            *cursor = cur + contig;
            continue;
        }
        *size = shmring_topic_record_size(copy.len);
        if ((copy.tag != SHMRING_REC_OBJECT && copy.tag != SHMRING_REC_BYTES) || *size > contig ||
            *size > tail - cur)
            return SHMRING_ERR_CORRUPT;
        *tag = copy.tag;
        *len = copy.len;
        *seq = copy.seq;
        *payload = t->data + off + sizeof(shmring_trecord);
        return SHMRING_OK;
    }
}

/* After copying a record read at `pos`: SHMRING_OK if no publisher reclaimed
 * it meanwhile, else SHMRING_LAGGED (the copy may be torn: discard it). */
static inline int shmring_topic_still_valid(shmring_topic *t, uint64_t pos)
{
    /* acquire fence [T2]: pairs with the release fence after the publisher
     * moved head; if our copy saw any overwritten byte, we see the new head. */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    /* relaxed after the fence. */
    return __atomic_load_n(&t->ctrl->head, __ATOMIC_RELAXED) > pos ? SHMRING_LAGGED : SHMRING_OK;
}

/* Where a lagging subscriber resumes: the oldest record still held, and its
 * message number.  SHMRING_AGAIN when nothing is held (head == tail): the
 * caller then reads tail and next_seq together under the lock. */
static inline int shmring_topic_oldest(shmring_topic *t, uint64_t *pos, uint64_t *seq)
{
    shmring_topic_ctrl *c = t->ctrl;
    for (;;) {
        /* acquire [T2]/[T1]: as in shmring_topic_next. */
        uint64_t head = __atomic_load_n(&c->head, __ATOMIC_ACQUIRE);
        uint64_t tail = __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE);
        uint64_t s;
        if (head > tail || tail - head > t->capacity || (head & 15u) != 0) {
            /* acquire, as above: a publish between our two loads moves both
             * (a full ring: tail - head is about capacity); only a pair that
             * stays impossible is corruption. */
            if (__atomic_load_n(&c->head, __ATOMIC_ACQUIRE) != head ||
                __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE) != tail)
                continue;
            return SHMRING_ERR_CORRUPT;
        }
        if (head == tail)
            return SHMRING_AGAIN;
        s = ((const shmring_trecord *)(t->data + head % t->capacity))->seq;
        if (shmring_topic_still_valid(t, head) == SHMRING_OK) {
            *pos = head;
            *seq = s;
            return SHMRING_OK;
        }
    }
}

/* Publish the subscriber's new cursor; returns whether BLOCK publishers may
 * sleep (then call shmring_topic_wake_publishers). */
static inline int shmring_topic_advance(shmring_topic *t, int slot, uint64_t cursor, uint64_t next_seq)
{
    shmring_topic_sub *s = &t->subs[slot];
    /* relaxed: only this subscriber writes it. */
    __atomic_store_n(&s->next_seq, next_seq, __ATOMIC_RELAXED);
    /* seq_cst [T5]: pairs with the publisher's seq_cst loads of cursors
     * after it announced itself in room_waiters. */
    __atomic_store_n(&s->cursor, cursor, __ATOMIC_SEQ_CST);
    return t->policy == SHMRING_TOPIC_BLOCK && __atomic_load_n(&t->ctrl->room_waiters, __ATOMIC_SEQ_CST) != 0;
}

static inline void shmring_topic_wake_publishers(shmring_topic *t)
{
    /* seq_cst [T5]. */
    __atomic_fetch_add(&t->ctrl->room_seq, 1u, __ATOMIC_SEQ_CST);
    shmring_futex_wake(&t->ctrl->room_seq, INT_MAX);
}

/* Has another thread of this process asked this waiter to stop? */
static inline int shmring_topic_interrupted(const shmring_topic *t)
{
    /* acquire: pairs with the interrupting thread's release store. */
    return t->interrupt != NULL && __atomic_load_n(t->interrupt, __ATOMIC_ACQUIRE) != 0;
}

/* Wake this process's thread sleeping for room (publisher) or for data
 * (subscriber), after setting *t->interrupt.  No word changes value: other
 * sleepers wake spuriously and sleep again, and a waiter caught just before
 * its sleep sleeps until its deadline (callers wait in slices). */
static inline void shmring_topic_interrupt_waiters(shmring_topic *t, int publisher)
{
    shmring_futex_wake(publisher ? &t->ctrl->room_seq : &t->ctrl->data_seq, INT_MAX);
}

/* Take the topic lock and reserve a record of `len` bytes, waiting for
 * room under BLOCK (reaping dead subscribers after a 10 ms slice without
 * progress) until deadline_ns (0 = forever).  A dead publisher's lock is
 * taken over: nothing to repair [T3].  SHMRING_OK with the lock held: write
 * the payload at *out, then shmring_topic_commit(t, *pos), release the lock
 * and wake as commit says.  Else SHMRING_TOO_BIG, SHMRING_TIMEOUT,
 * SHMRING_ERR_CORRUPT, lock errors, or SHMRING_ERR_SYS (EINTR: a signal, or
 * t->interrupt set). */
static inline int shmring_topic_reserve_wait(shmring_topic *t, uint64_t token, uint32_t tag, uint64_t len,
                                             uint64_t deadline_ns, unsigned char **out, uint64_t *pos)
{
    shmring_topic_ctrl *c = t->ctrl;
    int reap = 0;
    for (;;) {
        uint64_t slice;
        uint32_t seq;
        int rc = shmring_mutex_lock(&c->lock, token, 2000u, 10000000u, deadline_ns);
        if (rc == SHMRING_OWNER_DIED)
            rc = shmring_mutex_consistent(&c->lock, token);
        if (rc != SHMRING_OK)
            return rc;
        /* seq_cst [T5]: announce before looking at the cursors. */
        __atomic_fetch_add(&c->room_waiters, 1u, __ATOMIC_SEQ_CST);
        seq = __atomic_load_n(&c->room_seq, __ATOMIC_SEQ_CST);
        rc = shmring_topic_reserve(t, tag, len, reap, out, pos);
        if (rc != SHMRING_AGAIN || (deadline_ns && shmring_now_ns() >= deadline_ns)) {
            /* relaxed: a hint for subscribers. */
            __atomic_fetch_sub(&c->room_waiters, 1u, __ATOMIC_RELAXED);
            if (rc != SHMRING_OK)
                shmring_mutex_release(&c->lock, token);
            return rc == SHMRING_AGAIN ? SHMRING_TIMEOUT : rc;
        }
        shmring_mutex_release(&c->lock, token);
        slice = shmring_now_ns() + 10000000u;
        rc = shmring_topic_interrupted(t)
                 ? SHMRING_ERR_SYS
                 : shmring_futex_wait_until(&c->room_seq, seq, deadline_ns && deadline_ns < slice ? deadline_ns : slice);
        /* relaxed: a hint for subscribers. */
        __atomic_fetch_sub(&c->room_waiters, 1u, __ATOMIC_RELAXED);
        if (shmring_topic_interrupted(t)) {
            errno = EINTR;
            return SHMRING_ERR_SYS;
        }
        reap = rc == SHMRING_TIMEOUT; /* a slow subscriber for a whole slice: alive? */
    }
}

/* Blocking publish for plain C and C++ peers.  Returns as
 * shmring_topic_reserve_wait. */
static inline int shmring_topic_publish(shmring_topic *t, uint64_t token, uint32_t tag, const void *data,
                                        uint64_t len, uint64_t deadline_ns)
{
    unsigned char *dst;
    uint64_t pos;
    int wake, rc = shmring_topic_reserve_wait(t, token, tag, len, deadline_ns, &dst, &pos);
    if (rc != SHMRING_OK)
        return rc;
    memcpy(dst, data, (size_t)len);
    wake = shmring_topic_commit(t, pos);
    shmring_mutex_release(&t->ctrl->lock, token);
    if (wake)
        shmring_topic_wake_subscribers(t);
    return SHMRING_OK;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_H */
