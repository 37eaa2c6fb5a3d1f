/*
 * module.c - the module shmring._core: its functions (each file's table),
 * its types and constants, the exceptions it raises, and the fork hook.
 */
#include "core.h"

volatile unsigned long fork_generation = 1;

static void after_fork_in_child(void)
{
    fork_generation++;
}

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    "shmring._core",
    "The C core of shmring: segments, channels, queues, topics and synchronisation primitives over "
    "include/shmring.h.",
    -1,
    NULL,
    NULL, NULL, NULL, NULL,
};

/* The module's types, by name. */
static const struct {
    const char *name;
    PyTypeObject *type;
} module_types[] = {
    {"Mapping", &MappingType},
    {"Loan", &LoanType},
    {"Channel", &ChannelType},
    {"Atomic", &AtomicType},
    {"Semaphore", &SemaphoreType},
    {"SpinLock", &SpinLockType},
    {"Mutex", &MutexType},
    {"Event", &EventType},
    {"Condition", &ConditionType},
    {"Queue", &QueueType},
    {"TopicEnd", &TopicEndType},
    {"WaitSet", &WaitSetType},
};

/* The module's integer constants: the layouts and codes of include/shmring/
 * that Python code needs. */
static const struct {
    const char *name;
    unsigned long long value;
} module_constants[] = {
    /* the segment (include/shmring/segment.h) */
    {"HEADER_SIZE", SHMRING_HEADER_SIZE},
    {"LAYOUT_VERSION", SHMRING_LAYOUT_VERSION},
    {"KIND_RAW", SHMRING_KIND_RAW},
    {"KIND_CHANNEL", SHMRING_KIND_CHANNEL},
    {"KIND_SYNC", SHMRING_KIND_SYNC},
    {"KIND_QUEUE", SHMRING_KIND_QUEUE},
    {"KIND_TOPIC", SHMRING_KIND_TOPIC},
    {"KIND_QUEUE_CHUNK", SHMRING_KIND_QUEUE_CHUNK},
    /* which primitive a named sync segment holds (include/shmring/sync.h) */
    {"SYNC_ATOMIC64", SHMRING_SYNC_ATOMIC64},
    {"SYNC_ATOMIC32", SHMRING_SYNC_ATOMIC32},
    {"SYNC_FLAG", SHMRING_SYNC_FLAG},
    {"SYNC_SEMAPHORE", SHMRING_SYNC_SEMAPHORE},
    {"SYNC_SPINLOCK", SHMRING_SYNC_SPINLOCK},
    {"SYNC_MUTEX", SHMRING_SYNC_MUTEX},
    {"SYNC_EVENT", SHMRING_SYNC_EVENT},
    /* the channel */
    {"WAIT_SPIN", SHMRING_WAIT_SPIN},
    {"WAIT_YIELD", SHMRING_WAIT_YIELD},
    {"WAIT_BLOCK", SHMRING_WAIT_BLOCK},
    {"WAIT_ADAPTIVE", SHMRING_WAIT_ADAPTIVE},
    {"WAIT_SEMAPHORE", SHMRING_WAIT_SEMAPHORE},
    {"CHANNEL_CTRL_SIZE", SHMRING_CHANNEL_CTRL_SIZE},
    {"CHANNEL_MIN_CAPACITY", SHMRING_CHANNEL_MIN_CAPACITY},
    {"CHANNEL_MAX_CAPACITY", SHMRING_CHANNEL_MAX_CAPACITY},
    {"CHANNEL_DEFAULT_SPIN_NS", SHMRING_CHANNEL_DEFAULT_SPIN_NS},
    /* the queue */
    {"QUEUE_BOUNDED", SHMRING_QUEUE_BOUNDED},
    {"QUEUE_VALUES", SHMRING_QUEUE_VALUES},
    {"QUEUE_OOB", SHMRING_QUEUE_OOB},
    {"QUEUE_OOB_MIN", QUEUE_OOB_MIN},
    {"QUEUE_CTRL_SIZE", SHMRING_QUEUE_CTRL_SIZE},
    {"QUEUE_MIN_CAPACITY", SHMRING_QUEUE_MIN_CAPACITY},
    /* the topic, and the roles of a TopicEnd */
    {"TOPIC_BLOCK", SHMRING_TOPIC_BLOCK},
    {"TOPIC_OVERWRITE", SHMRING_TOPIC_OVERWRITE},
    {"TOPIC_PUBLISHER", TOPIC_PUBLISHER},
    {"TOPIC_SUBSCRIBER", TOPIC_SUBSCRIBER},
    {"TOPIC_OBSERVER", TOPIC_OBSERVER},
};

/* The module functions of each file. */
static PyMethodDef *const module_functions[] = {
    mapping_functions, channel_functions, sync_functions, queue_functions, topic_functions, array_functions,
    value_functions, oob_functions, watch_functions,
};

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* Add the functions, types and constants above to `m`: 0, or -1 with an
 * exception. */
static int module_fill(PyObject *m)
{
    size_t i;
    for (i = 0; i < COUNT(module_functions); i++)
        if (PyModule_AddFunctions(m, module_functions[i]) < 0)
            return -1;
    for (i = 0; i < COUNT(module_types); i++)
        if (PyType_Ready(module_types[i].type) < 0 ||
            PyModule_AddObjectRef(m, module_types[i].name, (PyObject *)module_types[i].type) < 0)
            return -1;
    for (i = 0; i < COUNT(module_constants); i++) {
        PyObject *value = PyLong_FromUnsignedLongLong(module_constants[i].value);
        int rc = value == NULL ? -1 : PyModule_AddObjectRef(m, module_constants[i].name, value);
        Py_XDECREF(value);
        if (rc < 0)
            return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__core(void)
{
    PyObject *m;
    if (errors_init() < 0)
        return NULL;
    if (pthread_atfork(NULL, NULL, after_fork_in_child) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    m = PyModule_Create(&core_module);
    if (m == NULL)
        return NULL;
    if (module_fill(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
