"""Waiting in tests for a state that announces nothing (a process gone, a queue filled)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

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
