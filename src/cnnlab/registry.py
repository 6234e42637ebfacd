"""A tiny name -> object registry with helpful errors (used for models and datasets)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from cnnlab.errors import CnnlabError, did_you_mean

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind; unknown names fail with the closest valid names.

    >>> r: Registry[int] = Registry("model")
    >>> r.add("one", 1)
    >>> r.get("one")
    1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def wrap(entry: T) -> T:
            self.add(name, entry)
            return entry

        return wrap

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise CnnlabError(
                f"unknown {self.kind} {name!r}.{did_you_mean(name, self._entries)} "
                f"Available: {', '.join(self._entries)}."
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
