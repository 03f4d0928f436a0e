"""A job's logs: what its runner printed to stdout and stderr while the job ran, cut from the
runner's log files (which outlive jobs) and stored under ``<job_id>/logs/``.

    marks = log_marks(backend.log_files)        # before the job starts
    ...                                         # the job runs
    await cut_logs(backend.log_files, marks, directory)
    await store_logs(storage, directory, job_id)

A stream the runner printed nothing to during the job is not stored.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from schemas.layout import logs_prefix
from services.common.storage import Storage

LOG_NAMES = ("stdout.txt", "stderr.txt")


def log_marks(log_files: tuple[Path, Path]) -> list[int]:
    """How long each log file is now: where the job's part will start."""
    return [_size(path) for path in log_files]


async def cut_logs(log_files: tuple[Path, Path], marks: list[int], directory: Path) -> None:
    """Copy what was printed since ``marks`` into ``directory``: before the runner takes its
    next job, whose output would follow."""
    for source, start, name in zip(log_files, marks, LOG_NAMES, strict=True):
        await asyncio.to_thread(copy_tail, source, start, directory / name)


async def store_logs(storage: Storage, directory: Path, job_id: str) -> None:
    await storage.upload_tree(directory, logs_prefix(job_id))


def copy_tail(source: Path, start: int, target: Path) -> None:
    """Copy what was appended to ``source`` since it was ``start`` bytes long."""
    try:
        with source.open("rb") as reader, target.open("wb") as writer:
            if reader.seek(0, 2) >= start:  # smaller: rotated meanwhile, take it all
                reader.seek(start)
            else:
                reader.seek(0)
            shutil.copyfileobj(reader, writer)
    except FileNotFoundError:
        pass
    if target.exists() and target.stat().st_size == 0:
        target.unlink()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
