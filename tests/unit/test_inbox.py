"""The sheep's inbox: the highest priority first, first in first out within one, those put
aside first in their line, and a priority passed over at most PASSED_OVER_AT_MOST times in a
row while one of its items waits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from schemas.job import Priority
from services.sheep.inbox import PASSED_OVER_AT_MOST, Inbox


@dataclass(frozen=True)
class Item:
    name: str
    priority: Priority


async def drain(inbox: Inbox[Item], aside: list[Item] | None = None) -> list[str]:
    taken = []
    while len(inbox) or aside:
        item = await inbox.get(aside)
        assert item is not None
        taken.append(item.name)
    return taken


async def test_the_highest_priority_first_and_in_arrival_order_within_one():
    inbox: Inbox[Item] = Inbox()
    for name, priority in [("n1", "normal"), ("l1", "low"), ("h1", "high"), ("n2", "normal")]:
        inbox.put(Item(name, priority))
    assert await drain(inbox) == ["h1", "n1", "n2", "l1"]


async def test_an_item_put_aside_comes_first_in_its_line():
    inbox: Inbox[Item] = Inbox()
    inbox.put(Item("n2", "normal"))
    inbox.put(Item("h1", "high"))
    assert await drain(inbox, [Item("n1", "normal")]) == ["h1", "n1", "n2"]


async def test_a_waiting_priority_is_passed_over_at_most_so_many_times_in_a_row():
    inbox: Inbox[Item] = Inbox()
    inbox.put(Item("l1", "low"))
    inbox.put(Item("n1", "normal"))
    for n in range(3 * PASSED_OVER_AT_MOST):
        inbox.put(Item(f"h{n}", "high"))
    order = await drain(inbox)
    higher_before = {
        name: sum(other.startswith("h") for other in order[: order.index(name)])
        + (name == "l1" and order.index("n1") < order.index("l1"))
        for name in ("n1", "l1")
    }
    assert higher_before == {"n1": PASSED_OVER_AT_MOST, "l1": PASSED_OVER_AT_MOST}, order
    assert order[-1].startswith("h")  # the rest of the high ones, once neither waits


async def test_outranking_returns_once_a_higher_priority_waits():
    inbox: Inbox[Item] = Inbox()
    inbox.put(Item("n1", "normal"))
    waiting = asyncio.create_task(inbox.outranking("normal"))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    inbox.put(Item("h1", "high"))
    await asyncio.wait_for(waiting, 1)


async def test_get_waits_for_an_item_and_says_none_once_ended():
    inbox: Inbox[Item] = Inbox()
    getting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0.01)
    inbox.put(Item("n1", "normal"))
    assert (await asyncio.wait_for(getting, 1)).name == "n1"
    inbox.end()
    assert await inbox.get() is None


async def test_an_item_owed_its_turn_is_not_outranked():
    inbox: Inbox[Item] = Inbox()
    inbox.put(Item("l1", "low"))
    for n in range(PASSED_OVER_AT_MOST):
        inbox.put(Item(f"h{n}", "high"))
        assert (await inbox.get()).name == f"h{n}"
    inbox.put(Item("h-late", "high"))
    assert (await inbox.get()).name == "l1"
    assert not inbox.outranks("low")  # the sheep keeps it, though a high one waits
    inbox.put(Item("n1", "normal"))
    assert (await inbox.get()).name == "h-late"
    assert inbox.outranks("normal") is False and inbox.outranks("low")
