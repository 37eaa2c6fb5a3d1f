/*
 * array_producer.c - a C peer that sends array messages (shmring/array.h)
 * through a channel that Python created, then ends the stream; run by
 * tests/test_arrays_inplace.py, which reads them in place (peek_array).
 *
 *   array_producer CHANNEL_NAME COUNT
 *
 * Message k < COUNT: a (k % 4 + 1, k % 5 + 2) array of native int32, in C
 * order for an even k and Fortran order for an odd one, element [i][j] =
 * k * 1000 + i * 10 + j.  Then a 0-dimensional native float64 (2.5) and an
 * empty (3, 0) array of bytes.
 */
#include "peer.h"

#include <stdlib.h>

static unsigned char msg[4096];

static int send_message(shmring_channel *ch, uint64_t len)
{
    int rc = shmring_channel_send(ch, msg, len, 0, shmring_now_ns() + UINT64_C(10000000000)); /* 10 s */
    if (rc != SHMRING_OK)
        fprintf(stderr, "array_producer: send: %s\n", shmring_strerror(rc));
    return rc;
}

int main(int argc, char **argv)
{
    char name[256];
    shmring_segment seg;
    shmring_channel ch;
    long count, k;
    uint64_t shape[2], data, i, j;
    double half = 2.5;
    int rc;
    if (argc != 3 || strlen(argv[1]) + 2 > sizeof name) {
        fprintf(stderr, "usage: %s CHANNEL_NAME COUNT\n", argv[0]);
        return 2;
    }
    snprintf(name, sizeof name, "/%s", argv[1]);
    count = strtol(argv[2], NULL, 10);
    rc = shmring_segment_open(name, 0, &seg);
    if (rc == SHMRING_OK)
        rc = shmring_channel_open_end(&ch, &seg, 1);
    if (rc != SHMRING_OK) {
        peer_report_failure("array_producer", name, rc);
        return 1;
    }
    for (k = 0; k < count; k++) {
        char order = k % 2 ? 'F' : 'C';
        shape[0] = (uint64_t)(k % 4 + 1);
        shape[1] = (uint64_t)(k % 5 + 2);
        data = shmring_array_data_offset(2);
        if (shmring_array_write_header(msg, "=i4", order, 2, shape) != SHMRING_OK)
            return 1;
        for (i = 0; i < shape[0]; i++)
            for (j = 0; j < shape[1]; j++) {
                int32_t v = (int32_t)(k * 1000 + (long)(i * 10 + j));
                uint64_t at = order == 'C' ? i * shape[1] + j : j * shape[0] + i;
                memcpy(msg + data + 4 * at, &v, sizeof v); /* the message's elements need not be aligned here */
            }
        if (send_message(&ch, data + 4 * shape[0] * shape[1]) != SHMRING_OK)
            return 1;
    }
    data = shmring_array_data_offset(0);
    if (shmring_array_write_header(msg, "=f8", 'C', 0, NULL) != SHMRING_OK)
        return 1;
    memcpy(msg + data, &half, sizeof half);
    if (send_message(&ch, data + sizeof half) != SHMRING_OK)
        return 1;
    shape[0] = 3;
    shape[1] = 0;
    if (shmring_array_write_header(msg, "|u1", 'C', 2, shape) != SHMRING_OK ||
        send_message(&ch, shmring_array_data_offset(2)) != SHMRING_OK)
        return 1;
    shmring_channel_close_end_of(&ch, 1); /* end of stream */
    shmring_segment_close(&seg);
    printf("sent %ld\n", count + 2);
    return 0;
}
