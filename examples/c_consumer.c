/* A C consumer reading a channel that a Python producer writes.
 *
 *   cc -std=c99 -O2 -I include examples/c_consumer.c -o c_consumer
 *   ./c_consumer CHANNEL_NAME
 *
 * Reads until the producer closes the stream, checks that message i starts
 * with the 8-byte sequence number i, and prints the count and the sum of
 * all message lengths. */
#include "shmring.h"

#include <stdlib.h>

int main(int argc, char **argv)
{
    char name[NAME_MAX + 2];
    static unsigned char buf[1 << 20];
    shmring_segment seg;
    shmring_channel ch;
    uint64_t len, total = 0, count = 0;
    int rc;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CHANNEL_NAME\n", argv[0]);
        return 2;
    }
    snprintf(name, sizeof name, "/%s", argv[1]);
    if ((rc = shmring_segment_open(name, 0, &seg)) != SHMRING_OK ||
        (rc = shmring_channel_open_end(&ch, &seg, 0)) != SHMRING_OK) {
        fprintf(stderr, "%s: %s\n", name, shmring_strerror(rc));
        return 1;
    }
    for (;;) {
        uint64_t seq;
        rc = shmring_channel_recv(&ch, buf, sizeof buf, &len, SHMRING_WAIT_ADAPTIVE, 0);
        if (rc == SHMRING_CLOSED)
            break;
        if (rc != SHMRING_OK) {
            fprintf(stderr, "recv after %llu messages: %s\n", (unsigned long long)count, shmring_strerror(rc));
            return 1;
        }
        if (len < 8) {
            fprintf(stderr, "message %llu is too short\n", (unsigned long long)count);
            return 1;
        }
        memcpy(&seq, buf, sizeof seq);
        if (seq != count) {
            fprintf(stderr, "expected message %llu, got %llu\n", (unsigned long long)count, (unsigned long long)seq);
            return 1;
        }
        count++;
        total += len;
    }
    shmring_channel_close_end_of(&ch, 0);
    shmring_segment_close(&seg);
    printf("received %llu messages, %llu bytes\n", (unsigned long long)count, (unsigned long long)total);
    return 0;
}
