/*
 * The process-shared primitives (shmring/sync.h) on plain memory, one
 * thread: what each operation returns and leaves in the struct, holders
 * that died, and waits that time out without leaving themselves announced.
 * (Several processes on one primitive: tests/test_sync.py.)
 */
#include "helpers.h"

static uint64_t soon(void)
{
    return shmring_now_ns() + 3000000u; /* 3 ms */
}

static void a_semaphore_counts_its_permits(void)
{
    shmring_sem *s = (shmring_sem *)helpers_memory(sizeof *s);
    shmring_sem_init(s, 2);
    CHECK_EQ(shmring_sem_try_acquire(s), 1);
    CHECK_EQ(shmring_sem_try_acquire(s), 1);
    CHECK_EQ(shmring_sem_try_acquire(s), 0);
    CHECK_EQ(shmring_sem_release(s, 3), SHMRING_OK);
    CHECK_EQ(s->count, 3);
    CHECK_EQ(shmring_sem_release(s, SHMRING_SEM_MAX), SHMRING_ERR_ARG);
    CHECK_EQ(s->count, 3);
    shmring_sem_signal(s); /* a signal does not accumulate */
    shmring_sem_signal(s);
    CHECK_EQ(s->count, 1);
}

static void a_count_no_release_can_make_counts_as_one_post(void)
{
    shmring_sem *s = (shmring_sem *)helpers_memory(sizeof *s);
    s->count = SHMRING_SEM_MAX + 5;
    CHECK_EQ(shmring_sem_try_acquire(s), 1);
    CHECK_EQ(s->count, 0);
}

static void a_semaphore_wait_without_a_permit_times_out_and_withdraws(void)
{
    shmring_sem *s = (shmring_sem *)helpers_memory(sizeof *s);
    shmring_sem_init(s, 0);
    CHECK_EQ(shmring_sem_wait(s, soon()), SHMRING_TIMEOUT);
    CHECK_EQ(s->waiters, 0);
    shmring_sem_init(s, 1);
    CHECK_EQ(shmring_sem_wait(s, soon()), SHMRING_OK); /* a permit is there: no sleep */
}

static void a_spin_lock_has_one_holder(void)
{
    shmring_spinlock *l = (shmring_spinlock *)helpers_memory(sizeof *l);
    uint64_t me = shmring_token_self(), other = helpers_live_token();
    CHECK_EQ(shmring_spin_try_acquire(l, me, 1), SHMRING_OK);
    CHECK_EQ(shmring_spin_try_acquire(l, other, 1), SHMRING_AGAIN);
    CHECK_EQ(shmring_spin_release(l, other), SHMRING_NOT_OWNER);
    CHECK_EQ(shmring_spin_release(l, me), SHMRING_OK);
    CHECK_EQ(l->owner, 0);
    CHECK_EQ(shmring_spin_acquire(l, me, soon()), SHMRING_OK);
}

static void a_spin_lock_waits_out_its_deadline_behind_a_live_holder(void)
{
    shmring_spinlock *l = (shmring_spinlock *)helpers_memory(sizeof *l);
    l->owner = helpers_live_token();
    CHECK_EQ(shmring_spin_acquire(l, shmring_token_self(), soon()), SHMRING_TIMEOUT);
    CHECK_EQ(l->owner, helpers_live_token());
}

static void a_spin_lock_of_a_dead_holder_is_taken_over_with_owner_died(void)
{
    shmring_spinlock *l = (shmring_spinlock *)helpers_memory(sizeof *l);
    uint64_t me = shmring_token_self();
    l->owner = helpers_dead_token();
    CHECK_EQ(shmring_spin_try_acquire(l, me, 0), SHMRING_AGAIN); /* without looking at the holder */
    CHECK_EQ(shmring_spin_acquire(l, me, 0), SHMRING_OWNER_DIED);
    CHECK_EQ(l->owner, me);
    CHECK_EQ(shmring_spin_abandon(l, me), SHMRING_OK); /* unrepaired: the next one is told again */
    CHECK_EQ(shmring_spin_try_acquire(l, me, 1), SHMRING_OWNER_DIED);
}

static void a_mutex_has_one_holder(void)
{
    shmring_mutex *m = (shmring_mutex *)helpers_memory(sizeof *m);
    uint64_t me = shmring_token_self(), other = helpers_live_token();
    CHECK_EQ(shmring_mutex_try_acquire(m, me, 1), SHMRING_OK);
    CHECK_EQ(shmring_mutex_try_acquire(m, other, 1), SHMRING_AGAIN);
    CHECK_EQ(shmring_mutex_release(m, other), SHMRING_NOT_OWNER);
    CHECK_EQ(shmring_mutex_consistent(m, me), SHMRING_ERR_ARG); /* nothing to repair */
    CHECK_EQ(shmring_mutex_release(m, me), SHMRING_OK);
    CHECK_EQ(m->word, 0); /* nobody marked the word: the release made no system call */
    CHECK_EQ(shmring_mutex_lock(m, me, 1000u, 1000000u, soon()), SHMRING_OK);
}

static void a_mutex_lock_times_out_behind_a_live_holder_and_withdraws(void)
{
    shmring_mutex *m = (shmring_mutex *)helpers_memory(sizeof *m);
    m->owner = helpers_live_token();
    CHECK_EQ(shmring_mutex_lock(m, shmring_token_self(), 1000u, 1000000u, soon()), SHMRING_TIMEOUT);
    CHECK_EQ(m->reserved0, 0); /* no count of sleepers is left behind */
    CHECK_EQ(m->owner, helpers_live_token());
}

static void a_mutex_of_a_dead_holder_is_repaired_then_consistent_again(void)
{
    shmring_mutex *m = (shmring_mutex *)helpers_memory(sizeof *m);
    uint64_t me = shmring_token_self();
    m->owner = helpers_dead_token();
    CHECK_EQ(shmring_mutex_lock(m, me, 1000u, 1000000u, 0), SHMRING_OWNER_DIED);
    CHECK_EQ(m->owner, me);
    CHECK_EQ(m->state, SHMRING_MUTEX_OWNER_DIED);
    CHECK_EQ(m->reserved0, 0);
    CHECK_EQ(shmring_mutex_consistent(m, me), SHMRING_OK);
    CHECK_EQ(shmring_mutex_release(m, me), SHMRING_OK);
    CHECK_EQ(shmring_mutex_try_acquire(m, me, 1), SHMRING_OK);
}

static void a_mutex_released_unrepaired_is_not_recoverable_and_abandoned_is_owner_died(void)
{
    shmring_mutex *m = (shmring_mutex *)helpers_memory(sizeof *m);
    uint64_t me = shmring_token_self();
    m->owner = helpers_dead_token();
    CHECK_EQ(shmring_mutex_try_acquire(m, me, 1), SHMRING_OWNER_DIED);
    CHECK_EQ(shmring_mutex_abandon(m, me), SHMRING_OK); /* a repair that may pass later */
    CHECK_EQ(shmring_mutex_try_acquire(m, me, 1), SHMRING_OWNER_DIED);
    CHECK_EQ(shmring_mutex_release(m, me), SHMRING_OK); /* released unrepaired */
    CHECK_EQ(m->state, SHMRING_MUTEX_NOT_RECOVERABLE);
    CHECK_EQ(shmring_mutex_try_acquire(m, me, 1), SHMRING_NOT_RECOVERABLE);
    CHECK_EQ(m->owner, 0);
    CHECK_EQ(shmring_mutex_lock(m, me, 1000u, 1000000u, soon()), SHMRING_NOT_RECOVERABLE);
}

static void an_event_wait_ends_when_set_or_when_the_generation_moves(void)
{
    shmring_event *e = (shmring_event *)helpers_memory(sizeof *e);
    uint32_t gen = shmring_event_generation(e);
    CHECK_EQ(shmring_event_is_set(e), 0);
    CHECK_EQ(shmring_event_wait(e, gen, soon()), SHMRING_TIMEOUT);
    CHECK_EQ(e->waiters, 0);
    shmring_event_set(e);
    CHECK_EQ(shmring_event_is_set(e), 1);
    CHECK_EQ(shmring_event_wait(e, gen, soon()), SHMRING_OK);
    shmring_event_clear(e); /* set then cleared: a waiter of that generation still goes */
    CHECK_EQ(shmring_event_is_set(e), 0);
    CHECK_EQ(shmring_event_wait(e, gen, soon()), SHMRING_OK);
    CHECK_EQ(shmring_event_wait(e, shmring_event_generation(e), soon()), SHMRING_TIMEOUT);
}

static void a_condition_notification_goes_to_waiters_registered_before_it(void)
{
    shmring_cond *c = (shmring_cond *)helpers_memory(sizeof *c);
    uint32_t early, late;
    early = shmring_cond_prepare(c);
    CHECK_EQ(c->waiters, 1);
    CHECK_EQ(shmring_cond_take(c, early, shmring_cond_seq(c)), 0); /* nothing yet */
    CHECK_EQ(shmring_cond_sleep(c, shmring_cond_seq(c), soon()), SHMRING_TIMEOUT);
    shmring_cond_notify(c, 1);
    CHECK_EQ(c->wakeups, 1);
    late = shmring_cond_prepare(c);
    CHECK_EQ(shmring_cond_take(c, late, shmring_cond_seq(c)), 0); /* not for one that came after */
    CHECK_EQ(shmring_cond_take(c, early, shmring_cond_seq(c)), 1);
    CHECK_EQ(c->wakeups, 0);
    shmring_cond_done(c);
    shmring_cond_notify(c, 5); /* never more notifications than waiters */
    CHECK_EQ(c->wakeups, 1);
    shmring_cond_done(c);
    CHECK_EQ(c->waiters, 0);
    CHECK_EQ(c->wakeups, 0); /* dropped with the last waiter */
}

int main(void)
{
    RUN(a_semaphore_counts_its_permits);
    RUN(a_count_no_release_can_make_counts_as_one_post);
    RUN(a_semaphore_wait_without_a_permit_times_out_and_withdraws);
    RUN(a_spin_lock_has_one_holder);
    RUN(a_spin_lock_waits_out_its_deadline_behind_a_live_holder);
    RUN(a_spin_lock_of_a_dead_holder_is_taken_over_with_owner_died);
    RUN(a_mutex_has_one_holder);
    RUN(a_mutex_lock_times_out_behind_a_live_holder_and_withdraws);
    RUN(a_mutex_of_a_dead_holder_is_repaired_then_consistent_again);
    RUN(a_mutex_released_unrepaired_is_not_recoverable_and_abandoned_is_owner_died);
    RUN(an_event_wait_ends_when_set_or_when_the_generation_moves);
    RUN(a_condition_notification_goes_to_waiters_registered_before_it);
    return helpers_finish();
}
