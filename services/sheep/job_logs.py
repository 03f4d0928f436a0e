"""A job's logs: what its runner printed to stdout and stderr while the job ran, cut from the
runner's log files (which outlive jobs) and stored under ``<job_id>/logs/``.

    before = log_marks(backend.log_files)       # before the job starts
    ...                                         # the job runs
    start, end = job_span(before, ran.logs, backend.log_files)  # as it ends: two stats at most
    ...                                         # the next job may run meanwhile:
                                                # the files are only ever appended to
    await store_logs(storage, backend.log_files, start, end, directory, job_id)

A stream the runner printed nothing to during the job is not stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from schemas.layout import logs_prefix
from schemas.runner import LogOffsets
from services.common.storage import Storage

LOG_NAMES = ("stdout.txt", "stderr.txt")
COPY_CHUNK = 1024 * 1024


def log_marks(log_files: tuple[Path, Path]) -> list[int]:
    """How long each log file is now: where a job's part starts or ends."""
    return [_size(path) for path in log_files]


def job_span(
    before: list[int], said: tuple[LogOffsets, LogOffsets] | None, log_files: tuple[Path, Path]
) -> tuple[Sequence[int], Sequence[int]]:
    """Where a job's part of the log files starts and ends.

    ``said``: where the runner said the job started and ended, exact even when the runner
    started it before the sheep turned to it (held behind the job before). The part starts at
    the earlier of that and ``before`` (the sheep's marks before it ran, which take in a runner
    starting up for the job). When the runner does not say (a container's output reaches the
    files through docker, a little late), the sheep's marks before and now are all there is.
    """
    if said is None:
        return before, log_marks(log_files)
    started, ended = said
    return [min(pair) for pair in zip(before, started, strict=True)], ended


async def store_logs(
    storage: Storage,
    log_files: tuple[Path, Path],
    start: Sequence[int],
    end: Sequence[int],
    directory: Path,
    job_id: str,
) -> None:
    """Copy each file's part between the marks into ``directory``, and store those that are
    not empty."""
    parts = [
        (source, first, last, directory / name)
        for source, first, last, name in zip(log_files, start, end, LOG_NAMES, strict=True)
        if last != first
    ]
    if not parts:  # the usual case: the model printed nothing
        return
    for part in parts:
        await asyncio.to_thread(copy_part, *part)
    await storage.upload_tree(directory, logs_prefix(job_id))


def copy_part(source: Path, start: int, end: int, target: Path) -> None:
    """Copy bytes ``start`` to ``end`` of ``source`` (from 0 if it was rotated in between,
    ending before it started); nothing at all when the part is empty."""
    if end < start:
        start = 0
    if end == start:
        return
    try:
        with source.open("rb") as reader, target.open("wb") as writer:
            reader.seek(start)
            remaining = end - start
            while remaining > 0 and (chunk := reader.read(min(remaining, COPY_CHUNK))):
                writer.write(chunk)
                remaining -= len(chunk)
    except FileNotFoundError:
        target.unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
