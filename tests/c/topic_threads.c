/* A publisher thread and reader threads of one process share a topic made
 * with shmring.h on plain memory, to run under ThreadSanitizer (and
 * ASan/UBSan).  Policy overwrite: readers are lapped, so the publisher
 * overwrites records while they are being copied, and every such access must
 * be atomic (the copy is then discarded by the seqlock's re-read of head
 * [T2]).  Policy block: the publisher waits for the slowest reader, whose
 * plain copy nothing may race with (shmring_topic_copy_subscribed).
 *
 *   topic_threads COUNT CAPACITY READERS overwrite|block
 *
 * The publisher sends COUNT messages {u64 seq, (seq % 241) body bytes, u64
 * checksum of the body, u64 seq}.  Each reader copies every message it gets,
 * validates the copy with shmring_topic_still_valid, and checks every copy
 * that validation accepted: the length, seq at both ends equal to the
 * header's, the checksum, and that messages come in order with nothing lost
 * but what Lagged reported (received + missed == COUNT; nothing missed under
 * block).  Odd readers are slow (they yield after each message) so that
 * they are lapped.  Prints
 * "ok COUNT" when every reader passed; exit status 1 on any mismatch. */
#include "shmring.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_READERS 8
#define MAX_BODY 240
#define MAX_MSG (24 + MAX_BODY)

static shmring_topic topic;
static uint64_t count, token;
static int slots[MAX_READERS];
static uint64_t rejected[MAX_READERS]; /* torn copies discarded, per reader (its own) */

static uint64_t checksum(const unsigned char *body, uint64_t n, uint64_t seq)
{
    uint64_t h = 1469598103934665603u ^ seq, i;
    for (i = 0; i < n; i++)
        h = (h ^ body[i]) * 1099511628211u;
    return h;
}

static uint64_t make_message(unsigned char *msg, uint64_t seq)
{
    uint64_t n = seq % (MAX_BODY + 1), i, sum;
    memcpy(msg, &seq, 8);
    for (i = 0; i < n; i++)
        msg[8 + i] = (unsigned char)(seq * 131u + i);
    sum = checksum(msg + 8, n, seq);
    memcpy(msg + 8 + n, &sum, 8);
    memcpy(msg + 16 + n, &seq, 8);
    return 24 + n;
}

/* 0 when the accepted copy `msg` of `len` bytes is message `seq`. */
static int check_message(const unsigned char *msg, uint64_t len, uint64_t seq)
{
    uint64_t n = seq % (MAX_BODY + 1), first, last, sum;
    if (len != 24 + n)
        return 1;
    memcpy(&first, msg, 8);
    memcpy(&sum, msg + 8 + n, 8);
    memcpy(&last, msg + 16 + n, 8);
    return first != seq || last != seq || sum != checksum(msg + 8, n, seq);
}

static void *publisher(void *arg)
{
    unsigned char msg[MAX_MSG];
    uint64_t seq;
    (void)arg;
    for (seq = 0; seq < count; seq++)
        if (shmring_topic_publish(&topic, token, SHMRING_REC_BYTES, msg, make_message(msg, seq), 0) != SHMRING_OK)
            return (void *)1;
    return NULL;
}

/* Read until message COUNT - 1; returns NULL when every check passed. */
static void *reader(void *arg)
{
    long me = (long)(intptr_t)arg;
    unsigned char msg[MAX_MSG];
    uint64_t cursor = shmring_load_relaxed(&topic.subs[slots[me]].cursor), next_seq = 0, received = 0, missed = 0;
    for (;;) {
        const unsigned char *p;
        uint64_t len = 0, seq = 0, size = 0, pos = 0, s = 0; /* set before use; zero for -Wmaybe-uninitialized */
        uint32_t tag;
        int rc = shmring_topic_next(&topic, &cursor, &tag, &p, &len, &seq, &size);
        if (rc == SHMRING_AGAIN) {
            /* publish a cursor moved past padding: BLOCK publishers wait for it */
            if (cursor != shmring_load_relaxed(&topic.subs[slots[me]].cursor) &&
                shmring_topic_advance(&topic, slots[me], cursor, next_seq))
                shmring_topic_wake_publishers(&topic);
            sched_yield();
            continue;
        }
        if (rc == SHMRING_OK) {
            if (len > MAX_MSG || tag != SHMRING_REC_BYTES)
                return (void *)"header";
            shmring_topic_copy_subscribed(&topic, msg, p, len);
            if (shmring_topic_still_valid(&topic, cursor) == SHMRING_OK) {
                if (seq != next_seq || check_message(msg, len, seq) != 0)
                    return (void *)"message";
                received++;
                next_seq = seq + 1;
                cursor += size;
                if (shmring_topic_advance(&topic, slots[me], cursor, next_seq))
                    shmring_topic_wake_publishers(&topic);
                if (seq == count - 1)
                    break;
                if (me % 2 == 1)
                    sched_yield();
                continue;
            }
            rejected[me]++; /* torn: discarded, as after Lagged */
        } else if (rc != SHMRING_LAGGED) {
            return (void *)"ring";
        }
        if (topic.policy == SHMRING_TOPIC_BLOCK)
            return (void *)"lag under block";
        rc = shmring_topic_oldest(&topic, &pos, &s);
        if (rc == SHMRING_AGAIN)
            continue;
        if (rc != SHMRING_OK || s < next_seq || s >= count)
            return (void *)"resume point";
        missed += s - next_seq;
        next_seq = s;
        cursor = pos;
    }
    if (received + missed != count)
        return (void *)"count";
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t pub, threads[MAX_READERS];
    uint64_t capacity, total_rejected = 0;
    long readers, i;
    void *payload, *result;
    int failed = 0;
    uint32_t policy;
    if (argc != 5)
        return 2;
    policy = strcmp(argv[4], "block") == 0 ? SHMRING_TOPIC_BLOCK : SHMRING_TOPIC_OVERWRITE;
    count = strtoull(argv[1], NULL, 10);
    capacity = strtoull(argv[2], NULL, 10);
    readers = strtol(argv[3], NULL, 10);
    if (count == 0 || readers < 1 || readers > MAX_READERS ||
        posix_memalign(&payload, 4096, (size_t)shmring_topic_payload_size(capacity, MAX_READERS)) != 0)
        return 2;
    shmring_topic_init(payload, capacity, policy, MAX_READERS, 0);
    if (shmring_topic_attach(&topic, payload, shmring_topic_payload_size(capacity, MAX_READERS)) != SHMRING_OK)
        return 2;
    token = shmring_token_self();
    for (i = 0; i < readers; i++)
        if ((slots[i] = shmring_topic_subscribe(&topic, token)) < 0) /* before any publish: no lock needed */
            return 2;
    for (i = 0; i < readers; i++)
        if (pthread_create(&threads[i], NULL, reader, (void *)(intptr_t)i) != 0)
            return 2;
    if (pthread_create(&pub, NULL, publisher, NULL) != 0)
        return 2;
    pthread_join(pub, &result);
    if (result != NULL) {
        fprintf(stderr, "publisher failed\n");
        failed = 1;
    }
    for (i = 0; i < readers; i++) {
        pthread_join(threads[i], &result);
        if (result != NULL) {
            fprintf(stderr, "reader %ld: %s mismatch\n", i, (const char *)result);
            failed = 1;
        }
        total_rejected += rejected[i];
    }
    fprintf(stderr, "torn copies rejected: %llu\n", (unsigned long long)total_rejected);
    free(payload);
    if (failed)
        return 1;
    printf("ok %llu\n", (unsigned long long)count);
    return 0;
}
