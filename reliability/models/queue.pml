/*
 * The queue's commit and recovery (docs/PROTOCOL.md 5, 5.2, 5.4): every
 * change under one robust lock, made visible by one store (the ring's tail
 * for a put, its head for a get); a process killed at any step leaves the
 * lock "owner died" and the next holder recounts from the records.  The
 * lock orders everything it covers, so this model runs on sequentially
 * consistent memory; what it checks is the crash-consistency of the steps.
 *
 * Checked (spin -a; pan with safety checks), for every interleaving and
 * every point at which up to KILLS processes are killed:
 *   - no item is taken twice, nor read before it was committed;
 *   - the holder of a consistent lock always finds count == tail - head
 *     and puts - gets == count (the recount after a dead holder repairs
 *     both);
 *   - at the end, every item whose put returned was delivered exactly once,
 *     or taken by a consumer that was killed before its get returned;
 *   - with KILLS == 0, no lost wake-up ([Q2]): waits have no timeout, so a
 *     waiter nobody wakes is an invalid end state.  (With kills, waits time
 *     out, as the real 50 ms slices do: a waker killed between its commit
 *     and its wake leaves the sleeper to its next slice.)
 *
 * Planted faults (each must make pan report an error; see run.py):
 *   -DPLANT_NO_RECOUNT          the holder after a dead one does not recount
 *   -DPLANT_COMMIT_FIRST        a put stores tail before writing the record
 *   -DPLANT_SEQ_AFTER_UNLOCK    a waiter reads the futex word after it
 *                               released the lock (KILLS == 0)
 */

/* The default size is what CI checks exhaustively in seconds: two
 * producers of one item each through a ring of one record, so that the
 * ring wraps, fills and empties, and producers and consumers both wait.
 * (Two items per producer through a ring of two does not fit in 4 GB of
 * pan's memory: the size is what an exhaustive check affords.) */
#ifndef KILLS
#define KILLS 1
#endif
#define PRODUCERS 2
#ifndef PER_PRODUCER
#define PER_PRODUCER 1
#endif
#define ITEMS (PRODUCERS * PER_PRODUCER)
#ifndef CAP
#define CAP 1                   /* the ring holds this many records */
#endif
#define NPROC 5                 /* pids 1..4 used: 2 producers, 2 consumers */

/* shared memory: the control block */
byte owner;                     /* lock holder's pid, 0 = free [Q1] */
bit  owner_died;                /* the holder died: the lock must be recovered */
byte slot[CAP];                 /* item ids (0: empty) */
byte head, tail, count, puts, gets;
byte items_seq, items_waiters;  /* [Q2] consumers */
byte room_seq, room_waiters;    /* [Q2] producers */

/* the kernel */
bit alive[NPROC];
bit asleep[NPROC];
byte kills;

/* ghosts, for the checks */
byte st[ITEMS + 1];             /* 0 not committed, 1 in the queue, 2 taken, 3 delivered */
bit  returned[ITEMS + 1];       /* its put returned */
byte taker[ITEMS + 1];
byte finished;                  /* processes ended, killed or not */
byte producers_left = PRODUCERS;

/* Killed here, maybe: the process ends, holding whatever it holds. */
#define MAYBE_DIE  if :: kills < KILLS -> kills++; goto dead :: true -> skip fi

inline lock() {
    /* taking the lock and the recovery are one step of the model: nothing
     * else reads what they change before the holder releases the lock (a
     * kill during the recovery is a kill of the next step's holder) */
    atomic {
        if
        :: owner == 0 -> owner = _pid
        :: owner != 0 && !alive[owner] -> owner = _pid; owner_died = 1
        fi;
        if
        :: owner_died ->        /* recover: recount from the records */
#ifndef PLANT_NO_RECOUNT
            count = tail - head;
            if
            :: puts - gets < count -> puts = gets + count   /* a put moved tail only */
            :: puts - gets > count -> gets = puts - count   /* a get moved head only */
            :: else -> skip
            fi;
#endif
            owner_died = 0
        :: else -> skip
        fi;
        assert(count == tail - head && puts - gets == count)
    }
}

inline unlock() {
    owner = 0
}

inline futex_wake(seq, waiters) {
    d_step {
        seq++;
        /* wake everybody: a stale wake is only a spurious one */
        i = 1;
        do
        :: i < NPROC -> asleep[i] = 0; i++
        :: else -> break
        od;
        i = 0
    }
}

/* Under the lock: register, read the word, release the lock, sleep. */
inline wait_for(seq, waiters) {
    waiters++;
#ifndef PLANT_SEQ_AFTER_UNLOCK
    seen = seq;
    unlock();
#else
    unlock();
    seen = seq;
#endif
    atomic { if :: seq == seen -> asleep[_pid] = 1 :: else -> skip fi };
#if KILLS == 0
    (asleep[_pid] == 0);
#else
    if :: asleep[_pid] == 0 -> skip :: true -> asleep[_pid] = 0 fi;  /* a slice ends */
#endif
    atomic { waiters--; seen = 0 };     /* fetch_sub, without the lock */
    lock()
}

proctype producer(byte first) {
    byte id = first;
    byte seen, wake, i;
    alive[_pid] = 1;
    do
    :: id == first + PER_PRODUCER -> break
    :: else ->
        lock();
        do
        :: count < CAP -> break
        :: else -> wait_for(room_seq, room_waiters)
        od;
        /* The critical section is one step of the model but for the kills
         * in it: only the lock holder reads what it changes, so the other
         * processes' steps commute with it, and MAYBE_DIE lets the holder
         * die between any two of its stores. */
        atomic {
        MAYBE_DIE;
#ifndef PLANT_COMMIT_FIRST
        slot[tail % CAP] = id;
        MAYBE_DIE;
        tail++; st[id] = 1;                     /* the commit: one store */
#else
        tail++; st[id] = 1;
        MAYBE_DIE;
        slot[(tail - 1) % CAP] = id;
#endif
        MAYBE_DIE;
        count++;
        MAYBE_DIE;
        puts++;
        MAYBE_DIE;
        wake = items_waiters;                   /* read under the lock */
        unlock()
        };
        if :: wake > 0 -> futex_wake(items_seq, items_waiters) :: else -> skip fi;
        wake = 0;
        returned[id] = 1;
        id++
    od;
    /* (the model's end of input: consumers stop once every producer has
     * left and the queue is empty; leaving is a change under the lock,
     * with its wake, like a put) */
    lock();
    producers_left--;
    wake = items_waiters;
    unlock();
    if :: wake > 0 -> futex_wake(items_seq, items_waiters) :: else -> skip fi;
    finished++;
    goto out;
dead:
    /* a killed producer wakes nobody: the waits time out (KILLS > 0) */
    atomic { alive[_pid] = 0; producers_left--; finished++ };
out:
    skip
}

proctype consumer() {
    byte id, seen, wake, i;
    alive[_pid] = 1;
    do
    :: lock();
        do
        :: tail != head -> break
        :: tail == head && producers_left == 0 -> unlock(); goto done
        :: tail == head && producers_left > 0 -> wait_for(items_seq, items_waiters)
        od;
        id = slot[head % CAP];
        assert(id >= 1 && id <= ITEMS && st[id] == 1);  /* committed, not taken */
        atomic {                                /* see the producer's */
        MAYBE_DIE;
        head++; st[id] = 2; taker[id] = _pid;   /* the commit: one store */
        MAYBE_DIE;
        count--;
        MAYBE_DIE;
        gets++;
        MAYBE_DIE;
        wake = room_waiters;
        unlock()
        };
        if :: wake > 0 -> futex_wake(room_seq, room_waiters) :: else -> skip fi;
        assert(st[id] == 2);
        d_step { st[id] = 3; id = 0; wake = 0 } /* get returned: delivered */
    od;
done:
    atomic { finished++ };
    goto out;
dead:
    atomic { alive[_pid] = 0; finished++ };
out:
    skip
}

init {
    byte id;
    atomic {
        run producer(1);
        run producer(1 + PER_PRODUCER);
        run consumer();
        run consumer()
    }
    (finished == 4);
    /* everything committed was taken: nothing is left in the ring unless
     * every consumer was killed */
    id = 1;
    do
    :: id <= ITEMS ->
        assert(!returned[id] || st[id] >= 1);
        assert(st[id] != 2 || !alive[taker[id]]);
        assert(st[id] != 1 || (!alive[3] && !alive[4]) ||
               (owner != 0 && !alive[owner]));
        id++
    :: else -> break
    od
}
