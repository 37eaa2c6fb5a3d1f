/*
 * channel.c - shmring._core.Channel, the SPSC channel of
 * include/shmring/channel.h: the type, how a call enters an end (the gate,
 * the claim of the end in shared memory), how it waits (channel_wait), the
 * other end's liveness, and the handle's lifetime.  The calls that move
 * messages are in channel_io.c.
 */
#include "core.h"

/* While waiting, how long the GIL is kept and the ring polled before the
 * wait goes to the strategy's slow path with the GIL released. */
#define HOT_POLL_NS 20000u

/* Tells the handles of this process apart in the claims (GIL held). */
static uint64_t next_handle_id = 1;

PyObject *channel_name(ChannelObject *self)
{
    return ((MappingObject *)self->mapping)->name;
}

int channel_corrupt(ChannelObject *self, const char *what)
{
    raise_corrupted("channel", channel_name(self), what);
    return -1;
}

int channel_raise_closing(ChannelObject *self)
{
    return raise_closed_meanwhile("channel", channel_name(self), "handle");
}

/* The GIL hooks' `closing`: has another thread begun close()? */
static int channel_closing(void *handle)
{
    return (((ChannelObject *)handle)->gate.state & GATE_CLOSING) != 0;
}

/* A handle inherited through fork: the parent's claims, its threads' calls
 * and its loans are not the child's; drop them without touching shared
 * memory. */
void channel_fork_reset(ChannelObject *self)
{
    if (self->generation == fork_generation)
        return;
    self->roles = 0;
    gate_fork_reset(&self->gate);
    self->generation = fork_generation;
    self->token = shmring_token_self();
}

/* -- claiming an end -------------------------------------------------------- */

/* The wait for the other process holding an end to give it back [S11]
 * (shmring_wait_sliced): ready registers as a claim waiter (unless it is
 * the last look) and claims; sleep sleeps on claim_seq, then unregisters. */
typedef struct {
    ChannelObject *self;
    uint64_t *slot, *handle;
    uint32_t seq;
} ClaimWait;

static int claim_wait_ready(void *ctx, int last)
{
    ClaimWait *w = (ClaimWait *)ctx;
    shmring_channel_ctrl *c = w->self->ch.ctrl;
    int rc;
    if (!last)
        w->seq = shmring_channel_claim_wait_prepare(c);
    rc = shmring_channel_claim(w->slot, w->handle, w->self->token, w->self->handle_id);
    if (rc == SHMRING_ROLE_TAKEN)
        return last ? (int)SHMRING_TIMEOUT : (int)SHMRING_AGAIN; /* still registered: the sleep unregisters */
    if (!last)
        shmring_channel_claim_wait_done(c);
    return rc;
}

static int claim_wait_sleep(void *ctx, uint64_t until)
{
    ClaimWait *w = (ClaimWait *)ctx;
    shmring_channel_ctrl *c = w->self->ch.ctrl;
    shmring_futex_wait_until(&c->claim_seq, w->seq, until);
    shmring_channel_claim_wait_done(c);
    return SHMRING_AGAIN;
}

/* Wait for `role`'s end to be given back and claim it.  0 claimed, -1 with
 * an exception: RoleTaken at the deadline, Closed when another thread
 * closes the handle, a signal handler's. */
static int channel_wait_for_end(ChannelObject *self, int role, uint64_t deadline, const char *what)
{
    shmring_channel_ctrl *c = self->ch.ctrl;
    ClaimWait w;
    int rc;
    w.self = self;
    w.slot = role == ROLE_PRODUCER ? &c->producer : &c->consumer;
    w.handle = role == ROLE_PRODUCER ? &c->producer_handle : &c->consumer_handle;
    w.seq = 0;
    rc = gil_wait_sliced(&w, claim_wait_ready, claim_wait_sleep, channel_closing, self, deadline);
    if (rc == SHMRING_OK)
        return 0;
    if (rc == WAIT_CLOSING)
        return channel_raise_closing(self);
    if (rc == SHMRING_TIMEOUT)
        /* relaxed: only to tell who holds it. */
        PyErr_Format(role_taken_error, "channel %R: the %s end is held by live process %lld (it did not give it "
                     "back in time)", channel_name(self), what,
                     (long long)shmring_token_pid(__atomic_load_n(w.slot, __ATOMIC_RELAXED)));
    return -1;
}

/* Take an end of the channel for this handle, once.  While another live
 * process holds it, a blocking call waits for it to be given back (a
 * dropped or closed handle, a process that dies), up to its deadline; then,
 * or at once for a call that does not wait, RoleTaken. */
static int channel_claim(ChannelObject *self, int role, uint64_t deadline, int no_wait)
{
    shmring_channel_ctrl *c = self->ch.ctrl;
    uint64_t *slot = role == ROLE_PRODUCER ? &c->producer : &c->consumer;
    uint64_t *handle = role == ROLE_PRODUCER ? &c->producer_handle : &c->consumer_handle;
    const char *what = role == ROLE_PRODUCER ? "producer" : "consumer";
    int rc = shmring_channel_claim(slot, handle, self->token, self->handle_id);
    if (rc == SHMRING_ROLE_TAKEN) {
        /* relaxed: only to tell who holds it. */
        uint64_t holder = __atomic_load_n(slot, __ATOMIC_RELAXED);
        if (holder == self->token) {
            /* Waiting would wait for ourselves. */
            PyErr_Format(role_taken_error, "channel %R: another handle in this process is already the %s; use that one",
                         channel_name(self), what);
            return -1;
        }
        if (no_wait) {
            PyErr_Format(role_taken_error, "channel %R: the %s end is held by live process %lld", channel_name(self),
                         what, (long long)shmring_token_pid(holder));
            return -1;
        }
        if (channel_wait_for_end(self, role, deadline, what) < 0)
            return -1;
    }
    rc = role == ROLE_PRODUCER ? shmring_channel_producer_start(&self->ch) : shmring_channel_consumer_start(&self->ch);
    if (rc != SHMRING_OK) {
        shmring_channel_unclaim(c, role == ROLE_PRODUCER, self->token, self->handle_id);
        return channel_corrupt(self, "ring (counters)");
    }
    self->roles |= role;
    return 0;
}

/* -- entering an end --------------------------------------------------------- */

int channel_enter_slow(ChannelObject *self, int end, int *held, uint64_t deadline, int no_wait)
{
    int role = 1 << end;
    if (self->mapping == NULL) {
        PyErr_SetString(PyExc_ValueError, "channel is not initialised: use shmring.Channel.create or open");
        return -1;
    }
    if (self->generation != fork_generation)
        channel_fork_reset(self);
    if (gate_free(&self->gate, end)) {
        gate_take(&self->gate, end);
    } else {
        int r = gate_enter_slow(&self->gate, end, "channel", channel_name(self),
                                end == END_PRODUCER ? "sending" : "receiving", deadline, no_wait);
        if (r != 0)
            return r;
    }
    *held = 1;
    if (!(self->roles & role) && channel_claim(self, role, deadline, no_wait) < 0)
        return -1;
    return 0;
}

int channel_raise_busy(ChannelObject *self, int end)
{
    PyErr_Format(timeout_error, "channel %R: another thread's %s call is running on this handle",
                 channel_name(self), end == END_PRODUCER ? "sending" : "receiving");
    return -1;
}

/* -- waiting ------------------------------------------------------------------ */

int channel_peer_check(ChannelObject *self, int writer, uint64_t need)
{
    shmring_channel *ch = &self->ch;
    /* relaxed: a snapshot for a liveness check; claims are CAS'd. */
    uint64_t peer = __atomic_load_n(writer ? &ch->ctrl->consumer : &ch->ctrl->producer, __ATOMIC_RELAXED);
    int r;
    if (peer == 0 || shmring_token_alive(peer))
        return 0;
    r = shmring_channel_ready(ch, writer, need);
    if (r > 0)
        return 1;
    if (r < 0)
        channel_corrupt(self, writer ? "ring (head counter)" : "ring (tail counter)");
    else
        PyErr_Format(peer_gone_error, "channel %R: the %s process %lld died", channel_name(self),
                     writer ? "consumer" : "producer", (long long)shmring_token_pid(peer));
    return -1;
}

int channel_peer_check_sometimes(ChannelObject *self, int writer, uint64_t need)
{
    /* Looking costs a read of /proc: at most every slice. */
    uint64_t now = shmring_now_ns();
    if (now < self->next_peer_check_ns)
        return 0;
    self->next_peer_check_ns = now + SHMRING_WAIT_SLICE_NS;
    return channel_peer_check(self, writer, need);
}

/* Before a wait: a writer publishes what it committed, so that the consumer
 * can make room; a handle that is its own consumer, while no call or loan
 * uses that end, steps over the padding record it may have just written
 * (nobody else will).  0, or -1 with CorruptedError. */
static int channel_wait_prepare(ChannelObject *self, int writer)
{
    shmring_channel *ch = &self->ch;
    if (!writer)
        return 0;
    shmring_channel_publish(ch);
    if ((self->roles & ROLE_CONSUMER) && !(self->gate.state & ROLE_CONSUMER) &&
        self->gate.loan[END_CONSUMER] == NULL) {
        const unsigned char *p;
        uint64_t n;
        if (shmring_channel_peek(ch, &p, &n) == SHMRING_ERR_CORRUPT)
            return -1;
        shmring_channel_publish_head(ch);
    }
    return 0;
}

/* The hot poll, with the GIL held: a reply that comes within microseconds
 * costs neither a GIL hand-off nor a system call.  1 ready, 0 not in
 * `hot_ns`, -1 corrupt. */
static int channel_hot_poll(ChannelObject *self, int writer, uint64_t need, uint64_t hot_ns, uint64_t deadline)
{
    uint64_t now = shmring_now_ns();
    unsigned i;
    for (i = 1; hot_ns > 0; i++) {
        int r = shmring_channel_ready(&self->ch, writer, need);
        if (r != 0)
            return r;
        shmring_cpu_relax();
        if ((i & 31u) == 0) {
            uint64_t t = shmring_now_ns();
            if (t - now >= hot_ns || (deadline && t >= deadline))
                break;
        }
    }
    return 0;
}

/* Wait for data (writer = 0) or for `need` free bytes (writer = 1): the hot
 * poll, then shmring_channel_wait_sliced with the GIL hooks (the strategy's
 * waits in slices, the GIL released; between slices the other end's
 * liveness, a close() of another thread, signals).  Returns 0 when the
 * condition may hold (the caller re-checks), -1 with an exception set. */
int channel_wait(ChannelObject *self, int writer, uint64_t need, uint64_t deadline, int no_wait)
{
    uint32_t strategy = self->wait, spin = self->spin_ns;
    const char *counter = writer ? "ring (head counter)" : "ring (tail counter)";
    GilWait gil;
    int r;
    if (channel_wait_prepare(self, writer) < 0)
        return channel_corrupt(self, counter);
    if (no_wait) {
        if ((r = channel_peer_check(self, writer, need)) != 0)
            return r > 0 ? 0 : -1;
        PyErr_Format(timeout_error, "channel %R: %s", channel_name(self), writer ? "full" : "empty");
        return -1;
    }
    if (strategy != SHMRING_WAIT_BLOCK && strategy != SHMRING_WAIT_SEMAPHORE) {
        uint32_t hot_ns = strategy == SHMRING_WAIT_ADAPTIVE && spin < HOT_POLL_NS ? spin : HOT_POLL_NS;
        if (strategy == SHMRING_WAIT_ADAPTIVE)
            spin -= hot_ns; /* the rest of the spin window: in the first slice */
        r = channel_hot_poll(self, writer, need, hot_ns, deadline);
        if (r != 0)
            return r > 0 ? 0 : channel_corrupt(self, counter);
    }
    gil_wait_init(&gil, channel_closing, self);
    r = shmring_channel_wait_sliced(&self->ch, writer, need, strategy, spin, deadline, &gil.hooks);
    switch (r) {
    case SHMRING_OK:
        return 0;
    case SHMRING_TIMEOUT:
        PyErr_Format(timeout_error, "channel %R: timed out waiting for %s", channel_name(self),
                     writer ? "room to send" : "a message");
        return -1;
    case SHMRING_PEER_GONE:
        PyErr_Format(peer_gone_error, "channel %R: the %s process %lld died", channel_name(self),
                     writer ? "consumer" : "producer",
                     (long long)shmring_token_pid(shmring_channel_dead_peer(&self->ch, writer)));
        return -1;
    case SHMRING_ERR_CORRUPT:
        return channel_corrupt(self, counter);
    case SHMRING_ERR_SYS:
        if (channel_closing(self))
            return channel_raise_closing(self); /* the interrupt word: close() began */
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    case WAIT_CLOSING:
        return channel_raise_closing(self);
    default:
        return -1; /* a signal handler raised */
    }
}

/* -- lifetime ------------------------------------------------------------ */

static int channel_init(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"mapping", "wait", "spin_ns", NULL};
    PyObject *mapping;
    unsigned int wait = 0;
    long long spin_ns = -1;
    const shmring_segment_header *h;
    MappingObject *m;
    if (self->mapping != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "channel already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|IL:Channel", kwlist, &MappingType, &mapping, &wait, &spin_ns))
        return -1;
    m = (MappingObject *)mapping;
    if (mapping_check_open(m) < 0)
        return -1;
    h = (const shmring_segment_header *)m->seg.base;
    if (h->kind != SHMRING_KIND_CHANNEL) {
        PyErr_Format(PyExc_ValueError, "segment %R is not a channel", m->name);
        return -1;
    }
    if (wait > SHMRING_WAIT_MAX) {
        PyErr_Format(PyExc_ValueError, "unknown wait strategy %u", wait);
        return -1;
    }
    if (spin_ns > (long long)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "spin_ns is too large");
        return -1;
    }
    if (!m->seg.writable) {
        PyErr_Format(PyExc_ValueError, "segment %R is mapped read-only", m->name);
        return -1;
    }
    {
        shmring_channel attached;
        if (shmring_channel_attach(&attached, shmring_segment_payload(&m->seg),
                                   shmring_segment_payload_size(&m->seg)) != SHMRING_OK) {
            raise_code(SHMRING_ERR_CORRUPT, m->name);
            return -1;
        }
        if (wait == SHMRING_WAIT_SEMAPHORE && attached.wait != SHMRING_WAIT_SEMAPHORE) {
            PyErr_Format(PyExc_ValueError,
                         "channel %R was not created with wait=\"semaphore\": its producer posts no semaphore",
                         m->name);
            return -1;
        }
        if (PyObject_GetBuffer(mapping, &self->view, PyBUF_WRITABLE) < 0)
            return -1;
        self->ch = attached;
    }
    self->ch.interrupt = &self->gate.closing; /* close() from another thread ends the waits */
    Py_INCREF(mapping);
    self->mapping = mapping;
    self->wait = wait ? wait : self->ch.wait;
    self->spin_ns = spin_ns >= 0 ? (uint32_t)spin_ns : self->ch.spin_ns;
    self->handle_id = next_handle_id++;
    self->generation = fork_generation;
    self->token = shmring_token_self();
    return 0;
}

/* Give up this handle's ends after publishing what it committed and handing
 * back what it consumed; with `end_stream`, close them too (close(): a
 * producer's close ends the stream, a consumer's stops the writer). */
static void channel_release_roles(ChannelObject *self, int end_stream)
{
    shmring_channel_ctrl *c = self->ch.ctrl;
    channel_fork_reset(self); /* inherited through fork: nothing of ours */
    if (self->roles & ROLE_PRODUCER) {
        shmring_channel_publish(&self->ch);
        if (end_stream)
            shmring_channel_mark_closed(&self->ch, 1);
        shmring_channel_unclaim(c, 1, self->token, self->handle_id);
    }
    if (self->roles & ROLE_CONSUMER) {
        shmring_channel_publish_head(&self->ch);
        if (end_stream)
            shmring_channel_mark_closed(&self->ch, 0);
        shmring_channel_unclaim(c, 0, self->token, self->handle_id);
    }
    self->roles = 0;
}

/* A handle collected without close() gives its claims back, and nothing
 * more: garbage collection never ends a stream (only close() does, or the
 * death of the process holding the end, which the peer sees as PeerGone).
 * Another handle or process may then claim the ends and go on.  Once the
 * process is exiting (leave_all ran), a handle it drops keeps its claims,
 * as a process that dies does: the peer sees PeerGone once it is gone,
 * after everything it published. */
static void channel_give_back(ChannelObject *self)
{
    if (process_exiting) {
        channel_fork_reset(self);
        if (self->roles & ROLE_PRODUCER)
            shmring_channel_publish(&self->ch);
        if (self->roles & ROLE_CONSUMER)
            shmring_channel_publish_head(&self->ch);
        return;
    }
    channel_release_roles(self, 0);
}

static PyObject *channel_close(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    Gate *g = &self->gate;
    int e;
    if (self->mapping == NULL || self->closed)
        Py_RETURN_NONE;
    channel_fork_reset(self);
    if (gate_check_close_here(g, "channel", channel_name(self)) < 0)
        return NULL;
    /* Wake the calls of other threads (their waits end with Closed), then
     * wait until none is inside: they hold pointers into the ring. */
    if (!gate_begin_close(g)) {
        if (g->state & ROLE_PRODUCER)
            shmring_channel_interrupt_waiters(&self->ch, 1);
        if (g->state & ROLE_CONSUMER)
            shmring_channel_interrupt_waiters(&self->ch, 0);
    }
    if (gate_wait_empty(g) < 0)
        return NULL;
    if (self->closed) /* another thread's close() finished meanwhile */
        Py_RETURN_NONE;
    for (e = 0; e < GATE_ENDS; e++)
        if (g->loan[e] != NULL && loan_cancel(g->loan[e]) < 0)
            return NULL; /* views still alive: close() again once they are released */
    channel_release_roles(self, 1);
    PyBuffer_Release(&self->view);
    self->closed = 1;
    if (g->waiters)
        gate_wake(g);
    Py_RETURN_NONE;
}

static void channel_dealloc(ChannelObject *self)
{
    handle_dealloc_begin((HandleObject *)self);
    if (self->mapping != NULL && !self->closed) {
        /* Dropped without close(): loans hold a reference, calls hold one,
         * so neither is left. */
        channel_give_back(self);
        PyBuffer_Release(&self->view);
    }
    handle_dealloc_end((HandleObject *)self);
}

/* Counters, fill level and both ends of a channel, as a dict. */
static PyObject *stats_dict(const shmring_channel *ch)
{
    shmring_channel_ctrl *c = ch->ctrl;
    uint64_t head, tail, producer, consumer;
    /* relaxed throughout: a monitoring snapshot, not a synchronisation. */
    head = __atomic_load_n(&c->head, __ATOMIC_RELAXED);
    tail = __atomic_load_n(&c->tail, __ATOMIC_RELAXED);
    producer = __atomic_load_n(&c->producer, __ATOMIC_RELAXED);
    consumer = __atomic_load_n(&c->consumer, __ATOMIC_RELAXED);
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:L,s:O,s:L,s:O,s:O,s:O,s:I,s:I,s:O,s:O}",
        "capacity", (unsigned long long)ch->capacity,
        "head", (unsigned long long)head,
        "tail", (unsigned long long)tail,
        "fill_bytes", (unsigned long long)(tail - head <= ch->capacity ? tail - head : 0),
        "sent_messages", (unsigned long long)__atomic_load_n(&c->sent_msgs, __ATOMIC_RELAXED),
        "sent_bytes", (unsigned long long)__atomic_load_n(&c->sent_bytes, __ATOMIC_RELAXED),
        "received_messages", (unsigned long long)__atomic_load_n(&c->recv_msgs, __ATOMIC_RELAXED),
        "received_bytes", (unsigned long long)__atomic_load_n(&c->recv_bytes, __ATOMIC_RELAXED),
        "producer_blocked", (unsigned long long)__atomic_load_n(&c->producer_blocked, __ATOMIC_RELAXED),
        "consumer_blocked", (unsigned long long)__atomic_load_n(&c->consumer_blocked, __ATOMIC_RELAXED),
        "producer_pid", (long long)shmring_token_pid(producer),
        "producer_alive", shmring_token_alive(producer) ? Py_True : Py_False,
        "consumer_pid", (long long)shmring_token_pid(consumer),
        "consumer_alive", shmring_token_alive(consumer) ? Py_True : Py_False,
        "writer_closed", __atomic_load_n(&c->writer_closed, __ATOMIC_RELAXED) ? Py_True : Py_False,
        "reader_closed", __atomic_load_n(&c->reader_closed, __ATOMIC_RELAXED) ? Py_True : Py_False,
        "wait", (unsigned)__atomic_load_n(&c->wait, __ATOMIC_RELAXED),
        "spin_ns", (unsigned)__atomic_load_n(&c->spin_ns, __ATOMIC_RELAXED),
        "producer_waiting", __atomic_load_n(&c->producer_waiting, __ATOMIC_RELAXED) ? Py_True : Py_False,
        "consumer_waiting", __atomic_load_n(&c->consumer_waiting, __ATOMIC_RELAXED) ? Py_True : Py_False);
}

static PyObject *channel_stats(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mapping == NULL || self->closed || (self->gate.state & GATE_CLOSING))
        return PyErr_Format(closed_error, "channel is closed");
    return stats_dict(&self->ch);
}

/* channel_info(mapping) -> dict: stats of a channel segment mapped (even
 * read-only) without claiming or attaching anything; for the CLI. */
static PyObject *core_channel_info(PyObject *Py_UNUSED(module), PyObject *arg)
{
    MappingObject *m = mapping_arg(arg, "channel_info");
    shmring_channel ch;
    if (m == NULL)
        return NULL;
    if (((const shmring_segment_header *)m->seg.base)->kind != SHMRING_KIND_CHANNEL)
        return PyErr_Format(PyExc_ValueError, "segment %R is not a channel", m->name);
    if (shmring_channel_attach(&ch, shmring_segment_payload(&m->seg), shmring_segment_payload_size(&m->seg)) !=
        SHMRING_OK)
        return raise_code(SHMRING_ERR_CORRUPT, m->name);
    return stats_dict(&ch);
}

static PyObject *channel_get_capacity(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->ch.capacity);
}

static PyObject *channel_get_max_message(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->ch.capacity ? shmring_channel_max_message(self->ch.capacity) : 0);
}

static PyObject *channel_get_closed(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed || (self->gate.state & GATE_CLOSING));
}

static PyObject *channel_get_wait(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(self->wait);
}

static PyObject *channel_get_spin_ns(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(self->spin_ns);
}

static PyMethodDef channel_methods[] = {
    {"send", (PyCFunction)(void (*)(void))channel_send, FASTKW,
     "send($self, /, data, timeout=None)\n--\n\n"
     "Copy a bytes-like object into the channel; blocks while it is full."},
    {"try_send", (PyCFunction)channel_try_send, METH_O,
     "try_send($self, data, /)\n--\n\n"
     "Send if there is room now: True, else False (False too while another thread is sending)."},
    {"send_many", (PyCFunction)(void (*)(void))channel_send_many, FASTKW,
     "send_many($self, /, buffers, timeout=None)\n--\n\n"
     "One publication of every buffer; returns how many.  The batch is checked whole before anything is "
     "written (a bad item sends nothing); a batch whose records fit in the ring waits for room for all of "
     "them (a Timeout then sent nothing: exc.sent == 0); a larger one goes in parts, and a Timeout says in "
     "exc.sent how many were delivered."},
    {"recv", (PyCFunction)(void (*)(void))channel_recv, FASTKW,
     "recv($self, /, timeout=None)\n--\n\nThe next message (bytes); blocks while the channel is empty."},
    {"try_recv", (PyCFunction)channel_try_recv, METH_NOARGS,
     "try_recv($self, /)\n--\n\n"
     "A message if one is there, else None (None too while another thread is receiving)."},
    {"recv_into", (PyCFunction)(void (*)(void))channel_recv_into, FASTKW,
     "recv_into($self, /, buffer, timeout=None)\n--\n\n"
     "Copy the next message into a writable buffer; returns its length."},
    {"recv_many", (PyCFunction)(void (*)(void))channel_recv_many, FASTKW,
     "recv_many($self, /, max_messages, timeout=None)\n--\n\n"
     "Every waiting message (a list of bytes), up to max_messages; waits for the first."},
    {"_reserve_unzeroed", (PyCFunction)(void (*)(void))channel_reserve_unzeroed, FASTKW,
     "_reserve_unzeroed($self, /, n, timeout=None)\n--\n\n"
     "reserve() without zeroing the bytes lent: for a writer that fills every one (send_array)."},
    {"reserve", (PyCFunction)(void (*)(void))channel_reserve, FASTKW,
     "reserve($self, /, n, timeout=None)\n--\n\n"
     "A Loan for a with block, lending n zero-filled writable bytes of the ring; committed on exit "
     "(commit(k) to send only the first k)."},
    {"peek", (PyCFunction)(void (*)(void))channel_peek, FASTKW,
     "peek($self, /, timeout=None)\n--\n\n"
     "A Loan for a with block, lending the next message read-only; released on exit."},
    {"stats", (PyCFunction)channel_stats, METH_NOARGS,
     "stats($self, /)\n--\n\nCounters, fill level and both ends, as a dict."},
    {"close", (PyCFunction)channel_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Give up this handle; a writer's close ends the stream, a reader's stops the writer.  From another "
     "thread it wakes the calls blocked on this handle (they raise Closed) and returns once none is left."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef channel_getset[] = {
    {"capacity", (getter)channel_get_capacity, NULL, "Ring size in bytes.", NULL},
    {"max_message", (getter)channel_get_max_message, NULL, "Largest message that fits, in bytes.", NULL},
    {"closed", (getter)channel_get_closed, NULL, "True once this handle is closed.", NULL},
    {"wait_code", (getter)channel_get_wait, NULL, "This handle's wait strategy (WAIT_* constant).", NULL},
    {"spin_ns", (getter)channel_get_spin_ns, NULL, "This handle's adaptive spin window in ns.", NULL},
    {"_mapping", (getter)handle_get_mapping, NULL, "The underlying Mapping.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ChannelType = HANDLE_TYPE(
    "Channel", "Channel(mapping, wait=0, spin_ns=-1): the native SPSC channel; use shmring.Channel.",
    ChannelObject, channel_init, channel_dealloc, handle_traverse, handle_clear, NULL, channel_methods, channel_getset);

static PyObject *core_create_channel(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    size_arg capacity_arg; /* a negative or huge size is reported as written */
    unsigned long long capacity;
    unsigned int wait, spin_ns, mode;
    shmring_segment seg;
    int rc;
    if (!PyArg_ParseTuple(args, "O&O&III:create_channel", name_converter, &name, size_converter, &capacity_arg,
                          &wait, &spin_ns, &mode))
        return NULL;
    capacity = (unsigned long long)capacity_arg.value;
    if (capacity_arg.value < SHMRING_CHANNEL_MIN_CAPACITY || capacity > SHMRING_CHANNEL_MAX_CAPACITY ||
        (capacity & (capacity - 1)) != 0)
        return PyErr_Format(PyExc_ValueError, "capacity must be a power of two between %u and %llu, not %R",
                            SHMRING_CHANNEL_MIN_CAPACITY, (unsigned long long)SHMRING_CHANNEL_MAX_CAPACITY,
                            capacity_arg.obj);
    if (wait == 0 || wait > SHMRING_WAIT_MAX)
        return PyErr_Format(PyExc_ValueError, "unknown wait strategy %u", wait);
    Py_BEGIN_ALLOW_THREADS
    rc = shmring_segment_create_unpublished(name.path, shmring_channel_payload_size(capacity), SHMRING_KIND_CHANNEL,
                                            (mode_t)mode, &seg);
    if (rc == SHMRING_OK) {
        shmring_channel_init(shmring_segment_payload(&seg), shmring_segment_payload_size(&seg), capacity, wait,
                             spin_ns);
        shmring_segment_publish(&seg);
    }
    Py_END_ALLOW_THREADS
    return mapping_from_result(rc, &seg, name.obj);
}


PyMethodDef channel_functions[] = {
    {"channel_info", core_channel_info, METH_O,
     "channel_info($module, mapping, /)\n--\n\nCounters, fill level and both ends of a channel segment."},
    {"create_channel", core_create_channel, METH_VARARGS,
     "create_channel($module, name, capacity, wait, spin_ns, mode, /)\n--\n\n"
     "A new, initialised channel segment: a Mapping of it."},
    {NULL, NULL, 0, NULL},
};
