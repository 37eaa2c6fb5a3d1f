/* A scripted C peer of a shmring.Queue, through shmring_queue_put/get only.
 *
 *   queue_ops NAME OP...
 *
 * OP is pN (put N bytes, each N % 251, deadline 1 s: must succeed), fN (put N
 * bytes, deadline 1 ms: must time out, the ring has no room now), gN (get
 * a record, deadline 1 s: must be N bytes of N % 251) or oN (get a record,
 * deadline 1 s: must be an out-of-band record, shmring/oob.h, whose one
 * buffer is N bytes of N % 251, at a 64-byte aligned address of the copy).
 * Prints "ok" and exits 0 when every OP did what it says; otherwise names
 * the first OP that did not and exits 1. */
#include "shmring.h"
#include "peer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_SIZE (1 << 16)

/* The record's pieces: one buffer of n bytes of n % 251, 64-byte aligned.
 * SHMRING_OK, or -1. */
static int check_out_of_band(const unsigned char *rec, uint64_t len, uint32_t tag, uint64_t n)
{
    shmring_oob_reader r;
    const unsigned char *data;
    uint64_t blen, j;
    uint32_t flags;
    if (tag != SHMRING_REC_OOB || shmring_oob_open(&r, rec, len) != SHMRING_OK || r.nbuf != 1 ||
        shmring_oob_next(&r, &data, &blen, &flags) != SHMRING_OK || blen != n || (uintptr_t)data % 64 != 0)
        return -1;
    for (j = 0; j < blen; j++)
        if (data[j] != (unsigned char)(n % 251))
            return -1;
    return SHMRING_OK;
}

int main(int argc, char **argv)
{
    shmring_segment seg;
    shmring_queue_ctrl cfg, *q;
    uint64_t token = shmring_token_self();
    char name[NAME_MAX + 2];
    unsigned char *buf;
    int i, rc;
    if (posix_memalign((void **)&buf, 64, BUF_SIZE) != 0)
        return 2;
    if (argc < 2) {
        fprintf(stderr, "usage: %s NAME OP...\n", argv[0]);
        return 2;
    }
    snprintf(name, sizeof name, "/%s", argv[1]);
    if (peer_open_queue(name, &seg, &q, &cfg) != 0)
        return 1;
    for (i = 2; i < argc; i++) {
        char op = argv[i][0];
        uint64_t n = strtoull(argv[i] + 1, NULL, 10), len = 0, j;
        uint32_t tag = 0;
        int want = op == 'f' ? SHMRING_TIMEOUT : SHMRING_OK;
        if (n > BUF_SIZE || (op != 'p' && op != 'f' && op != 'g' && op != 'o')) {
            fprintf(stderr, "bad op %s\n", argv[i]);
            return 2;
        }
        if (op == 'o') {
            rc = shmring_queue_get(q, cfg.capacity, name, token, buf, BUF_SIZE, &len, &tag,
                                   shmring_now_ns() + 1000000000u);
            if (rc == SHMRING_OK)
                rc = check_out_of_band(buf, len, tag, n);
        } else if (op == 'g') {
            rc = shmring_queue_get(q, cfg.capacity, name, token, buf, BUF_SIZE, &len, &tag,
                                   shmring_now_ns() + 1000000000u);
            if (rc == SHMRING_OK && len != n)
                rc = -1;
            for (j = 0; rc == SHMRING_OK && j < len; j++)
                if (buf[j] != (unsigned char)(n % 251))
                    rc = -1;
        } else {
            memset(buf, (int)(n % 251), (size_t)n);
            rc = shmring_queue_put(q, cfg.capacity, name, token, SHMRING_REC_BYTES, buf, n,
                                   shmring_now_ns() + (op == 'p' ? 1000000000u : 1000000u));
        }
        if (rc != want) {
            printf("op %d (%s): %s\n", i - 2, argv[i], rc < 0 ? "wrong record" : shmring_strerror(rc));
            return 1;
        }
    }
    shmring_segment_close(&seg);
    free(buf);
    printf("ok\n");
    return 0;
}
