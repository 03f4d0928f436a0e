"""``python -m bench``: run the real stack on this machine, then the Celery baseline.

Shepherd phases (each on a freshly started stack of separate processes):

* latency: ``--latency-jobs`` echo jobs with a ~1 KB inline payload, one at a time, on one
  sheep; latency = arrival of the job's ``job.done`` event (on a queue of the benchmark's
  own, bound to ``<ns>.events`` before anything is submitted) minus the start of its
  ``POST /start-job``;
* throughput: ``--jobs`` such jobs per sheep count, submitted with ``--inflight`` requests in
  flight; jobs/s = jobs done / (last ``job.done`` - first submit);
* large inputs: 1 MB and 100 MB files streamed through ``PUT /jobs/{id}/input/input.json``
  after a declaration naming that input, ``--large-sheep`` uploads at a time; MB/s = input
  bytes / (last ``job.done`` - first submit). Peak RSS (VmHWM) of every process after each
  size, on a stack started for this phase so that earlier phases do not pollute it.

The Celery baseline (bench/baseline.py) does the same per job, with the same concurrency.
Failed, cancelled and missing jobs are counted, never as done, and a sample of outputs is
compared with its inputs after the clock stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import string
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import httpx

from bench import report
from bench.stack import (
    Infra,
    ShepherdStack,
    cpu_seconds,
    kill_everything,
    memory_of,
    notifications_drained,
    prepare_servers,
    server_pids,
    snapshot,
    teardown_servers,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"name": "echo", "version": "1"}
CHUNK = 1024 * 1024
TERMINAL = ("job.done", "job.failed", "job.cancelled")
ACCEPTED = (200, 201, 202)

FULL = {
    "latency_jobs": 200,
    "jobs": 1000,
    "large": {"1MB": (1_000_000, 20), "100MB": (100_000_000, 3)},
    "verify": 50,
}
QUICK = {
    "latency_jobs": 30,
    "jobs": 80,
    "large": {"1MB": (1_000_000, 5), "100MB": (100_000_000, 1)},
    "verify": 10,
}


# --- workload ------------------------------------------------------------------------------


def payload(i: int, rng: random.Random, size: int = 1024) -> dict[str, Any]:
    """A JSON object of about ``size`` bytes once serialized."""
    return {"i": i, "data": "".join(rng.choices(string.ascii_letters, k=size - 24))}


def make_jobs(prefix: str, count: int, rng: random.Random) -> list[tuple[str, dict]]:
    return [(f"{prefix}-{i:05d}", payload(i, rng)) for i in range(count)]


def make_input_file(path: Path, size: int) -> str:
    """A JSON document of exactly ``size`` bytes, written in chunks; its SHA-256."""
    digest = hashlib.sha256()
    head, tail = b'{"blob":"', b'"}'
    rng = random.Random(size)
    alphabet = string.ascii_letters.encode()
    left = size - len(head) - len(tail)
    block = bytes(rng.choices(alphabet, k=min(CHUNK, left)))
    with path.open("wb") as out:
        for part in (head, *_repeat(block, left), tail):
            out.write(part)
            digest.update(part)
    return digest.hexdigest()


def _repeat(block: bytes, total: int) -> Iterator[bytes]:
    """``total`` bytes of ``block`` repeated, in pieces of at most ``len(block)``."""
    while total > 0:
        yield block[: min(total, len(block))]
        total -= len(block)


# --- Shepherd client -----------------------------------------------------------------------


class Events:
    """Terminal job events of the namespace, timestamped as they arrive (no polling)."""

    def __init__(self) -> None:
        self._waiters: dict[str, asyncio.Future[tuple[float, str]]] = {}
        self.wall_clock: dict[str, float] = {}
        """Arrival of each expected job's event by the wall clock, to compare with the
        timestamps in its status."""
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def start(self, amqp_url: str, exchange: str) -> None:
        self._connection = await aio_pika.connect(amqp_url)
        channel = await self._connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in TERMINAL:
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


class ShepherdClient:
    def __init__(self, base_url: str, events: Events, inflight: int) -> None:
        self.events = events
        self.inflight = inflight
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(120, connect=10),
            limits=httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight),
        )
        self.rejections: collections.Counter[str] = collections.Counter()
        self.resent: collections.Counter[str] = collections.Counter()
        """Submissions sent again after a transport error, by error."""
        """Why submissions were refused (status and problem detail, or the client's error)."""
        self.submitted_wall: dict[str, float] = {}
        """When each latency job was submitted, by the wall clock (see :meth:`stages`)."""

    async def close(self) -> None:
        await self.http.aclose()

    @staticmethod
    def request_body(job_id: str, data: Any, **extra: Any) -> bytes:
        return json.dumps({"job_id": job_id, "model": MODEL, "payload": data, **extra}).encode()

    async def _post(self, body: bytes) -> int:
        """POST /start-job; sent again once after a transport error, as a client may: a
        repeat of the same request is idempotent (200 for a job already declared)."""
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

    async def _outcome(
        self,
        job_id: str,
        waiter: asyncio.Future,
        status: int,
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[str, float | None]:
        if status not in ACCEPTED:
            self.events.forget(job_id)
            return "rejected", None
        try:
            arrived, kind = await asyncio.wait_for(waiter, max(timeout, 0.01))
        except TimeoutError:
            self.events.forget(job_id)
            return "missing", None
        return ("done" if kind == "done" else "failed"), arrived

    async def latency(self, jobs: list[tuple[str, bytes]], timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        latencies: list[float] = []
        outcomes = {"done": 0, "failed": 0, "missing": 0, "rejected": 0}
        for job_id, body in jobs:
            waiter = self.events.expect(job_id)
            self.submitted_wall[job_id] = time.time()
            start = time.perf_counter()
            status = await self._post(body)
            outcome, arrived = await self._outcome(job_id, waiter, status, timeout)
            outcomes[outcome] += 1
            if arrived is not None and outcome == "done":
                latencies.append((arrived - start) * 1000)
        return {"latencies_ms": latencies, **outcomes}

    async def throughput(self, jobs: list[tuple[str, bytes]], timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        limit = asyncio.Semaphore(self.inflight)
        waiters = {job_id: self.events.expect(job_id) for job_id, _ in jobs}
        start = time.perf_counter()
        deadline = time.monotonic() + timeout

        async def one(job_id: str, body: bytes) -> tuple[str, float | None]:
            async with limit:
                status = await self._post(body)
            return await self._outcome(job_id, waiters[job_id], status, deadline - time.monotonic())

        results = await asyncio.gather(*(one(job_id, body) for job_id, body in jobs))
        return {
            **_tally(results, start),
            "rejections": dict(self.rejections),
            "resent": dict(self.resent),
        }

    async def large(
        self,
        job_ids: list[str],
        path: Path,
        size: int,
        workers: int,
        timeout: float,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        limit = asyncio.Semaphore(workers)
        waiters = {job_id: self.events.expect(job_id) for job_id in job_ids}
        start = time.perf_counter()
        deadline = time.monotonic() + timeout

        async def chunks() -> Any:
            with path.open("rb") as source:
                while chunk := source.read(CHUNK):
                    yield chunk

        async def one(job_id: str) -> tuple[str, float | None]:
            async with limit:
                body = json.dumps({"job_id": job_id, "model": MODEL, "inputs": ["input.json"]})
                status = await self._post(body.encode())
                if status in (200, 201, 202):
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
        return _tally(results, start)

    # checks, after the clock stopped

    async def stages(self, job_ids: list[str]) -> dict[str, float | None]:
        """Where the latency of sequential jobs goes: median milliseconds between the submit,
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
            points = [self.submitted_wall.get(job_id)]
            for name in names[1:-1]:
                value = status.get(name)
                points.append(value and dt.datetime.fromisoformat(value).timestamp())
            points.append(self.events.wall_clock[job_id])
            for (a, b), (first, second) in zip(pairs, itertools.pairwise(points), strict=True):
                if first is not None and second is not None:
                    gaps[f"{a}->{b}"].append((second - first) * 1000)
        return {
            gap: round(report.percentile(values, 50), 2) if values else None
            for gap, values in gaps.items()
        }

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


def _tally(results: list[tuple[str, float | None]], start: float) -> dict[str, Any]:
    outcomes = {"done": 0, "failed": 0, "missing": 0, "rejected": 0}
    last = start
    for outcome, arrived in results:
        outcomes[outcome] += 1
        if arrived is not None:
            last = max(last, arrived)
    return {"seconds": last - start, **outcomes}


# --- phases --------------------------------------------------------------------------------


def _rates(
    tally: dict[str, Any], jobs: int, cpu_before: dict[str, float], watched: dict[str, int]
) -> dict[str, Any]:
    """A throughput phase's tally with jobs/s and the CPU each process spent per job."""
    tally["cpu_ms_per_job"] = report.cpu_per_job(cpu_before, cpu_seconds(watched), tally["done"])
    tally["jobs"] = jobs
    tally["jobs_per_s"] = tally["done"] / tally["seconds"] if tally["done"] else 0
    return tally


def phase_timeout(jobs: int, quick: bool) -> float:
    return 30.0 + jobs * (0.2 if quick else 0.5)


async def warm_up(client: ShepherdClient, sheep_ids: list[str], label: str) -> None:
    """One job per sheep (so every runner has loaded echo) and one per sheep through the
    pool; unmeasured. Raises if any does not finish."""
    jobs = [
        (f"warm-{label}-{s}", client.request_body(f"warm-{label}-{s}", {"warm": s}, sheep_id=s))
        for s in sheep_ids
    ] + [
        (f"warm-{label}-pool{i}", client.request_body(f"warm-{label}-pool{i}", {"warm": i}))
        for i in range(len(sheep_ids))
    ]
    tally = await client.throughput(jobs, timeout=90)
    if tally["done"] != len(jobs):
        raise RuntimeError(f"warm-up of {label}: {tally}")


async def verify_small(client: ShepherdClient, jobs: list[tuple[str, dict]]) -> dict[str, Any]:
    checked, mismatched, examples = 0, 0, []
    for job_id, data in jobs:
        checked += 1
        if await client.result_json(job_id) != data:
            mismatched += 1
            if len(examples) < 3:
                examples.append(job_id)
    return {"checked": checked, "mismatched": mismatched, "mismatched_jobs": examples}


def sample(jobs: list, k: int, rng: random.Random) -> list:
    return rng.sample(jobs, min(k, len(jobs)))


@asynccontextmanager
async def measured_stack(
    cfg: dict[str, Any],
    infra: Infra,
    run_dir: Path,
    label: str,
    sheep: int,
    events: Events,
    out: dict[str, Any],
) -> AsyncIterator[tuple[ShepherdStack, ShepherdClient, dict[str, Any]]]:
    """A freshly started stack of ``sheep`` sheep, warmed up, with its idle memory read into
    ``out["rss"][label]`` (the phases add their peaks there); stopped on the way out."""
    stack = ShepherdStack(infra, run_dir, label, sheep, cfg["max_upload_bytes"])
    client = None
    try:
        await stack.start()
        client = ShepherdClient(stack.base_url, events, cfg["inflight"])
        await warm_up(client, stack.sheep_ids, label)
        rss = out["rss"][label] = {"idle": snapshot(stack.processes()), "peak_after": {}}
        yield stack, client, rss
        rss["crashed"] = stack.crashed()
    finally:
        if client is not None:
            await client.close()
        out["exit_codes"][label] = await stack.stop()


async def run_shepherd(cfg: dict[str, Any], infra: Infra, run_dir: Path) -> dict[str, Any]:
    rng = random.Random(1)
    out: dict[str, Any] = {"throughput": {}, "rss": {}, "exit_codes": {}, "verification": {}}
    events = Events()
    await events.start(infra.amqp_url, infra.names.events_exchange)
    try:
        counts = list(cfg["sheep"])
        if cfg["latency_sheep"] not in counts:
            counts.insert(0, cfg["latency_sheep"])
        for n in counts:
            label = f"shepherd-{n}sheep"
            async with measured_stack(cfg, infra, run_dir, label, n, events, out) as (
                stack,
                client,
                rss,
            ):
                if n == cfg["latency_sheep"]:
                    jobs = make_jobs(f"lat{n}", cfg["latency_jobs"], rng)
                    bodies = [(j, client.request_body(j, d)) for j, d in jobs]
                    report.log(f"shepherd: latency, {len(jobs)} sequential jobs on {n} sheep")
                    out["latency"] = {
                        "workers": n,
                        **await client.latency(bodies, timeout=30),
                    }
                    rss["peak_after"]["latency"] = snapshot(stack.processes())
                    checked = sample(jobs, cfg["verify"], rng)
                    out["verification"]["latency"] = await verify_small(client, checked)
                    out["latency"]["stages_median_ms"] = await client.stages(
                        [job_id for job_id, _ in checked]
                    )
                if n in cfg["sheep"]:
                    jobs = make_jobs(f"tp{n}", cfg["jobs"], rng)
                    bodies = [(j, client.request_body(j, d)) for j, d in jobs]
                    report.log(f"shepherd: throughput, {len(jobs)} jobs on {n} sheep")
                    watched = {**stack.processes(), **server_pids(), "client": os.getpid()}
                    cpu = cpu_seconds(watched)
                    tally = await client.throughput(
                        bodies, timeout=phase_timeout(len(jobs), cfg["quick"])
                    )
                    out["throughput"][str(n)] = _rates(tally, len(jobs), cpu, watched)
                    rss["peak_after"]["throughput"] = snapshot(stack.processes())
                    out["verification"][f"throughput-{n}"] = await verify_small(
                        client, sample(jobs, cfg["verify"], rng)
                    )
                    report.log(f"  {tally['jobs_per_s']:.1f} jobs/s, {_failures(tally)} failed")
        report.log("shepherd: waiting for MinIO's notifications of the writes so far")
        out["notification_backlog_s"] = await notifications_drained(infra)
        report.log(f"  drained after {out['notification_backlog_s']:.1f} s")
        out["large"] = await _shepherd_large(cfg, infra, run_dir, events, out)
        out["client_hwm_mib"] = (memory_of(os.getpid()) or {}).get("hwm_mib")
    finally:
        await events.close()
    return out


async def _shepherd_large(
    cfg: dict[str, Any],
    infra: Infra,
    run_dir: Path,
    events: Events,
    out: dict[str, Any],
) -> dict[str, Any]:
    n = cfg["large_sheep"]
    label = f"shepherd-large-{n}sheep"
    large: dict[str, Any] = {"workers": n, "sizes": {}}
    async with measured_stack(cfg, infra, run_dir, label, n, events, out) as (stack, client, rss):
        for name, (size, count) in cfg["large"].items():
            path, digest = cfg["input_files"][name]
            job_ids = [f"big{name.lower()}-{i:03d}" for i in range(count)]
            report.log(f"shepherd: {count} x {name} inputs, {n} at a time")
            tally = await client.large(job_ids, path, size, n, timeout=60 + count * size / 2e6)
            rss["peak_after"][name] = snapshot(stack.processes())
            tally.update(_mb_per_s(tally, size, count))
            digests = [await client.result_digest(job_id) for job_id in job_ids]
            tally["verification"] = _check_digests(digests, size, digest)
            large["sizes"][name] = tally
            report.log(f"  {tally['mb_per_s']:.1f} MB/s, {_failures(tally)} failed")
    return large


def _mb_per_s(tally: dict[str, Any], size: int, count: int) -> dict[str, Any]:
    done_bytes = tally["done"] * size
    return {
        "size_bytes": size,
        "jobs": count,
        "bytes_done": done_bytes,
        "mb_per_s": done_bytes / 1e6 / tally["seconds"] if tally["done"] else 0.0,
    }


def _check_digests(got: list[tuple[int, str] | None], size: int, digest: str) -> dict[str, Any]:
    """Every output's size and SHA-256 against the input file's."""
    mismatched = sum(1 for item in got if item != (size, digest))
    return {"checked": len(got), "mismatched": mismatched}


def _failures(tally: dict[str, Any]) -> int:
    return sum(tally.get(k, 0) for k in ("failed", "missing", "rejected"))


def run_celery(cfg: dict[str, Any], infra: Infra, run_dir: Path) -> dict[str, Any]:
    from bench.baseline import CeleryBaseline, verify_sample

    rng = random.Random(1)
    out: dict[str, Any] = {"throughput": {}, "rss": {}, "exit_codes": {}, "verification": {}}
    baseline = CeleryBaseline(infra, run_dir, cfg["inflight"])
    counts = list(cfg["sheep"])
    if cfg["latency_sheep"] not in counts:
        counts.insert(0, cfg["latency_sheep"])

    def encoded(jobs: list[tuple[str, dict]]) -> list[tuple[str, bytes]]:
        return [(j, json.dumps(d).encode()) for j, d in jobs]

    for n in counts:
        label = f"celery-{n}workers"
        try:
            baseline.start_worker(n, label)
            rss = out["rss"][label] = {"idle": snapshot(baseline.processes()), "peak_after": {}}
            if n == cfg["latency_sheep"]:
                jobs = encoded(make_jobs(f"clat{n}", cfg["latency_jobs"], rng))
                report.log(f"celery: latency, {len(jobs)} sequential jobs on {n} worker(s)")
                out["latency"] = {"workers": n, **baseline.latency(jobs, timeout=30)}
                rss["peak_after"]["latency"] = snapshot(baseline.processes())
                out["verification"]["latency"] = verify_sample(
                    sample(jobs, cfg["verify"], rng), baseline.output_json
                )
            if n in cfg["sheep"]:
                jobs = encoded(make_jobs(f"ctp{n}", cfg["jobs"], rng))
                report.log(f"celery: throughput, {len(jobs)} jobs on {n} worker(s)")
                watched = {**baseline.processes(), **server_pids(), "client": os.getpid()}
                cpu = cpu_seconds(watched)
                tally = baseline.throughput(jobs, timeout=phase_timeout(len(jobs), cfg["quick"]))
                out["throughput"][str(n)] = _rates(tally, len(jobs), cpu, watched)
                rss["peak_after"]["throughput"] = snapshot(baseline.processes())
                out["verification"][f"throughput-{n}"] = verify_sample(
                    sample(jobs, cfg["verify"], rng), baseline.output_json
                )
                report.log(f"  {tally['jobs_per_s']:.1f} jobs/s, {_failures(tally)} failed")
        finally:
            out["exit_codes"][label] = baseline.stop_worker()

    n = cfg["large_sheep"]
    label = f"celery-large-{n}workers"
    large: dict[str, Any] = {"workers": n, "sizes": {}}
    try:
        baseline.start_worker(n, label)
        rss = out["rss"][label] = {"idle": snapshot(baseline.processes()), "peak_after": {}}
        for name, (size, count) in cfg["large"].items():
            path, digest = cfg["input_files"][name]
            job_ids = [f"cbig{name.lower()}-{i:03d}" for i in range(count)]
            report.log(f"celery: {count} x {name} inputs, {n} at a time")
            tally = baseline.large(job_ids, path, n, timeout=60 + count * size / 2e6)
            rss["peak_after"][name] = snapshot(baseline.processes())
            tally.update(_mb_per_s(tally, size, count))
            digests = [baseline.output_digest(job_id) for job_id in job_ids]
            tally["verification"] = _check_digests(digests, size, digest)
            large["sizes"][name] = tally
            report.log(f"  {tally['mb_per_s']:.1f} MB/s, {_failures(tally)} failed")
    finally:
        out["exit_codes"][label] = baseline.stop_worker()
    out["large"] = large
    out["client_hwm_mib"] = (memory_of(os.getpid()) or {}).get("hwm_mib")
    return out


# --- the run -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer jobs (make bench-quick)")
    parser.add_argument("--jobs", type=int, help="throughput jobs per sheep count")
    parser.add_argument("--latency-jobs", type=int, help="sequential jobs for the latency")
    parser.add_argument(
        "--sheep", default="1,2,4", help="sheep (and Celery worker) counts, e.g. 1,2,4"
    )
    parser.add_argument("--latency-sheep", type=int, default=1, help="sheep for the latency")
    parser.add_argument("--large-sheep", type=int, default=2, help="sheep for large inputs")
    parser.add_argument(
        "--large-jobs", help="jobs of 1 MB and of 100 MB, e.g. 20,3 (default by mode)"
    )
    parser.add_argument("--inflight", type=int, default=64, help="submissions in flight")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--update-doc",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rewrite the table in docs/performance.md (default: full runs only)",
    )
    parser.add_argument("--no-celery", action="store_true", help="skip the baseline")
    parser.add_argument("--keep", action="store_true", help="keep the run's data directory")
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("SHEPHERD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    parser.add_argument(
        "--s3-endpoint", default=os.environ.get("SHEPHERD_S3_ENDPOINT", "127.0.0.1:9000")
    )
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    mode = QUICK if args.quick else FULL
    large = dict(mode["large"])
    if args.large_jobs:
        counts = [int(c) for c in args.large_jobs.split(",")]
        large = {
            name: (size, c) for (name, (size, _)), c in zip(large.items(), counts, strict=True)
        }
    biggest = max(size for size, _ in large.values())
    return {
        "mode": "quick" if args.quick else "full",
        "quick": args.quick,
        "sheep": sorted({int(c) for c in args.sheep.split(",")}),
        "latency_sheep": args.latency_sheep,
        "large_sheep": args.large_sheep,
        "latency_jobs": args.latency_jobs or mode["latency_jobs"],
        "jobs": args.jobs or mode["jobs"],
        "large": large,
        "inflight": args.inflight,
        "verify": mode["verify"],
        "payload_bytes": len(json.dumps(payload(0, random.Random(0)))),
        "max_upload_bytes": max(1024**3, 2 * biggest),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = settings(args)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(tempfile.mkdtemp(prefix=f"shepherd-bench-{stamp}-"))
    infra = Infra(amqp_url=args.amqp_url, s3_endpoint=args.s3_endpoint)
    sheep_ids = [f"s{i + 1}" for i in range(max([*cfg["sheep"], cfg["large_sheep"], 1]))]
    started = time.monotonic()
    results: dict[str, Any] = {
        "schema": 1,
        "timestamp": stamp,
        "mode": cfg["mode"],
        "run_dir": str(run_dir),
        "logs": str(run_dir / "logs"),
    }

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    report.log(f"run directory {run_dir} (service logs in logs/)")
    try:
        results["host"] = report.host_info()
        inputs = run_dir / "inputs"
        inputs.mkdir()
        cfg["input_files"] = {}
        for name, (size, _) in cfg["large"].items():
            path = inputs / f"{name}.json"
            cfg["input_files"][name] = (path, make_input_file(path, size))
        asyncio.run(prepare_servers(infra, sheep_ids))
        results["versions"] = asyncio.run(report.versions(infra))
        results["settings"] = report.describe_settings(cfg, infra)
        results["shepherd"] = asyncio.run(run_shepherd(cfg, infra, run_dir))
        if not args.no_celery:
            results["celery"] = run_celery(cfg, infra, run_dir)
    except KeyboardInterrupt:
        report.log("interrupted: stopping everything")
        results["interrupted"] = True
        return 130
    finally:
        kill_everything()
        with contextlib.suppress(Exception):
            removed = asyncio.run(teardown_servers(infra, sheep_ids))
            report.log(f"removed the bench namespace, {removed} objects and the bucket")
        if not args.keep:  # the logs and configs stay; inputs and scratch data go
            shutil.rmtree(run_dir / "inputs", ignore_errors=True)
            for data in run_dir.glob("*/data"):
                shutil.rmtree(data, ignore_errors=True)
    client_mem = memory_of(os.getpid())
    results["client_rss_mib"] = client_mem and {
        "rss": client_mem["rss_mib"],
        "hwm": client_mem["hwm_mib"],
    }
    results["host"]["loadavg_end"] = os.getloadavg()
    results["wall_s"] = round(time.monotonic() - started, 1)
    report.finish(results, cfg, args.out, update_doc=args.update_doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
