/* Producer and consumer threads of one process share a bounded queue made
 * with shmring.h, to run under ThreadSanitizer (and ASan/UBSan): every access
 * to the ring must be ordered by the queue's lock and atomics.
 *
 *   queue_threads NAME COUNT CAPACITY PRODUCERS CONSUMERS
 *
 * Producer p puts COUNT records {u64 p, u64 seq, (seq % 200) bytes of
 * (seq % 251)}; each consumer checks every record and that each producer's
 * records come in order; an empty record ends a consumer.  Prints "ok N"
 * when all N records arrived exactly once. */
#include "shmring.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_THREADS 16

static shmring_queue_ctrl *q;
static uint64_t capacity, token, count;
static const char *name;
static uint64_t total_seen, total_sum; /* under `tally` */
static pthread_mutex_t tally = PTHREAD_MUTEX_INITIALIZER;

static void *producer(void *arg)
{
    unsigned char rec[16 + 200];
    uint64_t p = (uint64_t)(uintptr_t)arg, seq;
    for (seq = 0; seq < count; seq++) {
        uint64_t n = seq % 200;
        memcpy(rec, &p, 8);
        memcpy(rec + 8, &seq, 8);
        memset(rec + 16, (int)(seq % 251), (size_t)n);
        if (shmring_queue_put(q, capacity, name, token, SHMRING_REC_BYTES, rec, 16 + n, 0) != SHMRING_OK)
            return (void *)1;
    }
    return NULL;
}

static void *consumer(void *arg)
{
    unsigned char rec[16 + 200];
    int64_t last[MAX_THREADS];
    uint64_t seen = 0, sum = 0, len, p, seq;
    uint32_t tag;
    int i;
    (void)arg;
    for (i = 0; i < MAX_THREADS; i++)
        last[i] = -1;
    for (;;) {
        if (shmring_queue_get(q, capacity, name, token, rec, sizeof rec, &len, &tag, 0) != SHMRING_OK)
            return (void *)1;
        if (len == 0)
            break;
        memcpy(&p, rec, 8);
        memcpy(&seq, rec + 8, 8);
        if (p >= MAX_THREADS || (int64_t)seq <= last[p] || len != 16 + seq % 200 ||
            (len > 16 && (rec[16] != seq % 251 || rec[len - 1] != seq % 251)))
            return (void *)2;
        last[p] = (int64_t)seq;
        seen++;
        sum += seq;
    }
    pthread_mutex_lock(&tally);
    total_seen += seen;
    total_sum += sum;
    pthread_mutex_unlock(&tally);
    return NULL;
}

int main(int argc, char **argv)
{
    shmring_segment seg;
    pthread_t threads[2 * MAX_THREADS];
    long producers, consumers, i;
    int failed = 0;
    if (argc != 6)
        return 2;
    name = argv[1];
    count = strtoull(argv[2], NULL, 10);
    capacity = strtoull(argv[3], NULL, 10);
    producers = atol(argv[4]);
    consumers = atol(argv[5]);
    if (producers < 1 || producers > MAX_THREADS || consumers < 1 || consumers > MAX_THREADS)
        return 2;
    if (shmring_segment_create_unpublished(name, shmring_queue_payload_size(capacity), SHMRING_KIND_QUEUE, 0600,
                                           &seg) != SHMRING_OK)
        return 3;
    shmring_queue_init(shmring_segment_payload(&seg), capacity, 0, SHMRING_QUEUE_BOUNDED, 0, 0600);
    shmring_segment_publish(&seg);
    q = (shmring_queue_ctrl *)shmring_segment_payload(&seg);
    token = shmring_token_self();
    for (i = 0; i < consumers; i++)
        pthread_create(&threads[MAX_THREADS + i], NULL, consumer, NULL);
    for (i = 0; i < producers; i++)
        pthread_create(&threads[i], NULL, producer, (void *)(uintptr_t)i);
    for (i = 0; i < producers; i++) {
        void *r;
        pthread_join(threads[i], &r);
        failed |= r != NULL;
    }
    for (i = 0; i < consumers; i++) /* one end marker each */
        failed |= shmring_queue_put(q, capacity, name, token, SHMRING_REC_BYTES, "", 0, 0) != SHMRING_OK;
    for (i = 0; i < consumers; i++) {
        void *r;
        pthread_join(threads[MAX_THREADS + i], &r);
        failed |= r != NULL;
    }
    shmring_segment_close(&seg);
    shmring_segment_unlink(name);
    if (failed || total_seen != count * (uint64_t)producers ||
        total_sum != (uint64_t)producers * (count * (count - 1) / 2)) {
        fprintf(stderr, "failed: seen %llu\n", (unsigned long long)total_seen);
        return 1;
    }
    printf("ok %llu\n", (unsigned long long)total_seen);
    return 0;
}
