/* Two threads of one process stream checked messages through a channel made
 * with shmring.h, to run under ThreadSanitizer (and ASan/UBSan): every
 * access to shared state must be ordered by the protocol's atomics.
 *
 *   channel_threads NAME COUNT CAPACITY STRATEGY
 *
 * Message i: 8 bytes of i, then (i * 7) % 300 bytes of (i % 251).  Exits 0
 * and prints "ok COUNT" when every message arrived intact and in order. */
#include "shmring.h"

#include <pthread.h>
#include <stdlib.h>

static shmring_segment seg;
static long count;
static uint32_t strategy;

static void *producer(void *arg)
{
    static unsigned char msg[8 + 300];
    shmring_channel ch;
    void *result = NULL;
    long i;
    (void)arg;
    if (shmring_channel_open_end(&ch, &seg, 1) != SHMRING_OK)
        return (void *)1;
    for (i = 0; i < count; i++) {
        uint64_t seq = (uint64_t)i, len = 8 + (uint64_t)((i * 7) % 300);
        memcpy(msg, &seq, 8);
        memset(msg + 8, (int)(i % 251), (size_t)len - 8);
        if (shmring_channel_send(&ch, msg, len, strategy, 0) != SHMRING_OK) {
            result = (void *)2;
            break;
        }
        if (i % 1000 == 999) { /* a batch now and then: several records, one publish */
            unsigned char *dst;
            if (shmring_channel_reserve(&ch, 0, &dst) == SHMRING_OK)
                shmring_channel_commit(&ch, 0);
            shmring_channel_publish(&ch);
        }
    }
    shmring_channel_close_end_of(&ch, 1); /* also on failure: the reader stops */
    return result;
}

int main(int argc, char **argv)
{
    static unsigned char buf[8 + 300];
    char name[NAME_MAX + 2];
    shmring_channel ch;
    pthread_t tid;
    void *prod_rc;
    long got = 0;
    uint64_t cap;
    int rc;

    if (argc != 5)
        return 2;
    snprintf(name, sizeof name, "/%s", argv[1]);
    count = atol(argv[2]);
    cap = strtoull(argv[3], NULL, 10);
    strategy = (uint32_t)atoi(argv[4]);
    rc = shmring_segment_create_unpublished(name, shmring_channel_payload_size(cap), SHMRING_KIND_CHANNEL, 0600, &seg);
    if (rc != SHMRING_OK)
        return 3;
    shm_unlink(name);
    shmring_channel_init(shmring_segment_payload(&seg), shmring_segment_payload_size(&seg), cap, strategy, 2000);
    shmring_segment_publish(&seg);
    if (shmring_channel_open_end(&ch, &seg, 0) != SHMRING_OK)
        return 4;
    if (pthread_create(&tid, NULL, producer, NULL) != 0)
        return 5;
    for (;;) {
        uint64_t len, seq, want;
        size_t k;
        rc = shmring_channel_recv(&ch, buf, sizeof buf, &len, strategy, 0);
        if (rc == SHMRING_CLOSED)
            break;
        if (rc != SHMRING_OK) {
            fprintf(stderr, "recv: %s\n", shmring_strerror(rc));
            return 6;
        }
        if (len == 0)
            continue; /* the producer's empty batch markers */
        memcpy(&seq, buf, 8);
        want = 8 + (uint64_t)((got * 7) % 300);
        if (seq != (uint64_t)got || len != want) {
            fprintf(stderr, "message %ld: seq %llu len %llu\n", got, (unsigned long long)seq, (unsigned long long)len);
            return 7;
        }
        for (k = 8; k < len; k++)
            if (buf[k] != (unsigned char)(got % 251)) {
                fprintf(stderr, "message %ld: byte %zu\n", got, k);
                return 8;
            }
        got++;
    }
    pthread_join(tid, &prod_rc);
    if (prod_rc != NULL || got != count) {
        fprintf(stderr, "producer %p, got %ld of %ld\n", prod_rc, got, count);
        return 9;
    }
    shmring_segment_close(&seg);
    printf("ok %ld\n", got);
    return 0;
}
