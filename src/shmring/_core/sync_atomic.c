/*
 * sync_atomic.c - shmring._core.Atomic: a signed 32- or 64-bit integer at an
 * offset of a mapping, with the atomic operations at the memory order the
 * caller names, and futex wait/notify on it.
 *
 * Each atomic here is the user's own operation: its order is the one the
 * user asked for, and what it pairs with is the user's protocol.  The
 * __atomic builtins take the order as a compile-time constant (a variable
 * one would be taken as seq_cst), so each operation is a switch over the
 * orders, for each width (the builtins also need the pointer's type).
 */
#include "core.h"

/* Memory order codes (sync.py's _ORDERS). */
#define ORDER_RELAXED 0
#define ORDER_ACQUIRE 1
#define ORDER_RELEASE 2
#define ORDER_ACQ_REL 3
#define ORDER_SEQ_CST 4

/* The read-modify-write operations. */
#define RMW_EXCHANGE 0
#define RMW_ADD 1
#define RMW_SUB 2
#define RMW_AND 3
#define RMW_OR 4
#define RMW_XOR 5

static int order_ok(int order, int is_load, int is_store)
{
    if (order < ORDER_RELAXED || order > ORDER_SEQ_CST)
        goto bad;
    if (is_load && (order == ORDER_RELEASE || order == ORDER_ACQ_REL))
        goto bad;
    if (is_store && (order == ORDER_ACQUIRE || order == ORDER_ACQ_REL))
        goto bad;
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, is_load ? "a load takes order relaxed, acquire or seq_cst"
                                      : is_store ? "a store takes order relaxed, release or seq_cst"
                                                 : "unknown memory order");
    return -1;
}

/* -- the operations, for both widths (order_ok has checked `order`) ---------- */

/* Each operation is written once, as a macro over `p`, a pointer of either
 * width, and expanded by FOR_WIDTH for the atomic's own: the __atomic
 * builtins are type-generic, but they need the pointer's type and take the
 * order as a constant. */

/* Run `stmt` with `p` the atomic's pointer, typed for its width. */
#define FOR_WIDTH(self, p, stmt)               \
    if ((self)->size == 4) {                   \
        uint32_t *p = (uint32_t *)(self)->ptr; \
        stmt                                   \
    } else {                                   \
        uint64_t *p = (uint64_t *)(self)->ptr; \
        stmt                                   \
    }

/* Return *p, read at `order`. */
#define LOAD_ORDERED(p, order)                          \
    switch (order) {                                    \
    case ORDER_RELAXED: return shmring_load_relaxed(p); \
    case ORDER_ACQUIRE: return shmring_load_acquire(p); \
    default: return shmring_load_seq_cst(p);            \
    }

/* Write v (truncated to the width) to *p at `order`. */
#define STORE_ORDERED(p, v, order)                                              \
    switch (order) {                                                            \
    case ORDER_RELAXED: shmring_store_relaxed(p, (__typeof__(*(p)))(v)); break; \
    case ORDER_RELEASE: shmring_store_release(p, (__typeof__(*(p)))(v)); break; \
    default: shmring_store_seq_cst(p, (__typeof__(*(p)))(v)); break;            \
    }

/* Return the old value of *p, changed by `op` with x at the constant
 * order `mo`. */
#define RMW_AT(p, op, x, mo)                                                     \
    switch (op) {                                                                \
    case RMW_EXCHANGE: return __atomic_exchange_n(p, (__typeof__(*(p)))(x), mo); \
    case RMW_ADD: return __atomic_fetch_add(p, (__typeof__(*(p)))(x), mo);       \
    case RMW_SUB: return __atomic_fetch_sub(p, (__typeof__(*(p)))(x), mo);       \
    case RMW_AND: return __atomic_fetch_and(p, (__typeof__(*(p)))(x), mo);       \
    case RMW_OR: return __atomic_fetch_or(p, (__typeof__(*(p)))(x), mo);         \
    default: return __atomic_fetch_xor(p, (__typeof__(*(p)))(x), mo);            \
    }

/* RMW_AT at `order`. */
#define RMW_ORDERED(p, op, x, order)                       \
    switch (order) {                                       \
    case ORDER_RELAXED: RMW_AT(p, op, x, __ATOMIC_RELAXED) \
    case ORDER_ACQUIRE: RMW_AT(p, op, x, __ATOMIC_ACQUIRE) \
    case ORDER_RELEASE: RMW_AT(p, op, x, __ATOMIC_RELEASE) \
    case ORDER_ACQ_REL: RMW_AT(p, op, x, __ATOMIC_ACQ_REL) \
    default: RMW_AT(p, op, x, __ATOMIC_SEQ_CST)            \
    }

/* Compare-and-swap of *p at `order`; the failure order is the load part of
 * it (it may not be release or acq_rel).  Return 1 swapped, else 0 with
 * *expected the value found. */
#define CAS_ORDERED(p, expected, desired, order)                                               \
    {                                                                                          \
        __typeof__(*(p)) e = (__typeof__(*(p)))*(expected), d = (__typeof__(*(p)))(desired);   \
        int ok;                                                                                \
        switch (order) {                                                                       \
        case ORDER_RELAXED: ok = shmring_cas_relaxed(p, &e, d); break;                         \
        case ORDER_ACQUIRE:                                                                    \
            ok = __atomic_compare_exchange_n(p, &e, d, 0, __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE); \
            break;                                                                             \
        case ORDER_RELEASE: ok = shmring_cas_release(p, &e, d); break;                         \
        case ORDER_ACQ_REL: ok = shmring_cas_acq_rel_acquire(p, &e, d); break;                 \
        default: ok = shmring_cas_seq_cst(p, &e, d); break;                                    \
        }                                                                                      \
        *(expected) = e;                                                                       \
        return ok;                                                                             \
    }

static uint64_t load_ordered(const PrimitiveObject *self, int order)
{
    FOR_WIDTH(self, p, LOAD_ORDERED(p, order))
}

static void store_ordered(const PrimitiveObject *self, uint64_t v, int order)
{
    FOR_WIDTH(self, p, STORE_ORDERED(p, v, order))
}

/* `op` with x at `order`; the old value. */
static uint64_t rmw_ordered(const PrimitiveObject *self, int op, uint64_t x, int order)
{
    FOR_WIDTH(self, p, RMW_ORDERED(p, op, x, order))
}

static int cas_ordered(const PrimitiveObject *self, uint64_t *expected, uint64_t desired, int order)
{
    FOR_WIDTH(self, p, CAS_ORDERED(p, expected, desired, order))
}

/* -- values ------------------------------------------------------------------ */

static PyObject *from_value(PrimitiveObject *self, uint64_t v)
{
    if (self->size == 4)
        return PyLong_FromLong((long)(int32_t)(uint32_t)v);
    return PyLong_FromLongLong((long long)(int64_t)v);
}

static int to_value(PrimitiveObject *self, PyObject *obj, uint64_t *out)
{
    long long v = PyLong_AsLongLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (self->size == 4 && (v < INT32_MIN || v > INT32_MAX)) {
        PyErr_Format(PyExc_OverflowError, "%lld does not fit in a 32-bit signed integer", v);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* -- methods -------------------------------------------------------------------- */

static int atomic_init(PrimitiveObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"mapping", "offset", "size", NULL};
    PyObject *mapping;
    Py_ssize_t offset, size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!nn:Atomic", kwlist, &MappingType, &mapping, &offset, &size))
        return -1;
    if (size != 4 && size != 8) {
        PyErr_Format(PyExc_ValueError, "an Atomic has 4 or 8 bytes, not %zd", size);
        return -1;
    }
    return primitive_place(self, mapping, offset, size, size);
}

static PyObject *atomic_load(PrimitiveObject *self, PyObject *args)
{
    int order = ORDER_SEQ_CST;
    if (!PyArg_ParseTuple(args, "|i:load", &order) || order_ok(order, 1, 0) < 0 || primitive_ok(self) < 0)
        return NULL;
    return from_value(self, load_ordered(self, order));
}

static PyObject *atomic_store(PrimitiveObject *self, PyObject *args)
{
    PyObject *obj;
    int order = ORDER_SEQ_CST;
    uint64_t v;
    /* Arguments first: converting them may run Python code (__index__),
     * which could close the segment; primitive_ok comes after. */
    if (!PyArg_ParseTuple(args, "O|i:store", &obj, &order) || to_value(self, obj, &v) < 0 ||
        order_ok(order, 0, 1) < 0 || primitive_ok(self) < 0)
        return NULL;
    store_ordered(self, v, order);
    Py_RETURN_NONE;
}

static PyObject *atomic_rmw(PrimitiveObject *self, PyObject *args, int op, const char *fmt)
{
    PyObject *obj;
    int order = ORDER_SEQ_CST;
    uint64_t v, old;
    if (!PyArg_ParseTuple(args, fmt, &obj, &order) || to_value(self, obj, &v) < 0 || order_ok(order, 0, 0) < 0 ||
        primitive_ok(self) < 0)
        return NULL;
    old = rmw_ordered(self, op, v, order);
    return from_value(self, old);
}

/* A method that is one read-modify-write: `function` does `op`, its
 * arguments (value, order=4, /) parsed for the method `name`. */
#define ATOMIC_RMW_METHOD(function, op, name)                        \
    static PyObject *function(PrimitiveObject *self, PyObject *args) \
    {                                                                \
        return atomic_rmw(self, args, op, "O|i:" name);              \
    }

ATOMIC_RMW_METHOD(atomic_exchange, RMW_EXCHANGE, "exchange")
ATOMIC_RMW_METHOD(atomic_fetch_add, RMW_ADD, "fetch_add")
ATOMIC_RMW_METHOD(atomic_fetch_sub, RMW_SUB, "fetch_sub")
ATOMIC_RMW_METHOD(atomic_fetch_and, RMW_AND, "fetch_and")
ATOMIC_RMW_METHOD(atomic_fetch_or, RMW_OR, "fetch_or")
ATOMIC_RMW_METHOD(atomic_fetch_xor, RMW_XOR, "fetch_xor")

static PyObject *atomic_compare_exchange(PrimitiveObject *self, PyObject *args)
{
    PyObject *e_obj, *d_obj, *cur;
    int order = ORDER_SEQ_CST, ok;
    uint64_t expected, desired;
    if (!PyArg_ParseTuple(args, "OO|i:compare_exchange", &e_obj, &d_obj, &order) ||
        to_value(self, e_obj, &expected) < 0 || to_value(self, d_obj, &desired) < 0 || order_ok(order, 0, 0) < 0 ||
        primitive_ok(self) < 0)
        return NULL;
    ok = cas_ordered(self, &expected, desired, order);
    cur = from_value(self, expected);
    if (cur == NULL)
        return NULL;
    return Py_BuildValue("(ON)", ok ? Py_True : Py_False, cur);
}

/* The futex word of a 4- or 8-byte atomic: the low 32 bits. */
static uint32_t *atomic_word(PrimitiveObject *self)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (uint32_t *)(self->ptr + (self->size == 8 ? 4 : 0));
#else
    return (uint32_t *)self->ptr;
#endif
}

/* wait's look: has the value moved from *(uint64_t *)expected? */
static int atomic_changed(PrimitiveObject *self, void *expected)
{
    uint64_t e = *(uint64_t *)expected;
    /* acquire: pairs with the writer's release (or stronger) store. */
    if (self->size == 4)
        return shmring_load_acquire((uint32_t *)self->ptr) != (uint32_t)e;
    return shmring_load_acquire((uint64_t *)self->ptr) != e;
}

static int atomic_sleep(PrimitiveObject *self, void *expected, uint64_t until)
{
    return shmring_futex_wait_until(atomic_word(self), (uint32_t)*(uint64_t *)expected, until);
}

static PyObject *atomic_wait(PrimitiveObject *self, PyObject *args)
{
    PyObject *e_obj, *timeout = Py_None;
    uint64_t expected, deadline;
    int r, no_wait;
    if (!PyArg_ParseTuple(args, "O|O:wait", &e_obj, &timeout) || to_value(self, e_obj, &expected) < 0 ||
        (no_wait = parse_timeout(timeout, &deadline)) < 0 || primitive_ok(self) < 0)
        return NULL;
    r = primitive_block(self, &expected, atomic_changed, atomic_sleep, no_wait, deadline);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *atomic_notify(PrimitiveObject *self, PyObject *args)
{
    int n = INT_MAX, woken;
    if (!PyArg_ParseTuple(args, "|i:notify", &n) || primitive_ok(self) < 0) /* ParseTuple runs first */
        return NULL;
    if (n < 1)
        return PyErr_Format(PyExc_ValueError, "n must be at least 1");
    woken = shmring_futex_wake(atomic_word(self), n);
    if (woken < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(woken);
}

/* The table row of a method whose arguments are (value, order=4, /): store()
 * and the read-modify-write methods. */
#define VALUE_ORDER_METHOD(name, function, doc) \
    {name, (PyCFunction)function, METH_VARARGS, name "($self, value, order=4, /)\n--\n\n" doc}

static PyMethodDef atomic_methods[] = {
    {"load", (PyCFunction)atomic_load, METH_VARARGS,
     "load($self, order=4, /)\n--\n\nThe value, read at `order` (0 relaxed, 1 acquire, 4 seq_cst)."},
    VALUE_ORDER_METHOD("store", atomic_store, "Write the value at `order` (0 relaxed, 2 release, 4 seq_cst)."),
    VALUE_ORDER_METHOD("exchange", atomic_exchange, "Write the value; the old one."),
    {"compare_exchange", (PyCFunction)atomic_compare_exchange, METH_VARARGS,
     "compare_exchange($self, expected, desired, order=4, /)\n--\n\n"
     "Write `desired` if the value is `expected`: (swapped, the value found)."},
    VALUE_ORDER_METHOD("fetch_add", atomic_fetch_add, "Add (wrapping around); the old value."),
    VALUE_ORDER_METHOD("fetch_sub", atomic_fetch_sub, "Subtract (wrapping around); the old value."),
    VALUE_ORDER_METHOD("fetch_and", atomic_fetch_and, "Bitwise and; the old value."),
    VALUE_ORDER_METHOD("fetch_or", atomic_fetch_or, "Bitwise or; the old value."),
    VALUE_ORDER_METHOD("fetch_xor", atomic_fetch_xor, "Bitwise xor; the old value."),
    {"wait", (PyCFunction)atomic_wait, METH_VARARGS,
     "wait($self, expected, timeout=None, /)\n--\n\n"
     "Sleep while the value is `expected`: True once it differs, False on timeout."},
    {"notify", (PyCFunction)atomic_notify, METH_VARARGS,
     "notify($self, n=2147483647, /)\n--\n\nWake up to n waiters (all by default); how many woke."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject AtomicType = PRIMITIVE_TYPE(
    "Atomic", "(mapping, offset, size)",
    "A signed integer of `size` bytes (4 or 8, aligned to its size) at an offset of a Mapping.", atomic_methods,
    atomic_init);
