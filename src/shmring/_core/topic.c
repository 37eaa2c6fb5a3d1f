/*
 * topic.c - shmring._core.TopicEnd, a publisher, a subscriber or an
 * observer of a broadcast topic (include/shmring/topic.h): the type, its
 * lifetime, the topic lock (and the reserves that hold it), and the
 * observer's latest().  Publishing and subscribing are in topic_io.c.
 */
#include "core.h"

PyObject *topic_name(TopicEndObject *self)
{
    return ((MappingObject *)self->mapping)->name;
}

PyObject *topic_corrupt(TopicEndObject *self, const char *what)
{
    return raise_corrupted("topic", topic_name(self), what);
}

/* Inherited through fork: a subscription, an open loan (and the topic lock
 * a reserve holds) and the calls of other threads are the parent's. */
void topic_fork_reset(TopicEndObject *self)
{
    if (self->generation == fork_generation)
        return;
    self->generation = fork_generation;
    self->token = shmring_token_self();
    if (self->role == TOPIC_SUBSCRIBER) {
        self->closed = 1;
        self->gate.state |= GATE_CLOSING;
    }
    gate_fork_reset(&self->gate);
}

int topic_usable_slow(TopicEndObject *self, int role)
{
    if (self->mapping == NULL) {
        PyErr_SetString(PyExc_ValueError, "topic handle is not initialised");
        return -1;
    }
    topic_fork_reset(self);
    if (self->closed || (self->gate.state & GATE_CLOSING)) {
        PyErr_Format(closed_error, "topic %R: this %s is closed", topic_name(self),
                     self->role == TOPIC_SUBSCRIBER ? "subscription (or one inherited through fork)" : "handle");
        return -1;
    }
    if (role >= 0 && self->role != role) {
        PyErr_Format(PyExc_TypeError, "topic %R: not a %s", topic_name(self),
                     role == TOPIC_PUBLISHER ? "publisher" : "subscription");
        return -1;
    }
    return 0;
}

int topic_raise_closing(TopicEndObject *self)
{
    return raise_closed_meanwhile("topic", topic_name(self),
                                  self->role == TOPIC_SUBSCRIBER ? "subscription" : "publisher");
}

/* Topic locks held by an open reserve(), and by which thread: the lock
 * belongs to the process, so a second lock by that thread (another
 * publisher's send, a subscribe, in the reserve block) would wait forever.
 * A topic is known by its object's identity (device, inode): each publisher
 * and subscription maps it at an address of its own. */
#define RESERVES_MAX 64
static struct {
    uint64_t dev, ino; /* ino 0: a free entry */
    pthread_t thread;
    unsigned long generation; /* fork_generation: a forked child holds none of them */
} open_reserves[RESERVES_MAX];
/* How many entries this process (of fork generation open_reserves_generation)
 * holds: a lock with none held anywhere skips the scan of the table. */
static int open_reserves_count;
static unsigned long open_reserves_generation;

/* Note that `thread` holds (or no longer holds) the lock of `self`'s topic
 * for a reserve() loan.  The loan is completed by its thread, or by
 * another one (close(), garbage collection): hence the explicit thread. */
void topic_note_reserve(TopicEndObject *self, int held, pthread_t thread)
{
    const shmring_segment *seg = &((MappingObject *)self->mapping)->seg;
    int i;
    for (i = 0; i < RESERVES_MAX; i++) {
        if (held && (open_reserves[i].ino == 0 || open_reserves[i].generation != fork_generation)) {
            open_reserves[i].dev = seg->dev;
            open_reserves[i].ino = seg->ino;
            open_reserves[i].thread = thread;
            open_reserves[i].generation = fork_generation;
            if (open_reserves_generation != fork_generation) { /* a forked child: its parent's do not count */
                open_reserves_generation = fork_generation;
                open_reserves_count = 0;
            }
            open_reserves_count++;
            return;
        }
        if (!held && open_reserves[i].ino == seg->ino && open_reserves[i].dev == seg->dev &&
            pthread_equal(open_reserves[i].thread, thread)) {
            open_reserves[i].ino = 0;
            if (open_reserves[i].generation == fork_generation && open_reserves_generation == fork_generation &&
                open_reserves_count > 0)
                open_reserves_count--;
            return;
        }
    }
}

int topic_check_lock_not_held_here(TopicEndObject *self)
{
    const shmring_segment *seg = &((MappingObject *)self->mapping)->seg;
    pthread_t me;
    int i;
    if (open_reserves_count == 0 || open_reserves_generation != fork_generation)
        return 0; /* no reserve() block open in this process: every publish's case */
    me = pthread_self();
    for (i = 0; i < RESERVES_MAX; i++)
        if (open_reserves[i].ino == seg->ino && open_reserves[i].dev == seg->dev &&
            pthread_equal(open_reserves[i].thread, me) && open_reserves[i].generation == fork_generation) {
            PyErr_Format(PyExc_RuntimeError,
                         "topic %R: this thread holds the topic lock in an open reserve() block; finish it first",
                         topic_name(self));
            return -1;
        }
    return 0;
}

int topic_lock(TopicEndObject *self, uint64_t deadline)
{
    shmring_mutex *m = &self->t.ctrl->lock;
    int rc, r;
    if (topic_check_lock_not_held_here(self) < 0)
        return -1;
    r = lock_robust(m, self->token, deadline, &rc);
    if (r != 0)
        return r;
    if (rc == SHMRING_OWNER_DIED) {
        /* A publisher died holding it: a record it had not committed is past
         * tail and invisible; head only ever moved forward.  Nothing to repair. */
        shmring_mutex_consistent(m, self->token);
        return 0;
    }
    if (rc == SHMRING_NOT_RECOVERABLE) {
        topic_corrupt(self, "lock (abandoned in an inconsistent state)");
        return -1;
    }
    return 0;
}

void topic_unlock(TopicEndObject *self)
{
    shmring_mutex_release(&self->t.ctrl->lock, self->token);
}

/* -- the observer ------------------------------------------------------------------ */

/* latest() on the topic: the newest message, or None; no subscription.
 * None also when the newest message was reclaimed (an aborted reserve, or a
 * publisher that died mid-publish, freed its space). */
static PyObject *topic_latest_any(TopicEndObject *self, PyObject *Py_UNUSED(ignored))
{
    unsigned tries;
    if (topic_usable(self, -1) < 0)
        return NULL;
    for (tries = 0; tries < 1000; tries++) {
        /* acquire [T1]; last_pos was stored before tail. */
        uint64_t tail = __atomic_load_n(&self->t.ctrl->tail, __ATOMIC_ACQUIRE);
        uint64_t last = __atomic_load_n(&self->t.ctrl->last_pos, __ATOMIC_RELAXED), cursor = last;
        uint32_t tag;
        const unsigned char *p;
        uint64_t len, seq, size;
        int rc;
        PyObject *data;
        if (last == SHMRING_TOPIC_NO_RECORD)
            Py_RETURN_NONE;
        if (last >= tail) { /* a publish between its two stores: look again */
            if (tries & 7u)
                shmring_cpu_relax();
            else
                sched_yield();
            continue;
        }
        rc = shmring_topic_next(&self->t, &cursor, &tag, &p, &len, &seq, &size);
        if (rc == SHMRING_LAGGED) {
            /* relaxed: has anything been published since? */
            if (__atomic_load_n(&self->t.ctrl->tail, __ATOMIC_ACQUIRE) == tail)
                Py_RETURN_NONE; /* reclaimed and nothing newer */
            continue;
        }
        if (rc != SHMRING_OK || cursor != last)
            return topic_corrupt(self, "newest record");
        data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
        if (data == NULL)
            return NULL;
        shmring_topic_copy_out(PyBytes_AS_STRING(data), p, len); /* atomic words: no cursor holds it */
        if (shmring_topic_still_valid(&self->t, cursor) != SHMRING_OK) {
            Py_DECREF(data);
            continue;
        }
        return topic_decode(tag, data, 0);
    }
    Py_RETURN_NONE; /* last_pos never became valid: a publisher died between its stores */
}

/* close(): from another thread, wake the call blocked on this end (it
 * raises Closed) and return once none is left; then complete the loan (a
 * reserve is dropped and the topic lock released) and free the
 * subscription's slot.  Nothing is ended for the other publishers and
 * subscribers. */
static PyObject *topic_close(TopicEndObject *self, PyObject *Py_UNUSED(ignored))
{
    Gate *g = &self->gate;
    if (self->mapping == NULL || self->closed)
        Py_RETURN_NONE;
    topic_fork_reset(self);
    if (self->closed) /* an inherited subscription: the slot is the parent's */
        Py_RETURN_NONE;
    if (gate_check_close_here(g, "topic", topic_name(self)) < 0)
        return NULL;
    if (!gate_begin_close(g) && (g->state & (1 << TOPIC_END)) && self->role != TOPIC_OBSERVER)
        shmring_topic_interrupt_waiters(&self->t, self->role == TOPIC_PUBLISHER);
    if (gate_wait_empty(g) < 0)
        return NULL;
    if (self->closed)
        Py_RETURN_NONE;
    if (g->loan[TOPIC_END] != NULL && loan_cancel(g->loan[TOPIC_END]) < 0)
        return NULL; /* views still alive: close() again once they are released */
    if (self->role == TOPIC_SUBSCRIBER)
        shmring_topic_unsubscribe(&self->t, self->slot, self->token);
    self->closed = 1;
    if (g->waiters)
        gate_wake(g);
    Py_RETURN_NONE;
}

static PyObject *topic_stats(TopicEndObject *self, PyObject *Py_UNUSED(ignored))
{
    shmring_topic_ctrl *c = self->t.ctrl;
    uint32_t i, subs = 0;
    if (self->mapping == NULL)
        return topic_usable(self, -1) < 0 ? NULL : NULL;
    for (i = 0; i < self->t.max_subscribers; i++)
        /* relaxed: a monitoring snapshot. */
        subs += __atomic_load_n(&self->t.subs[i].token, __ATOMIC_RELAXED) != 0;
    /* relaxed throughout: a monitoring snapshot. */
    return Py_BuildValue("{sKsKsKsKsIsIsK}", "capacity", (unsigned long long)self->t.capacity, "published",
                         (unsigned long long)__atomic_load_n(&c->next_seq, __ATOMIC_RELAXED), "tail",
                         (unsigned long long)__atomic_load_n(&c->tail, __ATOMIC_RELAXED), "head",
                         (unsigned long long)__atomic_load_n(&c->head, __ATOMIC_RELAXED), "subscribers", subs,
                         "max_subscribers", self->t.max_subscribers, "lagged",
                         (unsigned long long)(self->role == TOPIC_SUBSCRIBER
                                                  ? __atomic_load_n(&self->t.subs[self->slot].lagged, __ATOMIC_RELAXED)
                                                  : 0));
}

static int topic_init(TopicEndObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"mapping", "role", "timeout", NULL};
    PyObject *mapping, *timeout = Py_None;
    uint64_t deadline;
    int role;
    MappingObject *m;
    if (self->mapping != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "topic handle already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!i|O:TopicEnd", kwlist, &MappingType, &mapping, &role,
                                     &timeout) ||
        parse_timeout(timeout, &deadline) < 0)
        return -1;
    m = (MappingObject *)mapping;
    if (mapping_check_open(m) < 0)
        return -1;
    if (role < TOPIC_PUBLISHER || role > TOPIC_OBSERVER) {
        PyErr_Format(PyExc_ValueError, "unknown topic role %d", role);
        return -1;
    }
    if (((const shmring_segment_header *)m->seg.base)->kind != SHMRING_KIND_TOPIC) {
        PyErr_Format(PyExc_ValueError, "segment %R is not a topic", m->name);
        return -1;
    }
    if (!m->seg.writable) {
        PyErr_Format(PyExc_ValueError, "segment %R is mapped read-only", m->name);
        return -1;
    }
    if (shmring_topic_attach(&self->t, shmring_segment_payload(&m->seg), shmring_segment_payload_size(&m->seg)) !=
        SHMRING_OK) {
        raise_code(SHMRING_ERR_CORRUPT, m->name);
        return -1;
    }
    if (PyObject_GetBuffer(mapping, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    self->t.interrupt = &self->gate.closing; /* close() from another thread ends the waits */
    Py_INCREF(mapping);
    self->mapping = mapping;
    self->role = role;
    /* relaxed: config, published with the segment. */
    self->spin_ns = __atomic_load_n(&self->t.ctrl->spin_ns, __ATOMIC_RELAXED);
    if (self->spin_ns > SHMRING_MAX_SPIN_NS) /* checked on attach; a peer may rewrite it */
        self->spin_ns = SHMRING_MAX_SPIN_NS;
    self->generation = fork_generation;
    self->token = shmring_token_self();
    if (role == TOPIC_SUBSCRIBER) {
        int lr = topic_lock(self, deadline), slot;
        if (lr != 0) {
            if (lr > 0)
                PyErr_Format(timeout_error, "topic %R: the topic lock was not free in time to subscribe", m->name);
            goto fail;
        }
        slot = shmring_topic_subscribe(&self->t, self->token);
        /* relaxed: read under the lock, with the slot. */
        self->cursor = __atomic_load_n(&self->t.subs[slot < 0 ? 0 : slot].cursor, __ATOMIC_RELAXED);
        self->next_seq = __atomic_load_n(&self->t.subs[slot < 0 ? 0 : slot].next_seq, __ATOMIC_RELAXED);
        topic_unlock(self);
        if (slot < 0) {
            PyErr_Format(PyExc_RuntimeError, "topic %R: all %u subscriber slots are taken by live subscribers",
                         m->name, self->t.max_subscribers);
            goto fail;
        }
        self->slot = slot;
    }
    return 0;
fail:
    PyBuffer_Release(&self->view);
    Py_CLEAR(self->mapping);
    return -1;
}

static void topic_dealloc(TopicEndObject *self)
{
    handle_dealloc_begin((HandleObject *)self);
    if (self->mapping != NULL) {
        /* Dropped without close(): no call is inside and no loan is out
         * (both hold a reference), so this frees the subscription's slot
         * and nothing more. */
        PyObject *r = topic_close(self, NULL);
        if (r == NULL)
            PyErr_WriteUnraisable((PyObject *)self);
        Py_XDECREF(r);
        PyBuffer_Release(&self->view);
    }
    handle_dealloc_end((HandleObject *)self);
}

static PyObject *topic_get_capacity(TopicEndObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->t.capacity);
}

static PyObject *topic_get_policy(TopicEndObject *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(self->t.policy == SHMRING_TOPIC_BLOCK ? "block" : "overwrite");
}

static PyObject *topic_get_closed(TopicEndObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed || self->mapping == NULL || (self->gate.state & GATE_CLOSING));
}

static PyObject *topic_get_lagged(TopicEndObject *self, void *Py_UNUSED(closure))
{
    if (self->mapping == NULL || self->role != TOPIC_SUBSCRIBER)
        return PyLong_FromLong(0);
    /* relaxed: statistics. */
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->t.subs[self->slot].lagged, __ATOMIC_RELAXED));
}

static PyMethodDef topic_methods[] = {
    {"send", (PyCFunction)(void (*)(void))topic_send, FASTKW,
     "send($self, /, data, timeout=None)\n--\n\n"
     "Publish a bytes-like object (under \"block\", waiting up to timeout for room)."},
    {"send_many", (PyCFunction)(void (*)(void))topic_send_many, FASTKW,
     "send_many($self, /, buffers, timeout=None)\n--\n\n"
     "Publish bytes-like messages in order, up to 64 per hold of the topic lock; returns how many.  Each "
     "is checked first (one that can never fit sends nothing); a Timeout says in exc.sent how many went."},
    {"send_gap", (PyCFunction)(void (*)(void))topic_send_gap, FASTKW,
     "send_gap($self, /, missed, timeout=None)\n--\n\n"
     "Publish a gap marker: `missed` (at least 1) messages were lost before they reached this topic.  "
     "Each subscriber that reads it raises Lagged(missed) and reads on past it; it takes `missed` "
     "message numbers; latest() skips it."},
    {"send_obj", (PyCFunction)(void (*)(void))topic_send_obj, FASTKW,
     "send_obj($self, /, obj, timeout=None)\n--\n\nPublish an object (pickled)."},
    {"_reserve_unzeroed", (PyCFunction)(void (*)(void))topic_reserve_unzeroed, FASTKW,
     "_reserve_unzeroed($self, /, n, timeout=None)\n--\n\n"
     "reserve() without zeroing the bytes lent: for a writer that fills every one (send_array)."},
    {"reserve", (PyCFunction)(void (*)(void))topic_reserve, FASTKW,
     "reserve($self, /, n, timeout=None)\n--\n\n"
     "A Loan for a with block, lending n zero-filled bytes of the ring; published on normal exit "
     "(commit(k) to publish only the first k), dropped on an exception.  The topic lock is held for the "
     "block."},
    {"recv", (PyCFunction)(void (*)(void))topic_recv, FASTKW,
     "recv($self, /, timeout=None)\n--\n\nThe next message (an object message unpickled)."},
    {"recv_bytes", (PyCFunction)(void (*)(void))topic_recv_bytes, FASTKW,
     "recv_bytes($self, /, timeout=None)\n--\n\nThe next message's bytes, as they are."},
    {"recv_many", (PyCFunction)(void (*)(void))topic_recv_many, FASTKW,
     "recv_many($self, /, max_messages, timeout=None)\n--\n\n"
     "Between 1 and max_messages messages (object messages unpickled): waits for the first as recv "
     "does, then takes those already published, moving the cursor once past those returned: when one fails "
     "to unpickle, those before it are returned and it and the rest stay unread (the first alone: its error "
     "is raised and it is consumed)."},
    {"_latest_unread", (PyCFunction)(void (*)(void))topic_latest_unread, FASTKW,
     "_latest_unread($self, /, timeout=None)\n--\n\n"
     "Skip to the newest message (Subscription.latest), waiting for one."},
    {"peek", (PyCFunction)(void (*)(void))topic_peek, FASTKW,
     "peek($self, /, timeout=None)\n--\n\n"
     "A Loan for a with block, lending the next message in place, read-only; released at exit "
     "(Lagged then if, under \"overwrite\", a publisher reclaimed it meanwhile)."},
    {"_latest_any", (PyCFunction)topic_latest_any, METH_NOARGS,
     "_latest_any($self, /)\n--\n\nThe newest message, or None (Topic.latest: no subscription)."},
    {"close", (PyCFunction)topic_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Close this publisher or subscription; from another thread it wakes the call blocked on it."},
    {"stats", (PyCFunction)topic_stats, METH_NOARGS, "stats($self, /)\n--\n\nThe topic's counters, as a dict."},
    {NULL, NULL, 0, NULL},
};

static PyObject *topic_get_spin_ns(TopicEndObject *self, void *Py_UNUSED(closure))
{
    /* relaxed: a setting of this handle; see topic_set_spin_ns. */
    return PyLong_FromUnsignedLong(shmring_load_relaxed(&self->spin_ns));
}

/* This handle's poll before a wait sleeps, instead of the topic's: what a
 * subscriber that must wake fast pays for in CPU (the bridge's exporter). */
static int topic_set_spin_ns(TopicEndObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    unsigned long long ns;
    if (value == NULL || !PyLong_Check(value) || PyBool_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "spin_ns must be an int");
        return -1;
    }
    ns = PyLong_AsUnsignedLongLong(value);
    if (ns == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        ns = (unsigned long long)SHMRING_MAX_SPIN_NS + 1;
    }
    if (ns > SHMRING_MAX_SPIN_NS) {
        PyErr_Format(PyExc_ValueError, "spin_ns must be between 0 and %u", SHMRING_MAX_SPIN_NS);
        return -1;
    }
    /* relaxed: a setting, read by this handle's waits (topic_poll), which
     * may be running in another thread; no other memory goes with it. */
    shmring_store_relaxed(&self->spin_ns, (uint32_t)ns);
    return 0;
}

static PyGetSetDef topic_getset[] = {
    {"capacity", (getter)topic_get_capacity, NULL, "ring bytes", NULL},
    {"policy", (getter)topic_get_policy, NULL, "\"block\" or \"overwrite\"", NULL},
    {"closed", (getter)topic_get_closed, NULL, "whether this handle is closed", NULL},
    {"lagged", (getter)topic_get_lagged, NULL, "messages this subscription missed, in all", NULL},
    {"spin_ns", (getter)topic_get_spin_ns, (setter)topic_set_spin_ns,
     "how long this handle's waits poll before they sleep (ns; the topic's setting unless set)", NULL},
    {"_mapping", (getter)handle_get_mapping, NULL, "the Mapping", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject TopicEndType = HANDLE_TYPE(
    "TopicEnd", "A publisher, subscription or observer of a topic segment (use shmring.Topic).",
    TopicEndObject, topic_init, topic_dealloc, handle_traverse, handle_clear, NULL, topic_methods, topic_getset);

static PyObject *core_create_topic(PyObject *Py_UNUSED(module), PyObject *args)
{
    segment_name name;
    size_arg capacity_arg, max_subs_arg; /* negative or huge values are reported as written */
    unsigned long long capacity;
    unsigned int policy, max_subs, spin_ns, mode;
    shmring_segment seg;
    int rc;
    if (!PyArg_ParseTuple(args, "O&O&IO&II:create_topic", name_converter, &name, size_converter, &capacity_arg,
                          &policy, size_converter, &max_subs_arg, &spin_ns, &mode))
        return NULL;
    if (capacity_arg.value < SHMRING_TOPIC_MIN_CAPACITY ||
        (unsigned long long)capacity_arg.value > SHMRING_TOPIC_MAX_CAPACITY || (capacity_arg.value & 15) != 0)
        return PyErr_Format(PyExc_ValueError, "capacity must be a multiple of 16 between %u and %llu, not %R",
                            SHMRING_TOPIC_MIN_CAPACITY, (unsigned long long)SHMRING_TOPIC_MAX_CAPACITY,
                            capacity_arg.obj);
    capacity = (unsigned long long)capacity_arg.value;
    if (policy != SHMRING_TOPIC_BLOCK && policy != SHMRING_TOPIC_OVERWRITE)
        return PyErr_Format(PyExc_ValueError, "unknown topic policy %u", policy);
    if (max_subs_arg.value < 1 || max_subs_arg.value > (long long)SHMRING_TOPIC_MAX_SUBSCRIBERS)
        return PyErr_Format(PyExc_ValueError, "max_subscribers must be between 1 and %u, not %R",
                            SHMRING_TOPIC_MAX_SUBSCRIBERS, max_subs_arg.obj);
    max_subs = (unsigned int)max_subs_arg.value;
    if (mode > 0777)
        return PyErr_Format(PyExc_ValueError, "bad mode");
    if (spin_ns > SHMRING_MAX_SPIN_NS)
        return PyErr_Format(PyExc_ValueError, "spin_ns must be at most %u", SHMRING_MAX_SPIN_NS);
    Py_BEGIN_ALLOW_THREADS
    rc = shmring_segment_create_unpublished(name.path, shmring_topic_payload_size(capacity, max_subs),
                                            SHMRING_KIND_TOPIC, (mode_t)mode, &seg);
    if (rc == SHMRING_OK) {
        shmring_topic_init(shmring_segment_payload(&seg), capacity, policy, max_subs, spin_ns);
        shmring_segment_publish(&seg);
    }
    Py_END_ALLOW_THREADS
    return mapping_from_result(rc, &seg, name.obj);
}

/* One subscriber of topic_info's list: its process, and how far behind the
 * newest message it is.  The cursor and numbers come from shared memory:
 * an impossible one (ahead of the topic, or further behind than the ring
 * holds) is shown as it is, flagged, never used as an index.  The topic's
 * tail and count are read after the subscriber's, so that an honest
 * subscriber that moves on meanwhile is never seen ahead of them. */
static PyObject *subscriber_entry(const shmring_topic *t, uint32_t slot, uint64_t token, uint64_t *behind_bytes)
{
    const shmring_topic_sub *sub = &t->subs[slot];
    /* acquire: pairs with the subscriber's seq_cst stores of its cursor and
     * count [T5], made after it read a tail [T1] and count at least as far. */
    uint64_t cursor = __atomic_load_n(&sub->cursor, __ATOMIC_ACQUIRE);
    uint64_t next = __atomic_load_n(&sub->next_seq, __ATOMIC_ACQUIRE);
    /* acquire: pairs with the publishers' release of the tail [T1]; read
     * after the subscriber's words above. */
    uint64_t tail = __atomic_load_n(&t->ctrl->tail, __ATOMIC_ACQUIRE);
    uint64_t published = __atomic_load_n(&t->ctrl->next_seq, __ATOMIC_ACQUIRE);
    uint64_t lagged = __atomic_load_n(&sub->lagged, __ATOMIC_RELAXED); /* relaxed: a statistic */
    int sane = cursor <= tail && tail - cursor <= t->capacity && next <= published;
    *behind_bytes = sane ? tail - cursor : 0;
    return Py_BuildValue("{sIsLsOsKsKsKsKsKsO}", "slot", slot, "pid", (long long)shmring_token_pid(token), "alive",
                         shmring_token_alive(token) ? Py_True : Py_False, "next_seq", (unsigned long long)next,
                         "cursor", (unsigned long long)cursor, "behind_bytes", (unsigned long long)*behind_bytes,
                         "behind_messages", (unsigned long long)(sane ? published - next : 0), "lagged",
                         (unsigned long long)lagged, "consistent", sane ? Py_True : Py_False);
}

/* topic_info(mapping): counters and subscribers for the tools, from a
 * read-only mapping (no lock taken; a snapshot). */
static PyObject *core_topic_info(PyObject *Py_UNUSED(module), PyObject *arg)
{
    MappingObject *m = mapping_arg(arg, "topic_info");
    shmring_topic t;
    uint32_t i;
    uint64_t slowest = 0, holder;
    PyObject *list;
    if (m == NULL)
        return NULL;
    if (((const shmring_segment_header *)m->seg.base)->kind != SHMRING_KIND_TOPIC ||
        shmring_topic_attach(&t, shmring_segment_payload(&m->seg), shmring_segment_payload_size(&m->seg)) !=
            SHMRING_OK)
        return raise_code(SHMRING_ERR_CORRUPT, m->name);
    if ((list = PyList_New(0)) == NULL)
        return NULL;
    for (i = 0; i < t.max_subscribers; i++) {
        /* relaxed: a monitoring snapshot; a slot freed meanwhile is listed once more. */
        uint64_t token = __atomic_load_n(&t.subs[i].token, __ATOMIC_RELAXED);
        uint64_t behind = 0;
        PyObject *entry;
        if (token == 0)
            continue;
        entry = subscriber_entry(&t, i, token, &behind);
        if (entry == NULL || PyList_Append(list, entry) < 0) {
            Py_XDECREF(entry);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(entry);
        if (behind > slowest)
            slowest = behind;
    }
    /* relaxed from here: a monitoring snapshot. */
    holder = __atomic_load_n(&t.ctrl->lock.owner, __ATOMIC_RELAXED);
    return Py_BuildValue(
        "{sKsssKsKsnsIsKsLsOsIsIsN}", "capacity", (unsigned long long)t.capacity, "policy",
        t.policy == SHMRING_TOPIC_BLOCK ? "block" : "overwrite", "published",
        (unsigned long long)__atomic_load_n(&t.ctrl->next_seq, __ATOMIC_RELAXED), "published_bytes",
        (unsigned long long)__atomic_load_n(&t.ctrl->tail, __ATOMIC_RELAXED), "subscribers", PyList_GET_SIZE(list),
        "max_subscribers", t.max_subscribers, "slowest_behind_bytes", (unsigned long long)slowest, "lock_holder_pid",
        (long long)(holder ? shmring_token_pid(holder) : 0), "lock_holder_alive",
        holder && shmring_token_alive(holder) ? Py_True : Py_False, "subscribers_waiting",
        (unsigned)__atomic_load_n(&t.ctrl->data_waiters, __ATOMIC_RELAXED), "publishers_waiting",
        (unsigned)__atomic_load_n(&t.ctrl->room_waiters, __ATOMIC_RELAXED), "subscriber_list", list);
}

PyMethodDef topic_functions[] = {
    {"topic_info", core_topic_info, METH_O,
     "topic_info($module, mapping, /)\n--\n\nA topic's counters (a snapshot), as a dict."},
    {"create_topic", core_create_topic, METH_VARARGS,
     "create_topic($module, name, capacity, policy, max_subscribers, spin_ns, mode, /)\n--\n\n"
     "A new, initialised topic segment: a Mapping of it."},
    {NULL, NULL, 0, NULL},
};
