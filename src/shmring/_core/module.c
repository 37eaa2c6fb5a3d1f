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

int add_type(PyObject *m, const char *name, PyTypeObject *type)
{
    if (PyType_Ready(type) < 0)
        return -1;
    Py_INCREF(type);
    if (PyModule_AddObject(m, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

/* The segment's layout and kinds (include/shmring/segment.h). */
static int add_segment_constants(PyObject *m)
{
    if (PyModule_AddIntConstant(m, "HEADER_SIZE", SHMRING_HEADER_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "LAYOUT_VERSION", SHMRING_LAYOUT_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "KIND_RAW", SHMRING_KIND_RAW) < 0 ||
        PyModule_AddIntConstant(m, "KIND_CHANNEL", SHMRING_KIND_CHANNEL) < 0 ||
        PyModule_AddIntConstant(m, "KIND_SYNC", SHMRING_KIND_SYNC) < 0 ||
        PyModule_AddIntConstant(m, "KIND_QUEUE", SHMRING_KIND_QUEUE) < 0 ||
        PyModule_AddIntConstant(m, "KIND_TOPIC", SHMRING_KIND_TOPIC) < 0)
        return -1;
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
    if (PyModule_AddFunctions(m, mapping_functions) < 0 || PyModule_AddFunctions(m, channel_functions) < 0 ||
        PyModule_AddFunctions(m, sync_functions) < 0 || PyModule_AddFunctions(m, queue_functions) < 0 ||
        PyModule_AddFunctions(m, topic_functions) < 0 || add_segment_constants(m) < 0 ||
        mapping_module_init(m) < 0 || loan_module_init(m) < 0 || channel_module_init(m) < 0 ||
        sync_module_init(m) < 0 || queue_module_init(m) < 0 || topic_module_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
