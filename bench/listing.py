"""The job listing on a million ended jobs: ``GET /jobs`` timed through the real gateway.

Running a million jobs would take this machine hours, so the gateway's job index is filled
with generated summaries first (ended jobs of several models, sheep and states, accepted over
thirty days), through the index's own code, and the gateway then starts on it as on any
index it left behind. Each query is asked ``REQUESTS`` times over HTTP, one at a time: the
first page of each filter, and pages deep in the listing by cursor.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.report import log
from bench.stack import Infra, ShepherdStack
from bench.stats import latency_stats
from schemas.job import ModelRef
from schemas.listing import ErrorSummary, JobSummary
from schemas.status import JobState
from services.gateway.job_index import JobIndex

#: Jobs in the generated index.
JOBS = 1_000_000
#: Requests per query.
REQUESTS = 100
#: Rows written per transaction while generating.
CHUNK = 50_000
MODELS = [ModelRef(name=n, version=v) for n, v in (("echo", "1"), ("power", "1"), ("iris", "2"))]
SHEEP = [f"s{i}" for i in range(1, 9)]
STATES = [JobState.DONE] * 90 + [JobState.FAILED] * 8 + [JobState.CANCELLED] * 2
QUERIES: dict[str, dict[str, str]] = {
    "first_page": {},
    "state_failed": {"state": "failed"},
    "model_power": {"model": "power"},
    "sheep_s3": {"sheep": "s3"},
    "since_a_week": {},  # since is set at run time
}


async def listing(infra: Infra, run_dir: Any, jobs: int = JOBS) -> dict[str, Any]:
    stack = ShepherdStack(infra, run_dir, "shepherd-listing", 0, 1)
    index_path = stack.dir / "data" / ".gateway" / f"{infra.namespace}.jobs.sqlite3"
    started = time.monotonic()
    await generate(JobIndex(index_path), jobs)
    generated_s = time.monotonic() - started
    log(f"shepherd: job listing, {jobs} generated ended jobs ({generated_s:.0f} s to generate)")
    out: dict[str, Any] = {"jobs": jobs, "generate_s": round(generated_s, 1)}
    queries = {**QUERIES, "since_a_week": {"since": _week_ago().isoformat()}}
    try:
        await stack.start(with_sheep=False)
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
            for name, params in queries.items():
                out[name] = await _timed(client, [{**params, "limit": "100"}] * REQUESTS)
            deep = await _cursors(client, REQUESTS)
            out["later_pages"] = await _timed(client, [{"limit": "100", "cursor": c} for c in deep])
    finally:
        out["exit_codes"] = await stack.stop()
    log(
        "  first page p50 {first} ms, failed only {failed} ms, later pages {later} ms".format(
            first=out["first_page"]["p50_ms"],
            failed=out["state_failed"]["p50_ms"],
            later=out["later_pages"]["p50_ms"],
        )
    )
    return out


async def generate(index: JobIndex, jobs: int) -> None:
    rng = random.Random(7)
    now = datetime.now(UTC)
    await index.open()
    try:
        for first in range(0, jobs, CHUNK):
            await index.add(_summary(rng, now, n) for n in range(first, min(first + CHUNK, jobs)))
    finally:
        await index.close()


def _summary(rng: random.Random, now: datetime, n: int) -> JobSummary:
    accepted = now - timedelta(seconds=rng.uniform(60, 30 * 86400))
    state = rng.choice(STATES)
    error = ErrorSummary(type="ValueError", message="bad input") if state == "failed" else None
    return JobSummary(
        job_id=f"gen-{n:07d}",
        state=state,
        model=rng.choice(MODELS),
        sheep_id=rng.choice(SHEEP),
        accepted_at=accepted,
        started_at=accepted + timedelta(seconds=1),
        finished_at=accepted + timedelta(seconds=2),
        error=error,
    )


def _week_ago() -> datetime:
    return datetime.now(UTC) - timedelta(days=7)


async def _timed(client: httpx.AsyncClient, requests: list[dict[str, str]]) -> dict[str, Any]:
    took: list[float] = []
    for params in requests:
        started = time.perf_counter()
        answer = await client.get("/jobs", params=params)
        took.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
        if len(answer.json()["jobs"]) != 100:
            raise AssertionError(f"GET /jobs?{params} gave {len(answer.json()['jobs'])} jobs")
    return latency_stats(took)


async def _cursors(client: httpx.AsyncClient, pages: int) -> list[str]:
    """Cursors of pages spread through the listing (walked with large pages to get there)."""
    cursors: list[str] = []
    params = {"limit": "1000"}
    while len(cursors) < pages:
        page = (await client.get("/jobs", params=params)).json()
        cursors.append(page["next_cursor"])
        params["cursor"] = page["next_cursor"]
    return cursors
