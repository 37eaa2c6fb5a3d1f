/*
 * shmring.h - the shmring shared-memory protocol, header-only.
 *
 * One header holds the binary layout of a shmring segment and every operation
 * that touches shared memory, so that the CPython extension, C programs and
 * C++ programs speak exactly the same protocol.  docs/PROTOCOL.md describes
 * the same layout in prose; the _Static_asserts below are the authority.
 *
 * Requirements: C99 or C++11 and later, GCC or Clang (__atomic builtins),
 * Linux (futex, /proc).  Include this header before any system header, or
 * compile with -D_DEFAULT_SOURCE, so that the POSIX and Linux declarations it
 * needs are visible under strict -std=c99.
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

#if !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE 1
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Portability helpers                                                       */
/* ------------------------------------------------------------------------ */

#if defined(__cplusplus)
#define SHMRING_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define SHMRING_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#if !defined(__GNUC__) && !defined(__clang__)
#error "shmring.h needs GCC or Clang (__atomic builtins)"
#endif

/* Only lock-free atomics are valid between processes: a lock-based fallback
 * would use a lock private to one process. */
SHMRING_STATIC_ASSERT(__atomic_always_lock_free(sizeof(uint64_t), 0),
                      "64-bit atomics must be lock-free");
SHMRING_STATIC_ASSERT(__atomic_always_lock_free(sizeof(uint32_t), 0),
                      "32-bit atomics must be lock-free");

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
    SHMRING_ERR_ARG = 10       /* invalid argument (name, size, kind) */
};

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
    default: return "unknown shmring error";
    }
}

/* ------------------------------------------------------------------------ */
/* Segment header: the first 128 bytes of every shmring segment              */
/* ------------------------------------------------------------------------ */

/* Layout version of everything in this header.  Bump on any layout change. */
#define SHMRING_LAYOUT_VERSION 1u

/* Offset of the payload from the start of the mapping. */
#define SHMRING_HEADER_SIZE 128u

/* Segment kinds: what the payload holds. */
enum shmring_kind {
    SHMRING_KIND_RAW = 1,     /* a plain Segment: the payload is the user's */
    SHMRING_KIND_CHANNEL = 2, /* SPSC channel */
    SHMRING_KIND_SYNC = 3,    /* a named synchronisation primitive */
    SHMRING_KIND_QUEUE = 4,   /* MPMC queue */
    SHMRING_KIND_TOPIC = 5    /* broadcast topic */
};
#define SHMRING_KIND_MAX 5u

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
    uint8_t reserved[56];   /* zero; room for later fields */
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
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, reserved) == 72, "layout");
SHMRING_STATIC_ASSERT(sizeof(shmring_segment_header) == SHMRING_HEADER_SIZE, "layout");

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
 * /proc/PID/stat), and its state letter.  Returns 0, or -1 if the process
 * does not exist (or /proc cannot be read). */
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
        return -1;
    do {
        n = read(fd, buf, sizeof buf - 1);
    } while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* The command name (field 2) may contain spaces and parentheses: the
     * fields after it start after the last ')'. */
    p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return -1;
    p += 2; /* field 3: state */
    if (state)
        *state = *p;
    for (field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return -1;
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

/* Is the process (pid, start_ticks) still running?  A reused pid has another
 * start time; a zombie has exited and only waits to be reaped. */
static inline int shmring_process_alive(int64_t pid, uint64_t start_ticks)
{
    uint64_t now_start = 0;
    char state = '?';
    if (shmring_proc_stat(pid, &now_start, &state) != 0)
        return 0;
    if (state == 'Z' || state == 'X' || state == 'x')
        return 0;
    return now_start == start_ticks;
}

/* ------------------------------------------------------------------------ */
/* Segments: create, open, close, unlink                                     */
/* ------------------------------------------------------------------------ */

/* A process's view of one mapped segment. */
typedef struct shmring_segment {
    unsigned char *base; /* start of the mapping: the header */
    size_t map_size;     /* bytes mapped: header.total_size */
    int writable;        /* mapped PROT_WRITE */
} shmring_segment;

#define SHMRING_OPEN_READONLY 1u          /* map read-only */
#define SHMRING_OPEN_ALLOW_OTHER_OWNER 2u /* accept a segment owned by another uid */

/* Payload (the part after the header) of a mapped segment. */
static inline unsigned char *shmring_segment_payload(const shmring_segment *s)
{
    return s->base + SHMRING_HEADER_SIZE;
}

static inline size_t shmring_segment_payload_size(const shmring_segment *s)
{
    return s->map_size - SHMRING_HEADER_SIZE;
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
 * `avail` is how many bytes of the object exist (its st_size). */
static inline int shmring_header_check(const shmring_segment_header *h, uint64_t avail)
{
    uint64_t magic;
    if (avail == 0)
        return SHMRING_ERR_NOT_READY;
    /* [S1] acquire: pairs with the creator's release store of magic, so that
     * every header field written before it is visible below. */
    magic = __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE);
    if (magic == 0 && avail >= SHMRING_HEADER_SIZE)
        return SHMRING_ERR_NOT_READY;
    if (magic != shmring_magic())
        return SHMRING_ERR_FOREIGN;
    if (avail < SHMRING_HEADER_SIZE)
        return SHMRING_ERR_TRUNCATED;
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
    return SHMRING_OK;
}

/* Create and publish a new segment with `payload_size` bytes after the
 * header.  O_EXCL: an existing name fails with SHMRING_ERR_SYS/EEXIST and is
 * left untouched.  The pages are reserved with posix_fallocate, so that a full
 * /dev/shm fails here (ENOSPC) instead of raising SIGBUS on first touch later.
 * On any failure the half-made object is unlinked. */
static inline int shmring_segment_create(const char *name, uint64_t payload_size, uint32_t kind,
                                         mode_t mode, shmring_segment *out)
{
    shmring_segment_header *h;
    struct timespec now;
    uint64_t total, start = 0;
    void *base;
    int fd, rc, saved;

    memset(out, 0, sizeof *out);
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
    /* shm_open applied the umask; the caller asked for exactly `mode`. */
    if (fchmod(fd, mode) != 0 || ftruncate(fd, (off_t)total) != 0)
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
    clock_gettime(CLOCK_REALTIME, &now);
    h->created_ns = (uint64_t)now.tv_sec * UINT64_C(1000000000) + (uint64_t)now.tv_nsec;
    h->creator_uid = (uint32_t)geteuid();
    h->flags = 0;
    h->checksum = shmring_header_checksum(h);
    /* [S1] release: pairs with the acquire load in shmring_header_check, so
     * that an opener that sees the magic sees every field above. */
    __atomic_store_n(&h->magic, shmring_magic(), __ATOMIC_RELEASE);

    out->base = (unsigned char *)base;
    out->map_size = (size_t)total;
    out->writable = 1;
    return SHMRING_OK;

fail:
    saved = errno;
    close(fd);
    shm_unlink(name); /* ours: O_EXCL guarantees we made it */
    errno = saved;
    return SHMRING_ERR_SYS;
}

/* Attach to an existing segment and validate it.  `flags` is a mask of
 * SHMRING_OPEN_*.  The owner check comes first, before a byte is read. */
static inline int shmring_segment_open(const char *name, unsigned flags, shmring_segment *out)
{
    const shmring_segment_header *h;
    struct stat st;
    void *base;
    size_t map;
    int fd, rc, saved, writable = !(flags & SHMRING_OPEN_READONLY);

    memset(out, 0, sizeof *out);
    if (shmring_name_check(name) != 0)
        return SHMRING_ERR_ARG;
    fd = shm_open(name, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0);
    if (fd < 0)
        return SHMRING_ERR_SYS;
    if (fstat(fd, &st) != 0) {
        saved = errno;
        close(fd);
        errno = saved;
        return SHMRING_ERR_SYS;
    }
    if (!(flags & SHMRING_OPEN_ALLOW_OTHER_OWNER) && st.st_uid != geteuid()) {
        close(fd);
        return SHMRING_ERR_OWNER;
    }
    if (st.st_size <= 0) {
        close(fd);
        return SHMRING_ERR_NOT_READY;
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return SHMRING_ERR_CORRUPT;
    }
    /* Map what exists.  Bytes of a short object's last page past its end read
     * as zero, so a header shorter than 128 bytes is still safe to inspect. */
    map = (size_t)st.st_size;
    base = mmap(NULL, map, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    saved = errno;
    close(fd);
    if (base == MAP_FAILED) {
        errno = saved;
        return SHMRING_ERR_SYS;
    }
    h = (const shmring_segment_header *)base;
    rc = shmring_header_check(h, (uint64_t)st.st_size);
    if (rc != SHMRING_OK) {
        munmap(base, map);
        return rc;
    }
    if ((uint64_t)map > h->total_size) {
        /* Keep only the part the header accounts for. */
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t keep = ((size_t)h->total_size + page - 1) / page * page;
        if (keep < map)
            munmap((unsigned char *)base + keep, map - keep);
    }
    out->base = (unsigned char *)base;
    out->map_size = (size_t)h->total_size;
    out->writable = writable;
    return SHMRING_OK;
}

/* Unmap a segment.  The name stays until shmring_segment_unlink. */
static inline int shmring_segment_close(shmring_segment *s)
{
    int rc = 0;
    if (s->base != NULL) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t len = (s->map_size + page - 1) / page * page;
        rc = munmap(s->base, len);
        s->base = NULL;
        s->map_size = 0;
    }
    return rc == 0 ? SHMRING_OK : SHMRING_ERR_SYS;
}

static inline int shmring_segment_unlink(const char *name)
{
    if (shmring_name_check(name) != 0)
        return SHMRING_ERR_ARG;
    return shm_unlink(name) == 0 ? SHMRING_OK : SHMRING_ERR_SYS;
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

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_H */
