/*
 * shmring/segment.h - a shmring segment: the 4096-byte header page (the
 * 128 bytes of header fields, checksummed, then the roster of attached
 * processes) and the payload after it; creating and publishing a segment,
 * and attaching to one (the lease).  Leaving and removing are in
 * shmring/lifetime.h, which knows what depends on each kind of segment.
 * docs/PROTOCOL.md section 1 describes the same layout in prose; the
 * static asserts below are the authority.
 */
#ifndef SHMRING_SEGMENT_H
#define SHMRING_SEGMENT_H

#include "base.h"
#include "atomics.h"
#include "os.h"
#include "wait.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Segment header: the first page of every shmring segment                   */
/* ------------------------------------------------------------------------ */

/* Layout version of everything in the shmring headers (the segment header
 * and every kind's payload).  Bump on any layout change.
 * Version 2 added the attachment roster, the removal state and the
 * persistent mark, and moved the payload to the first page boundary.
 * Version 3 added the queue's chunk_key and names overflow chunks with it
 * (shmring/queue.h): a version 2 peer would look for other names; and it
 * changed the words of the robust mutex (every queue's and topic's lock):
 * bytes 8..12 are a 0/2 "waiters may sleep" futex word, no longer a
 * release counter, and bytes 12..16 no longer count sleepers.  A process
 * of version 2 and one of version 3 would miss each other's chunks and
 * wake-ups, so they refuse each other's segments. */
#define SHMRING_LAYOUT_VERSION 3u

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
    uint32_t object_type;     /* a sync segment: which primitive (SHMRING_SYNC_*); 0 = not recorded */
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
SHMRING_STATIC_ASSERT(offsetof(shmring_segment_header, object_type) == 84, "layout");
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
/* Attachments                                                               */
/* ------------------------------------------------------------------------ */
/*
 * A segment lives while any live process is attached to it.  An
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
 * Attaching takes the read lock first (waiting while a remover holds the
 * write lock), then reads `state`: REMOVED means it came too late, and it
 * fails as if the name did not exist.  So an object is never removed under a
 * process that is attached to it (shmring/lifetime.h: the last to leave
 * removes it), and nobody attaches to a removed one.
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
    magic = shmring_load_acquire(&live->magic);
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

/* The steps of shmring_lease_take's wait (shmring/wait.h): try the lock,
 * sleep 1 ms between tries (the kernel has no waiting OFD lock with a
 * timeout). */
static inline int shmring_lease_ready_(void *ctx, int last)
{
    (void)last;
    if (shmring_lease_lock(*(const int *)ctx, 0) == 0)
        return SHMRING_OK;
    return errno == EAGAIN ? SHMRING_AGAIN : SHMRING_ERR_SYS;
}

static inline int shmring_lease_sleep_(void *ctx, uint64_t until_ns)
{
    (void)ctx;
    (void)until_ns;
    poll(NULL, 0, 1);
    return SHMRING_AGAIN;
}

/* Take a lease on `fd`, waiting up to SHMRING_LEASE_WAIT_NS while a
 * remover or a tool holds the write lock.  SHMRING_OK, SHMRING_ERR_BUSY, or
 * SHMRING_ERR_SYS. */
static inline int shmring_lease_take(int fd)
{
    int rc = shmring_wait_for(&fd, shmring_lease_ready_, shmring_lease_sleep_, 1000000u, NULL,
                              shmring_now_ns() + SHMRING_LEASE_WAIT_NS);
    return rc == SHMRING_TIMEOUT ? (int)SHMRING_ERR_BUSY : rc;
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
            uint64_t cur = shmring_load_relaxed(&r[i].token);
            if (cur != 0 && (pass == 0 || shmring_token_alive(cur)))
                continue;
            /* acq_rel [S10]: the entry is ours; pairs with the release CAS
             * of shmring_roster_remove by its previous holder. */
            if (shmring_cas_acq_rel(&r[i].token, &cur, token)) {
                /* relaxed: display only. */
                shmring_store_relaxed(&r[i].attached_ns, shmring_realtime_ns());
                return (int)i;
            }
        }
    }
    /* relaxed: a count for display. */
    shmring_fetch_add_relaxed(&h->roster_overflow, 1u);
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
        shmring_cas_release(&shmring_segment_roster(base)[slot].token, &expected, 0);
        return;
    }
    {
        /* relaxed: a display count, never taken below zero. */
        uint32_t n = shmring_load_relaxed(&h->roster_overflow);
        while (n > 0 && !shmring_cas_relaxed(&h->roster_overflow, &n, n - 1)) {
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
static inline int shmring_segment_make_object_(const char *name, uint64_t total, mode_t mode, int *lease_out,
                                               struct stat *st, void **base_out);
static inline void shmring_segment_fill_header_(unsigned char *base, uint32_t kind, uint64_t total,
                                                shmring_segment *out);

static inline int shmring_segment_create_unpublished(const char *name, uint64_t payload_size, uint32_t kind,
                                                     mode_t mode, shmring_segment *out)
{
    struct stat st;
    uint64_t total;
    void *base;
    int lease;

    memset(out, 0, sizeof *out);
    out->lease_fd = out->roster_slot = -1;
    if (shmring_name_check(name) != 0 || kind == 0 || kind > SHMRING_KIND_MAX ||
        payload_size == 0 || payload_size > (uint64_t)INT64_MAX - SHMRING_HEADER_SIZE ||
        (mode & ~(mode_t)0777) != 0)
        return SHMRING_ERR_ARG;
    total = payload_size + SHMRING_HEADER_SIZE;
    if (total > (uint64_t)SIZE_MAX)
        return SHMRING_ERR_ARG;
    if (shmring_segment_make_object_(name, total, mode, &lease, &st, &base) != SHMRING_OK)
        return SHMRING_ERR_SYS;
    shmring_segment_fill_header_((unsigned char *)base, kind, total, out);
    out->map_size = out->map_len = (size_t)total;
    out->writable = 1;
    out->lease_fd = lease;
    out->dev = (uint64_t)st.st_dev;
    out->ino = (uint64_t)st.st_ino;
    memcpy(out->name, name, strlen(name) + 1);
    return SHMRING_OK;
}

/* The object of shmring_segment_create_unpublished: made with O_EXCL, the
 * creator's lease taken, sized, its pages reserved, mapped.  SHMRING_OK, or
 * SHMRING_ERR_SYS with errno and the object unlinked. */
static inline int shmring_segment_make_object_(const char *name, uint64_t total, mode_t mode, int *lease_out,
                                               struct stat *st, void **base_out)
{
    void *base;
    int fd, lease = -1, rc, saved;

    fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, mode);
    if (fd < 0)
        return SHMRING_ERR_SYS;
    /* The lease first, on a description of its own: from now on a tool sees
     * the object as in use. */
    lease = shmring_fd_reopen(fd, name, 0);
    if (lease < 0 || shmring_lease_lock(lease, 0) != 0)
        goto fail;
    /* shm_open applied the umask; the caller asked for exactly `mode`. */
    if (fchmod(fd, mode) != 0 || ftruncate(fd, (off_t)total) != 0 || fstat(fd, st) != 0)
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
    *lease_out = lease;
    *base_out = base;
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

/* Every header field but the magic, and the creator's roster entry. */
static inline void shmring_segment_fill_header_(unsigned char *base, uint32_t kind, uint64_t total,
                                                shmring_segment *out)
{
    shmring_segment_header *h = (shmring_segment_header *)(void *)base;
    shmring_roster_entry *r;
    uint64_t start = 0;

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
    r = shmring_segment_roster(base);
    r[0].token = out->token; /* published with the magic [S1] */
    r[0].attached_ns = h->created_ns;
    out->roster_slot = 0;
    out->base = base;
}

/* Record which object a segment holds, for the tools that show it (a sync
 * segment: which primitive, SHMRING_SYNC_*).  Call it between
 * shmring_segment_create_unpublished and shmring_segment_publish: the
 * magic's release store [S1] publishes it.  Display only: no reader trusts
 * it (an unknown value is shown as such). */
static inline void shmring_segment_set_object_type(shmring_segment *s, uint32_t object_type)
{
    ((shmring_segment_header *)s->base)->object_type = object_type;
}

/* Make a segment made by shmring_segment_create_unpublished visible to
 * openers: everything written to it so far is visible to them. */
static inline void shmring_segment_publish(shmring_segment *s)
{
    shmring_segment_header *h = (shmring_segment_header *)s->base;
    /* release [S1]: pairs with the acquire load in shmring_header_check, so
     * that an opener that sees the magic sees the header and payload. */
    shmring_store_release(&h->magic, shmring_magic());
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

/* The mapping step of shmring_segment_attach_fd: map the object behind
 * `fd` (of size st->st_size, checked), validate its header, refuse it if
 * it was removed (SHMRING_ERR_SYS / ENOENT), and fill in `out` but for the
 * lease and the roster entry.  On failure nothing stays mapped. */
static inline int shmring_segment_map_checked_(int fd, const char *name, const struct stat *st, int attach,
                                               int writable, shmring_segment *out)
{
    shmring_segment_header hdr;
    size_t map = (size_t)st->st_size;
    void *base;
    int rc, saved, map_fd;
    /* Map what exists.  Bytes of a short object's last page past its end read
     * as zero, so a short header is still safe to inspect.  An attachment
     * maps through a second description: `fd` is the lease. */
    map_fd = attach ? shmring_fd_reopen(fd, name, writable) : fd;
    if (map_fd < 0)
        return SHMRING_ERR_SYS;
    base = mmap(NULL, map, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, map_fd, 0);
    saved = errno;
    if (map_fd != fd)
        close(map_fd);
    errno = saved;
    if (base == MAP_FAILED)
        return SHMRING_ERR_SYS;
    rc = shmring_header_check_copy((const shmring_segment_header *)base, (uint64_t)st->st_size, &hdr);
    if (rc == SHMRING_OK && attach) {
        /* acquire [S9]: pairs with the remover's release store, made while
         * it held the write lock that our lease had to wait for. */
        uint32_t state = shmring_load_acquire(&((shmring_segment_header *)base)->state);
        if (state > SHMRING_STATE_REMOVED) {
            rc = SHMRING_ERR_CORRUPT; /* a value no remover writes: a damaged word */
        } else if (state == SHMRING_STATE_REMOVED) {
            munmap(base, map);
            errno = ENOENT; /* removed by its last user: as good as gone */
            return SHMRING_ERR_SYS;
        }
    }
    if (rc != SHMRING_OK) {
        munmap(base, map);
        return rc;
    }
    out->base = (unsigned char *)base;
    out->map_size = (size_t)hdr.total_size; /* <= map: checked on the copy */
    out->map_len = map;
    out->writable = writable;
    out->dev = (uint64_t)st->st_dev;
    out->ino = (uint64_t)st->st_ino;
    memcpy(out->name, name, strlen(name) + 1);
    return SHMRING_OK;
}

/* Attach to (or, with SHMRING_OPEN_NO_ATTACH, look at) the object behind
 * `fd`, an open descriptor of it that this call takes over (it is kept as
 * the lease, or closed).  `name` ("/NAME") is remembered for leaving.  The
 * owner check comes first, before a byte is read. */
static inline int shmring_segment_attach_fd(int fd, const char *name, unsigned flags, shmring_segment *out)
{
    struct stat st;
    int rc, saved, attach = !(flags & SHMRING_OPEN_NO_ATTACH), writable = !(flags & SHMRING_OPEN_READONLY);

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
    rc = shmring_segment_map_checked_(fd, name, &st, attach, writable, out);
    if (rc != SHMRING_OK)
        goto fail;
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


/* Give up the attachment (roster entry and lease) without asking whether it
 * was the last one: for segments whose lifetime something else decides (a
 * queue's overflow chunks live as long as they are in its chain), and the
 * first half of leaving (shmring_segment_leave, shmring/lifetime.h). */
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

/* Unmap the segment: the end of a look (SHMRING_OPEN_NO_ATTACH: nothing to
 * give back), or of an attachment already left.  Idempotent.  SHMRING_OK or
 * SHMRING_ERR_SYS. */
static inline int shmring_segment_unmap(shmring_segment *s)
{
    int rc = SHMRING_OK;
    if (s->base != NULL) {
        if (munmap(s->base, s->map_len) != 0)
            rc = SHMRING_ERR_SYS;
        s->base = NULL;
        s->map_size = s->map_len = 0;
    }
    return rc;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_SEGMENT_H */
