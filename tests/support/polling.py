"""Waiting in tests for a state that announces nothing (a process gone, a queue filled)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aio_pika.abc import AbstractChannel

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], within: float, every: float = 0.05
) -> T:
    """The first result of ``probe`` that is neither None nor False, looking every ``every``
    seconds; TimeoutError after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not (result := await probe()):  # noqa: ASYNC110 (nothing to await instead)
            await asyncio.sleep(every)
    return result


async def take(
    channel: AbstractChannel, queue_name: str, count: int, within: float = 10
) -> list[bytes]:
    """The bodies of the next ``count`` messages of a queue (acked), as they arrive."""
    queue = await channel.get_queue(queue_name, ensure=False)
    bodies: list[bytes] = []

    async def one_more() -> bool:
        message = await queue.get(fail=False)
        if message is not None:
            await message.ack()
            bodies.append(message.body)
        return len(bodies) >= count

    await eventually(one_more, within=within)
    return bodies
