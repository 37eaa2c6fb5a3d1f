/*
 * open_segment: attach to a shmring segment from C and answer through it.
 *
 * Usage: open_segment NAME EXPECTED
 *   NAME      the POSIX name, with its leading '/' (e.g. "/my-segment")
 *   EXPECTED  the bytes the payload must start with
 *
 * Opens NAME with shmring_segment_open, prints "payload_size=N kind=K" on
 * stdout, checks that the payload starts with EXPECTED, writes "from C" at
 * payload offset REPLY_OFFSET and exits 0.
 *
 * Exit status: 0 on success; the SHMRING_ERR_* code (1..10) when
 * shmring_segment_open fails, after printing shmring_strerror(code) (and, for
 * SHMRING_ERR_SYS, errno) on stderr; EXIT_MISMATCH when the payload does not
 * start with EXPECTED or is too small for the reply; EXIT_USAGE for bad
 * arguments.
 */
#include "shmring.h" /* first: it selects the POSIX feature macros */
#include "peer.h"

#include <stdlib.h>

#define REPLY_OFFSET 64u
#define EXIT_MISMATCH 20
#define EXIT_USAGE 64

static const char reply[] = "from C";

int main(int argc, char **argv)
{
    shmring_segment seg;
    const shmring_segment_header *h;
    const char *name, *expected;
    size_t expected_len;
    int rc;

    if (argc != 3) {
        fprintf(stderr, "usage: %s NAME EXPECTED\n", argc > 0 ? argv[0] : "open_segment");
        return EXIT_USAGE;
    }
    name = argv[1];
    expected = argv[2];
    expected_len = strlen(expected);

    rc = shmring_segment_open(name, 0, &seg);
    if (rc != SHMRING_OK) {
        peer_report_failure("open_segment", name, rc);
        return rc;
    }

    h = (const shmring_segment_header *)seg.base;
    printf("payload_size=%zu kind=%u\n", shmring_segment_payload_size(&seg), (unsigned)h->kind);
    fflush(stdout);

    if (shmring_segment_payload_size(&seg) < expected_len ||
        memcmp(shmring_segment_payload(&seg), expected, expected_len) != 0) {
        fprintf(stderr, "open_segment: %s: payload does not start with \"%s\"\n", name, expected);
        shmring_segment_close(&seg);
        return EXIT_MISMATCH;
    }
    if (shmring_segment_payload_size(&seg) < REPLY_OFFSET + sizeof reply - 1) {
        fprintf(stderr, "open_segment: %s: payload too small for the reply\n", name);
        shmring_segment_close(&seg);
        return EXIT_MISMATCH;
    }
    memcpy(shmring_segment_payload(&seg) + REPLY_OFFSET, reply, sizeof reply - 1);

    rc = shmring_segment_close(&seg);
    if (rc != SHMRING_OK) {
        fprintf(stderr, "open_segment: %s: close: %s\n", name, shmring_strerror(rc));
        return rc;
    }
    return 0;
}
