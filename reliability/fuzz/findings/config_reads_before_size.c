/*
 * Finding F1 of the fuzzing (docs/RELIABILITY.md, "Fuzzing"): the queue's
 * and the topic's config checks, and the overflow chunk's check, read the
 * control block at the start of the payload before they check that the
 * payload is that large.
 *
 *   shmring_queue_check_config  (queue.h)  memcpy of 384 bytes, then
 *                                           `payload_size < SHMRING_QUEUE_CTRL_SIZE`
 *   shmring_topic_check_config  (topic.h)  memcpy of 384 bytes, then
 *                                           `payload_size < SHMRING_TOPIC_CTRL_SIZE`
 *   shmring_queue_chunk_check   (queue.h)  loads k->capacity (8 bytes) in its
 *                                           declaration, then checks
 *                                           `payload_size < SHMRING_QUEUE_CHUNK_HEADER_SIZE`
 *
 * A segment whose header is valid (the checksum is no secret) but states a
 * payload of 1 byte (total_size 4097) passes shmring_header_check, and its
 * kind's check then reads up to 383 bytes past the size the header states.
 * The answer is right (SHMRING_ERR_CORRUPT) and, through a real mapping,
 * nothing faults: the mapping covers whole pages, and the bytes past the
 * object's end in its last page read as zeros.  A reader of a copy of
 * exactly the stated size (a tool reading a segment into a buffer, a C
 * program mapping only total_size of a larger buffer) reads out of bounds.
 * shmring_channel_attach checks the size first and is not affected.
 *
 * Fixed by d1d8221 (the three checks test the size first); kept as a check
 * that it stays so: each case prints the refusal and AddressSanitizer has
 * nothing to report (before the fix, each was a heap-buffer-overflow READ).
 *
 * Build and run:
 *   cc -g -fsanitize=address -Iinclude reliability/fuzz/findings/config_reads_before_size.c -o /tmp/f1
 *   /tmp/f1 queue; /tmp/f1 topic; /tmp/f1 chunk
 * The same in the fuzz target: build/fuzz/bin/fuzz_segment reliability/fuzz/findings/config_reads_before_size.input
 */
#include "shmring.h"

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "queue";
    uint64_t payload_size = 1; /* what a valid header may state: total_size 4097 */
    unsigned char *payload = (unsigned char *)calloc(1, (size_t)payload_size); /* exactly that */
    int rc;
    if (strcmp(which, "queue") == 0) {
        shmring_queue_ctrl copy;
        rc = shmring_queue_check_config((const shmring_queue_ctrl *)(void *)payload, payload_size, &copy);
    } else if (strcmp(which, "topic") == 0) {
        shmring_topic_ctrl copy;
        rc = shmring_topic_check_config((const shmring_topic_ctrl *)(void *)payload, payload_size, &copy);
    } else {
        uint64_t cap;
        rc = shmring_queue_chunk_check((const shmring_queue_chunk *)(void *)payload, payload_size, 0, 1, &cap);
    }
    printf("%s check of a %llu-byte payload: %s\n", which, (unsigned long long)payload_size, shmring_strerror(rc));
    free(payload);
    return 0;
}
