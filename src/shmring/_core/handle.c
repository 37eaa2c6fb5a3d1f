/*
 * handle.c - what the handle types share (Channel, Queue and TopicEnd, each
 * a HANDLE_HEAD): the garbage collector's hooks, the first and last steps
 * of their dealloc, and their _mapping attribute.
 */
#include "core.h"

int handle_traverse(HandleObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->mapping);
    Py_VISIT(self->dict);
    return 0;
}

int handle_clear(HandleObject *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

/* The first step of a dealloc: out of the collector's sight, the weak
 * references cleared. */
void handle_dealloc_begin(HandleObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
}

/* The last: the mapping and the __dict__ dropped, the object freed. */
void handle_dealloc_end(HandleObject *self)
{
    Py_CLEAR(self->mapping);
    Py_CLEAR(self->dict);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyObject *handle_get_mapping(HandleObject *self, void *Py_UNUSED(closure))
{
    if (self->mapping == NULL)
        Py_RETURN_NONE;
    Py_INCREF(self->mapping);
    return self->mapping;
}
