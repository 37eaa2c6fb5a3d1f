"""What the array tests share (test_arrays.py, test_arrays_inplace.py): the
dtypes every array message must carry, arrays whose elements all differ, and
an exact comparison."""

from __future__ import annotations

from typing import Any

import numpy as np

OP_TIMEOUT = 15.0
DTYPES = ["|b1", "|i1", "<i2", ">i4", "<i8", "|u1", "<u2", ">u8", "<f2", "<f4", ">f8", "<c8", "<c16",
          "<M8[ns]", "<m8[us]", "<M8[D]", "<M8[Y]", "<m8[2s]", "|S5", "<U3"]


def sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> Any:
    """An array of that dtype and shape whose every element differs."""
    n = int(np.prod(shape, dtype=np.int64))
    raw = np.random.default_rng(seed).integers(0, 2**15, size=n)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        vals = raw % 2 == 1
    elif dt.kind in "SU":
        vals = np.array([str(v)[: dt.itemsize // (4 if dt.kind == "U" else 1)] for v in raw], dtype=dt)
    elif dt.kind in "mM":
        vals = raw.astype(np.int64).view(dt)
    else:
        vals = raw.astype(dt)
    return np.asarray(vals, dtype=dt).reshape(shape)


def same(a: Any, b: Any) -> bool:
    return bool(a.dtype == b.dtype and a.shape == b.shape and a.tobytes(order="A") == b.tobytes(order="A"))
