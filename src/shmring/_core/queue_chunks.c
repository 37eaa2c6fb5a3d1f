/*
 * queue_chunks.c - the overflow chunks of a Queue (include/shmring/queue.h):
 * segments named "<queue>.q<index>.<tag>", each a ring of the queue's format,
 * chained from ovf_head to ovf_tail; made by producers when the main ring
 * is full, retired by consumers once drained, and counted again after a
 * lock holder died.  Everything here runs with the queue lock held.
 */
#include "core.h"

void chunk_path(QueueObject *self, uint64_t index, char *path)
{
    /* Cannot fail: queue names are at most QUEUE_NAME_MAX characters. */
    shmring_queue_chunk_name(self->ctrl, PyUnicode_AsUTF8(queue_name(self)), index, path);
}

/* Unmap the chunks this process holds below `below` (retired by anyone). */
void chunks_forget(QueueObject *self, uint64_t below)
{
    Py_ssize_t i, j = 0;
    for (i = 0; i < self->nchunks; i++) {
        if (self->chunks[i].index < below)
            shmring_segment_close(&self->chunks[i].seg);
        else
            self->chunks[j++] = self->chunks[i];
    }
    self->nchunks = j;
}

static int chunks_add(QueueObject *self, uint64_t index, uint64_t capacity, shmring_segment *seg, QueueChunk **out)
{
    if (self->nchunks == self->chunks_cap) {
        Py_ssize_t cap = self->chunks_cap ? self->chunks_cap * 2 : 8;
        QueueChunk *grown = (QueueChunk *)realloc(self->chunks, (size_t)cap * sizeof(QueueChunk));
        if (grown == NULL) {
            shmring_segment_close(seg);
            errno = ENOMEM;
            return SHMRING_ERR_SYS;
        }
        self->chunks = grown;
        self->chunks_cap = cap;
    }
    self->chunks[self->nchunks].index = index;
    self->chunks[self->nchunks].capacity = capacity;
    self->chunks[self->nchunks].seg = *seg;
    *out = &self->chunks[self->nchunks++];
    return SHMRING_OK;
}

/* Map chunk `index` (SHMRING_ERR_SYS with errno ENOENT when it is gone). */
int chunk_get(QueueObject *self, uint64_t index, QueueChunk **out)
{
    char path[NAME_MAX + 2];
    shmring_segment seg;
    uint64_t capacity;
    Py_ssize_t i;
    int rc;
    for (i = 0; i < self->nchunks; i++) {
        if (self->chunks[i].index == index) {
            *out = &self->chunks[i];
            return SHMRING_OK;
        }
    }
    chunk_path(self, index, path);
    rc = shmring_segment_open(path, self->open_flags, &seg);
    if (rc != SHMRING_OK)
        return rc;
    if (((shmring_segment_header *)seg.base)->kind != SHMRING_KIND_QUEUE_CHUNK ||
        shmring_queue_chunk_check((shmring_queue_chunk *)shmring_segment_payload(&seg),
                                  shmring_segment_payload_size(&seg), index, self->config.queue_id,
                                  &capacity) != SHMRING_OK) {
        shmring_segment_close(&seg);
        return SHMRING_ERR_CORRUPT;
    }
    return chunks_add(self, index, capacity, &seg, out);
}

/* Is segment `path` (a chunk name at or past ovf_tail) a leftover of this
 * queue: a chunk stamped with its id, or one whose maker died before
 * publishing it (empty, or its magic still 0: killed anywhere from shm_open
 * to the publish; nothing else takes a queue's chunk names while it lives)? */
static int chunk_is_leftover(QueueObject *self, const char *path)
{
    shmring_segment seg;
    int rc = shmring_segment_open(path, SHMRING_OPEN_READONLY | self->open_flags, &seg);
    if (rc == SHMRING_OK)
        shmring_segment_close(&seg);
    if (rc == SHMRING_ERR_NOT_READY)
        return 1;
    return rc == SHMRING_OK && shmring_queue_chunk_stamp(path).queue_id == self->config.queue_id;
}

/* Make chunk `index` (not yet in the chain: nobody else looks at it). */
int chunk_create(QueueObject *self, uint64_t index, uint64_t capacity, QueueChunk **out)
{
    char path[NAME_MAX + 2];
    shmring_segment seg;
    shmring_queue_chunk *k;
    int rc;
    chunk_path(self, index, path);
    rc = shmring_segment_create_unpublished(path, SHMRING_QUEUE_CHUNK_HEADER_SIZE + capacity,
                                            SHMRING_KIND_QUEUE_CHUNK, (mode_t)self->config.chunk_mode, &seg);
    if (rc == SHMRING_ERR_SYS && errno == EEXIST) {
        /* Left by a process killed while making it (never in the chain), or
         * something else under that name: only a chunk of ours is removed. */
        if (!chunk_is_leftover(self, path)) {
            errno = EEXIST;
            return SHMRING_ERR_SYS;
        }
        shmring_segment_unlink(path);
        rc = shmring_segment_create_unpublished(path, SHMRING_QUEUE_CHUNK_HEADER_SIZE + capacity,
                                                SHMRING_KIND_QUEUE_CHUNK, (mode_t)self->config.chunk_mode, &seg);
    }
    if (rc != SHMRING_OK)
        return rc;
    /* A chunk lives as long as it is in the chain, not while it is mapped. */
    shmring_segment_forget_lease(&seg);
    k = (shmring_queue_chunk *)shmring_segment_payload(&seg);
    k->capacity = capacity;
    k->data_offset = SHMRING_QUEUE_CHUNK_HEADER_SIZE;
    k->index = index;
    k->queue_id = self->config.queue_id;
    k->queue_dev = ((MappingObject *)self->mapping)->seg.dev;
    k->queue_ino = ((MappingObject *)self->mapping)->seg.ino;
    shmring_segment_publish(&seg);
    return chunks_add(self, index, capacity, &seg, out);
}

void chunk_unlink(QueueObject *self, uint64_t index)
{
    char path[NAME_MAX + 2];
    chunk_path(self, index, path);
    shmring_segment_unlink(path);
    chunks_forget(self, index + 1);
}

static void set_chain_head(QueueObject *self, uint64_t head)
{
    /* relaxed: under the lock [Q1]. */
    __atomic_store_n(&self->ctrl->ovf_head, head, __ATOMIC_RELAXED);
    chunks_forget(self, head);
}

/* Retire drained chunk `index` (the chain's head): the head moves first, so
 * that a chunk missing from the chain always means lost items (see
 * shmring_queue_recount), then the name goes. */
void chunk_retire(QueueObject *self, uint64_t index)
{
    set_chain_head(self, index + 1);
    chunk_unlink(self, index);
}

int chunk_ring(QueueChunk *k, shmring_queue_ring *r)
{
    shmring_queue_chunk *h = (shmring_queue_chunk *)shmring_segment_payload(&k->seg);
    return shmring_queue_ring_load(r, &h->head, &h->tail, (unsigned char *)h + SHMRING_QUEUE_CHUNK_HEADER_SIZE,
                                   k->capacity);
}

int queue_chain(QueueObject *self, uint64_t *head, uint64_t *tail)
{
    /* relaxed: under the lock [Q1]. */
    *head = __atomic_load_n(&self->ctrl->ovf_head, __ATOMIC_RELAXED);
    *tail = __atomic_load_n(&self->ctrl->ovf_tail, __ATOMIC_RELAXED);
    if (*tail - *head > SHMRING_QUEUE_MAX_CHUNKS) {
        queue_corrupt(self, "overflow chain");
        return -1;
    }
    return 0;
}

/* Remove chunks at index >= ovf_tail: made by a producer killed before it
 * moved ovf_tail (never in the chain; maybe not even published). */
void remove_stale_chunks(QueueObject *self)
{
    /* relaxed: under the lock [Q1]. */
    uint64_t i = __atomic_load_n(&self->ctrl->ovf_tail, __ATOMIC_RELAXED);
    for (;; i++) {
        char path[NAME_MAX + 2];
        chunk_path(self, i, path);
        if (!chunk_is_leftover(self, path) || shmring_segment_unlink(path) != SHMRING_OK)
            return; /* gone (the end of the leftovers), or somebody else's segment: leave it */
    }
}

/* After OWNER_DIED: count what the rings hold (shmring_queue_recount).
 * 0, -1 (corrupted) or -2 (a system error: it may pass). */
int queue_recount(QueueObject *self)
{
    int rc = shmring_queue_recount(self->ctrl, self->config.capacity, PyUnicode_AsUTF8(queue_name(self)), NULL);
    int saved = errno;
    chunks_forget(self, __atomic_load_n(&self->ctrl->ovf_head, __ATOMIC_RELAXED)); /* relaxed: lock held */
    if (rc == SHMRING_OK) {
        remove_stale_chunks(self);
        return 0;
    }
    if (rc == SHMRING_ERR_SYS) {
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
        return -2;
    }
    queue_corrupt(self, "ring (counting the records after a holder died)");
    return -1;
}

