"""Arrays through a Channel or a Topic: ``send_array`` / ``recv_array``.

An array message is a small header (dtype, shape, memory order; defined in
include/shmring/array.h and docs/PROTOCOL.md section 7, so that C and C++
peers can write and read it) followed by the array's bytes.  ``send_array`` writes
both straight into the ring (one copy, from the array into shared memory);
``recv_array`` reads the header in place and copies the bytes once, into a
new writable array.  numpy is an optional dependency (``shmring[numpy]``),
imported on first use.

Any array of a plain dtype goes: booleans, integers, floats, complex
numbers, datetimes and timedeltas, fixed-size byte and unicode strings, in
either byte order.  Object and structured dtypes do not (their bytes mean
nothing in another process).  A C- or Fortran-contiguous array is sent as
it lies in memory, with its order; any other (a strided slice) is copied
into C order first.

The header is checked like everything else read from shared memory: a
message that is not an array message, or whose header does not add up
(sizes, shape, dtype), raises ``ValueError`` and is consumed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _core

if TYPE_CHECKING:
    import numpy

__all__ = ["MAX_NDIM", "pack_header", "parse_header", "send_array", "recv_array"]

MAX_NDIM = 32  # SHMRING_ARRAY_MAX_NDIM: numpy's limit when this format was written
_KINDS = frozenset("biufcmMSU")  # the dtype kinds whose bytes mean the same in another process


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("send_array/recv_array need numpy: pip install 'shmring[numpy]'") from None
    return numpy


def pack_header(dtype: numpy.dtype[Any], shape: tuple[int, ...], order: str) -> bytes:
    """The header of an array message, up to its data offset
    (include/shmring/array.h writes it)."""
    if dtype.kind not in _KINDS or dtype.fields is not None or dtype.hasobject:
        raise TypeError(f"arrays of dtype {dtype} cannot be sent: only plain numeric, bool, datetime and "
                        "fixed-size string dtypes mean the same in another process")
    if len(dtype.str) > 8:
        raise TypeError(f"dtype {dtype} ({dtype.str!r}) has no type string of at most 8 characters")
    if len(shape) > MAX_NDIM:
        raise ValueError(f"arrays of more than {MAX_NDIM} dimensions cannot be sent")
    header: bytes = _core.array_header(dtype.str, order, tuple(shape))
    return header


def parse_header(buf: Any) -> tuple[numpy.dtype[Any], tuple[int, ...], str, int, int]:
    """(dtype, shape, order, data offset, nbytes) of the array message in
    ``buf``, every field checked against the others and against the
    message's length (include/shmring/array.h); ``ValueError`` when they
    do not agree.  No view of ``buf`` outlives the call."""
    np = _numpy()
    typestr, order, offset, nbytes, shape = _core.array_check(buf)
    try:
        dtype = np.dtype(typestr)
    except TypeError:
        raise ValueError(f"array message with a type string numpy does not take: {typestr!r}") from None
    expected = dtype.itemsize
    for n in shape:
        expected *= n
    if dtype.kind not in _KINDS or dtype.fields is not None or expected != nbytes:
        raise ValueError(f"array message with a type string numpy reads otherwise: {typestr!r} ({dtype})")
    return dtype, shape, order, offset, nbytes


def send_array(end: Any, a: Any, timeout: float | None) -> None:
    """Write the array message of ``a`` through ``end.reserve`` (a Channel
    or a Publisher)."""
    np = _numpy()
    arr = np.asarray(a)
    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        arr = np.ascontiguousarray(arr)
    order = "C" if arr.flags.c_contiguous else "F"
    header = pack_header(arr.dtype, arr.shape, order)
    with end.reserve(len(header) + arr.nbytes, timeout=timeout) as buf:
        buf[: len(header)] = header
        if arr.nbytes:
            dst = np.frombuffer(buf, np.uint8, arr.nbytes, len(header))
            try:
                dst[:] = arr.reshape(-1, order="A").view(np.uint8)  # memory order: no copy of the source
            finally:
                del dst  # no view of the loan outlives the block


def recv_array(end: Any, timeout: float | None) -> Any:
    """Read the next message of ``end`` (a Channel or a Subscription) as an
    array: a new, writable array holding a copy of the message's bytes."""
    np = _numpy()
    with end.peek(timeout=timeout) as buf:
        dtype, shape, order, offset, nbytes = parse_header(buf)
        out = np.empty(shape, dtype, order=order)
        if nbytes:
            src = np.frombuffer(buf, np.uint8, nbytes, offset)
            try:
                out.reshape(-1, order="A").view(np.uint8)[:] = src
            finally:
                del src  # no view of the loan outlives the block
    return out
