/* A plain C producer or consumer of a shmring.Queue (bounded, bytes items).
 *
 *   cc -O2 -I$(python -c 'import shmring; print(shmring.get_include())') c_queue_peer.c -o c_queue_peer
 *   ./c_queue_peer put NAME COUNT ID   # COUNT records: u64 id, u64 seq, seq % 251 repeated seq % 300 times
 *   ./c_queue_peer get NAME COUNT      # take COUNT records, check them, print "got COUNT sum"
 *
 * On the Python side: q = shmring.Queue(max_size_bytes=...); q.get() returns
 * the bytes a C producer put; q.put_bytes(b) sends bytes a C consumer reads.
 */
#include "shmring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    shmring_segment seg;
    shmring_queue_ctrl cfg, *q;
    unsigned char buf[8 + 8 + 300];
    uint64_t token = shmring_token_self(), count, i, sum = 0;
    char name[NAME_MAX + 2];
    int rc, put;
    if (argc < 4 || (strcmp(argv[1], "put") != 0 && strcmp(argv[1], "get") != 0)) {
        fprintf(stderr, "usage: %s put NAME COUNT ID | get NAME COUNT\n", argv[0]);
        return 2;
    }
    put = strcmp(argv[1], "put") == 0;
    snprintf(name, sizeof name, "/%s", argv[2]);
    count = strtoull(argv[3], NULL, 10);
    rc = shmring_segment_open(name, 0, &seg);
    if (rc != SHMRING_OK) {
        fprintf(stderr, "open %s: %s\n", name, shmring_strerror(rc));
        return 1;
    }
    q = (shmring_queue_ctrl *)shmring_segment_payload(&seg);
    if (((shmring_segment_header *)seg.base)->kind != SHMRING_KIND_QUEUE ||
        shmring_queue_check_config(q, shmring_segment_payload_size(&seg), &cfg) != SHMRING_OK) {
        fprintf(stderr, "%s is not a valid queue\n", name);
        return 1;
    }
    for (i = 0; i < count; i++) {
        if (put) {
            uint64_t id = argc > 4 ? strtoull(argv[4], NULL, 10) : 0, n = i % 300;
            memcpy(buf, &id, 8);
            memcpy(buf + 8, &i, 8);
            memset(buf + 16, (int)(i % 251), (size_t)n);
            rc = shmring_queue_put(q, cfg.capacity, name, token, SHMRING_REC_BYTES, buf, 16 + n, 0);
        } else {
            uint64_t len, seq;
            uint32_t tag;
            rc = shmring_queue_get(q, cfg.capacity, name, token, buf, sizeof buf, &len, &tag, 0);
            if (rc == SHMRING_OK) {
                memcpy(&seq, buf + 8, 8);
                if (tag != SHMRING_REC_BYTES || len != 16 + seq % 300 ||
                    (len > 16 && (buf[16] != seq % 251 || buf[len - 1] != seq % 251))) {
                    fprintf(stderr, "bad record %llu\n", (unsigned long long)i);
                    return 1;
                }
                sum += seq;
            }
        }
        if (rc != SHMRING_OK) {
            fprintf(stderr, "%s: %s\n", argv[1], shmring_strerror(rc));
            return 1;
        }
    }
    if (!put)
        printf("got %llu %llu\n", (unsigned long long)count, (unsigned long long)sum);
    shmring_segment_close(&seg);
    return 0;
}
