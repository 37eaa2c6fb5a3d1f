"""The Python side of a Queue's out-of-band pickling (records of tag 'M',
docs/PROTOCOL.md section 5.2; the C side is ``_core/queue_oob.c``).

The extension pickles most items itself, with protocol 5 and a
``buffer_callback`` that takes the large buffers (an ndarray's elements)
out of band.  It calls :func:`dumps` here for what that alone would not
take out of band:

- a ``bytes``, ``bytearray`` or ``memoryview`` that is the item itself
  (pickle copies the first two into its stream and refuses a memoryview):
  reduced to a ``PickleBuffer`` of its bytes and a function below that
  makes the same kind of object back over the reader's copy;
- PyTorch tensors anywhere in the item, once ``torch`` is imported (their
  own pickling copies their storage into the stream): a CPU tensor that
  numpy can view is reduced to that ndarray and made back with
  ``torch.from_numpy``, sharing the reader's copy.

The functions that make the objects back are named in the stream: the
process that takes the item imports this module, which needs only the
standard library.
"""

from __future__ import annotations

import importlib
import io
import pickle
import sys
from collections.abc import Callable
from typing import Any, cast

BufferCallback = Callable[[pickle.PickleBuffer], Any]


def rebuild_bytes(buffer: Any) -> bytes:
    """A ``bytes`` item back.  The reader copies a read-only buffer into a
    bytes object of its own, which pickle hands here as it is: that object
    is the item (no second copy)."""
    return buffer if type(buffer) is bytes else bytes(buffer)


def rebuild_bytearray(buffer: Any) -> bytearray:
    """A ``bytearray`` item back: the reader's copy of a writable buffer is a
    bytearray of its own, which becomes the item."""
    return buffer if type(buffer) is bytearray else bytearray(buffer)


def rebuild_memoryview(buffer: Any, fmt: str, shape: tuple[int, ...]) -> memoryview:
    """A ``memoryview`` item back: a view of the reader's copy, of the
    item's format and shape (writable unless the item was read-only)."""
    view = memoryview(buffer)
    if view.format == fmt and view.shape == shape:
        return view
    as_bytes: Any = view.cast("B")  # (the format is the item's: known only at run time)
    return cast(memoryview, as_bytes.cast(fmt, shape))


def rebuild_tensor(array: Any) -> Any:
    """A PyTorch tensor back, over the ndarray of its elements."""
    torch: Any = importlib.import_module("torch")  # (optional: only where a tensor was put)
    return torch.from_numpy(array)


class _Reduced:
    """An item given as its reduction: pickle calls ``__reduce__``."""

    __slots__ = ("reduction",)

    def __init__(self, reduction: tuple[Any, ...]) -> None:
        self.reduction = reduction

    def __reduce__(self) -> tuple[Any, ...]:
        return self.reduction


def _reduce_raw(obj: bytes | bytearray | memoryview) -> tuple[Any, ...]:
    """The reduction of an item that is a bytes, bytearray or memoryview."""
    if type(obj) is bytes:
        return (rebuild_bytes, (pickle.PickleBuffer(obj),))
    if type(obj) is bytearray:
        return (rebuild_bytearray, (pickle.PickleBuffer(obj),))
    view = memoryview(obj)
    # The elements in C order: as they are when contiguous, else a copy (as
    # pickle copies a non-contiguous ndarray into its stream).
    if view.c_contiguous and view.nbytes:
        flat = view.cast("B")
    else:
        flat = memoryview(bytes(view) if view.readonly else bytearray(view))
    shape = tuple(view.shape or ())
    try:
        back = rebuild_memoryview(flat, view.format, shape)
        ok = back.format == view.format and back.shape == shape
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TypeError(
            f"cannot put a memoryview of format {view.format!r} and shape {view.shape}: a queue takes "
            "memoryviews of a native single-character format holding at least one element"
        )
    return (rebuild_memoryview, (pickle.PickleBuffer(flat), view.format, shape))


def _reduce_tensor(torch: Any, tensor: Any) -> Any:
    """A CPU tensor as the ndarray of its elements, or NotImplemented (its
    own pickling) for one that numpy cannot view as it is: on another
    device, sparse, needing gradients, a subclass, or of a dtype numpy
    lacks."""
    if (type(tensor) is not torch.Tensor or tensor.device.type != "cpu" or tensor.layout is not torch.strided
            or tensor.requires_grad):
        return NotImplemented
    try:
        array = tensor.numpy()
    except (RuntimeError, TypeError):
        return NotImplemented
    return (rebuild_tensor, (array,))


class _TensorPickler(pickle.Pickler):
    """Protocol 5, PyTorch tensors as ndarrays (out of band)."""

    def reducer_override(self, obj: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            return _reduce_tensor(torch, obj)
        return NotImplemented


def dumps(obj: Any, buffer_callback: BufferCallback | None) -> bytes:
    """Pickle ``obj`` with protocol 5, passing its buffers to
    ``buffer_callback`` (``None``: every buffer in the stream)."""
    kind = type(obj)
    if kind is bytes or kind is bytearray or kind is memoryview:
        obj = _Reduced(_reduce_raw(obj))
    if "torch" not in sys.modules:
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL, buffer_callback=buffer_callback)
    out = io.BytesIO()
    _TensorPickler(out, pickle.HIGHEST_PROTOCOL, buffer_callback=buffer_callback).dump(obj)
    return out.getvalue()
