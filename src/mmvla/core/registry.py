"""Selection by name: one small registry for the encoders, fusion designs and action heads.

::

    VISION_ENCODERS: Registry[type[VisionEncoder]] = Registry("vision encoder")

    @VISION_ENCODERS.register("cnn")
    class ConvEncoder(VisionEncoder): ...

    VISION_ENCODERS.get("cnn")   # -> ConvEncoder
    VISION_ENCODERS.get("mlp")   # ValueError: unknown vision encoder 'mlp'; available: cnn, ...
    VISION_ENCODERS.names()      # ("cnn", ...), in registration order

Registration happens when the defining module is imported, so a package imports every module that
registers into its registry (as ``mmvla.modules.fusion`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry (a class or a builder function), in registration order.

    Args:
        kind: what the entries are, singular ("fusion", "action head"); used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding an entry under ``name``; a name registered twice raises ``ValueError``."""

        def deco(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return deco

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name raises ``ValueError`` listing the known ones."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
