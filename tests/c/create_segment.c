/*
 * create_segment: create a shmring segment from C and leave it behind.
 *
 * Usage: create_segment NAME TEXT
 *   NAME  the POSIX name, with its leading '/' (e.g. "/my-segment")
 *   TEXT  written, with its terminating NUL, at the start of the payload
 *
 * Creates NAME with shmring_segment_create(NAME, 4096, SHMRING_KIND_RAW,
 * 0600, ...), writes TEXT into the payload, prints "pid=P" on stdout, marks
 * it persistent, closes it and exits 0: the segment outlives its creator (its
 * last user), which is what a Python peer (or `shmring rm`) then finds.
 *
 * Exit status: 0 on success; the SHMRING_ERR_* code when
 * shmring_segment_create fails, after printing shmring_strerror(code) (and,
 * for SHMRING_ERR_SYS, errno) on stderr; EXIT_TOO_LONG if TEXT does not fit;
 * EXIT_USAGE for bad arguments.
 */
#include "shmring.h" /* first: it selects the POSIX feature macros */
#include "peer.h"

#include <stdlib.h>

#define PAYLOAD_SIZE 4096u
#define EXIT_TOO_LONG 21
#define EXIT_USAGE 64

int main(int argc, char **argv)
{
    shmring_segment seg;
    const char *name, *text;
    size_t len;
    int rc;

    if (argc != 3) {
        fprintf(stderr, "usage: %s NAME TEXT\n", argc > 0 ? argv[0] : "create_segment");
        return EXIT_USAGE;
    }
    name = argv[1];
    text = argv[2];
    len = strlen(text) + 1;
    if (len > PAYLOAD_SIZE) {
        fprintf(stderr, "create_segment: text longer than %u bytes\n", PAYLOAD_SIZE - 1u);
        return EXIT_TOO_LONG;
    }

    rc = shmring_segment_create(name, PAYLOAD_SIZE, SHMRING_KIND_RAW, 0600, &seg);
    if (rc != SHMRING_OK) {
        peer_report_failure("create_segment", name, rc);
        return rc;
    }
    memcpy(shmring_segment_payload(&seg), text, len);
    printf("pid=%ld\n", (long)getpid());
    fflush(stdout);

    /* Persistent: the segment outlives its last user (this process), for
     * the next process to read. */
    shmring_segment_set_persistent(&seg, 1);
    rc = shmring_segment_close(&seg);
    if (rc != SHMRING_OK) {
        fprintf(stderr, "create_segment: %s: close: %s\n", name, shmring_strerror(rc));
        return rc;
    }
    return 0;
}
