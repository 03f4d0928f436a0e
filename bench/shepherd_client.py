"""The benchmark's Shepherd client: submits over HTTP or AMQP, learns of completion by events.

Completion is never polled: before anything is submitted, :class:`Events` binds an exclusive
queue of its own to ``<ns>.events`` and timestamps each CloudEvent as it arrives (``subject``
is the job id). Over HTTP a job is submitted with ``POST /start-job``; over AMQP the same
body is published, confirmed, to the ``<ns>.submit`` exchange, and a refusal comes back as a
``job.rejected`` event.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, Protocol

import aio_pika
import aio_pika.abc
import httpx

from bench.stats import percentile
from bench.workload import CHUNK, Job, Outcome, empty_outcomes, sequential, tally

ECHO = {"name": "echo", "version": "1"}
TERMINAL = ("job.done", "job.failed", "job.cancelled", "job.rejected")
ACCEPTED = (200, 201, 202)


class Events:
    """Job events of the namespace with routing keys ``keys``, timestamped as they arrive."""

    def __init__(self, keys: Iterable[str] = TERMINAL) -> None:
        self.keys = tuple(keys)
        self._waiters: dict[str, asyncio.Future[tuple[float, str]]] = {}
        self.wall_clock: dict[str, float] = {}
        """Arrival of each expected job's event by the wall clock, to compare with the
        timestamps in its status."""
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def start(self, amqp_url: str, exchange: str) -> None:
        self._connection = await aio_pika.connect(amqp_url)
        channel = await self._connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in self.keys:
            await queue.bind(exchange, key)
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        arrived, wall = time.perf_counter(), time.time()
        try:
            job_id = json.loads(message.body)["subject"]
        except (ValueError, KeyError, TypeError):
            return
        waiter = self._waiters.pop(job_id, None)
        if waiter is not None and not waiter.done():
            self.wall_clock[job_id] = wall
            waiter.set_result((arrived, (message.routing_key or "").removeprefix("job.")))

    def expect(self, job_id: str) -> asyncio.Future[tuple[float, str]]:
        """Register before submitting, so that no event can come first."""
        future = asyncio.get_running_loop().create_future()
        self._waiters[job_id] = future
        return future

    def forget(self, job_id: str) -> None:
        self._waiters.pop(job_id, None)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


class Submitter(Protocol):
    """One way of handing Shepherd a job request; returns an HTTP-like status (0: lost)."""

    via: str
    rejections: collections.Counter[str]

    async def submit(self, body: bytes) -> int: ...


class HttpSubmitter:
    """``POST /start-job``; sent again once after a transport error, as a client may: a
    repeat of the same request is idempotent (200 for a job already declared)."""

    via = "http"

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.rejections: collections.Counter[str] = collections.Counter()
        """Why submissions were refused (status and problem detail, or the client's error)."""
        self.resent: collections.Counter[str] = collections.Counter()
        """Submissions sent again after a transport error, by error."""

    async def submit(self, body: bytes) -> int:
        for attempt in (1, 2):
            try:
                response = await self.http.post(
                    "/start-job", content=body, headers={"content-type": "application/json"}
                )
                break
            except httpx.TransportError as exc:
                if attempt == 1:
                    self.resent[type(exc).__name__] += 1
                    continue
                self.rejections[f"{type(exc).__name__}: {exc}"] += 1
                return 0
        if response.status_code not in ACCEPTED:
            detail = response.json().get("detail") if response.content else None
            self.rejections[f"{response.status_code} {detail}"] += 1
        return response.status_code


class AmqpSubmitter:
    """The request body published, persistent and confirmed, to ``<ns>.submit``; what the
    gateway refuses comes back as ``job.rejected`` (no ``reply_to``: the events tell)."""

    via = "amqp"

    def __init__(self) -> None:
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self.rejections: collections.Counter[str] = collections.Counter()

    async def start(self, amqp_url: str, exchange: str) -> None:
        self._connection = await aio_pika.connect(amqp_url)
        channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await channel.get_exchange(exchange, ensure=True)

    async def submit(self, body: bytes) -> int:
        assert self._exchange is not None
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await self._exchange.publish(message, routing_key="")
        except Exception as exc:  # a nack or a lost channel: the submission is lost
            self.rejections[f"{type(exc).__name__}: {exc}"] += 1
            return 0
        return 202

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


class ShepherdClient:
    """Runs the phases' submission patterns and reads results back over HTTP."""

    def __init__(self, base_url: str, events: Events, inflight: int) -> None:
        self.events = events
        self.inflight = inflight
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(120, connect=10),
            limits=httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight),
        )
        self.over_http = HttpSubmitter(self.http)
        self.submitted_wall: dict[str, float] = {}
        """When each sequential job was submitted, by the wall clock (see :meth:`stages`)."""

    async def close(self) -> None:
        await self.http.aclose()

    @staticmethod
    def request_body(job_id: str, data: Any, model: dict[str, str] = ECHO, **extra: Any) -> bytes:
        return json.dumps({"job_id": job_id, "model": model, "payload": data, **extra}).encode()

    def bodies(self, jobs: list[Job]) -> list[tuple[str, bytes]]:
        return [(job_id, self.request_body(job_id, data)) for job_id, data in jobs]

    async def _outcome(
        self,
        job_id: str,
        waiter: asyncio.Future[tuple[float, str]],
        status: int,
        timeout: float,  # noqa: ASYNC109
    ) -> Outcome:
        if status not in ACCEPTED:
            self.events.forget(job_id)
            return "rejected", None
        try:
            arrived, kind = await asyncio.wait_for(waiter, max(timeout, 0.01))
        except TimeoutError:
            self.events.forget(job_id)
            return "missing", None
        if kind == "rejected":
            return "rejected", None
        return ("done" if kind == "done" else "failed"), arrived

    async def latency(
        self,
        jobs: list[tuple[str, bytes]],
        via: Submitter,
        timeout: float,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """One job at a time: submit, wait for its event."""
        latencies: list[float] = []
        outcomes = empty_outcomes()
        for job_id, body in jobs:
            waiter = self.events.expect(job_id)
            self.submitted_wall[job_id] = time.time()
            start = time.perf_counter()
            status = await via.submit(body)
            outcome, arrived = await self._outcome(job_id, waiter, status, timeout)
            outcomes[outcome] += 1
            if arrived is not None and outcome == "done":
                latencies.append((arrived - start) * 1000)
        return sequential(latencies, outcomes)

    async def throughput(
        self,
        jobs: list[tuple[str, bytes]],
        via: Submitter,
        timeout: float,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Every job submitted with ``inflight`` submissions in flight; seconds until the
        last event."""
        limit = asyncio.Semaphore(self.inflight)
        waiters = {job_id: self.events.expect(job_id) for job_id, _ in jobs}
        rejected_before = collections.Counter(via.rejections)
        resent_before = collections.Counter(self.over_http.resent)
        start = time.perf_counter()
        deadline = time.monotonic() + timeout

        async def one(job_id: str, body: bytes) -> Outcome:
            async with limit:
                status = await via.submit(body)
            return await self._outcome(job_id, waiters[job_id], status, deadline - time.monotonic())

        results = await asyncio.gather(*(one(job_id, body) for job_id, body in jobs))
        out = tally(list(results), start)
        out["rejections"] = dict(via.rejections - rejected_before)
        out["resent"] = dict(self.over_http.resent - resent_before)
        return out

    async def large(
        self,
        job_ids: list[str],
        path: Path,
        size: int,
        workers: int,
        timeout: float,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """A declaration naming ``input.json``, then the file streamed through the gateway,
        ``workers`` at a time."""
        limit = asyncio.Semaphore(workers)
        waiters = {job_id: self.events.expect(job_id) for job_id in job_ids}
        start = time.perf_counter()
        deadline = time.monotonic() + timeout

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as source:
                while chunk := source.read(CHUNK):
                    yield chunk

        async def one(job_id: str) -> Outcome:
            async with limit:
                body = json.dumps({"job_id": job_id, "model": ECHO, "inputs": ["input.json"]})
                self.submitted_wall[job_id] = time.time()
                status = await self.over_http.submit(body.encode())
                if status in ACCEPTED:
                    try:
                        response = await self.http.put(
                            f"/jobs/{job_id}/input/input.json",
                            content=chunks(),
                            headers={
                                "content-type": "application/json",
                                "content-length": str(size),
                            },
                        )
                        status = 202 if response.status_code == 201 else response.status_code
                    except httpx.HTTPError:
                        status = 0
            return await self._outcome(job_id, waiters[job_id], status, deadline - time.monotonic())

        results = await asyncio.gather(*(one(job_id) for job_id in job_ids))
        return tally(list(results), start)

    # checks, after the clock stopped

    async def stages(self, job_ids: list[str]) -> dict[str, float | None]:
        """Where the latency of jobs goes: median milliseconds between the submit,
        the timestamps of each job's status and the arrival of its event (all on this
        machine's clock)."""
        names = ["submit", "accepted_at", "enqueued_at", "started_at", "finished_at", "event"]
        pairs = list(itertools.pairwise(names))
        gaps: dict[str, list[float]] = {f"{a}->{b}": [] for a, b in pairs}
        for job_id in job_ids:
            response = await self.http.get(f"/jobs/{job_id}/status")
            if response.status_code != 200 or job_id not in self.events.wall_clock:
                continue
            status = response.json()
            points: list[float | None] = [self.submitted_wall.get(job_id)]
            for name in names[1:-1]:
                value = status.get(name)
                points.append(value and dt.datetime.fromisoformat(value).timestamp())
            points.append(self.events.wall_clock[job_id])
            for (a, b), (first, second) in zip(pairs, itertools.pairwise(points), strict=True):
                if first is not None and second is not None:
                    gaps[f"{a}->{b}"].append((second - first) * 1000)
        return {gap: _median(values) for gap, values in gaps.items()}

    async def result_json(self, job_id: str) -> Any:
        response = await self.http.get(f"/jobs/{job_id}/result")
        if response.status_code != 200:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    async def result_digest(self, job_id: str) -> tuple[int, str] | None:
        digest, size = hashlib.sha256(), 0
        async with self.http.stream("GET", f"/jobs/{job_id}/result") as response:
            if response.status_code != 200:
                return None
            async for chunk in response.aiter_bytes(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()


def _median(values: list[float]) -> float | None:
    median = percentile(values, 50)
    return None if median is None else round(median, 2)
