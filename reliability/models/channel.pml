/*
 * The channel's SPSC protocol (docs/PROTOCOL.md 3.3, 3.4, 3.6) with its
 * waiting flags and the asymmetric barrier handshake, on a machine whose
 * stores go through a per-CPU FIFO store buffer (TSO: the weakest model in
 * which the handshake can fail; the release/acquire pairs [S2]/[S5] give
 * the FIFO order of data-then-counter that this model assumes on ARM64).
 *
 * Checked (spin -a; pan with safety checks):
 *   - no read of uncommitted data and no overwrite: the consumer asserts
 *     that every slot it reads holds the message number it expects;
 *   - no lost wake-up: a side asleep in FUTEX_WAIT while the other side has
 *     finished is an invalid end state (the model has no timeouts: the
 *     real waits' 50 ms slices would only hide a lost wake-up as a stall);
 *   - every message is received, in order.
 *
 * Planted faults (each must make pan report an error; see run.py):
 *   -DPLANT_NO_RECHECK    the sleeper does not re-check after announcing
 *   -DPLANT_UNREGISTERED  the producer publishes with a compiler barrier
 *                         only, but the heavy barrier does not reach it
 *                         (a peer that never registered for membarrier)
 *   -DPLANT_TAIL_FIRST    the producer stores tail before the message
 *
 * Variant that must pass: -DUNREGISTERED_FENCED, a producer that did not
 * register for membarrier and so publishes with a full fence (the rule of
 * PROTOCOL 3.6 for peers without membarrier).
 */

#ifndef MSGS
#define MSGS 4          /* messages sent: enough to wrap and to fill twice */
#endif
#ifndef CAP
#define CAP  2          /* ring capacity in messages */
#endif

/* shared memory */
byte slot[CAP];         /* the message number in each slot (0: never written) */
byte tail;              /* messages committed [S2] */
byte head;              /* messages released [S5] */
bit  consumer_waiting;  /* [S6] */
bit  producer_waiting;  /* [S7] */
byte data_seq;          /* futex word the consumer sleeps on [S6] */
byte space_seq;         /* futex word the producer sleeps on [S7] */

/* the kernel's futex queues: who sleeps (a futex wait is atomic in the kernel) */
bit consumer_asleep;
bit producer_asleep;

/* store buffers: (address, value), drained in order to memory; addresses
 * 0 to CAP - 1 are the slots */
#define A_TAIL  (CAP)
#define A_HEAD  (CAP + 1)
#define A_CWAIT (CAP + 2)
#define A_PWAIT (CAP + 3)
chan pbuf = [4] of { byte, byte };
chan cbuf = [4] of { byte, byte };

inline write_mem(a, v) {
    if
    :: a < CAP      -> slot[a] = v
    :: a == A_TAIL  -> tail = v
    :: a == A_HEAD  -> head = v
    :: a == A_CWAIT -> consumer_waiting = v
    :: a == A_PWAIT -> producer_waiting = v
    fi
}

/* a CPU's store buffer drains whenever the hardware likes */
proctype drain(chan buf) {
    byte a, v;
end: do
    :: atomic { buf?a,v -> write_mem(a, v) }
    od
}

/* a full fence: every earlier store of this CPU is visible */
#define fence(buf)          empty(buf)
/* the sleeper's heavy barrier: its own fence, and a fence on the CPU of
 * every registered process (membarrier GLOBAL_EXPEDITED) */
#if defined(PLANT_UNREGISTERED) || defined(UNREGISTERED_FENCED)
#define heavy_barrier(own, other)  fence(own)
#else
#define heavy_barrier(own, other)  (empty(own) && empty(other))
#endif
/* the publisher's barrier: a compiler barrier only when the sleeper's
 * membarrier reaches it, a full fence otherwise */
#ifdef UNREGISTERED_FENCED
#define light_barrier(buf)  fence(buf)
#else
#define light_barrier(buf)  skip
#endif

inline futex_wake(asleep) {
    atomic { if :: asleep -> asleep = 0 :: else -> skip fi }
}

/* FUTEX_WAIT(word, seen): sleep only if the word still holds seen */
inline futex_wait(word, seen, asleep) {
    atomic { if :: word == seen -> asleep = 1 :: else -> skip fi };
    (asleep == 0)
}

proctype producer() {
    byte mine = 0;      /* local tail */
    byte seen_head;
    byte seq;
    do
    :: mine == MSGS -> break
    :: mine < MSGS ->
        seen_head = head;               /* acquire [S5] */
        if
        :: mine - seen_head < CAP ->
#ifdef PLANT_TAIL_FIRST
            pbuf!A_TAIL,mine + 1;
            pbuf!mine % CAP,mine + 1;
#else
            pbuf!mine % CAP,mine + 1;
            pbuf!A_TAIL,mine + 1;       /* release [S2] */
#endif
            mine++;
            light_barrier(pbuf);        /* [S6] */
            if
            :: consumer_waiting ->
                atomic { fence(pbuf) -> data_seq++ };   /* fetch_add release */
                futex_wake(consumer_asleep)
            :: else -> skip
            fi
        :: else ->                      /* full: sleep on space_seq [S7] */
            seq = space_seq;            /* acquire */
            pbuf!A_PWAIT,1;
            heavy_barrier(pbuf, cbuf);
#ifndef PLANT_NO_RECHECK
            if
            :: mine - head < CAP -> skip    /* re-check: room came */
            :: else -> futex_wait(space_seq, seq, producer_asleep)
            fi;
#else
            futex_wait(space_seq, seq, producer_asleep);
#endif
            pbuf!A_PWAIT,0
        fi
    od
}

proctype consumer() {
    byte mine = 0;      /* local head */
    byte seen_tail;
    byte seq;
    byte msg;
    do
    :: mine == MSGS -> break
    :: mine < MSGS ->
        seen_tail = tail;               /* acquire [S2] */
        if
        :: seen_tail > mine ->
            msg = slot[mine % CAP];
            assert(msg == mine + 1);    /* committed, and not overwritten */
            mine++;
            cbuf!A_HEAD,mine;           /* release [S5] */
            light_barrier(cbuf);        /* [S7] */
            if
            :: producer_waiting ->
                atomic { fence(cbuf) -> space_seq++ };
                futex_wake(producer_asleep)
            :: else -> skip
            fi
        :: else ->                      /* empty: sleep on data_seq [S6] */
            seq = data_seq;             /* acquire */
            cbuf!A_CWAIT,1;
            heavy_barrier(cbuf, pbuf);
#ifndef PLANT_NO_RECHECK
            if
            :: tail > mine -> skip      /* re-check: data came */
            :: else -> futex_wait(data_seq, seq, consumer_asleep)
            fi;
#else
            futex_wait(data_seq, seq, consumer_asleep);
#endif
            cbuf!A_CWAIT,0
        fi
    od;
    assert(mine == MSGS)
}

init {
    atomic {
        run drain(pbuf);
        run drain(cbuf);
        run producer();
        run consumer()
    }
}
