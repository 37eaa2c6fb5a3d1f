/*
 * Waiting outside the calls (shmring/watch.h): the words each object names,
 * announcing and withdrawing (flags and counts), passing on a wake taken
 * and not used, and futex_waitv over several words, woken by another
 * process.
 */
#include "helpers.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static void each_object_names_its_word_and_announcement(void)
{
    shmring_sem *sem = (shmring_sem *)helpers_memory(sizeof *sem);
    shmring_event *ev = (shmring_event *)helpers_memory(sizeof *ev);
    shmring_queue_ctrl *q = (shmring_queue_ctrl *)helpers_memory(sizeof *q);
    shmring_watch w = shmring_sem_watch(sem);
    CHECK(w.word == &sem->count && w.announce == &sem->waiters && w.wakes_one && w.word_is_count);
    w = shmring_event_watch(ev);
    CHECK(w.word == &ev->gen && w.announce == &ev->waiters && !w.wakes_one);
    w = shmring_queue_watch(q, 0);
    CHECK(w.word == &q->items_seq && w.announce == &q->items_waiters && w.wakes_one && !w.word_is_count);
    w = shmring_queue_watch(q, 1);
    CHECK(w.word == &q->room_seq && w.announce == &q->room_waiters);
}

static void a_count_goes_up_and_down_and_a_flag_on_and_off(void)
{
    shmring_queue_ctrl *q = (shmring_queue_ctrl *)helpers_memory(sizeof *q);
    uint32_t *flag = (uint32_t *)helpers_memory(8), *word = flag + 1;
    shmring_watch w = shmring_queue_watch(q, 0), f;
    CHECK_EQ(shmring_watch_begin(&w), 0);
    CHECK_EQ(shmring_watch_begin(&w), 0);
    CHECK_EQ(q->items_waiters, 2);
    shmring_watch_end(&w, 0);
    CHECK_EQ(q->items_waiters, 1);
    shmring_watch_end(&w, 0);
    CHECK_EQ(q->items_waiters, 0);
    f = w;
    f.word = word;
    f.announce = flag;
    f.announce_is_flag = 1;
    f.wakes_one = 0;
    shmring_watch_begin(&f); /* 1 only where membarrier is missing: either way the flag is up */
    CHECK_EQ(*flag, 1);
    shmring_watch_end(&f, 1);
    CHECK_EQ(*flag, 0);
    CHECK_EQ(*word, 0); /* a flag's wakers wake their one sleeper: nothing to pass on */
}

static void an_unused_wake_goes_on_only_to_a_remaining_sleeper(void)
{
    shmring_queue_ctrl *q = (shmring_queue_ctrl *)helpers_memory(sizeof *q);
    shmring_sem *sem = (shmring_sem *)helpers_memory(sizeof *sem);
    shmring_watch w = shmring_queue_watch(q, 0), s = shmring_sem_watch(sem);
    shmring_watch_begin(&w);
    shmring_watch_end(&w, 1); /* nobody else announced: no wake to pass */
    CHECK_EQ(q->items_seq, 0);
    q->items_waiters = 1;     /* another sleeper */
    shmring_watch_begin(&w);
    CHECK_EQ(shmring_watch_value(&w), 0);
    shmring_watch_end(&w, 1);
    CHECK_EQ(q->items_seq, 1); /* bumped: its sleep on the old value ends */
    CHECK_EQ(q->items_waiters, 1);
    shmring_watch_end(&w, 0);
    shmring_sem_init(sem, 0);
    sem->waiters = 1;
    shmring_watch_begin(&s);
    shmring_watch_end(&s, 1);
    CHECK_EQ(sem->count, 0); /* a semaphore's count is never bumped: that would add a permit */
}

static void waitv_returns_at_once_when_a_word_has_moved(void)
{
    uint32_t *words = (uint32_t *)helpers_memory(8);
    shmring_waitv_entry v[2];
    uint64_t t0 = shmring_now_ns();
    words[1] = 5;
    shmring_waitv_set(&v[0], &words[0], 0, 1);
    shmring_waitv_set(&v[1], &words[1], 4, 0); /* it holds 5 */
    CHECK_EQ(shmring_futex_waitv(v, 2, t0 + 2000000000u), SHMRING_OK);
    CHECK(shmring_now_ns() - t0 < 1000000000u);
}

static void waitv_times_out_when_nothing_moves(void)
{
    uint32_t *words = (uint32_t *)helpers_memory(8);
    shmring_waitv_entry v[2];
    uint64_t t0 = shmring_now_ns();
    shmring_waitv_set(&v[0], &words[0], 0, 1);
    shmring_waitv_set(&v[1], &words[1], 0, 0);
    CHECK_EQ(shmring_futex_waitv(v, 2, t0 + 20000000u), SHMRING_TIMEOUT);
    CHECK(shmring_now_ns() - t0 >= 20000000u);
}

static void waitv_is_woken_by_another_process_bumping_one_word(void)
{
    uint32_t *shared = (uint32_t *)mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint32_t *control = (uint32_t *)helpers_memory(4);
    shmring_waitv_entry v[3];
    uint64_t t0;
    int status = 0;
    pid_t child;
    CHECK(shared != MAP_FAILED);
    if (shared == MAP_FAILED)
        return;
    child = fork();
    if (child == 0) {
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
        shmring_fetch_add_release(&shared[1], 1u);
        shmring_futex_wake(&shared[1], 1);
        _exit(0);
    }
    t0 = shmring_now_ns();
    shmring_waitv_set(&v[0], control, 0, 1);
    shmring_waitv_set(&v[1], &shared[0], 0, 0);
    shmring_waitv_set(&v[2], &shared[1], 0, 0);
    do
        CHECK_EQ(shmring_futex_waitv(v, 3, t0 + 5000000000u), SHMRING_OK);
    while (shmring_load_acquire(&shared[1]) == 0 && shmring_now_ns() - t0 < 5000000000u);
    CHECK_EQ(shmring_load_acquire(&shared[1]), 1);
    CHECK(shmring_now_ns() - t0 < 4000000000u);
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    munmap(shared, 4096);
}

int main(void)
{
    RUN(each_object_names_its_word_and_announcement);
    RUN(a_count_goes_up_and_down_and_a_flag_on_and_off);
    RUN(an_unused_wake_goes_on_only_to_a_remaining_sleeper);
    RUN(waitv_returns_at_once_when_a_word_has_moved);
    RUN(waitv_times_out_when_nothing_moves);
    RUN(waitv_is_woken_by_another_process_bumping_one_word);
    return helpers_finish();
}
