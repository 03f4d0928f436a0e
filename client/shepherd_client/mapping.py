"""``map``: one model run over many payloads, the results in input order, a bounded number of
jobs in flight.

    results = await map_payloads(submit, payloads, concurrency=32, progress=True,
                                 return_exceptions=False)

``concurrency`` workers take the next payload from one shared iterator, submit it and wait for
its result, so payloads are read as they are needed: however many there are, at most
``concurrency`` jobs, tasks and connections exist at once (the results list grows with the
input, as the answer must). Cancelled (Ctrl-C), each worker cancels its job on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Iterable, Sized
from typing import Any, Protocol

from tqdm import tqdm

from shepherd_client.errors import JobFailed, MapItemFailed, ShepherdError

#: Seconds a cancelled map gives each of its jobs' cancellation.
CANCEL_WAIT = 10.0


class _Job(Protocol):
    async def result(self, timeout: float | None = None) -> Any: ...
    async def cancel(self) -> Any: ...


async def map_payloads(
    submit: Callable[[Any], Awaitable[_Job]],
    payloads: Iterable[Any],
    *,
    concurrency: int,
    progress: bool,
    return_exceptions: bool,
) -> list[Any]:
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    items = enumerate(payloads)
    results: list[Any] = []
    total = len(payloads) if isinstance(payloads, Sized) else None
    shown = progress and sys.stderr.isatty()
    with tqdm(total=total, unit="job", disable=not shown) as bar:

        async def work() -> None:
            for index, payload in items:  # shared: each payload is taken by one worker
                results.append(None)
                results[index] = await _run(submit, payload, index, return_exceptions)
                bar.update()

        try:
            async with asyncio.TaskGroup() as workers:
                for _ in range(concurrency):
                    workers.create_task(work())
        except BaseExceptionGroup as group:
            leaves = _leaves(group)
            unexpected = [leaf for leaf in leaves if not isinstance(leaf, MapItemFailed)]
            if unexpected:  # the payloads' iterator failing, say: raised as it is
                raise unexpected[0] from None
            raise min(leaves, key=lambda f: f.index) from None  # type: ignore[attr-defined]
    return results


async def _run(
    submit: Callable[[Any], Awaitable[_Job]], payload: Any, index: int, return_exceptions: bool
) -> Any:
    job: _Job | None = None
    try:
        job = await submit(payload)
        return await job.result()
    except (JobFailed, ShepherdError) as failure:
        if return_exceptions:
            return failure
        raise MapItemFailed(index, failure) from failure
    except asyncio.CancelledError:
        if job is not None:
            await asyncio.shield(_cancel(job))
        raise


async def _cancel(job: _Job) -> None:
    """Cancel a job of a map that stops; best effort (the gateway may be away)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CANCEL_WAIT):
            await job.cancel()


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found
