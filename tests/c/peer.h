/*
 * peer.h - what the C peer programs of tests/c share (the programs a
 * Python test runs as another process): reporting why a segment call
 * failed, and opening a queue's segment with its kind and configuration
 * checked before use.
 *
 * Header-only: each peer program is one .c file that the tests compile on
 * its own.
 */
#ifndef SHMRING_TEST_PEER_H
#define SHMRING_TEST_PEER_H

#include "shmring.h" /* first: it selects the POSIX feature macros */

#include <stdio.h>
#include <string.h>

/* Print on stderr, naming `program`, why a call on segment `name` failed
 * with `rc`; for SHMRING_ERR_SYS, errno's text and number too. */
static inline void peer_report_failure(const char *program, const char *name, int rc)
{
    if (rc == SHMRING_ERR_SYS) {
        int saved = errno;
        fprintf(stderr, "%s: %s: %s: %s (errno %d)\n", program, name, shmring_strerror(rc), strerror(saved),
                saved);
    } else {
        fprintf(stderr, "%s: %s: %s\n", program, name, shmring_strerror(rc));
    }
}

/* Open the segment `name` (with its leading '/') into *seg and check that
 * it holds a valid queue: *q is then its control block and *cfg the
 * configuration read from it (checked).  0, or 1 after saying why on
 * stderr: the peers' exit status for a queue they cannot use. */
static inline int peer_open_queue(const char *name, shmring_segment *seg, shmring_queue_ctrl **q,
                                  shmring_queue_ctrl *cfg)
{
    int rc = shmring_segment_open(name, 0, seg);
    if (rc != SHMRING_OK) {
        fprintf(stderr, "open %s: %s\n", name, shmring_strerror(rc));
        return 1;
    }
    *q = (shmring_queue_ctrl *)shmring_segment_payload(seg);
    if (((shmring_segment_header *)seg->base)->kind != SHMRING_KIND_QUEUE ||
        shmring_queue_check_config(*q, shmring_segment_payload_size(seg), cfg) != SHMRING_OK) {
        fprintf(stderr, "%s is not a valid queue\n", name);
        return 1;
    }
    return 0;
}

#endif /* SHMRING_TEST_PEER_H */
