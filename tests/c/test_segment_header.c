/*
 * The segment header page (shmring/segment.h) on plain memory: what an
 * opener accepts and refuses (every field of a header it did not write is
 * checked before it is used), the checksum, names, and the roster.
 */
#include "helpers.h"

#define PAYLOAD 4096u

/* A header as shmring_segment_create_unpublished writes it, published. */
static unsigned char *new_header(void)
{
    unsigned char *page = (unsigned char *)helpers_memory(SHMRING_HEADER_SIZE + PAYLOAD);
    shmring_segment_header *h = (shmring_segment_header *)(void *)page;
    h->version = SHMRING_LAYOUT_VERSION;
    h->abi = SHMRING_ABI_WORD;
    h->kind = SHMRING_KIND_RAW;
    h->header_size = SHMRING_HEADER_SIZE;
    h->total_size = SHMRING_HEADER_SIZE + PAYLOAD;
    h->creator_pid = (int64_t)getpid();
    h->creator_uid = (uint32_t)geteuid();
    h->checksum = shmring_header_checksum(h);
    h->magic = shmring_magic();
    return page;
}

static int check(unsigned char *page, uint64_t avail)
{
    return shmring_header_check((const shmring_segment_header *)(const void *)page, avail);
}

static void resum(unsigned char *page)
{
    shmring_segment_header *h = (shmring_segment_header *)(void *)page;
    h->checksum = shmring_header_checksum(h);
}

static void a_published_header_passes_and_is_copied_out_once(void)
{
    unsigned char *page = new_header();
    shmring_segment_header copy;
    memset(&copy, 0, sizeof copy);
    CHECK_EQ(shmring_header_check_copy((const shmring_segment_header *)(const void *)page,
                                       SHMRING_HEADER_SIZE + PAYLOAD, &copy),
             SHMRING_OK);
    CHECK(memcmp(&copy, page, sizeof copy) == 0);
    CHECK_EQ(check(page, SHMRING_HEADER_SIZE + 2 * PAYLOAD), SHMRING_OK); /* a larger object is fine */
}

static void the_magic_is_the_eight_bytes_shmring_1_on_any_byte_order(void)
{
    uint64_t magic = shmring_magic();
    CHECK(memcmp(&magic, "SHMRING\1", 8) == 0);
}

static void an_empty_or_unpublished_object_is_not_ready(void)
{
    unsigned char *page = new_header();
    CHECK_EQ(check(page, 0), SHMRING_ERR_NOT_READY);
    ((shmring_segment_header *)(void *)page)->magic = 0; /* its creator has not published it */
    CHECK_EQ(check(page, SHMRING_HEADER_SIZE + PAYLOAD), SHMRING_ERR_NOT_READY);
}

static void an_object_without_the_magic_is_foreign(void)
{
    unsigned char *page = new_header();
    CHECK_EQ(check(page, 7), SHMRING_ERR_FOREIGN); /* too short to hold it */
    page[0] ^= 0x20;
    CHECK_EQ(check(page, SHMRING_HEADER_SIZE + PAYLOAD), SHMRING_ERR_FOREIGN);
    ((shmring_segment_header *)(void *)page)->magic = 0;
    CHECK_EQ(check(page, 100), SHMRING_ERR_FOREIGN); /* a zero start and no page: not ours either */
}

static void an_object_smaller_than_its_header_says_is_truncated(void)
{
    unsigned char *page = new_header();
    CHECK_EQ(check(page, 100), SHMRING_ERR_TRUNCATED);
    CHECK_EQ(check(page, SHMRING_HEADER_SIZE), SHMRING_ERR_TRUNCATED);
    CHECK_EQ(check(page, SHMRING_HEADER_SIZE + PAYLOAD - 1), SHMRING_ERR_TRUNCATED);
}

static void another_abi_or_layout_version_is_refused_by_name(void)
{
    unsigned char *page = new_header();
    shmring_segment_header *h = (shmring_segment_header *)(void *)page;
    h->abi = (SHMRING_ABI_WORD & 0xffffff00u) | (SHMRING_ENDIAN_TAG == 0x4Cu ? 0x42u : 0x4Cu);
    resum(page);
    CHECK_EQ(check(page, SHMRING_HEADER_SIZE + PAYLOAD), SHMRING_ERR_ABI);
    h->abi = SHMRING_ABI_WORD;
    h->version = SHMRING_LAYOUT_VERSION + 1;
    resum(page);
    CHECK_EQ(check(page, SHMRING_HEADER_SIZE + PAYLOAD), SHMRING_ERR_VERSION);
}

static void every_byte_the_checksum_covers_is_checked(void)
{
    unsigned i;
    for (i = 16; i < SHMRING_CHECKSUM_END; i++) { /* after version and abi, which say more */
        unsigned char *page = new_header();
        page[i] ^= 0x01;
        CHECK_EQ(check(page, SHMRING_HEADER_SIZE + 2 * PAYLOAD), SHMRING_ERR_CHECKSUM);
    }
    {
        unsigned char *page = new_header(); /* the mutable fields after it are not covered */
        shmring_segment_header *h = (shmring_segment_header *)(void *)page;
        h->state = SHMRING_STATE_REMOVED;
        h->persistent = 1;
        h->roster_overflow = 3;
        CHECK_EQ(check(page, SHMRING_HEADER_SIZE + PAYLOAD), SHMRING_OK);
    }
}

static void fields_inconsistent_with_each_other_are_corruption(void)
{
    unsigned char *page = new_header();
    shmring_segment_header *h = (shmring_segment_header *)(void *)page, saved = *h;
    /* resum: the checksum matches, so that the fields themselves are refused. */
#define REFUSED(field, value) \
    CHECK_REFUSED(h, saved, field, value, (resum(page), check(page, SHMRING_HEADER_SIZE + PAYLOAD)))
    REFUSED(kind, 0);
    REFUSED(kind, SHMRING_KIND_MAX + 1);
    REFUSED(header_size, 128);
    REFUSED(total_size, SHMRING_HEADER_SIZE);
    REFUSED(flags, 1);
#undef REFUSED
}

static void the_checksum_is_fnv1a_64(void)
{
    CHECK_EQ(shmring_fnv1a64("", 0), UINT64_C(0xcbf29ce484222325));
    CHECK_EQ(shmring_fnv1a64("a", 1), UINT64_C(0xaf63dc4c8601ec8c));
    CHECK_EQ(shmring_fnv1a64("foobar", 6), UINT64_C(0x85944171f73967e8));
}

static void names_are_a_slash_and_up_to_name_max_portable_characters(void)
{
    char name[NAME_MAX + 3];
    CHECK_EQ(shmring_name_check("/ok-name_1.2"), 0);
    CHECK_EQ(shmring_name_check(NULL), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_name_check(""), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_name_check("/"), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_name_check("noslash"), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_name_check("/.hidden"), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_name_check("/a/b"), SHMRING_ERR_ARG);
    CHECK_EQ(shmring_name_check("/a b"), SHMRING_ERR_ARG);
    name[0] = '/';
    memset(name + 1, 'x', NAME_MAX + 1);
    name[NAME_MAX] = '\0'; /* NAME_MAX characters in all */
    CHECK_EQ(shmring_name_check(name), 0);
    name[NAME_MAX] = 'x';
    name[NAME_MAX + 1] = '\0';
    CHECK_EQ(shmring_name_check(name), SHMRING_ERR_ARG);
}

static void the_roster_lists_attachments_and_counts_those_it_has_no_room_for(void)
{
    unsigned char *page = new_header();
    shmring_segment_header *h = (shmring_segment_header *)(void *)page;
    shmring_roster_entry *r = shmring_segment_roster(page);
    uint64_t me = shmring_token_self();
    unsigned i;
    int slot;
    for (i = 0; i < SHMRING_ROSTER_SLOTS; i++)
        CHECK_EQ(shmring_roster_add(page, me), (int)i);
    CHECK(r[0].attached_ns != 0);
    CHECK_EQ(shmring_roster_add(page, me), -1); /* full */
    CHECK_EQ(h->roster_overflow, 1);
    shmring_roster_remove(page, -1, me);
    CHECK_EQ(h->roster_overflow, 0);
    shmring_roster_remove(page, -1, me); /* never below zero */
    CHECK_EQ(h->roster_overflow, 0);
    shmring_roster_remove(page, 5, me + 1); /* not its entry: left alone */
    CHECK_EQ(r[5].token, me);
    shmring_roster_remove(page, 5, me);
    CHECK_EQ(r[5].token, 0);
    CHECK_EQ(shmring_roster_add(page, me), 5); /* a free entry first */
    r[9].token = helpers_dead_token();
    slot = shmring_roster_add(page, me); /* then a dead process's */
    CHECK_EQ(slot, 9);
    shmring_roster_remove(page, (int)SHMRING_ROSTER_SLOTS, me); /* out of range: the overflow count */
    CHECK_EQ(h->roster_overflow, 0);
}

int main(void)
{
    RUN(a_published_header_passes_and_is_copied_out_once);
    RUN(the_magic_is_the_eight_bytes_shmring_1_on_any_byte_order);
    RUN(an_empty_or_unpublished_object_is_not_ready);
    RUN(an_object_without_the_magic_is_foreign);
    RUN(an_object_smaller_than_its_header_says_is_truncated);
    RUN(another_abi_or_layout_version_is_refused_by_name);
    RUN(every_byte_the_checksum_covers_is_checked);
    RUN(fields_inconsistent_with_each_other_are_corruption);
    RUN(the_checksum_is_fnv1a_64);
    RUN(names_are_a_slash_and_up_to_name_max_portable_characters);
    RUN(the_roster_lists_attachments_and_counts_those_it_has_no_room_for);
    return helpers_finish();
}
