"""A job's inputs on the sheep: fresh directories, the payload that came with the job written
out, the stored inputs fetched, and the record of what the job runs on.

    ran_on = await prepare(storage, attempt, stored)   # stored: the objects under <job_id>/
    report = attempt.report(JobState.RUNNING, inputs=ran_on)

The record (name, size, the store's ETag) goes into the job's status, so that an input
overwritten in the store after the job ran is told apart from the one it ran on.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

from schemas.job import PAYLOAD_INPUT
from schemas.layout import inputs_prefix
from schemas.status import InputFile
from services.common.storage import Storage, StoredObject
from services.sheep.admission import Attempt

DIRECTORIES = ("inputs", "outputs", "logs")
"""A job's directories on the sheep, under ``<data_root>/<sheep>/<job_id>.<delivery>/``."""


async def prepare(
    storage: Storage, attempt: Attempt, stored: list[StoredObject]
) -> list[InputFile]:
    """Fresh directories and the job's inputs; what they are."""
    job_id = attempt.job_id
    prefix = inputs_prefix(job_id)
    await asyncio.to_thread(_fresh_directories, attempt.directory)
    directory = attempt.directory / "inputs"
    fetched = [o for o in stored if o.key.startswith(prefix)]
    ran_on = []
    payload = attempt.dispatch.job.payload
    if payload is not None:  # kept in the job record, so it came with the job
        fetched = [o for o in fetched if o.key != prefix + PAYLOAD_INPUT]
        data = payload.encode()
        await asyncio.to_thread((directory / PAYLOAD_INPUT).write_bytes, data)
        ran_on.append(
            InputFile(name=PAYLOAD_INPUT, size=len(data), etag=hashlib.md5(data).hexdigest())
        )
    await storage.download(fetched, prefix, directory)
    ran_on.extend(
        InputFile(name=o.key.removeprefix(prefix), size=o.size, etag=o.etag) for o in fetched
    )
    return ran_on


def _fresh_directories(root: Path) -> None:
    """Start from empty directories: an earlier attempt may have left files behind."""
    shutil.rmtree(root, ignore_errors=True)
    for name in DIRECTORIES:
        (root / name).mkdir(parents=True)
