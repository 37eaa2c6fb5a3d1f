/*
 * The one sliced wait (shmring/wait.h), driven by scripted steps: what it
 * returns, the last look at the deadline, how long each sleep may be, and
 * the order of the host's hooks around and between sleeps.
 */
#include "helpers.h"

typedef struct {
    int ready_at;      /* ready says SHMRING_OK at this look (1-based); 0: never */
    int ready_result;  /* what ready returns when it is not AGAIN */
    int sleep_result;  /* what each sleep returns */
    int between_stops; /* the between hook ends the wait at this call (1-based); 0: never */
    int between_result;
    int looks, last_looks, sleeps, betweens, last_slept;
    uint64_t look_ns;   /* the clock at the last look */
    uint64_t max_gap;   /* the longest until - look_ns seen */
    uint64_t max_until; /* the latest until seen */
    int real_sleep; /* sleeps last until `until` */
    char log[128];   /* the first steps, one letter each */
    int nlog;
    char last_note;  /* the last step */
} script;

static void note(script *s, char c)
{
    s->last_note = c;
    if (s->nlog < (int)sizeof s->log - 1)
        s->log[s->nlog++] = c;
    s->log[s->nlog] = '\0';
}

static int ready(void *ctx, int last)
{
    script *s = (script *)ctx;
    s->looks++;
    s->last_looks += last != 0;
    s->look_ns = shmring_now_ns();
    note(s, last ? 'L' : 'r');
    if (s->ready_at != 0 && s->looks >= s->ready_at)
        return s->ready_result;
    return SHMRING_AGAIN;
}

static int sleep_once(void *ctx, uint64_t until_ns)
{
    script *s = (script *)ctx;
    s->sleeps++;
    if (until_ns - s->look_ns > s->max_gap)
        s->max_gap = until_ns - s->look_ns;
    if (until_ns > s->max_until)
        s->max_until = until_ns;
    note(s, 's');
    while (s->real_sleep && shmring_now_ns() < until_ns)
        ;
    return s->sleep_result;
}

static void before(void *ctx)
{
    note((script *)ctx, 'b');
}

static void after(void *ctx)
{
    note((script *)ctx, 'a');
}

static int between(void *ctx, int slept)
{
    script *s = (script *)ctx;
    s->betweens++;
    s->last_slept = slept;
    note(s, 'B');
    if (s->between_stops != 0 && s->betweens >= s->between_stops)
        return s->between_result;
    return SHMRING_OK;
}

/* The script's wait, through shmring_wait_for (the operation the headers'
 * blocking calls hand to shmring_wait_sliced). */
static int run(script *s, uint64_t slice_ns, uint64_t deadline_ns, int with_hooks)
{
    shmring_wait_hooks hooks;
    hooks.ctx = s;
    hooks.before_sleep = before;
    hooks.after_sleep = after;
    hooks.between = between;
    return shmring_wait_for(s, ready, sleep_once, slice_ns, with_hooks ? &hooks : NULL, deadline_ns);
}

static void script_new(script *s)
{
    memset(s, 0, sizeof *s);
    s->ready_result = SHMRING_OK;
    s->sleep_result = SHMRING_OK;
}

static void a_condition_that_holds_returns_at_once_without_sleeping(void)
{
    script s;
    script_new(&s);
    s.ready_at = 1;
    CHECK_EQ(run(&s, 0, 0, 1), SHMRING_OK);
    CHECK_EQ(s.sleeps, 0);
    CHECK(strcmp(s.log, "r") == 0);
}

static void it_sleeps_between_looks_until_the_condition_holds(void)
{
    script s;
    script_new(&s);
    s.ready_at = 4;
    CHECK_EQ(run(&s, 1000000u, 0, 1), SHMRING_OK);
    CHECK_EQ(s.looks, 4);
    CHECK_EQ(s.sleeps, 3);
    CHECK_EQ(s.last_looks, 0); /* no deadline: never a last look */
}

static void the_hooks_run_around_each_sleep_and_between_slices(void)
{
    script s;
    script_new(&s);
    s.ready_at = 3;
    s.sleep_result = SHMRING_TIMEOUT;
    CHECK_EQ(run(&s, 1000000u, 0, 1), SHMRING_OK);
    CHECK(strcmp(s.log, "rbsaBrbsaBr") == 0);
    CHECK_EQ(s.last_slept, SHMRING_TIMEOUT); /* the hook is told how the sleep ended */
}

static void it_times_out_after_one_last_look_at_the_deadline(void)
{
    script s;
    script_new(&s);
    s.real_sleep = 1;
    CHECK_EQ(run(&s, 1000000u, shmring_now_ns() + 3000000u, 0), SHMRING_TIMEOUT);
    CHECK_EQ(s.last_looks, 1);
    CHECK(s.sleeps >= 1);
    CHECK_EQ(s.last_note, 'L'); /* no sleep after the last look */
}

static void a_deadline_already_passed_gets_one_look_and_no_sleep(void)
{
    script s;
    script_new(&s);
    CHECK_EQ(run(&s, 0, 1, 1), SHMRING_TIMEOUT);
    CHECK(strcmp(s.log, "L") == 0);
    script_new(&s);
    s.ready_at = 1; /* it holds at that look: not a timeout */
    CHECK_EQ(run(&s, 0, 1, 1), SHMRING_OK);
}

static void no_sleep_lasts_longer_than_the_slice_or_past_the_deadline(void)
{
    script s;
    uint64_t deadline;
    script_new(&s);
    s.ready_at = 5;
    CHECK_EQ(run(&s, 2000000u, 0, 0), SHMRING_OK);
    CHECK(s.max_gap <= 2000000u);
    script_new(&s);
    s.ready_at = 5;
    CHECK_EQ(run(&s, 0, 0, 0), SHMRING_OK); /* the default slice */
    CHECK(s.max_gap <= SHMRING_WAIT_SLICE_NS);
    script_new(&s);
    deadline = shmring_now_ns() + 1000000u;
    s.sleep_result = SHMRING_AGAIN;
    CHECK_EQ(run(&s, SHMRING_WAIT_SLICE_NS, deadline, 0), SHMRING_TIMEOUT);
    CHECK_EQ(s.max_until, deadline); /* a slice longer than what is left ends at the deadline */
}

static void the_slice_is_measured_from_the_look_before_the_sleep(void)
{
    script s;
    uint64_t before_call;
    script_new(&s);
    s.ready_at = 2;
    before_call = shmring_now_ns();
    CHECK_EQ(run(&s, SHMRING_WAIT_SLICE_NS, 0, 0), SHMRING_OK);
    CHECK(s.max_until >= before_call + SHMRING_WAIT_SLICE_NS);
}

static void a_between_hook_ends_the_wait_with_its_result(void)
{
    script s;
    script_new(&s);
    s.between_stops = 2;
    s.between_result = -1; /* the host's own: a Python exception */
    CHECK_EQ(run(&s, 1000000u, 0, 1), -1);
    CHECK_EQ(s.sleeps, 2);
    script_new(&s);
    s.between_stops = 1;
    s.between_result = SHMRING_CLOSED;
    CHECK_EQ(run(&s, 1000000u, 0, 1), SHMRING_CLOSED);
}

static void a_sleep_or_a_look_that_fails_ends_the_wait_with_its_result(void)
{
    script s;
    script_new(&s);
    s.sleep_result = SHMRING_ERR_SYS;
    CHECK_EQ(run(&s, 1000000u, 0, 1), SHMRING_ERR_SYS);
    CHECK(strcmp(s.log, "rbsa") == 0); /* the host takes back what it gave away */
    script_new(&s);
    s.sleep_result = -7;
    CHECK_EQ(run(&s, 1000000u, 0, 0), -7);
    script_new(&s);
    s.ready_at = 2;
    s.ready_result = SHMRING_PEER_GONE;
    CHECK_EQ(run(&s, 1000000u, 0, 0), SHMRING_PEER_GONE);
    CHECK_EQ(s.sleeps, 1);
}

/* shmring_wait_sliced itself, with an operation built by hand. */
static void hooks_left_out_are_skipped(void)
{
    script s;
    shmring_wait_op op;
    shmring_wait_hooks hooks;
    script_new(&s);
    s.ready_at = 3;
    op.ctx = &s;
    op.ready = ready;
    op.sleep = sleep_once;
    op.slice_ns = 1000000u;
    memset(&hooks, 0, sizeof hooks);
    hooks.ctx = &s;
    hooks.between = between;
    CHECK_EQ(shmring_wait_sliced(&op, &hooks, 0), SHMRING_OK);
    CHECK(strcmp(s.log, "rsBrsBr") == 0);
}

int main(void)
{
    RUN(a_condition_that_holds_returns_at_once_without_sleeping);
    RUN(it_sleeps_between_looks_until_the_condition_holds);
    RUN(the_hooks_run_around_each_sleep_and_between_slices);
    RUN(it_times_out_after_one_last_look_at_the_deadline);
    RUN(a_deadline_already_passed_gets_one_look_and_no_sleep);
    RUN(no_sleep_lasts_longer_than_the_slice_or_past_the_deadline);
    RUN(the_slice_is_measured_from_the_look_before_the_sleep);
    RUN(a_between_hook_ends_the_wait_with_its_result);
    RUN(a_sleep_or_a_look_that_fails_ends_the_wait_with_its_result);
    RUN(hooks_left_out_are_skipped);
    return helpers_finish();
}
