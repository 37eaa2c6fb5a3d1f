/*
 * The record header shared by the rings (shmring/record.h) and the sizes
 * each ring derives from it: alignment, padding arithmetic, the largest
 * message, and the tags.
 */
#include "helpers.h"

static void lengths_round_up_to_eight_bytes(void)
{
    CHECK_EQ(shmring_align8(0), 0);
    CHECK_EQ(shmring_align8(1), 8);
    CHECK_EQ(shmring_align8(8), 8);
    CHECK_EQ(shmring_align8(9), 16);
    CHECK_EQ(shmring_align8(UINT32_MAX), UINT64_C(0x100000000));
}

static void a_channel_or_queue_record_is_its_header_then_its_padded_payload(void)
{
    CHECK_EQ(sizeof(shmring_record), 8);
    CHECK_EQ(shmring_record_size(0), 8);
    CHECK_EQ(shmring_record_size(1), 16);
    CHECK_EQ(shmring_record_size(8), 16);
    CHECK_EQ(shmring_record_size(100), 112);
    CHECK_EQ(shmring_queue_record_size(100), shmring_record_size(100));
}

static void a_topic_record_is_sixteen_bytes_of_header_then_its_payload_to_sixteen(void)
{
    CHECK_EQ(sizeof(shmring_topic_record), 16);
    CHECK_EQ(offsetof(shmring_topic_record, len), offsetof(shmring_record, len));
    CHECK_EQ(offsetof(shmring_topic_record, tag), offsetof(shmring_record, tag));
    CHECK_EQ(shmring_topic_record_size(0), 16);
    CHECK_EQ(shmring_topic_record_size(1), 32);
    CHECK_EQ(shmring_topic_record_size(16), 32);
    CHECK_EQ(shmring_topic_record_size(17), 48);
}

static void the_largest_channel_message_fills_the_ring_with_its_header(void)
{
    CHECK_EQ(shmring_channel_max_message(64), 56);
    CHECK_EQ(shmring_record_size(shmring_channel_max_message(4096)), 4096);
    CHECK_EQ(shmring_channel_payload_size(4096), SHMRING_CHANNEL_CTRL_SIZE + 4096);
    CHECK_EQ(shmring_queue_payload_size(4096), SHMRING_QUEUE_CTRL_SIZE + 4096);
}

static void the_topic_data_starts_on_a_128_byte_boundary_after_the_subscribers(void)
{
    CHECK_EQ(shmring_topic_data_offset(1), 512);
    CHECK_EQ(shmring_topic_data_offset(4), 512);
    CHECK_EQ(shmring_topic_data_offset(5), 640);
    CHECK_EQ(shmring_topic_payload_size(1024, 4), 512 + 1024);
}

static void the_tags_are_six_distinct_letters(void)
{
    unsigned tags[] = {SHMRING_REC_DATA,  SHMRING_REC_PAD,   SHMRING_REC_OBJECT,
                       SHMRING_REC_BYTES, SHMRING_REC_VALUE, SHMRING_REC_OOB};
    unsigned i, j;
    CHECK_EQ(SHMRING_REC_DATA, 'R');
    CHECK_EQ(SHMRING_REC_PAD, 'P');
    CHECK_EQ(SHMRING_REC_OBJECT, 'O');
    CHECK_EQ(SHMRING_REC_BYTES, 'B');
    CHECK_EQ(SHMRING_REC_VALUE, 'V');
    CHECK_EQ(SHMRING_REC_OOB, 'M');
    for (i = 0; i < 6; i++)
        for (j = i + 1; j < 6; j++)
            CHECK(tags[i] != tags[j]);
}

int main(void)
{
    RUN(lengths_round_up_to_eight_bytes);
    RUN(a_channel_or_queue_record_is_its_header_then_its_padded_payload);
    RUN(a_topic_record_is_sixteen_bytes_of_header_then_its_payload_to_sixteen);
    RUN(the_largest_channel_message_fills_the_ring_with_its_header);
    RUN(the_topic_data_starts_on_a_128_byte_boundary_after_the_subscribers);
    RUN(the_tags_are_six_distinct_letters);
    return helpers_finish();
}
