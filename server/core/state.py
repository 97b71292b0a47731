"""What a feature keeps on the hub, under typed keys (as aiohttp's ``AppKey``): the hub holds one ``FeatureState``
and knows nothing of what is in it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


class StateKey(Generic[T]):
    """One feature's state: made by ``factory`` the first time the hub is asked for it."""

    def __init__(self, name: str, factory: Callable[[], T]) -> None:
        self.name = name
        self.factory = factory

    def __repr__(self) -> str:
        return f"StateKey({self.name!r})"


class FeatureState:
    def __init__(self) -> None:
        self._values: dict[StateKey[Any], Any] = {}

    def __getitem__(self, key: StateKey[T]) -> T:
        if key not in self._values:
            self._values[key] = key.factory()
        return cast(T, self._values[key])

    def __contains__(self, key: StateKey[Any]) -> bool:
        return key in self._values
