"""Which job an idle actor takes next: one of the model family it ran last, so its pipelines stay warm.

Pure Python, no Ray: the driver calls it from its dispatch loop.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FamilyQueue(Generic[T]):
    """Jobs grouped by family key, first-come order inside a group.

    ``take(last)`` prefers the group ``last`` names; otherwise it opens the largest group no actor is already
    on (fewest model switches over the whole batch), else the largest group."""

    def __init__(self) -> None:
        self._groups: OrderedDict[str, deque[T]] = OrderedDict()

    def put(self, key: str, item: T, front: bool = False) -> None:
        group = self._groups.setdefault(key, deque())
        if front:  # a retried job goes first: it has waited longest
            group.appendleft(item)
        else:
            group.append(item)

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups.values())

    def take(self, last: str | None, busy: frozenset[str] = frozenset()) -> tuple[str, T] | None:
        """The next (key, job) for an actor whose last job had family ``last``; ``busy``: families other actors
        are running now. None when empty."""
        if last is not None and self._groups.get(last):
            return last, self._pop(last)
        open_groups = [(len(g), k) for k, g in self._groups.items() if g]
        if not open_groups:
            return None
        idle = [(n, k) for n, k in open_groups if k not in busy]
        _n, key = max(idle or open_groups, key=lambda pair: pair[0])
        return key, self._pop(key)

    def _pop(self, key: str) -> T:
        group = self._groups[key]
        item = group.popleft()
        if not group:
            del self._groups[key]
        return item
