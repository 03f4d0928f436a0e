"""The job index on its own: pages in the listing's order whatever the filter, every job once
across pages, the latest event winning, and the offset kept with what was applied."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.job import ModelRef
from schemas.listing import JobSummary
from schemas.status import JobState
from services.gateway.job_index import BadCursor, JobIndex, JobQuery

START = datetime(2026, 12, 1, tzinfo=UTC)
MODELS = [ModelRef(name="echo", version="1"), ModelRef(name="echo", version="2")]


def summary(n: int, rng: random.Random, **changes: object) -> JobSummary:
    fields: dict[str, object] = {
        "job_id": f"job-{n:04d}",
        "state": rng.choice([JobState.DONE, JobState.FAILED, JobState.QUEUED]),
        "model": rng.choice([*MODELS, ModelRef(name="iris", version="1")]),
        "sheep_id": rng.choice(["s1", "s2", None]),
        # whole seconds: several jobs share an acceptance time, which the job id breaks
        "accepted_at": START + timedelta(seconds=rng.randrange(200)),
    }
    return JobSummary.model_validate({**fields, **changes})


@pytest.fixture
async def index(tmp_path: Path):
    index = JobIndex(tmp_path / "index" / "jobs.sqlite3")
    await index.open()
    yield index
    await index.close()


async def every_page(index: JobIndex, query: JobQuery, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = await index.page(query, limit, cursor)
        pages.append([json.loads(s)["job_id"] for s in page.summaries])
        if (cursor := page.next_cursor) is None:
            return pages


@pytest.mark.parametrize(
    "query",
    [
        JobQuery(),
        JobQuery(states=("failed",)),
        JobQuery(states=("done", "queued")),
        JobQuery(model_name="echo"),
        JobQuery(model_name="echo", model_version="2", sheep_id="s1"),
        JobQuery(sheep_id="s2", since=START + timedelta(seconds=100)),
    ],
)
async def test_pages_follow_the_listing_order_and_hold_each_job_once(index, query):
    rng = random.Random(3)
    jobs = [summary(n, rng) for n in range(500)]
    await index.add(jobs)
    expected = sorted(
        (
            job
            for job in jobs
            if (not query.states or job.state in query.states)
            and (query.model_name is None or job.model.name == query.model_name)
            and (query.model_version is None or job.model.version == query.model_version)
            and (query.sheep_id is None or job.sheep_id == query.sheep_id)
            and (query.since is None or job.accepted_at >= query.since)
        ),
        key=lambda job: (job.accepted_at, job.job_id),
        reverse=True,
    )
    pages = await every_page(index, query, 7)
    assert [job_id for page in pages for job_id in page] == [job.job_id for job in expected]
    assert all(len(page) == 7 for page in pages[:-1])


async def test_the_latest_event_wins_and_the_first_acceptance_stays(index):
    rng = random.Random(1)
    queued = summary(1, rng, state="queued", sheep_id=None)
    done = summary(1, rng, state="done", sheep_id="s2", accepted_at=START + timedelta(days=1))
    await index.apply([queued], offset=10)
    await index.apply([done], offset=11)
    [stored] = (await index.page(JobQuery(), 10, None)).summaries
    assert json.loads(stored)["state"] == "done" and json.loads(stored)["sheep_id"] == "s2"
    assert json.loads(stored)["accepted_at"] == queued.model_dump(mode="json")["accepted_at"]
    assert await index.applied() == 11
    assert (await index.page(JobQuery(states=("queued",)), 10, None)).summaries == []


async def test_the_offset_and_rows_outlive_the_process(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    first = JobIndex(path)
    await first.open()
    assert await first.applied() is None
    await first.apply([summary(1, random.Random(2))], offset=41)
    await first.close()
    again = JobIndex(path)
    await again.open()
    assert await again.applied() == 41 and await again.count() == 1
    await again.close()


@pytest.mark.parametrize("cursor", ["", "not-base64!", "WzEsMiwzXQ", "eyJhIjogMX0"])
async def test_a_cursor_it_did_not_make_is_refused(index, cursor):
    with pytest.raises(BadCursor):
        await index.page(JobQuery(), 10, cursor)
