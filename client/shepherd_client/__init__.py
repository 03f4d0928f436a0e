"""Shepherd's Python client: submit jobs, follow them, get their results.

    from shepherd_client import Client

    with Client("http://127.0.0.1:5000", token=None) as client:
        job = client.submit("echo:1", {"greeting": "hello"})
        print(job.result())                       # {"greeting": "hello"}
        print(client.map("echo:1", [{"n": n} for n in range(100)])[:3])

:class:`AsyncClient` has the same methods, to await. See docs/client.md.
"""

from shepherd_client.client import AsyncClient, Model
from shepherd_client.errors import (
    Conflict,
    InvalidRequest,
    JobFailed,
    MapItemFailed,
    NotFound,
    ShepherdError,
    Unauthorized,
    Unavailable,
)
from shepherd_client.jobs import AsyncJob, Logs
from shepherd_client.models import JobEvent, JobStatus, LogLine
from shepherd_client.sync import Client, Job

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "Client",
    "Conflict",
    "InvalidRequest",
    "Job",
    "JobEvent",
    "JobFailed",
    "JobStatus",
    "LogLine",
    "Logs",
    "MapItemFailed",
    "Model",
    "NotFound",
    "ShepherdError",
    "Unauthorized",
    "Unavailable",
]
