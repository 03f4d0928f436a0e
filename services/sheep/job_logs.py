"""A job's logs: what its runner printed to stdout and stderr while the job ran, cut from the
runner's log files (which outlive jobs) and stored under ``<job_id>/logs/``.

    start = log_marks(backend.log_files)        # before the job starts
    ...                                         # the job runs
    end = log_marks(backend.log_files)          # as it ends: no I/O but two stats
    ...                                         # the next job may run meanwhile:
                                                # the files are only ever appended to
    await store_logs(storage, backend.log_files, start, end, directory, job_id)

A stream the runner printed nothing to during the job is not stored.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from schemas.layout import logs_prefix
from services.common.storage import Storage

LOG_NAMES = ("stdout.txt", "stderr.txt")
COPY_CHUNK = 1024 * 1024


def log_marks(log_files: tuple[Path, Path]) -> list[int]:
    """How long each log file is now: where a job's part starts or ends."""
    return [_size(path) for path in log_files]


async def store_logs(
    storage: Storage,
    log_files: tuple[Path, Path],
    start: list[int],
    end: list[int],
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
