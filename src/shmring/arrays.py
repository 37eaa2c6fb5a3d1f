"""Arrays through a Channel or a Topic: ``send_array`` / ``recv_array``, and
in place, ``reserve_array`` / ``peek_array``.

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

``reserve_array`` and ``peek_array`` lend an array that lies in the ring
for a ``with`` block (an ``ArrayLoan``): no copy at all.  Its memory goes
back to the ring when the block ends, so nothing may hold the array past
the block -- not even the name of the ``with`` statement: ``del`` it inside
the block.  What happens when something does is the block's ``on_escape``
choice, and never a silent loss:

- ``"raise"`` (the default): leaving the block raises ``BufferInUseError``,
  which names the array (shape, dtype, id, the names bound to it), and the
  message is kept: a peeked one stays unread (the next call on that end
  reads it again once the array is gone), a reserved one is not sent (and
  is dropped once the array is gone).  Until then the array stays valid.
- ``"copy"``: an array held by names only (of the block's frame, or of the
  frames of an exception leaving it) is moved out of the ring: the array
  object is given memory of its own, holding a copy of its elements
  (``ndarray.__setstate__``, numpy's unpickling, keeps the object), and
  the message is consumed or sent as usual.  Views taken from the array (a
  slice, ``.T``, a memoryview, an object that shares its memory) cannot be
  moved: then it is ``"raise"``.
"""

from __future__ import annotations

import inspect
import operator
import sys
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Literal

from . import _core
from ._errors import BufferInUseError

if TYPE_CHECKING:
    import numpy

__all__ = ["MAX_NDIM", "ArrayLoan", "OnEscape", "pack_header", "parse_header", "send_array", "recv_array",
           "reserve_array", "peek_array"]

MAX_NDIM = 32  # SHMRING_ARRAY_MAX_NDIM: numpy's limit when this format was written
_KINDS = frozenset("biufcmMSU")  # the dtype kinds whose bytes mean the same in another process


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("the array methods need numpy: pip install 'shmring[numpy]'") from None
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
    # every byte is written below before the block ends (an exception drops the message): no zeroing first
    with end._reserve_unzeroed(len(header) + arr.nbytes, timeout=timeout) as buf:
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


# -- in place: reserve_array / peek_array ------------------------------------------------------------------

# Up to 3.12 a function frame's f_locals is a snapshot dict that the frame keeps (and with it a reference
# to every local's value) until the next snapshot; from 3.13 it is a live view of the locals (PEP 667).
_LOCALS_ARE_A_SNAPSHOT = sys.version_info < (3, 13)

OnEscape = Literal["raise", "copy"]  # what becomes of an array still held when its block ends
_ON_ESCAPE = ("raise", "copy")


def _dims(shape: Any) -> tuple[int, ...]:
    try:
        dims: tuple[int, ...] = (operator.index(shape),)
    except TypeError:
        dims = tuple(operator.index(n) for n in shape)
    if any(n < 0 for n in dims):
        raise ValueError(f"negative dimensions are not allowed: {shape!r}")
    return dims


def _check_on_escape(on_escape: str) -> str:
    if on_escape not in _ON_ESCAPE:
        raise ValueError(f"on_escape is 'raise' or 'copy', not {on_escape!r}")
    return on_escape


def _where(end: Any) -> str:
    topic = getattr(end, "_topic_name", None)
    return f"topic {topic!r}" if topic is not None else f"channel {end.name!r}"


def _frames_of_the_block(caller: FrameType, tb: TracebackType | None) -> list[FrameType]:
    """The frame of the ``with`` statement, and those of an exception leaving it."""
    frames = [caller]
    while tb is not None:
        if all(tb.tb_frame is not f for f in frames):
            frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _names_bound_to(obj: Any, frames: list[FrameType]) -> list[str]:
    """The variables of ``frames`` bound to ``obj``: each is one reference to it.  A closure's variable
    is counted in the frame that owns it only (other frames see the same cell), and a namespace that
    several frames share (a module's globals) once."""
    names: list[str] = []
    seen: list[Any] = []
    for frame in frames:
        namespace = frame.f_locals
        if any(namespace is ns for ns in seen):
            continue
        seen.append(namespace)
        free = frame.f_code.co_freevars
        found = [name for name, value in list(namespace.items()) if value is obj and name not in free]
        if _LOCALS_ARE_A_SNAPSHOT and frame.f_code.co_flags & inspect.CO_OPTIMIZED:
            # The snapshot we made must not keep the array, or anything holding it, alive after the frame
            # lets go of them (the message would stay held).  The interpreter refreshes it from the locals
            # before every use of its own (locals(), a trace function), so emptying it loses nothing (a
            # dict that locals() returned earlier in that frame is this one: it is emptied too).
            namespace.clear()
        names += found
    return names


def _move_out_of_the_ring(array: Any, readonly: bool) -> None:
    """Give ``array`` memory of its own holding its elements, in place: ndarray.__setstate__ (numpy's
    unpickling) replaces an array's memory and keeps the object, so that every name bound to it sees
    the copy.  Only when nothing else shares the old memory: the caller checked."""
    dtype = array.dtype
    fortran = bool(array.flags.f_contiguous and not array.flags.c_contiguous)
    raw = array.tobytes(order="F" if fortran else "C")
    # __setstate__ turns a non-native byte order into the native one, swapping the bytes: give it the
    # native type over the bytes as they are, then name the type again
    array.__setstate__((1, array.shape, dtype.newbyteorder("="), fortran, raw))
    if array.dtype != dtype:
        array.dtype = dtype
    if readonly:
        array.flags.writeable = False


class ArrayLoan:
    """A message lent as a numpy array for a ``with`` block: made by
    ``reserve_array`` (a writable, zero-filled array of the shape and dtype
    asked for, under a header already written; leaving the block sends it,
    an exception drops it) and ``peek_array`` (the next message, read-only,
    its header checked; leaving the block consumes it) of a Channel, a topic
    Publisher or a Subscription.  The array lies in the ring: nothing may
    hold it past the block (see the module's docstring for ``on_escape``)."""

    __slots__ = ("_end", "_label", "_timeout", "_on_escape", "_layout", "_loan", "_array", "_ring", "_own_refs",
                 "_entered", "_zero")

    def __init__(self, end: Any, label: str, timeout: float | None, on_escape: str,
                 layout: tuple[bytes, Any, tuple[int, ...], str] | None, zero: bool = True) -> None:
        self._end = end
        self._label = label  # "reserve_array" or "peek_array"
        self._timeout = timeout
        self._on_escape = _check_on_escape(on_escape)
        self._layout = layout  # a reserve's header, dtype, shape and order; None for a peek
        self._zero = zero  # a reserve's elements start at zero (else: what the ring held there)
        self._loan: _core.Loan | None = None
        self._array: Any = None
        self._ring = False  # the array lies in the ring (it has elements)
        self._own_refs = (0, 0)
        self._entered = False

    def __repr__(self) -> str:
        state = "lent" if self._array is not None else "over" if self._entered else "not entered"
        return f"<shmring.arrays.ArrayLoan of {self._label}(), {state}, {_where(self._end)}>"

    def _refs(self) -> tuple[int, int]:
        """References to the lent array, and to the array under it (which every view of it holds),
        counted the same way in __enter__ and __exit__ so that this object's own cancel out; none for
        an array without elements (it does not lie in the ring)."""
        if not self._ring:
            return 0, 0
        return sys.getrefcount(self._array), sys.getrefcount(self._array.base)

    def __enter__(self) -> Any:
        if self._entered:
            raise RuntimeError(f"a {self._label}() block can be entered only once")
        self._entered = True
        np = _numpy()
        end, layout = self._end, self._layout
        if layout is None:
            loan = end.peek(timeout=self._timeout)
        else:
            header, dtype, shape, order = layout
            lend = end.reserve if self._zero else end._reserve_unzeroed
            loan = lend(len(header) + dtype.itemsize * _count(shape), timeout=self._timeout)
        loan.__enter__()
        try:
            if layout is None:
                dtype, shape, order, offset, nbytes = parse_header(loan)
            else:
                loan[: len(header)] = header
                offset, nbytes = len(header), len(loan) - len(header)
            self._ring = nbytes > 0
            if self._ring:
                self._array = np.frombuffer(loan, dtype, _count(shape), offset).reshape(shape, order=order)
            else:  # no elements: nothing of the ring to lend
                self._array = np.empty(shape, dtype, order=order)
                self._array.flags.writeable = layout is not None
        except BaseException as e:
            self._array = None
            loan.__exit__(type(e), e, e.__traceback__)  # a reserve is dropped, a peek consumed
            raise
        self._loan = loan
        self._own_refs = self._refs()
        return self._array

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if self._array is None:  # never entered, or left already
            return False
        refs = self._refs()
        outside, views = refs[0] - self._own_refs[0], refs[1] - self._own_refs[1]
        holder = None
        if outside > 0 or views > 0:
            frames = _frames_of_the_block(sys._getframe(1), tb)
            names = _names_bound_to(self._array, frames) if outside > 0 else []
            if self._on_escape == "copy" and views == 0 and len(names) == outside:
                _move_out_of_the_ring(self._array, readonly=self._layout is None)
            else:
                holder = self._describe(names, outside - len(names), views)
        loan = self._loan
        assert loan is not None
        # whatever else might still hold the loan's memory keeps the message too
        loan.keep_if_held(holder or f"the array lent by {self._label}() (or a view of it)")
        self._array = None  # the loan must see only the views of others
        self._loan = None
        try:
            loan.__exit__(exc_type, exc, tb)
        except BufferInUseError as e:
            if holder is None:  # something this block cannot see holds the loan: the loan's own word
                message = str(e)
            else:
                message = self._escape_message(holder)
            if exc is None:
                raise BufferInUseError(message) from None
            if hasattr(exc, "add_note"):  # the block's own exception goes on, with a word about the message
                exc.add_note(message)
        return False

    def _describe(self, names: list[str], others: int, views: int) -> str:
        array = self._array
        what = f"the ndarray of shape {array.shape} and dtype {array.dtype} (id {id(array):#x})"
        parts = []
        if names:
            parts.append("bound to " + ", ".join(repr(n) for n in names))
        if others > 0:
            parts.append(f"{others} other reference{'s' if others > 1 else ''} to it (a container, an attribute, "
                         "a memoryview, an object sharing its memory)")
        if views > 0:
            parts.append(f"{views} view{'s' if views > 1 else ''} taken from it (a slice, .T, a reshape)")
        return f"{what} lent by {self._label}() ({'; '.join(parts)})"

    def _escape_message(self, holder: str) -> str:
        if self._layout is None:
            kept = ("so the message is kept unread: the next call on this end reads it again once the array "
                    "and its views are gone")
        else:
            kept = "so the message was not sent (it is dropped once the array and its views are gone)"
        if self._on_escape == "raise":
            how = (f"del it inside the block (copy out what you need), or pass on_escape='copy' to keep a "
                   f"private copy")
        else:
            how = ("on_escape='copy' moves an array held by names only; views and other holders share its "
                   "memory and cannot be moved: let go of them inside the block")
        return f"{_where(self._end)}: {holder} is still alive at the end of the {self._label}() block, {kept}. " \
               f"To avoid this, {how}."


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def reserve_array(end: Any, shape: Any, dtype: Any, order: str, timeout: float | None,
                  on_escape: str, zero: bool = True) -> ArrayLoan:
    """The ``ArrayLoan`` of ``end.reserve_array`` (a Channel or a Publisher):
    everything is checked here, before anything is reserved."""
    np = _numpy()
    dims, dt = _dims(shape), np.dtype(dtype)
    if order not in ("C", "F"):
        raise ValueError(f"order is 'C' or 'F', not {order!r}")
    return ArrayLoan(end, "reserve_array", timeout, on_escape, (pack_header(dt, dims, order), dt, dims, order),
                     bool(zero))


def peek_array(end: Any, timeout: float | None, on_escape: str) -> ArrayLoan:
    """The ``ArrayLoan`` of ``end.peek_array`` (a Channel or a Subscription)."""
    return ArrayLoan(end, "peek_array", timeout, on_escape, None)
