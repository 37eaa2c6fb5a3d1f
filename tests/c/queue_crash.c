/*
 * queue_crash: a producer of a shmring.Queue killed (SIGKILL) while it holds
 * the queue lock, at one stage of a put, through include/shmring.h only;
 * the next holder must take the lock over and lose nothing committed
 * (tests/test_queue_faults.py).
 *
 * Usage: queue_crash NAME STAGE
 *   NAME   the queue's segment name (without the leading '/')
 *   STAGE  where the put dies, its record "crash" (5 bytes, tagged bytes)
 *          in the main ring:
 *          1  the record written, the tail not committed
 *          2  the tail committed, the counters not
 *          3  holding the lock only (nothing written)
 *          4  an empty ring restarted at offset 0 (shmring_queue_ring_restart)
 *             and the record written: between the two stores of
 *             shmring_queue_ring_commit (tail stored, head not)
 *          5  not killed: holding the lock, it prints "held" and stops
 *             itself (SIGSTOP, as Ctrl-Z or a debugger would); once
 *             continued (SIGCONT) it releases the lock and exits 0
 *          6  not a holder: one shmring_queue_get with a 200 ms deadline
 *             (while another process holds the lock); prints "get timeout
 *             MS" (or "get ERROR MS") and exits 0
 *
 * Stages 1 to 4 never return when they got the lock: they die by SIGKILL.
 * Exit status 1 when the queue cannot be opened or locked, 2 for bad
 * arguments.
 */
#include "shmring.h" /* first: it selects the POSIX feature macros */
#include "peer.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Write the record of `stage` (not for stage 3), the lock held. */
static void write_record(shmring_queue_ctrl *q, uint64_t capacity, int stage)
{
    shmring_queue_ring r;
    unsigned char *dst;
    int rc;
    shmring_queue_main_ring(q, capacity, &r, &rc);
    if (rc != SHMRING_OK)
        return;
    if (stage == 4)
        shmring_queue_ring_restart(&r);
    if (shmring_queue_ring_reserve(&r, SHMRING_REC_BYTES, 5, &dst) != SHMRING_OK)
        return;
    memcpy(dst, "crash", 5);
    if (stage == 2)
        shmring_queue_ring_commit(&r);
    if (stage == 4)
        /* relaxed: under the lock; the first half of shmring_queue_ring_commit. */
        shmring_store_relaxed(r.tail_p, r.tail);
}

/* Stage 6: the C API's get honours its deadline while the lock is held. */
static int timed_get(shmring_queue_ctrl *q, uint64_t capacity, const char *name)
{
    unsigned char buf[64];
    uint64_t len, t0 = shmring_now_ns();
    uint32_t tag;
    int rc = shmring_queue_get(q, capacity, name, shmring_token_self(), buf, sizeof buf, &len, &tag,
                               t0 + 200000000u);
    printf("get %s %.0f\n", rc == SHMRING_TIMEOUT ? "timeout" : shmring_strerror(rc),
           (double)(shmring_now_ns() - t0) / 1e6);
    return 0;
}

int main(int argc, char **argv)
{
    shmring_segment seg;
    shmring_queue_ctrl cfg, *q;
    char name[NAME_MAX + 2];
    int stage, rc;
    if (argc != 3 || (stage = atoi(argv[2])) < 1 || stage > 6) {
        fprintf(stderr, "usage: %s NAME STAGE (1 to 6)\n", argv[0]);
        return 2;
    }
    snprintf(name, sizeof name, "/%s", argv[1]);
    if (peer_open_queue(name, &seg, &q, &cfg) != 0)
        return 1;
    if (stage == 6)
        return timed_get(q, cfg.capacity, name);
    rc = shmring_queue_lock_repair(q, cfg.capacity, name, shmring_token_self(), 0);
    if (rc != SHMRING_OK) {
        fprintf(stderr, "lock %s: %s\n", name, shmring_strerror(rc));
        return 1;
    }
    if (stage == 5) {
        printf("held\n");
        fflush(stdout);
        kill(getpid(), SIGSTOP);
        shmring_queue_unlock(q, shmring_token_self());
        return 0;
    }
    if (stage != 3)
        write_record(q, cfg.capacity, stage);
    kill(getpid(), SIGKILL);
    for (;;)
        pause();
}
