"""One job, as its submitter follows it: status, wait, result, files, logs, cancel, events.

job = await client.submit("echo:1", {"x": 1})
status = await job.wait()                 # follows the job's events, no polling
print(await job.result())                 # {"x": 1}, or raises JobFailed
await job.download("out/")                # every output file
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from shepherd_client.errors import JobFailed
from shepherd_client.http import Http
from shepherd_client.models import TERMINAL, JobEvent, JobStatus, LogLine
from shepherd_client.sse import follow


@dataclass(frozen=True)
class Logs:
    """What the job's runner printed; a stream not asked for is None. ``truncated`` names a
    stream cut to its last MiB (ask for it alone to get all of it)."""

    stdout: str | None
    stderr: str | None
    truncated: list[str] = field(default_factory=list)


class AsyncJob:
    def __init__(self, http: Http, job_id: str) -> None:
        self._http = http
        self._path = f"/jobs/{job_id}"
        self.id = job_id

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"

    async def status(self) -> JobStatus:
        answer = await self._http.request("GET", f"{self._path}/status")
        return JobStatus.of(answer.json())

    async def events(self) -> AsyncIterator[JobEvent]:
        """The job's current status (kind ``status``), then each of its events as it happens,
        up to its final one."""
        async for event in follow(self._http, f"{self._path}/events", last=_final):
            if event.event and event.data:
                yield JobEvent.of(event.event, event.data)

    async def wait(self, timeout: float | None = None) -> JobStatus:
        """The job's final status, once it has one; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            async for event in self.events():
                if event.status.terminal:
                    return event.status
        raise RuntimeError(f"the events of job {self.id} ended before its final one")

    async def result(self, timeout: float | None = None) -> Any:
        """The job's output, once it is done: ``outputs/output.json`` decoded (JSON), its
        bytes (any other type), or the listing of its files if it wrote no ``output.json``.
        Raises :class:`JobFailed` if the job failed or was cancelled."""
        status = await self.wait(timeout)
        if status.state != "done":
            raise JobFailed(self.id, status.state, status.error)
        answer = await self._http.request("GET", f"{self._path}/result")
        if answer.headers.get("content-type", "").startswith("application/json"):
            return answer.json()
        return answer.content

    async def download(self, directory: str | Path, timeout: float | None = None) -> list[Path]:
        """Every output file of the done job, written under ``directory``; their paths."""
        status = await self.wait(timeout)
        if status.state != "done":
            raise JobFailed(self.id, status.state, status.error)
        listing = await self._http.request("GET", f"{self._path}/result", params={"list": "true"})
        root = Path(directory)
        written = []
        for file in listing.json()["files"]:
            target = _inside(root, file["name"])
            target.parent.mkdir(parents=True, exist_ok=True)
            path = f"{self._path}/result/{quote(file['name'])}"
            async with self._http.stream("GET", path) as answer:
                with target.open("wb") as sink:
                    async for chunk in answer.aiter_bytes():
                        await asyncio.to_thread(sink.write, chunk)
            written.append(target)
        return written

    async def logs(self, stream: str | None = None, tail: int | None = None) -> Logs:
        """What the runner printed (stored as the job ended): both streams, or ``stream``
        alone (whole), or the last ``tail`` lines."""
        params: dict[str, Any] = {"stream": stream, "tail": tail}
        answer = await self._http.request(
            "GET", f"{self._path}/logs", params={k: v for k, v in params.items() if v is not None}
        )
        if stream is not None and not answer.headers.get("content-type", "").startswith(
            "application/json"
        ):
            text = answer.text
            return Logs(text if stream == "stdout" else None, text if stream == "stderr" else None)
        body = answer.json()
        return Logs(body.get("stdout"), body.get("stderr"), body.get("truncated", []))

    async def follow_logs(self) -> AsyncIterator[LogLine]:
        """What the runner prints, as it prints it, from the job's start to its end."""
        async for event in follow(
            self._http, f"{self._path}/logs", last=_ended, params={"follow": "true"}
        ):
            if event.event == "log":
                piece = event.json()
                yield LogLine(piece["stream"], piece["text"], piece.get("attempt"))

    async def cancel(self) -> JobStatus:
        """Cancel the job (one that has ended is left as it is); its status after."""
        answer = await self._http.request("POST", f"{self._path}/cancel", ok=(200, 202))
        return JobStatus.of(answer.json())


def _final(event: Any) -> bool:
    """A final event, or an opening status that is final already (the stream ends there)."""
    if event.event == "status":
        return event.json().get("state") in TERMINAL
    return event.event.removeprefix("job.") in TERMINAL


def _ended(event: Any) -> bool:
    return event.event == "end"


def _inside(root: Path, name: str) -> Path:
    """``root/name``, refusing a name that would leave ``root``."""
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"refusing output file name {name!r}: it leaves the directory")
    return root.joinpath(*relative.parts)
