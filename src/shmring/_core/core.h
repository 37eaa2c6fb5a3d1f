/*
 * core.h - the private interface of shmring._core, the CPython boundary of
 * include/shmring.h.
 *
 * The extension does system calls right (the GIL released while waiting,
 * EINTR retried, errors raised with the segment's name) and exports
 * mappings through the buffer protocol with export counting.  Naming,
 * ownership and pickling policy live in the Python modules.
 *
 * One .c file per Python type family, each including only this header:
 *
 *   module.c         module init: every file's functions and types, constants,
 *                    the fork hook
 *   errors.c         the exception objects and the helpers that raise them
 *   args.c           argument and timeout parsing of the vectorcall methods
 *   gil.c            the GIL hooks of every blocking wait (shmring/wait.h), and
 *                    the wait for a robust lock
 *   mapping.c        Mapping (one attachment) and the segment functions
 *   handle.c         what the handle types (Channel, Queue, TopicEnd) share
 *   gate.c           the gate that serialises the threads of one handle
 *   loan.c           Loan: ring memory lent by reserve() and peek()
 *   channel.c        Channel: the type, its ends, its waits, its lifetime
 *   channel_io.c     Channel: send/recv and their batch and loan forms
 *   sync.c           what the primitive types share (bounds, pinning, waits)
 *   sync_atomic.c    Atomic (4 or 8 bytes)
 *   sync_semaphore.c Semaphore
 *   sync_locks.c     SpinLock and Mutex
 *   sync_event.c     Event and Condition
 *   queue.c          Queue: the type, its methods, its lifetime
 *   queue_ops.c      Queue: put and get under the lock (records, batches)
 *   queue_chunks.c   Queue: the overflow chunks
 *   queue_wait.c     Queue: the lock, the blocking run of a put/get, join
 *   queue_values.c   Queue: the value encoding of common items (shmring/value.h)
 *   queue_oob.c      Queue: records with out-of-band buffers (shmring/oob.h)
 *   topic.c          TopicEnd: the type, its lifetime, the observer
 *   topic_io.c       TopicEnd: publishing and subscribing
 *   array.c          the array message's header (shmring/array.h)
 *   watch.c          waiting outside the calls (shmring/watch.h): WaitSet, for
 *                    shmring.aio
 *
 * The declarations of the Queue files are in core_queue.h, which this
 * header includes at their place.
 *
 * Everything declared here is internal to the module (the objects are built
 * with -fvisibility=hidden: only PyInit__core is exported).
 */
#ifndef SHMRING_CORE_H
#define SHMRING_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "shmring.h"

#include <pthread.h>
#include <signal.h>

/* ------------------------------------------------------------------------ */
/* Exceptions (errors.c)                                                     */
/* ------------------------------------------------------------------------ */

extern PyObject *error_by_code; /* shmring._errors.ERROR_BY_CODE */
extern PyObject *buffer_in_use_error;
extern PyObject *corrupted_error;
extern PyObject *timeout_error;
extern PyObject *closed_error;
extern PyObject *peer_gone_error;
extern PyObject *role_taken_error;
extern PyObject *owner_died_error;
extern PyObject *not_recoverable_error;
extern PyObject *lagged_error;      /* shmring.Lagged */
extern PyObject *queue_empty_error; /* queue.Empty */
extern PyObject *queue_full_error;  /* queue.Full */
extern PyObject *queue_closed_error; /* shmring.QueueClosed */
extern PyObject *pickle_dumps;      /* pickle.dumps */
extern PyObject *pickle_loads;      /* pickle.loads */
extern PyObject *pickle_protocol;   /* pickle.HIGHEST_PROTOCOL */

/* Import the objects above.  0, or -1 with an exception. */
int errors_init(void);

/* Raise the Python exception for a shmring result code about segment
 * `name`.  Returns NULL. */
PyObject *raise_code(int code, PyObject *name);

/* Raise CorruptedError: `kind` ("channel", "queue", "topic") `name` has an
 * impossible `what` (the damaged part: "ring (head counter)", "overflow
 * chain"...) read from shared memory.  Returns NULL. */
PyObject *raise_corrupted(const char *kind, PyObject *name, const char *what);

/* Raise Closed: a call of a `kind` handle (a "subscription"...) woke to find
 * close() begun by another thread.  Returns -1. */
int raise_closed_meanwhile(const char *kind, PyObject *name, const char *handle);
/* A failed send_many (Timeout, Closed, PeerGone): set exc.sent, how many
 * of its messages were delivered. */
void note_sent(Py_ssize_t count);

/* ------------------------------------------------------------------------ */
/* Arguments (args.c)                                                        */
/* ------------------------------------------------------------------------ */

/* parse_timeout of a number; parse_args with keywords or a wrong count. */
int parse_timeout_number(PyObject *obj, uint64_t *deadline);
int parse_args_keywords(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                        const char *const *names, Py_ssize_t nrequired, Py_ssize_t ntotal, PyObject **out);

/* Timeouts: None blocks forever (deadline 0); otherwise a non-negative
 * number of seconds, turned into a CLOCK_MONOTONIC deadline.  Returns -1 on
 * error, 1 when the timeout is zero (do not wait), else 0.  (Inline: the
 * hot calls pass none.) */
static inline int parse_timeout(PyObject *obj, uint64_t *deadline)
{
    if (obj == NULL || obj == Py_None) {
        *deadline = 0;
        return 0;
    }
    return parse_timeout_number(obj, deadline);
}

/* Parse a vectorcall: `names` lists the parameters (the first `nrequired`
 * required), given by position or keyword.  Missing optional ones are NULL.
 * (Inline: the hot calls pass their arguments by position.) */
static inline int parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                             const char *const *names, Py_ssize_t nrequired, Py_ssize_t ntotal, PyObject **out)
{
    Py_ssize_t i;
    if (kwnames != NULL || nargs < nrequired || nargs > ntotal)
        return parse_args_keywords(fname, args, nargs, kwnames, names, nrequired, ntotal, out);
    for (i = 0; i < ntotal; i++)
        out[i] = i < nargs ? args[i] : NULL;
    return 0;
}

/* parse_args, then parse_timeout of the last parameter (`timeout`): -1 with
 * an exception, else what parse_timeout returned (1: do not wait). */
static inline int parse_args_timeout(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                                     const char *const *names, Py_ssize_t nrequired, Py_ssize_t ntotal,
                                     PyObject **out, uint64_t *deadline)
{
    if (parse_args(fname, args, nargs, kwnames, names, nrequired, ntotal, out) < 0)
        return -1;
    return parse_timeout(out[ntotal - 1], deadline);
}

/* A count or size argument: an integer (OverflowError past Py_ssize_t) of
 * at least `min`, else ValueError with `too_small` formatted with it (a
 * "%zd" in the message).  0, or -1 with an exception. */
int parse_count(PyObject *obj, Py_ssize_t min, const char *too_small, Py_ssize_t *out);
/* The arguments (count, timeout) of recv_many() and reserve(), `fname`: the
 * count (parse_count: at least `min`), then the timeout.  -1 with an
 * exception, else what parse_timeout returned. */
int parse_count_timeout(const char *fname, const char *const *names, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames, Py_ssize_t min, const char *too_small, Py_ssize_t *count,
                        uint64_t *deadline);
/* A size argument of a create function (O& converter): the int as written
 * (`obj`, for messages) and its value, clamped to LLONG_MIN..LLONG_MAX. */
typedef struct {
    PyObject *obj;
    long long value;
} size_arg;
int size_converter(PyObject *obj, void *out);

/* Parameter lists of parse_args, shared by several methods. */
extern const char *const ARGS_TIMEOUT[];      /* timeout */
extern const char *const ARGS_DATA_TIMEOUT[]; /* data, timeout */
extern const char *const ARGS_N_TIMEOUT[];    /* n, timeout */
extern const char *const ARGS_MAX_TIMEOUT[];  /* max_messages, timeout */
extern const char *const ARGS_BUFFERS_TIMEOUT[]; /* buffers, timeout */

/* ------------------------------------------------------------------------ */
/* The process (module.c, mapping.c)                                         */
/* ------------------------------------------------------------------------ */

/* Bumped in a forked child: handles inherited from the parent hold no end
 * there (the claims belong to the parent's pid). */
extern volatile unsigned long fork_generation;

/* Set once the interpreter is exiting (leave_all ran): handles dropped from
 * then on keep what they claimed, as a process that died would. */
extern int process_exiting;

/* Copies (and zero fills) larger than this release the GIL. */
#define COPY_WITHOUT_GIL 262144

/* memcpy, the GIL released for large sizes. */
static inline void copy_maybe_without_gil(void *dst, const void *src, size_t n)
{
    if (n >= COPY_WITHOUT_GIL) {
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, src, n);
        Py_END_ALLOW_THREADS
    } else {
        memcpy(dst, src, n);
    }
}

/* Copy a message into a ring of `capacity` bytes: memcpy, or streaming
 * stores for large messages into large rings (shmring/copy.h says why, and
 * ends them with the fence that orders them before the publication of the
 * record [S2]). */
static inline void copy_into_ring(uint64_t capacity, void *dst, const void *src, size_t n)
{
    if (shmring_copy_should_stream(capacity, (uint64_t)n)) {
        Py_BEGIN_ALLOW_THREADS
        shmring_copy_streaming(dst, src, n);
        Py_END_ALLOW_THREADS
    } else {
        copy_maybe_without_gil(dst, src, n);
    }
}

/* Zero `n` bytes (a reserve: a message never carries bytes its sender did
 * not write), the GIL released for large sizes. */
static inline void zero_maybe_without_gil(void *dst, size_t n)
{
    if (n >= COPY_WITHOUT_GIL) {
        Py_BEGIN_ALLOW_THREADS
        memset(dst, 0, n);
        Py_END_ALLOW_THREADS
    } else {
        memset(dst, 0, n);
    }
}

/* ------------------------------------------------------------------------ */
/* Waiting (gil.c): the GIL hooks of shmring_wait_sliced                     */
/* ------------------------------------------------------------------------ */

/* Every blocking call of the extension is a shmring_wait_sliced
 * (include/shmring/wait.h), directly or through a header function that
 * takes hooks, with these hooks: each sleep gives the GIL away (a slice at
 * most: SHMRING_WAIT_SLICE_NS, or the operation's shorter one), and
 * between two slices, the GIL held, the wait ends if `closing` says that
 * the handle is being closed by another thread, or if a signal handler
 * raised (Ctrl-C is seen within a slice).  A GilWait lives on the waiting
 * thread's stack for one wait. */
typedef struct GilWait {
    PyThreadState *saved;         /* the thread's state while it sleeps */
    int (*closing)(void *handle); /* may be NULL: nonzero ends the wait with WAIT_CLOSING */
    void *handle;
    shmring_wait_hooks hooks;     /* what to pass to the wait: its ctx is this GilWait */
} GilWait;

/* The hooks' own results (negative: shmring results never are). */
#define WAIT_RAISED (-1)    /* the operation's own step raised: an exception is set */
#define WAIT_CLOSING (-2)   /* `closing` said so: no exception set, the caller raises its own */
#define WAIT_SIGNALLED (-3) /* a signal handler raised: its exception is set */

void gil_wait_init(GilWait *w, int (*closing)(void *handle), void *handle);

/* shmring_wait_sliced with the GIL hooks, in slices of
 * SHMRING_WAIT_SLICE_NS: the extension's own waits (`ready` runs with the
 * GIL held, `sleep` without it; both get `ctx`). */
int gil_wait_sliced(void *ctx, int (*ready)(void *ctx, int last), int (*sleep)(void *ctx, uint64_t until_ns),
                    int (*closing)(void *handle), void *handle, uint64_t deadline);

/* How long a lock waiter spins before it sleeps (shmring_mutex_lock): a
 * few short critical sections' worth, far below a wake-up's cost here
 * (~30 us). */
#define MUTEX_SPIN_NS 2000u
/* How long a lock waiter sleeps before it looks at the holder's liveness
 * (the slice of shmring_mutex_lock's wait). */
#define LOCK_CHECK_NS (10u * 1000u * 1000u)

/* Take a robust mutex (a Mutex, the queue's or the topic's lock), the GIL
 * released while it waits, signals checked between slices.  0 with
 * *granted = SHMRING_OK, _OWNER_DIED or _NOT_RECOVERABLE; 1 on timeout; -1
 * with an exception (a signal handler raised, a system error). */
int lock_robust(shmring_mutex *m, uint64_t token, uint64_t deadline, int *granted);

/* ------------------------------------------------------------------------ */
/* Mapping (mapping.c)                                                       */
/* ------------------------------------------------------------------------ */

/* A Mapping is one attachment (include/shmring/segment.h): it holds a
 * lease and a roster entry from its creation until it leaves, which happens
 * at close(), at leave(), when it is deallocated, or at process exit
 * (leave_all).  Leaving never unmaps by itself: close() and dealloc unmap,
 * once no exported buffer points into the memory. */
typedef struct MappingObject {
    PyObject_HEAD
    shmring_segment seg;
    PyObject *name;     /* str, without the leading '/' */
    Py_ssize_t exports; /* live Py_buffer views */
    struct MappingObject *prev, *next; /* attached mappings of this process (GIL) */
} MappingObject;

extern PyTypeObject MappingType;

/* 0, or -1 with ValueError when the segment is closed. */
int mapping_check_open(MappingObject *self);
/* The result of making or opening segment `name` (rc): a new Mapping
 * owning `seg` (closed on failure) when rc is SHMRING_OK, else NULL with
 * the exception of rc. */
PyObject *mapping_from_result(int rc, shmring_segment *seg, PyObject *name);
/* End this attachment (the segment is removed if it was the last one and
 * is not persistent); the memory stays mapped. */
void mapping_leave_now(MappingObject *self);
/* The argument of the *_info functions of the CLI (`fname`): an open
 * Mapping, or NULL with an exception. */
MappingObject *mapping_arg(PyObject *arg, const char *fname);

/* A segment name from Python: the user's spelling (no leading '/') and the
 * POSIX path given to shm_open ("/" + name). */
typedef struct {
    PyObject *obj;
    char path[NAME_MAX + 2];
} segment_name;

/* An O& converter to segment_name. */
int name_converter(PyObject *obj, void *out);

/* ------------------------------------------------------------------------ */
/* Handles (handle.c): what Channel, Queue and TopicEnd share                */
/* ------------------------------------------------------------------------ */

/* The head of a handle object: the Mapping it keeps mapped through `view`
 * while it is open, and the __dict__ and weak references of the Python
 * classes built on it. */
#define HANDLE_HEAD                                                           \
    PyObject_HEAD                                                             \
    PyObject *mapping; /* the MappingObject, kept mapped through `view` */    \
    Py_buffer view;                                                           \
    PyObject *dict;                                                           \
    PyObject *weakrefs;

typedef struct {
    HANDLE_HEAD
} HandleObject;

/* The garbage collector's hooks of a handle that holds no other object;
 * the first and the last step of a handle's dealloc. */
int handle_traverse(HandleObject *self, visitproc visit, void *arg);
int handle_clear(HandleObject *self);
void handle_dealloc_begin(HandleObject *self);
void handle_dealloc_end(HandleObject *self);
/* The _mapping attribute: the Mapping, or None. */
PyObject *handle_get_mapping(HandleObject *self, void *closure);

/* The type object of a handle type (`object_type` has a HANDLE_HEAD):
 * subclassable, garbage collected, with a __dict__ and weak references;
 * `name` is its name in shmring._core; `finalize`: NULL, or what must run
 * before the handle's references are cleared (a cycle's collection). */
#define HANDLE_TYPE(name, doc, object_type, init, dealloc, traverse, clear, finalize, methods, getset) \
    {                                                                                     \
        PyVarObject_HEAD_INIT(NULL, 0)                                                    \
        .tp_name = "shmring._core." name,                                                 \
        .tp_basicsize = sizeof(object_type),                                              \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,        \
        .tp_doc = doc,                                                                    \
        .tp_new = PyType_GenericNew,                                                      \
        .tp_init = (initproc)init,                                                        \
        .tp_dealloc = (destructor)dealloc,                                                \
        .tp_traverse = (traverseproc)traverse,                                            \
        .tp_clear = (inquiry)clear,                                                       \
        .tp_finalize = (destructor)finalize,                                              \
        .tp_methods = methods,                                                            \
        .tp_getset = getset,                                                              \
        .tp_dictoffset = offsetof(object_type, dict),                                     \
        .tp_weaklistoffset = offsetof(object_type, weakrefs),                             \
    }

/* ------------------------------------------------------------------------ */
/* Gate (gate.c): the threads of one Channel handle or Topic end             */
/* ------------------------------------------------------------------------ */

/* A handle may be shared by threads.  Its calls on one end are serialised:
 * the call inside holds the end (a bit of `state`, set and cleared with the
 * GIL held, so that the uncontended way in is a flag test); another call
 * waits for it, the GIL released, in slices, honouring its own timeout and
 * Ctrl-C.  A reserve()/peek() loan holds its end too, for the thread that
 * opened it: other threads wait until it completes, its own thread gets a
 * RuntimeError (it would wait for itself).  close() marks the gate closing,
 * wakes the calls inside (their waits watch `closing`) and the calls
 * waiting to enter (they raise Closed), waits until no call is inside, and
 * only then completes the loans and gives the ends and the mapping back. */

#define GATE_ENDS 2
#define GATE_CLOSING 4 /* in `state`; bits 1 << end: a call is inside that end */

typedef struct LoanObject LoanObject;

typedef struct {
    int state;
    int waiters;                 /* threads sleeping on `seq` (to enter, or to close) */
    pthread_t owner[GATE_ENDS];  /* the thread inside each end (valid while its bit is set) */
    LoanObject *loan[GATE_ENDS]; /* the loan lent from each end, or NULL; borrowed: a loan
                                    clears it when it completes, and holds its owner */
    uint32_t seq;                /* futex word, process-local: bumped when the gate changes and someone waits */
    uint32_t closing;            /* 1 once close() began: the `interrupt` word of the waits in shmring.h */
} Gate;

void gate_wake(Gate *g);

/* The uncontended way in: nobody inside, no loan out, not closing. */
static inline int gate_free(const Gate *g, int end)
{
    return !(g->state & ((1 << end) | GATE_CLOSING)) && g->loan[end] == NULL;
}

static inline void gate_take(Gate *g, int end)
{
    g->state |= 1 << end;
    g->owner[end] = pthread_self();
}

static inline void gate_leave(Gate *g, int end)
{
    g->state &= ~(1 << end);
    if (g->waiters)
        gate_wake(g);
}

/* An entry point's hold on one end of its gate: GATE_HOLD declares it at
 * the top of the function, channel_enter or topic_enter enters the end (and
 * sets `held`), and the end is left on every way out of the function, after
 * the return value is computed (GNU C's cleanup attribute).  While it is
 * held, Python code that runs in between (a finalizer, a signal handler,
 * another thread while the GIL is given away) cannot use that end, nor
 * close the handle and unmap the ring under the call's pointers. */
typedef struct {
    Gate *gate;
    int end;
    int held; /* set once the call entered the end */
} GateHold;

static inline void gate_hold_release(GateHold *hold)
{
    if (hold->held)
        gate_leave(hold->gate, hold->end);
}

#define GATE_HOLD(hold, gate, end) GateHold hold __attribute__((cleanup(gate_hold_release))) = {(gate), (end), 0}

/* The way in when gate_free said no: wait for the call inside and for a
 * loan of another thread; complete a pending loan; refuse what would wait
 * for itself.  0 entered; 1 busy and `no_wait`; -1 with an exception
 * (Closed, RuntimeError, Timeout, a signal handler's). */
int gate_enter_slow(Gate *g, int end, const char *kind, PyObject *name, const char *end_name, uint64_t deadline,
                    int no_wait);
/* Forget the loan of its end (it completed) and let waiters look again. */
void gate_loan_gone(Gate *g, LoanObject *loan);
/* Mark the gate closing and wake its waiters; the owner wakes the calls
 * inside its waits (interrupt_waiters).  Returns whether it was already. */
int gate_begin_close(Gate *g);
/* close() from inside a call on this very handle, in this thread: -1 with
 * RuntimeError (it cannot wait for the call it is inside of), else 0. */
int gate_check_close_here(Gate *g, const char *kind, PyObject *name);
/* Wait until no call is inside the gate (close() does, after
 * gate_begin_close).  0, or -1 when a signal handler raised. */
int gate_wait_empty(Gate *g);
/* A handle inherited through fork: forget the parent's calls and loans. */
void gate_fork_reset(Gate *g);

/* ------------------------------------------------------------------------ */
/* Loan (loan.c): ring memory lent for a with block by reserve() or peek()   */
/* ------------------------------------------------------------------------ */

/* A loan's life: lent (NEW), inside its with block (ENTERED), its block
 * left while views of it were alive (PENDING: the next call on its end
 * completes it, or raises BufferInUseError again), completed (DONE). */
#define LOAN_NEW 0
#define LOAN_ENTERED 1
#define LOAN_PENDING 2
#define LOAN_DONE 3

/* How a loan completes: COMPLETE commits a reserve (commit_len bytes) or
 * consumes a peek; DISCARD drops a reserve or leaves a peek unread. */
#define LOAN_COMPLETE 0
#define LOAN_DISCARD 1

/* The owner's side of completing a loan (the memory work only: the gate
 * and the loan's state are handled by loan_complete).  0, or -1 with an
 * exception (the loan is complete all the same). */
typedef int (*loan_finish_fn)(LoanObject *loan, int how);

struct LoanObject {
    PyObject_HEAD
    PyObject *owner;       /* the Channel or TopicEnd that lent it */
    Gate *gate;            /* the owner's gate (inside `owner`) */
    int end;               /* the gate's end it holds */
    loan_finish_fn finish;
    PyObject *name;        /* the segment's name, for messages */
    const char *kind;      /* "channel" or "topic" */
    unsigned char *ptr;
    Py_ssize_t len;        /* bytes lent */
    Py_ssize_t commit_len; /* a reserve: bytes its message will have (commit(k)) */
    int readonly;          /* 1: a peek; 0: a reserve */
    int state;             /* LOAN_* */
    int cancelled;         /* a reserve dropped by the owner's close(): its exit raises Closed */
    pthread_t thread;      /* the thread that opened it */
    Py_ssize_t exports;    /* live Py_buffer views of it */
    PyObject *view;        /* memoryview of it, made on demand for the memoryview API */
    PyObject *holder;      /* keep_if_held(): what holds its views (str), named in BufferInUseError; a
                              held peek is then left unread, not consumed, once they are gone */
    uint64_t pos, size, seq; /* the owner's bookkeeping (a topic record) */
};

extern PyTypeObject LoanType;

LoanObject *loan_new(PyObject *owner, Gate *gate, int end, loan_finish_fn finish, PyObject *name, const char *kind,
                     unsigned char *ptr, uint64_t len, int readonly);
/* A loan whose block was left while views were alive, met by the next call
 * on its end: complete it now (a reserve is dropped; a peek is consumed, or
 * left unread if keep_if_held() named a holder), or BufferInUseError again
 * (-1). */
int loan_retry(LoanObject *loan);
/* The owner's close(): drop a reserve, consume an entered peek (leave a
 * held one unread).  -1 with BufferInUseError while views of it are alive. */
int loan_cancel(LoanObject *loan);

/* ------------------------------------------------------------------------ */
/* Channel (channel.c, channel_io.c)                                         */
/* ------------------------------------------------------------------------ */

/* The gate's ends; ROLE_* are their bits (1 << end). */
#define END_PRODUCER 0
#define END_CONSUMER 1
#define ROLE_PRODUCER 1
#define ROLE_CONSUMER 2

typedef struct {
    HANDLE_HEAD
    shmring_channel ch;
    uint32_t wait, spin_ns;
    uint64_t handle_id;
    unsigned long generation; /* fork_generation when the roles were claimed */
    uint64_t token;           /* this process's token, valid with `generation` */
    int roles;
    uint64_t next_peer_check_ns; /* try_send/try_recv look at the peer this often */
    int closed;                  /* close() completed: ends and `view` given back */
    Gate gate;                   /* threads: the calls inside, the loans out, closing */
} ChannelObject;

extern PyTypeObject ChannelType;

PyObject *channel_name(ChannelObject *self);
/* CorruptedError about this channel's ring (`what`: which counter).  -1. */
int channel_corrupt(ChannelObject *self, const char *what);
/* Closed: another thread's close() began.  -1. */
int channel_raise_closing(ChannelObject *self);
/* channel_enter (channel_io.c) when the way in is not free, or the end is
 * not claimed yet. */
int channel_enter_slow(ChannelObject *self, int end, int *held, uint64_t deadline, int no_wait);
/* Raise the Timeout of a call that does not wait while another thread's
 * call holds its end.  -1. */
int channel_raise_busy(ChannelObject *self, int end);

/* Wait for data (writer = 0) or `need` free bytes (writer = 1).  0 when the
 * condition may hold (the caller re-checks), -1 with an exception. */
int channel_wait(ChannelObject *self, int writer, uint64_t need, uint64_t deadline, int no_wait);
/* Is the other end dead?  1: the awaited condition holds after all, -1 with
 * PeerGone or CorruptedError, 0: it lives.  _sometimes: at most a slice
 * apart (for the calls that do not wait). */
int channel_peer_check(ChannelObject *self, int writer, uint64_t need);
int channel_peer_check_sometimes(ChannelObject *self, int writer, uint64_t need);
/* A handle inherited through fork: drop the parent's claims and calls. */
void channel_fork_reset(ChannelObject *self);

/* The entry points of channel_io.c, in the method table of channel.c. */
PyObject *channel_send(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *channel_try_send(ChannelObject *self, PyObject *data);
PyObject *channel_send_many(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *channel_recv(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *channel_try_recv(ChannelObject *self, PyObject *ignored);
PyObject *channel_recv_into(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *channel_recv_many(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *channel_reserve(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *channel_reserve_unzeroed(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *channel_peek(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);

/* Queue: core_queue.h (queue.c, queue_ops.c, queue_chunks.c, queue_wait.c, queue_values.c,
 * queue_oob.c) */
#include "core_queue.h"

/* ------------------------------------------------------------------------ */
/* TopicEnd (topic.c, topic_io.c)                                            */
/* ------------------------------------------------------------------------ */

#define TOPIC_PUBLISHER 0
#define TOPIC_SUBSCRIBER 1
#define TOPIC_OBSERVER 2

/* The gate's one end: this publisher's or subscription's calls and its
 * loan (a reserve() holds the topic lock; a peek() the cursor). */
#define TOPIC_END 0

typedef struct {
    HANDLE_HEAD
    shmring_topic t;
    uint32_t spin_ns;
    int role;
    int slot;           /* subscriber: its entry in the table */
    uint64_t cursor;    /* subscriber: next byte to read */
    uint64_t next_seq;  /* subscriber: next message number expected */
    uint64_t token;
    unsigned long generation;
    int closed;         /* close() completed */
    Gate gate;          /* end TOPIC_END */
} TopicEndObject;

extern PyTypeObject TopicEndType;

PyObject *topic_name(TopicEndObject *self);
PyObject *topic_corrupt(TopicEndObject *self, const char *what);
int topic_raise_closing(TopicEndObject *self);
/* Inherited through fork: drop the parent's subscription, loan and calls. */
void topic_fork_reset(TopicEndObject *self);
/* topic_usable when the handle is not initialised, inherited through fork,
 * closed, or of another role: -1 with an exception, or 0. */
int topic_usable_slow(TopicEndObject *self, int role);

/* 0 when usable for a call of `role` (-1: any role), else -1 with an
 * exception. */
static inline int topic_usable(TopicEndObject *self, int role)
{
    if (self->mapping != NULL && self->generation == fork_generation && !self->closed &&
        !(self->gate.state & GATE_CLOSING) && (role < 0 || self->role == role))
        return 0;
    return topic_usable_slow(self, role);
}
/* Take / release the topic lock: 0, 1 on timeout, -1 with an exception. */
int topic_lock(TopicEndObject *self, uint64_t deadline);
void topic_unlock(TopicEndObject *self);
/* The topic lock belongs to the process: a thread that holds it in an open
 * reserve() block would wait for itself.  -1 with RuntimeError then, else 0. */
int topic_check_lock_not_held_here(TopicEndObject *self);
/* Note that `thread` holds (or no longer holds) the topic lock for a
 * reserve() loan of `self`. */
void topic_note_reserve(TopicEndObject *self, int held, pthread_t thread);

/* The entry points of topic_io.c, in the method table of topic.c. */
PyObject *topic_send(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *topic_send_gap(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *topic_send_obj(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *topic_send_many(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *topic_reserve(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *topic_reserve_unzeroed(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *topic_recv(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *topic_recv_bytes(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *topic_recv_many(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *topic_latest_unread(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *topic_peek(TopicEndObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
/* The decoding of a message (an object one is unpickled), `data` stolen. */
PyObject *topic_decode(uint32_t tag, PyObject *data, int raw);

/* ------------------------------------------------------------------------ */
/* Synchronisation primitives (sync*.c)                                      */
/* ------------------------------------------------------------------------ */

/* A primitive at an offset of a mapping.  Its type fixes its size (an
 * Atomic's is 4 or 8, given at construction), checked at construction to
 * fit at that offset, aligned; every call then checks that the mapping is
 * still open (primitive_ok). */
typedef struct {
    PyObject_HEAD
    MappingObject *mapping; /* not an export: the segment may close; see primitive_ok */
    Py_ssize_t offset;      /* of the primitive in the mapping */
    Py_ssize_t size;        /* its bytes, within the mapping from offset */
    unsigned char *ptr;     /* valid while the mapping is open (checked by primitive_ok) */
} PrimitiveObject;

extern PyTypeObject AtomicType;
extern PyTypeObject SemaphoreType;
extern PyTypeObject SpinLockType;
extern PyTypeObject MutexType;
extern PyTypeObject EventType;
extern PyTypeObject ConditionType;

/* The type object of a primitive: every primitive type has the layout
 * PrimitiveObject, its dealloc and the default flags; each has its name in
 * shmring._core, the signature of its constructor, its docstring, methods
 * and tp_init. */
#define PRIMITIVE_TYPE(name, signature, doc, methods, init) \
    {                                                       \
        PyVarObject_HEAD_INIT(NULL, 0)                      \
        .tp_name = "shmring._core." name,                   \
        .tp_basicsize = sizeof(PrimitiveObject),            \
        .tp_dealloc = (destructor)primitive_dealloc,        \
        .tp_flags = Py_TPFLAGS_DEFAULT,                     \
        .tp_doc = name signature "\n--\n\n" doc,            \
        .tp_methods = methods,                              \
        .tp_init = (initproc)init,                          \
        .tp_new = PyType_GenericNew,                        \
    }

/* The type object of a primitive of a fixed size (all but Atomic):
 * Name(mapping, offset), made by primitive_init. */
#define FIXED_PRIMITIVE_TYPE(name, doc, methods) PRIMITIVE_TYPE(name, "(mapping, offset)", doc, methods, primitive_init)

/* tp_init of the primitives of a fixed size (all but Atomic): the args are
 * (mapping, offset); the size comes with the type (sync.c). */
int primitive_init(PrimitiveObject *self, PyObject *args, PyObject *kwds);
/* Check (mapping, offset) for a primitive of `size` bytes aligned to
 * `align`, and fill `self` in.  0, or -1 with an exception. */
int primitive_place(PrimitiveObject *self, PyObject *mapping, Py_ssize_t offset, Py_ssize_t size,
                    Py_ssize_t align);
void primitive_dealloc(PrimitiveObject *self);
/* 0 while the mapping is open, else -1 with ValueError. */
int primitive_ok(PrimitiveObject *self);
/* The 32-bit word at `offset` of the primitive (a count, a state), read
 * for display: an int, or NULL with ValueError once the mapping is closed. */
PyObject *primitive_word_snapshot(PrimitiveObject *self, size_t offset);
/* Keep the mapping mapped while the GIL is released (an export makes the
 * segment's close() refuse).  0, or -1 with an exception. */
int primitive_pin(PrimitiveObject *self, Py_buffer *pin);

/* A primitive's blocking wait: `ready` looks (GIL held; 1 yes, 0 not yet,
 * -1 with an exception), `sleep` sleeps once, the GIL released, up to
 * `until` (a SHMRING_* code; SHMRING_ERR_SYS with errno).  Returns 1
 * (ready), 0 (timed out, or not ready and `no_wait`) or -1 (exception). */
typedef int (*primitive_ready_fn)(PrimitiveObject *self, void *arg);
typedef int (*primitive_sleep_fn)(PrimitiveObject *self, void *arg, uint64_t until);
int primitive_block(PrimitiveObject *self, void *arg, primitive_ready_fn ready, primitive_sleep_fn sleep,
                    int no_wait, uint64_t deadline);

/* acquire(blocking=True, timeout=None), as threading.Lock's. */
int parse_acquire(PyObject *args, PyObject *kwds, const char *fname, int *blocking, int *no_wait,
                  uint64_t *deadline);

/* This process's token, refreshed in a forked child. */
uint64_t process_token_cached(void);

/* ------------------------------------------------------------------------ */
/* The module (module.c: its types and constants, in tables)                 */
/* ------------------------------------------------------------------------ */

/* The flags of the methods called through vectorcall with keywords. */
#define FASTKW (METH_FASTCALL | METH_KEYWORDS)

/* The module functions of each file, in module.c's method table. */
extern PyMethodDef mapping_functions[];
extern PyMethodDef channel_functions[];
extern PyMethodDef sync_functions[];
extern PyMethodDef queue_functions[];
extern PyMethodDef topic_functions[];
extern PyMethodDef array_functions[];
extern PyMethodDef value_functions[];
extern PyMethodDef oob_functions[];
extern PyMethodDef watch_functions[];
extern PyTypeObject WaitSetType;

#endif /* SHMRING_CORE_H */
