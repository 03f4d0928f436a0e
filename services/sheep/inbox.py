"""The jobs delivered to a sheep and not yet taken, taken highest priority first.

    inbox = Inbox()
    inbox.put(delivery)                   # as the queues deliver
    delivery = await inbox.get()          # the one to run next; None once ended and empty
    job = await inbox.get(aside)          # or one of those taken before and put aside
    await inbox.outranking("normal")      # returns once a high-priority job waits
                                          # (one owed its turn is never outranked)

Within a priority, deliveries are taken in the order they came. So that low-priority work is
never starved, a priority passed over ``PASSED_OVER_AT_MOST`` times in a row while one of its
jobs waited is taken next: a job waits behind at most that many jobs of higher priority (the
sheep's queues deliver only a few jobs of each priority at a time, and the next one of a
priority comes once one is taken, so the rule holds for every job in the queues too).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

from schemas.job import PRIORITIES, Priority

#: Jobs of higher priority a waiting job may be passed over for, in a row.
PASSED_OVER_AT_MOST = 10


class Prioritised(Protocol):
    @property
    def priority(self) -> Priority: ...


T = TypeVar("T", bound=Prioritised)
A = TypeVar("A", bound=Prioritised)


class Inbox(Generic[T]):
    def __init__(self) -> None:
        self._lanes: dict[Priority, deque[T]] = {p: deque() for p in PRIORITIES}
        self._passed_over: dict[Priority, int] = dict.fromkeys(PRIORITIES, 0)
        self._ended = False
        self._owed = False
        """The last item taken was owed its turn: nothing outranks it."""
        self._changed = asyncio.Event()

    def put(self, item: T) -> None:
        self._lanes[item.priority].append(item)
        self._touch()

    def end(self) -> None:
        """Make :meth:`get` return None once what came before is taken."""
        self._ended = True
        self._touch()

    def __len__(self) -> int:
        return sum(map(len, self._lanes.values()))

    def __iter__(self) -> Iterator[T]:
        for lane in self._lanes.values():
            yield from lane

    async def get(self, aside: list[A] | None = None) -> T | A | None:
        """The next to take, waiting for one; None once ended and empty. ``aside``: items
        taken before and put aside since, first in their priority's line (the one chosen is
        removed from it)."""
        aside = [] if aside is None else aside
        while not (len(self) or aside):
            if self._ended:
                return None
            await self._changed.wait()
        return self._take(aside)

    def remove(self, leaving: Callable[[T], bool]) -> list[T]:
        """Take out (and return) every item ``leaving`` says goes."""
        gone: list[T] = []
        for lane in self._lanes.values():
            for item in [item for item in lane if leaving(item)]:
                lane.remove(item)
                gone.append(item)
        self._touch()
        return gone

    def outranks(self, priority: Priority) -> bool:
        """Whether an item of a priority higher than ``priority`` waits, and would be taken
        before the last one taken, of ``priority``: not if that one was owed its turn."""
        higher = PRIORITIES[: PRIORITIES.index(priority)]
        return not self._owed and any(self._lanes[p] for p in higher)

    async def outranking(self, priority: Priority) -> None:
        """Return once an item of a priority higher than ``priority`` waits."""
        while not self.outranks(priority):
            await self._changed.wait()

    def _take(self, aside: list[A]) -> T | A:
        heads: dict[Priority, T | A] = {}
        for priority in PRIORITIES:
            first_aside = next((item for item in aside if item.priority == priority), None)
            lane = self._lanes[priority]
            if first_aside is not None or lane:
                heads[priority] = first_aside if first_aside is not None else lane[0]
        starved = [p for p in heads if self._passed_over[p] >= PASSED_OVER_AT_MOST]
        chosen = starved[-1] if starved else next(iter(heads))
        self._owed = bool(starved)
        for priority in heads:
            if PRIORITIES.index(priority) > PRIORITIES.index(chosen):
                self._passed_over[priority] += 1
        self._passed_over[chosen] = 0
        item = heads[chosen]
        if item in aside:
            aside.remove(item)  # type: ignore[arg-type]  # it is one of them
        else:
            self._lanes[chosen].popleft()
            self._touch()
        return item

    def _touch(self) -> None:
        """Wake whoever waits for a change (each waiter then looks again)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
