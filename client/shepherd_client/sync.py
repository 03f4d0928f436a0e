"""The blocking client: :class:`AsyncClient`'s methods, each run to completion on an event
loop of the client's own (``asyncio.Runner``: one loop for the client's life, so connections
are reused; Ctrl-C cancels the call under way, which lets ``map`` cancel its jobs).

    with Client("http://gateway:5000") as client:
        job = client.submit("echo:1", {"x": 1})
        print(job.result())
        for line in job.follow_logs():
            print(line.text, end="")

Not for use inside a running event loop (use :class:`AsyncClient` there), nor from two
threads at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from shepherd_client.client import AsyncClient, Model
from shepherd_client.http import RETRY_FOR
from shepherd_client.inputs import Files
from shepherd_client.jobs import AsyncJob, Logs
from shepherd_client.models import JobEvent, JobStatus, LogLine

T = TypeVar("T")


class Job:
    """A job, as :class:`AsyncJob` but blocking."""

    def __init__(self, job: AsyncJob, runner: asyncio.Runner) -> None:
        self._job = job
        self._runner = runner
        self.id = job.id

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> JobStatus:
        return self._run(self._job.status())

    def wait(self, timeout: float | None = None) -> JobStatus:
        return self._run(self._job.wait(timeout))

    def result(self, timeout: float | None = None) -> Any:
        return self._run(self._job.result(timeout))

    def download(self, directory: str | Path, timeout: float | None = None) -> list[Path]:
        return self._run(self._job.download(directory, timeout))

    def logs(self, stream: str | None = None, tail: int | None = None) -> Logs:
        return self._run(self._job.logs(stream, tail))

    def follow_logs(self) -> Iterator[LogLine]:
        return _blocking(self._runner, self._job.follow_logs())

    def cancel(self) -> JobStatus:
        return self._run(self._job.cancel())

    def events(self) -> Iterator[JobEvent]:
        return _blocking(self._runner, self._job.events())

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(call)


class Client:
    def __init__(self, url: str, token: str | None = None, *, retry_for: float = RETRY_FOR) -> None:
        self._runner = asyncio.Runner()
        self._async = AsyncClient(url, token, retry_for=retry_for)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._async.close())
        self._runner.close()

    def job(self, job_id: str) -> Job:
        return Job(self._async.job(job_id), self._runner)

    def submit(
        self,
        model: Model,
        payload: Any = None,
        *,
        files: Files | None = None,
        inputs: Iterable[str] | None = None,
        job_id: str | None = None,
        sheep: str | None = None,
        sheep_class: str | None = None,
        priority: str | None = None,
        timeout: float | None = None,
        callback_url: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Job:
        submitted = self._runner.run(
            self._async.submit(
                model,
                payload,
                files=files,
                inputs=inputs,
                job_id=job_id,
                sheep=sheep,
                sheep_class=sheep_class,
                priority=priority,
                timeout=timeout,
                callback_url=callback_url,
                metadata=metadata,
            )
        )
        return Job(submitted, self._runner)

    def jobs(
        self,
        *,
        state: str | Iterable[str] | None = None,
        model: Model | None = None,
        sheep: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = 100,
    ) -> Iterator[JobStatus]:
        listing = self._async.jobs(state=state, model=model, sheep=sheep, since=since, limit=limit)
        return _blocking(self._runner, listing)

    def map(
        self,
        model: Model,
        payloads: Iterable[Any],
        *,
        concurrency: int = 32,
        progress: bool = True,
        return_exceptions: bool = False,
    ) -> list[Any]:
        return self._runner.run(
            self._async.map(
                model,
                payloads,
                concurrency=concurrency,
                progress=progress,
                return_exceptions=return_exceptions,
            )
        )


def _blocking(runner: asyncio.Runner, items: AsyncIterator[T]) -> Iterator[T]:
    """An async iterator's items, each awaited on ``runner``."""
    try:
        while True:
            try:
                yield runner.run(anext(items))  # type: ignore[arg-type]
            except StopAsyncIteration:
                return
    finally:
        runner.run(items.aclose())  # type: ignore[attr-defined]
