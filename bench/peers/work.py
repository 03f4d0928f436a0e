"""The echo every peer's worker does, and the settings a worker process gets.

A peer's task reads the input object from MinIO into a file, copies it as Shepherd's echo
runner does (``shutil.copyfile``) and writes the output object: the same work per job as a
sheep and its runner, on the same MinIO, in the peer's own bucket. The harness starts each
worker with its settings in ``BENCH_*`` environment variables (:meth:`WorkerSettings.env`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from minio import Minio

CHUNK = 1024 * 1024


def keys(job_id: str) -> tuple[str, str]:
    """Input and output object of a job: the layout of Shepherd's bucket."""
    return f"{job_id}/inputs/input.json", f"{job_id}/outputs/output.json"


@dataclass(frozen=True)
class WorkerSettings:
    amqp_url: str
    s3_endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    queue: str

    @classmethod
    def from_env(cls, default_queue: str) -> WorkerSettings:
        """As the harness passed them; defaults are those of ``make services``."""
        defaults = {
            "amqp_url": "amqp://guest:guest@127.0.0.1:5672/",
            "s3_endpoint": "127.0.0.1:9000",
            "access_key": "minioadmin",
            "secret_key": "minioadmin",
            "bucket": f"bench-{default_queue}",
            "queue": default_queue,
        }
        return cls(**{k: os.environ.get(f"BENCH_{k.upper()}", v) for k, v in defaults.items()})

    def env(self) -> dict[str, str]:
        return {f"BENCH_{key.upper()}": value for key, value in asdict(self).items()}


_client: tuple[int, Minio] | None = None


def minio_client(settings: WorkerSettings) -> Minio:
    """One client per process: forked pool processes must not share the parent's
    connections."""
    global _client
    if _client is None or _client[0] != os.getpid():
        client = Minio(settings.s3_endpoint, settings.access_key, settings.secret_key, secure=False)
        _client = (os.getpid(), client)
    return _client[1]


def echo_object(settings: WorkerSettings, in_key: str, out_key: str) -> int:
    """Input object -> file -> copied file -> output object, as a sheep and the echo runner
    do; the output's size. The input is read with one GET, as a sheep does (minio-py's
    ``fget_object`` would ask for a stat first)."""
    client = minio_client(settings)
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as scratch:
        source, target = Path(scratch) / "input.json", Path(scratch) / "output.json"
        response = client.get_object(settings.bucket, in_key)
        try:
            with source.open("wb") as out:
                for chunk in response.stream(CHUNK):
                    out.write(chunk)
        finally:
            response.close()
            response.release_conn()
        shutil.copyfile(source, target)
        client.fput_object(settings.bucket, out_key, str(target), content_type="application/json")
        return target.stat().st_size
