/*
 * fuzz_sync.c - the synchronisation primitives (shmring/sync.h) on state
 * words a hostile peer wrote: the semaphore's count, the spin lock's and
 * the robust mutex's owner and state, the event's flag and generation, the
 * condition's waiters and wakeups.  Every call (the blocking ones with a
 * deadline passed or close) returns a result code and terminates, whatever
 * the words hold; a lock granted to this process stays its own until it
 * releases it.
 *
 * The primitives live in the payload of a SYNC segment, one of each, made
 * by their init functions (a zeroed word is a free lock, a clear event).
 */
#include "fuzz_common.h"

typedef struct prims {
    shmring_sem sem;
    shmring_spinlock spin;
    shmring_mutex mutex;
    shmring_event event;
    shmring_cond cond;
} prims;

static void sem_step(fz_input *in, shmring_sem *s)
{
    switch (fz_u8(in) % 4) {
    case 0: (void)shmring_sem_try_acquire(s); break;
    case 1: (void)fz_rc(shmring_sem_wait(s, fz_deadline(in))); break;
    case 2: (void)fz_rc(shmring_sem_release(s, (uint32_t)fz_take(in, 4))); break;
    default: shmring_sem_signal(s); break;
    }
}

static void spin_step(fz_input *in, shmring_spinlock *l)
{
    uint64_t token = fz_u8(in) & 1 ? fz_token() : fz_take(in, 8);
    int rc;
    switch (fz_u8(in) % 4) {
    case 0: rc = fz_rc(shmring_spin_try_acquire(l, token, (int)(fz_u8(in) & 1))); break;
    case 1: rc = fz_rc(shmring_spin_acquire(l, token, fz_deadline(in))); break;
    case 2: (void)fz_rc(shmring_spin_release(l, token)); return;
    default: (void)fz_rc(shmring_spin_abandon(l, token)); return;
    }
    if (rc == SHMRING_OK || rc == SHMRING_OWNER_DIED)
        FZ_ASSERT(l->owner == token); /* granted: ours until released */
}

static void mutex_step(fz_input *in, shmring_mutex *m)
{
    uint64_t token = fz_u8(in) & 1 ? fz_token() : fz_take(in, 8);
    int rc;
    switch (fz_u8(in) % 7) {
    case 0: rc = fz_rc(shmring_mutex_try_acquire(m, token, (int)(fz_u8(in) & 1))); break;
    case 1: rc = fz_rc(shmring_mutex_lock(m, token, fz_range(in, 0, 2000), 10000u, fz_deadline(in))); break;
    case 2: rc = fz_rc(shmring_mutex_wait(m, token, fz_deadline(in))); break;
    case 3: (void)fz_rc(shmring_mutex_consistent(m, token)); return;
    case 4: (void)fz_rc(shmring_mutex_release(m, token)); return;
    case 5: (void)fz_rc(shmring_mutex_abandon(m, token)); return;
    default: rc = fz_rc(shmring_mutex_spin_acquire(m, token, fz_range(in, 0, 2000))); break;
    }
    if (rc == SHMRING_OK || rc == SHMRING_OWNER_DIED)
        FZ_ASSERT(m->owner == token);
}

static void event_step(fz_input *in, shmring_event *e)
{
    switch (fz_u8(in) % 4) {
    case 0: shmring_event_set(e); break;
    case 1: shmring_event_clear(e); break;
    case 2: (void)fz_rc(shmring_event_wait(e, shmring_event_generation(e), fz_deadline(in))); break;
    default: (void)shmring_event_is_set(e); break;
    }
}

/* A whole wait on the condition (prepare, take or sleep, done), or a notify. */
static void cond_step(fz_input *in, shmring_cond *c)
{
    if (fz_u8(in) & 1) {
        uint32_t registered = shmring_cond_prepare(c), seq = shmring_cond_seq(c);
        if (!shmring_cond_take(c, registered, seq))
            (void)fz_rc(shmring_cond_sleep(c, seq, fz_deadline(in)));
        shmring_cond_done(c);
        FZ_ASSERT(c->wakeups <= c->waiters || c->waiters > 0x7fffffffu);
    } else {
        shmring_cond_notify(c, (int)fz_range(in, 0, 8) - 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input in = {data, size, 0};
    unsigned char *base = fz_segment_new(SHMRING_KIND_SYNC, sizeof(prims));
    prims *p = (prims *)(void *)(base + SHMRING_HEADER_SIZE);
    fz_region region;

    shmring_sem_init(&p->sem, (uint32_t)fz_range(&in, 0, 3));
    region.base = (unsigned char *)p;
    region.len = sizeof *p;
    while (fz_more(&in)) {
        switch (fz_u8(&in) % 6) {
        case 0: fz_patch(&in, &region, 1); break;
        case 1: sem_step(&in, &p->sem); break;
        case 2: spin_step(&in, &p->spin); break;
        case 3: mutex_step(&in, &p->mutex); break;
        case 4: event_step(&in, &p->event); break;
        default: cond_step(&in, &p->cond); break;
        }
    }
    free(base);
    return 0;
}
