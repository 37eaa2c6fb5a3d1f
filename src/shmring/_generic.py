"""The item type variable of the generic handles (``Queue[int]``,
``Topic[Frame]``): unsubscripted, a handle's items are ``Any``, as before
the handles were generic, so ``q = Queue()`` needs no annotation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    T = TypeVar("T", default=Any)
else:
    from typing import TypeVar

    T = TypeVar("T")

__all__ = ["T"]
