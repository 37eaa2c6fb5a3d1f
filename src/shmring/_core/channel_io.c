/*
 * channel_io.c - the calls of a Channel that move messages: send, try_send,
 * send_many; recv, try_recv, recv_into, recv_many; reserve and peek (loans).
 * Each entry point holds its end of the gate (GATE_HOLD) from channel_enter
 * to its return (channel.c says how they enter and wait).
 */
#include "core.h"

static const char *const ARGS_BUFFER_TIMEOUT[] = {"buffer", "timeout"};

/* Enter the end of `hold` for one call: 0, 1 when another call has it and
 * `no_wait`, -1 with an exception.  The end is claimed on its first use;
 * once entered (hold->held), the end is left when the entry point returns.
 * (The slow path's flag is a local of its own: `hold` stays out of memory
 * on the hot path.) */
static inline int channel_enter(ChannelObject *self, GateHold *hold, uint64_t deadline, int no_wait)
{
    int end = hold->end, held = 0, r;
    /* The common way in: the end claimed in this process, nobody inside. */
    if (self->generation == fork_generation && (self->roles & (1 << end)) && gate_free(&self->gate, end)) {
        gate_take(&self->gate, end);
        hold->held = 1;
        return 0;
    }
    r = channel_enter_slow(self, end, &held, deadline, no_wait);
    hold->held = held;
    return r;
}

/* channel_enter for the calls that take a timeout: busy with a zero
 * timeout is a Timeout. */
static inline int channel_enter_timed(ChannelObject *self, GateHold *hold, uint64_t deadline, int no_wait)
{
    int r = channel_enter(self, hold, deadline, no_wait);
    return r > 0 ? channel_raise_busy(self, hold->end) : r;
}

static int check_reader_open(ChannelObject *self)
{
    if (shmring_channel_reader_closed(&self->ch)) {
        PyErr_Format(closed_error, "channel %R: the reader closed the channel", channel_name(self));
        return -1;
    }
    if (shmring_channel_writer_closed(&self->ch)) {
        PyErr_Format(closed_error, "channel %R: the stream was already ended by a writer's close()",
                     channel_name(self));
        return -1;
    }
    return 0;
}

static PyObject *raise_too_big(ChannelObject *self, uint64_t len)
{
    return PyErr_Format(PyExc_ValueError,
                        "channel %R: a message of %llu bytes can never fit (the largest is %llu bytes for a "
                        "capacity of %llu)",
                        channel_name(self), (unsigned long long)len,
                        (unsigned long long)shmring_channel_max_message(self->ch.capacity),
                        (unsigned long long)self->ch.capacity);
}

/* Reserve room for `len` bytes, waiting as the timeout allows. */
static unsigned char *channel_reserve_wait(ChannelObject *self, uint64_t len, uint64_t deadline, int no_wait)
{
    unsigned char *dst;
    for (;;) {
        int rc = shmring_channel_reserve(&self->ch, len, &dst);
        if (rc == SHMRING_OK)
            return dst;
        if (rc == SHMRING_TOO_BIG) {
            raise_too_big(self, len);
            return NULL;
        }
        if (rc == SHMRING_ERR_CORRUPT) {
            channel_corrupt(self, "ring (head counter)");
            return NULL;
        }
        if (check_reader_open(self) < 0)
            return NULL;
        if (channel_wait(self, 1, sizeof(shmring_record) + shmring_align8(len), deadline, no_wait) < 0)
            return NULL;
        if (check_reader_open(self) < 0)
            return NULL;
    }
}

/* Copy one buffer into the ring as a record (not published). */
static int channel_put(ChannelObject *self, const Py_buffer *src, uint64_t deadline, int no_wait)
{
    unsigned char *dst = channel_reserve_wait(self, (uint64_t)src->len, deadline, no_wait);
    if (dst == NULL)
        return -1;
    copy_into_ring(self->ch.capacity, dst, src->buf, (size_t)src->len);
    shmring_channel_commit(&self->ch, (uint64_t)src->len);
    return 0;
}

PyObject *channel_send(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    GATE_HOLD(hold, &self->gate, END_PRODUCER);
    PyObject *a[2];
    Py_buffer src;
    uint64_t deadline;
    int no_wait, rc;
    if ((no_wait = parse_args_timeout("send", args, nargs, kwnames, ARGS_DATA_TIMEOUT, 1, 2, a, &deadline)) < 0)
        return NULL;
    if (PyObject_GetBuffer(a[0], &src, PyBUF_SIMPLE) < 0)
        return NULL;
    rc = channel_enter_timed(self, &hold, deadline, no_wait);
    if (rc == 0)
        rc = check_reader_open(self);
    if (rc == 0)
        rc = channel_put(self, &src, deadline, no_wait);
    PyBuffer_Release(&src);
    if (rc < 0)
        return NULL;
    shmring_channel_publish(&self->ch);
    Py_RETURN_NONE;
}

PyObject *channel_try_send(ChannelObject *self, PyObject *data)
{
    GATE_HOLD(hold, &self->gate, END_PRODUCER);
    Py_buffer src;
    unsigned char *dst;
    int rc;
    if (PyObject_GetBuffer(data, &src, PyBUF_SIMPLE) < 0)
        return NULL;
    rc = channel_enter(self, &hold, 0, 1);
    if (rc != 0 || check_reader_open(self) < 0) {
        PyBuffer_Release(&src);
        if (rc > 0)
            Py_RETURN_FALSE; /* another thread is sending: no room for us now */
        return NULL;
    }
    rc = shmring_channel_reserve(&self->ch, (uint64_t)src.len, &dst);
    if (rc == SHMRING_AGAIN) {
        shmring_channel_publish(&self->ch); /* a padding record may be pending */
        switch (channel_peer_check_sometimes(self, 1, sizeof(shmring_record) + shmring_align8((uint64_t)src.len))) {
        case 0:
            PyBuffer_Release(&src);
            Py_RETURN_FALSE;
        case 1:
            rc = shmring_channel_reserve(&self->ch, (uint64_t)src.len, &dst);
            break;
        default:
            PyBuffer_Release(&src);
            return NULL;
        }
    }
    if (rc != SHMRING_OK) {
        PyBuffer_Release(&src);
        shmring_channel_publish(&self->ch);
        if (rc == SHMRING_AGAIN)
            Py_RETURN_FALSE;
        if (rc == SHMRING_TOO_BIG)
            return PyErr_Format(PyExc_ValueError, "channel %R: a message of %zd bytes can never fit (the largest is %llu bytes)",
                                channel_name(self), src.len,
                                (unsigned long long)shmring_channel_max_message(self->ch.capacity));
        channel_corrupt(self, "ring (head counter)");
        return NULL;
    }
    copy_into_ring(self->ch.capacity, dst, src.buf, (size_t)src.len);
    shmring_channel_commit(&self->ch, (uint64_t)src.len);
    PyBuffer_Release(&src);
    shmring_channel_publish(&self->ch);
    Py_RETURN_TRUE;
}

#define SEND_MANY_STACK 64

/* Write a validated batch.  When its records fit in the ring, room for all
 * of them is awaited first, so that a timeout delivers none; a batch larger
 * than the ring goes in parts (each published as the ring fills up).
 * Returns how many were committed; *failed is set with an exception. */
static Py_ssize_t channel_write_batch(ChannelObject *self, const Py_buffer *bufs, Py_ssize_t n, uint64_t deadline,
                                      int no_wait, int *failed)
{
    shmring_channel *ch = &self->ch;
    uint64_t total = 0, span, pos;
    Py_ssize_t i;
    *failed = 0;
    for (i = 0; i < n; i++)
        total += sizeof(shmring_record) + shmring_align8((uint64_t)bufs[i].len);
    if (total <= ch->capacity) {
        for (;;) {
            int room;
            /* The ring bytes the batch takes from the local tail, padding
             * included (shmring_channel_reserve places records so). */
            pos = ch->tail;
            for (i = 0; i < n; i++)
                pos = shmring_channel_place(ch, pos, (uint64_t)bufs[i].len);
            span = pos - ch->tail;
            if (span > ch->capacity) {
                /* Only from offset 0 does it fit (total <= capacity):
                 * padding to the end of the ring first delivers nothing. */
                int rc = shmring_channel_pad(ch);
                if (rc == SHMRING_OK)
                    continue;
                if (rc == SHMRING_ERR_CORRUPT)
                    goto corrupt;
                if (channel_wait(self, 1, ch->capacity - (ch->tail & ch->mask), deadline, no_wait) < 0 ||
                    check_reader_open(self) < 0)
                    goto fail;
                continue;
            }
            room = shmring_channel_has_room(ch, span);
            if (room < 0)
                goto corrupt;
            if (room > 0)
                break;
            if (channel_wait(self, 1, span, deadline, no_wait) < 0 || check_reader_open(self) < 0)
                goto fail;
        }
        for (i = 0; i < n; i++) {
            unsigned char *dst;
            if (shmring_channel_reserve(ch, (uint64_t)bufs[i].len, &dst) != SHMRING_OK)
                goto corrupt; /* room for the whole batch was seen: only a bad head takes it back */
            copy_into_ring(ch->capacity, dst, bufs[i].buf, (size_t)bufs[i].len);
            shmring_channel_commit(ch, (uint64_t)bufs[i].len);
        }
        return n;
    }
    for (i = 0; i < n; i++)
        if (channel_put(self, &bufs[i], deadline, no_wait) < 0) {
            *failed = 1;
            return i;
        }
    return n;
corrupt:
    channel_corrupt(self, "ring (head counter)");
fail:
    *failed = 1;
    return 0;
}

PyObject *channel_send_many(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    GATE_HOLD(hold, &self->gate, END_PRODUCER);
    PyObject *a[2], *seq, *result = NULL;
    Py_buffer stack[SEND_MANY_STACK], *bufs = stack;
    uint64_t deadline, largest;
    Py_ssize_t i, n, got = 0, count = 0;
    int no_wait, failed;
    no_wait = parse_args_timeout("send_many", args, nargs, kwnames, ARGS_BUFFERS_TIMEOUT, 1, 2, a, &deadline);
    if (no_wait < 0)
        return NULL;
    /* The whole batch is collected and checked before anything is written:
     * a bad item delivers nothing. */
    /* A tuple of its own: getting an item's buffer may run Python code that
     * changes the caller's list. */
    seq = PySequence_Tuple(a[0]);
    if (seq == NULL)
        return NULL;
    n = PyTuple_GET_SIZE(seq);
    if (n > SEND_MANY_STACK) {
        bufs = PyMem_New(Py_buffer, (size_t)n);
        if (bufs == NULL) {
            Py_DECREF(seq);
            return PyErr_NoMemory();
        }
    }
    largest = self->mapping != NULL ? shmring_channel_max_message(self->ch.capacity) : 0;
    for (got = 0; got < n; got++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(seq, got), &bufs[got], PyBUF_SIMPLE) < 0)
            goto done;
        if (self->mapping != NULL && (uint64_t)bufs[got].len > largest) {
            PyErr_Format(PyExc_ValueError,
                         "channel %R: message %zd of the batch has %zd bytes and can never fit (the largest is "
                         "%llu bytes); nothing was sent",
                         channel_name(self), got, bufs[got].len, (unsigned long long)largest);
            got++;
            goto done;
        }
    }
    if (channel_enter_timed(self, &hold, deadline, no_wait) < 0 || check_reader_open(self) < 0) {
        note_sent(0);
        goto done;
    }
    count = channel_write_batch(self, bufs, n, deadline, no_wait, &failed);
    shmring_channel_publish(&self->ch); /* one publication for the batch */
    if (failed)
        note_sent(count);
    else
        result = PyLong_FromSsize_t(count);
done:
    for (i = 0; i < got; i++)
        PyBuffer_Release(&bufs[i]);
    if (bufs != stack)
        PyMem_Free(bufs);
    Py_DECREF(seq);
    return result;
}

/* The next record, waiting as the timeout allows.  Returns 0 with the message in out and len
 * set, -1 with an exception (Closed at the end of a drained stream). */
static int channel_next(ChannelObject *self, const unsigned char **out, uint64_t *len, uint64_t deadline,
                        int no_wait)
{
    for (;;) {
        int rc = shmring_channel_peek(&self->ch, out, len);
        if (rc == SHMRING_OK)
            return 0;
        if (rc == SHMRING_ERR_CORRUPT) {
            channel_corrupt(self, "ring (record header or tail counter)");
            return -1;
        }
        shmring_channel_publish_head(&self->ch); /* padding skipped on the way */
        if (shmring_channel_writer_closed(&self->ch)) {
            /* Re-check: the writer may have published right before closing. */
            rc = shmring_channel_peek(&self->ch, out, len);
            if (rc == SHMRING_OK)
                return 0;
            if (rc == SHMRING_ERR_CORRUPT) {
                channel_corrupt(self, "ring (record header or tail counter)");
                return -1;
            }
            PyErr_Format(closed_error, "channel %R: the writer closed the channel", channel_name(self));
            return -1;
        }
        if (channel_wait(self, 0, 0, deadline, no_wait) < 0)
            return -1;
    }
}

PyObject *channel_recv(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    GATE_HOLD(hold, &self->gate, END_CONSUMER);
    PyObject *timeout, *result;
    const unsigned char *src;
    uint64_t deadline, len;
    int no_wait;
    if (nargs == 0 && kwnames == NULL) {
        deadline = 0;
        no_wait = 0;
    } else {
        no_wait = parse_args_timeout("recv", args, nargs, kwnames, ARGS_TIMEOUT, 0, 1, &timeout, &deadline);
        if (no_wait < 0)
            return NULL;
    }
    if (channel_enter_timed(self, &hold, deadline, no_wait) < 0 ||
        channel_next(self, &src, &len, deadline, no_wait) < 0)
        return NULL;
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    if (result == NULL)
        return NULL;
    copy_maybe_without_gil(PyBytes_AS_STRING(result), src, (size_t)len);
    shmring_channel_consume(&self->ch);
    shmring_channel_publish_head(&self->ch);
    return result;
}

PyObject *channel_try_recv(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    GATE_HOLD(hold, &self->gate, END_CONSUMER);
    PyObject *result;
    const unsigned char *src;
    uint64_t len;
    int rc = channel_enter(self, &hold, 0, 1);
    if (rc != 0) {
        if (rc > 0)
            Py_RETURN_NONE; /* another thread is receiving: nothing for us now */
        return NULL;
    }
    rc = shmring_channel_peek(&self->ch, &src, &len);
    if (rc == SHMRING_AGAIN) {
        shmring_channel_publish_head(&self->ch); /* the producer may be waiting for room */
        if (shmring_channel_writer_closed(&self->ch)) {
            rc = shmring_channel_peek(&self->ch, &src, &len);
            if (rc == SHMRING_AGAIN)
                return PyErr_Format(closed_error, "channel %R: the writer closed the channel", channel_name(self));
        } else {
            switch (channel_peer_check_sometimes(self, 0, 0)) {
            case 0:
                Py_RETURN_NONE;
            case 1:
                rc = shmring_channel_peek(&self->ch, &src, &len);
                if (rc == SHMRING_AGAIN)
                    Py_RETURN_NONE;
                break;
            default:
                return NULL;
            }
        }
    }
    if (rc == SHMRING_ERR_CORRUPT) {
        channel_corrupt(self, "ring (record header or tail counter)");
        return NULL;
    }
    result = PyBytes_FromStringAndSize((const char *)src, (Py_ssize_t)len);
    if (result == NULL)
        return NULL;
    shmring_channel_consume(&self->ch);
    shmring_channel_publish_head(&self->ch);
    return result;
}

PyObject *channel_recv_into(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    GATE_HOLD(hold, &self->gate, END_CONSUMER);
    PyObject *a[2];
    Py_buffer dst;
    const unsigned char *src;
    uint64_t deadline, len;
    int no_wait;
    no_wait = parse_args_timeout("recv_into", args, nargs, kwnames, ARGS_BUFFER_TIMEOUT, 1, 2, a, &deadline);
    if (no_wait < 0)
        return NULL;
    if (PyObject_GetBuffer(a[0], &dst, PyBUF_WRITABLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "recv_into() needs a writable bytes-like object, not %.100s",
                         Py_TYPE(a[0])->tp_name);
        }
        return NULL;
    }
    if (channel_enter_timed(self, &hold, deadline, no_wait) < 0 ||
        channel_next(self, &src, &len, deadline, no_wait) < 0) {
        PyBuffer_Release(&dst);
        return NULL;
    }
    if ((uint64_t)dst.len < len) {
        PyBuffer_Release(&dst);
        return PyErr_Format(PyExc_ValueError,
                            "channel %R: buffer of %zd bytes is too small for the next message of %llu bytes "
                            "(the message stays in the channel)",
                            channel_name(self), dst.len, (unsigned long long)len);
    }
    copy_maybe_without_gil(dst.buf, src, (size_t)len);
    PyBuffer_Release(&dst);
    shmring_channel_consume(&self->ch);
    shmring_channel_publish_head(&self->ch);
    return PyLong_FromUnsignedLongLong(len);
}

PyObject *channel_recv_many(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    GATE_HOLD(hold, &self->gate, END_CONSUMER);
    PyObject *list;
    const unsigned char *src;
    uint64_t deadline, len;
    Py_ssize_t max_messages;
    int no_wait = parse_count_timeout("recv_many", ARGS_MAX_TIMEOUT, args, nargs, kwnames, 1,
                                      "max_messages must be at least 1, not %zd", &max_messages, &deadline);
    if (no_wait < 0)
        return NULL;
    if (channel_enter_timed(self, &hold, deadline, no_wait) < 0 ||
        channel_next(self, &src, &len, deadline, no_wait) < 0)
        return NULL;
    list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (;;) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)src, (Py_ssize_t)len);
        int rc;
        if (b == NULL || PyList_Append(list, b) < 0) {
            Py_XDECREF(b);
            Py_DECREF(list);
            shmring_channel_publish_head(&self->ch);
            return NULL;
        }
        Py_DECREF(b);
        shmring_channel_consume(&self->ch);
        if (PyList_GET_SIZE(list) >= max_messages)
            break;
        rc = shmring_channel_peek(&self->ch, &src, &len);
        if (rc == SHMRING_AGAIN)
            break;
        if (rc != SHMRING_OK) {
            Py_DECREF(list);
            shmring_channel_publish_head(&self->ch);
            channel_corrupt(self, "ring (record header or tail counter)");
            return NULL;
        }
    }
    shmring_channel_publish_head(&self->ch);
    return list;
}

/* -- zero copy: loans -------------------------------------------------------- */

/* A loan of this channel completes (loan_complete): commit or drop a
 * reserve, consume a peek or leave it unread. */
static int channel_loan_finish(LoanObject *l, int how)
{
    ChannelObject *self = (ChannelObject *)l->owner;
    channel_fork_reset(self); /* a loan inherited through fork is the parent's: dropped there */
    if (l->state == LOAN_DONE || how != LOAN_COMPLETE)
        return 0;
    if (l->readonly) {
        shmring_channel_consume(&self->ch);
        shmring_channel_publish_head(&self->ch);
    } else {
        shmring_channel_commit(&self->ch, (uint64_t)l->commit_len);
        shmring_channel_publish(&self->ch);
    }
    return 0;
}

/* reserve() and _reserve_unzeroed() (`fname`): the loan, its bytes zeroed
 * or not. */
static PyObject *channel_lend(ChannelObject *self, const char *fname, int zero, PyObject *const *args,
                              Py_ssize_t nargs, PyObject *kwnames)
{
    GATE_HOLD(hold, &self->gate, END_PRODUCER);
    Py_ssize_t n;
    uint64_t deadline;
    unsigned char *dst;
    int no_wait = parse_count_timeout(fname, ARGS_N_TIMEOUT, args, nargs, kwnames, 0,
                                      "reserve() size must be non-negative, not %zd", &n, &deadline);
    if (no_wait < 0)
        return NULL;
    if (channel_enter_timed(self, &hold, deadline, no_wait) < 0 || check_reader_open(self) < 0)
        return NULL;
    dst = channel_reserve_wait(self, (uint64_t)n, deadline, no_wait);
    if (dst == NULL)
        return NULL;
    if (zero)
        zero_maybe_without_gil(dst, (size_t)n);
    return (PyObject *)loan_new((PyObject *)self, &self->gate, END_PRODUCER, channel_loan_finish,
                                channel_name(self), "channel", dst, (uint64_t)n, 0);
}

PyObject *channel_reserve(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return channel_lend(self, "reserve", 1, args, nargs, kwnames);
}

/* For writers that fill every byte before the block ends (send_array):
 * the zeroing would be a pass over memory for nothing.  Private: a caller
 * that leaves bytes unwritten would send whatever the ring held there. */
PyObject *channel_reserve_unzeroed(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return channel_lend(self, "_reserve_unzeroed", 0, args, nargs, kwnames);
}

PyObject *channel_peek(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    GATE_HOLD(hold, &self->gate, END_CONSUMER);
    PyObject *timeout;
    const unsigned char *src;
    uint64_t deadline, len;
    int no_wait;
    if ((no_wait = parse_args_timeout("peek", args, nargs, kwnames, ARGS_TIMEOUT, 0, 1, &timeout, &deadline)) < 0)
        return NULL;
    if (channel_enter_timed(self, &hold, deadline, no_wait) < 0 ||
        channel_next(self, &src, &len, deadline, no_wait) < 0)
        return NULL;
    return (PyObject *)loan_new((PyObject *)self, &self->gate, END_CONSUMER, channel_loan_finish,
                                channel_name(self), "channel", (unsigned char *)src, len, 1);
}
