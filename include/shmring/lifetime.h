/*
 * shmring/lifetime.h - leaving a segment and removing it: the last process
 * to leave removes the segment and what depends on it (a queue's overflow
 * chunks), unless it is persistent; and the tools (`shmring rm`, `shmring
 * gc`) that decide whether a segment is in use.  It comes after the
 * headers of every kind of segment, because removing one means knowing
 * what depends on it.
 *
 * Leaving: the process gives back its roster entry and closes its lease
 * (shmring_segment_forget_lease), then opens a fresh description of the
 * object and asks for the write lock without waiting.  Granted means that
 * no lease is left anywhere: unless the segment is persistent, the leaver
 * removes it (`state` becomes REMOVED [S9], what depends on it goes, and the
 * name is unlinked if it still names this object).  Refused means somebody
 * else still uses it.  (Leases and attaching: shmring/segment.h.)
 */
#ifndef SHMRING_LIFETIME_H
#define SHMRING_LIFETIME_H

#include "base.h"
#include "atomics.h"
#include "os.h"
#include "segment.h"
#include "queue.h"

#include <stdio.h>
#include <sys/sysmacros.h>

#ifdef __cplusplus
extern "C" {
#endif

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
 * on it: a queue's overflow chunks (shmring/queue.h; no other kind has
 * dependants). */
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
            if (shmring_load_acquire(&h->magic) == shmring_magic()) {
                /* release [S9]: pairs with the acquire load of an attacher
                 * that waited for our write lock. */
                shmring_store_release(&h->state, SHMRING_STATE_REMOVED);
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
        (shmring_load_relaxed(&h->persistent) == 0 ||
         shmring_segment_named(s->name, s->dev, s->ino) == 0))
        rc = shmring_segment_remove_locked(probe, s->name);
    close(probe);
    return rc;
}

/* Leave (shmring_segment_leave), then unmap. */
static inline int shmring_segment_close(shmring_segment *s)
{
    int rc = shmring_segment_leave(s);
    if (shmring_segment_unmap(s) != SHMRING_OK)
        rc = SHMRING_ERR_SYS;
    return rc;
}

/* Mark the segment persistent (1: the last user to leave keeps it) or not. */
static inline void shmring_segment_set_persistent(shmring_segment *s, int persistent)
{
    shmring_segment_header *h = (shmring_segment_header *)(void *)s->base;
    /* relaxed: read by leavers with the write lock, which orders it. */
    shmring_store_relaxed(&h->persistent, persistent ? 1u : 0u);
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

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_LIFETIME_H */
