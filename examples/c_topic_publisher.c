/* A plain C publisher on a shmring.Topic: Python (or C) subscribers get
 * every message ("block" topics) or Lagged (on "overwrite" ones).
 *
 *   cc -O2 -I$(python -c 'import shmring; print(shmring.get_include())') c_topic_publisher.c -o c_topic_publisher
 *   ./c_topic_publisher NAME COUNT     # COUNT messages: u64 seq, then seq % 251 repeated seq % 200 times
 *
 * In Python: t = shmring.Topic.open(NAME); sub = t.subscribe(); sub.recv() gives the bytes.
 */
#include "shmring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    shmring_segment seg;
    shmring_topic topic;
    unsigned char msg[8 + 200];
    uint64_t token = shmring_token_self(), count, i;
    char name[NAME_MAX + 2];
    int rc;
    if (argc != 3) {
        fprintf(stderr, "usage: %s NAME COUNT\n", argv[0]);
        return 2;
    }
    snprintf(name, sizeof name, "/%s", argv[1]);
    count = strtoull(argv[2], NULL, 10);
    rc = shmring_segment_open(name, 0, &seg);
    if (rc != SHMRING_OK) {
        fprintf(stderr, "open %s: %s\n", name, shmring_strerror(rc));
        return 1;
    }
    if (((shmring_segment_header *)seg.base)->kind != SHMRING_KIND_TOPIC ||
        shmring_topic_attach(&topic, shmring_segment_payload(&seg), shmring_segment_payload_size(&seg)) !=
            SHMRING_OK) {
        fprintf(stderr, "%s is not a valid topic\n", name);
        return 1;
    }
    for (i = 0; i < count; i++) {
        uint64_t n = i % 200;
        memcpy(msg, &i, 8);
        memset(msg + 8, (int)(i % 251), (size_t)n);
        do {
            rc = shmring_topic_publish(&topic, token, SHMRING_REC_BYTES, msg, 8 + n, 0);
        } while (rc == SHMRING_ERR_SYS); /* EINTR */
        if (rc != SHMRING_OK) {
            fprintf(stderr, "publish: %s\n", shmring_strerror(rc));
            return 1;
        }
    }
    printf("published %llu\n", (unsigned long long)count);
    shmring_segment_close(&seg);
    return 0;
}
