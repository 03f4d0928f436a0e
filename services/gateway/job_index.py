"""The gateway's job index: the SQLite file ``GET /jobs`` pages through.

    index = JobIndex(path)
    await index.open()
    await index.apply([(offset, summary), ...], last_offset)   # in the history's order
    page = await index.page(JobQuery(state=("failed",)), limit=100, cursor=None)
    await index.close()

It holds one row per job, the summary of its latest event (:class:`schemas.listing.
JobSummary`), and the offset in ``<ns>.event-stream`` of the last event applied, written in
the same transaction: a restarted gateway resumes after it (:mod:`services.gateway.indexer`).
It is a view of the history that can be rebuilt, not a record of its own: removed, a fresh
one is built from the history's first event kept.

Pages are keyset-paged on (accepted_at, job_id), newest first, along a B-tree index per
filter, so a page costs the same on a thousand jobs as on millions. SQLite blocks, so every
call runs on a thread of the index's own, one at a time.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from schemas.listing import JobSummary

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    sheep_id TEXT,
    accepted_us INTEGER NOT NULL,
    summary TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (accepted_us, job_id);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, accepted_us, job_id);
CREATE INDEX IF NOT EXISTS jobs_by_model ON jobs (model_name, accepted_us, job_id);
CREATE INDEX IF NOT EXISTS jobs_by_sheep ON jobs (sheep_id, accepted_us, job_id);
CREATE TABLE IF NOT EXISTS applied (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    stream_offset INTEGER NOT NULL
);
"""
# The earliest acceptance time seen is kept: a job is listed where it was first accepted.
_UPSERT = """
INSERT INTO jobs (job_id, state, model_name, model_version, sheep_id, accepted_us, summary)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (job_id) DO UPDATE SET
    state = excluded.state,
    model_name = excluded.model_name,
    model_version = excluded.model_version,
    sheep_id = excluded.sheep_id,
    accepted_us = min(jobs.accepted_us, excluded.accepted_us),
    summary = CASE WHEN jobs.accepted_us < excluded.accepted_us
        THEN json_set(
            excluded.summary, '$.accepted_at', json_extract(jobs.summary, '$.accepted_at')
        )
        ELSE excluded.summary END
"""
_SAVE_OFFSET = """
INSERT INTO applied (one, stream_offset) VALUES (1, ?)
ON CONFLICT (one) DO UPDATE SET stream_offset = excluded.stream_offset
"""


class BadCursor(ValueError):
    """A cursor this index did not make."""


@dataclass(frozen=True)
class JobQuery:
    """What a listing keeps: each field given narrows it (states: any of them)."""

    states: tuple[str, ...] = ()
    model_name: str | None = None
    model_version: str | None = None
    sheep_id: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class Page:
    summaries: list[str]
    """Each a JSON :class:`JobSummary`, as stored."""
    next_cursor: str | None

    def json(self) -> bytes:
        """The :class:`schemas.listing.JobPage` of it, without parsing what is stored."""
        cursor = json.dumps(self.next_cursor)
        return f'{{"jobs":[{",".join(self.summaries)}],"next_cursor":{cursor}}}'.encode()


class JobIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-index")

    async def open(self) -> None:
        """Open the file, creating it (with its folder) if missing."""

        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; rebuildable
            db.executescript(_SCHEMA)
            return db

        self._db = await self._run(connect)

    async def close(self) -> None:
        """Close the file and end the index's thread, for good."""
        db, self._db = self._db, None
        if db is not None:
            await self._run(db.close)
        self._thread.shutdown(wait=False)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"the job index {self.path} is not open")
        return self._db

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def applied(self) -> int | None:
        """The offset of the last event applied; None for a new index."""

        def read() -> int | None:
            row = self.db.execute("SELECT stream_offset FROM applied").fetchone()
            return None if row is None else int(row[0])

        return await self._run(read)

    async def apply(self, summaries: Sequence[JobSummary], offset: int) -> None:
        """Store ``summaries`` (later ones win) and ``offset``, the last event they come
        from, in one transaction."""
        rows = [_row(summary) for summary in summaries]

        def write() -> None:
            with self._transaction():
                self.db.executemany(_UPSERT, rows)
                self.db.execute(_SAVE_OFFSET, (offset,))

        await self._run(write)

    async def add(self, summaries: Iterable[JobSummary]) -> None:
        """Store ``summaries`` without moving the offset (generated data, a rebuild)."""
        rows = [_row(summary) for summary in summaries]

        def write() -> None:
            with self._transaction():
                self.db.executemany(_UPSERT, rows)

        await self._run(write)

    def _transaction(self) -> sqlite3.Connection:
        self.db.execute("BEGIN")
        return self.db  # its context manager commits, or rolls back on an error

    async def page(self, query: JobQuery, limit: int, cursor: str | None) -> Page:
        """Up to ``limit`` jobs matching ``query``, newest first, after ``cursor``.
        Raises :class:`BadCursor`."""
        where, params = _conditions(query)
        if cursor is not None:
            where.append("(accepted_us, job_id) < (?, ?)")
            params.extend(_decode(cursor))
        sql = (
            f"SELECT summary, accepted_us, job_id FROM jobs {_hint(query)}"
            f"{' WHERE ' + ' AND '.join(where) if where else ''} "
            "ORDER BY accepted_us DESC, job_id DESC LIMIT ?"
        )
        params.append(limit + 1)
        rows = await self._run(lambda: self.db.execute(sql, params).fetchall())
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more else None
        return Page([row[0] for row in rows], _encode(last[1], last[2]) if last else None)

    async def counts(self, query: JobQuery) -> dict[str, int]:
        """How many jobs matching ``query`` are in each state (states without any left out)."""
        where, params = _conditions(query)
        sql = (
            "SELECT state, count(*) FROM jobs"
            f"{' WHERE ' + ' AND '.join(where) if where else ''} GROUP BY state"
        )
        rows = await self._run(lambda: self.db.execute(sql, params).fetchall())
        return {state: int(n) for state, n in rows}

    async def count(self) -> int:
        return await self._run(lambda: self.db.execute("SELECT count(*) FROM jobs").fetchone()[0])


def _row(summary: JobSummary) -> tuple[object, ...]:
    return (
        summary.job_id,
        summary.state.value,
        summary.model.name,
        summary.model.version,
        summary.sheep_id,
        _micros(summary.accepted_at),
        summary.model_dump_json(exclude_none=True),
    )


def _micros(moment: datetime) -> int:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1_000_000)


def _conditions(query: JobQuery) -> tuple[list[str], list[object]]:
    where: list[str] = []
    params: list[object] = []
    if query.states:
        where.append(f"state IN ({', '.join('?' * len(query.states))})")
        params.extend(query.states)
    for column, value in (
        ("model_name", query.model_name),
        ("model_version", query.model_version),
        ("sheep_id", query.sheep_id),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if query.since is not None:
        where.append("accepted_us >= ?")
        params.append(_micros(query.since))
    return where, params


def _hint(query: JobQuery) -> str:
    """The index to walk: the one of the narrowest filter given. (SQLite's planner, without
    statistics, may walk the time index and filter instead: fine for common values, a scan
    of the whole table for rare ones.)"""
    if len(query.states) == 1:
        return "INDEXED BY jobs_by_state"
    if query.sheep_id is not None:
        return "INDEXED BY jobs_by_sheep"
    if query.model_name is not None:
        return "INDEXED BY jobs_by_model"
    return "INDEXED BY jobs_by_time"


def _encode(accepted_us: int, job_id: str) -> str:
    return f"{accepted_us}.{job_id}"


def _decode(cursor: str) -> list[object]:
    accepted_us, _, job_id = cursor.partition(".")
    if not (accepted_us.isdigit() and len(accepted_us) <= 18 and job_id):
        raise BadCursor(f"not a cursor of this listing: {cursor[:40]!r}")
    return [int(accepted_us), job_id]
