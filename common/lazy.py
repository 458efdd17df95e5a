"""A sequence that loads its items on access: whole test sets of full-size images in bounded memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, overload

__all__ = ["LazySequence"]

T = TypeVar("T")


class LazySequence(Sequence[T], Generic[T]):
    """``items[i]`` is ``load(i)``, computed at each access and never cached.

    Metrics iterate their inputs once (``zip(predictions, targets, ...)``), so a test set of 27
    full-size IDRiD cases costs one case's memory at a time.
    """

    def __init__(self, length: int, load: Callable[[int], T]) -> None:
        self._length = int(length)
        self._load = load

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return [self._load(i) for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} items")
        return self._load(index)
