"""The asynchronous client: submit jobs, find them again, map a model over many inputs.

    async with AsyncClient("http://gateway:5000", token="shp_...") as client:
        job = await client.submit("echo:1", {"x": 1})
        print(await job.result())
        squares = await client.map("square:1", range(1000))
        failed = [job.job_id async for job in client.jobs(state="failed", limit=20)]

Every method of :class:`Client` is this one's, run to completion.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

from shepherd_client.http import RETRY_FOR, Http
from shepherd_client.inputs import Files, named_files
from shepherd_client.jobs import AsyncJob
from shepherd_client.mapping import map_payloads
from shepherd_client.models import JobStatus

#: Jobs asked for at a time when listing them.
PAGE = 100

Model = str | tuple[str, str]
"""``"name:version"``, ``"name"`` (version ``latest``) or ``("name", "version")``."""


class AsyncClient:
    def __init__(self, url: str, token: str | None = None, *, retry_for: float = RETRY_FOR) -> None:
        """``retry_for``: seconds a request is retried while the gateway is unavailable (503)
        or unreachable, before :class:`Unavailable` is raised."""
        self._http = Http(url, token, retry_for=retry_for)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    def job(self, job_id: str) -> AsyncJob:
        """A job known by its id (nothing is asked of the server until a method is called)."""
        return AsyncJob(self._http, job_id)

    async def submit(
        self,
        model: Model,
        payload: Any = None,
        *,
        files: Files | None = None,
        inputs: Iterable[str] | None = None,
        job_id: str | None = None,
        sheep: str | None = None,
        sheep_class: str | None = None,
        priority: str | None = None,
        timeout: float | None = None,
        callback_url: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AsyncJob:
        """Declare a job and upload its ``files`` (streamed through the gateway, never read
        whole); it is queued once every input is there. ``inputs`` names files uploaded by
        other means (straight to the store). ``sheep`` runs it on that named sheep,
        ``sheep_class`` on any sheep of that class. ``priority``: ``high``, ``normal`` or ``low``
        (else the model's default). Without ``job_id`` the gateway makes one; the submission
        carries an ``Idempotency-Key`` either way, so a retry never makes a second job."""
        uploads = named_files(files) if files is not None else {}
        declared = [*(inputs or ()), *uploads]
        request = {
            "job_id": job_id,
            "model": _model(model),
            "sheep_id": sheep,
            "sheep_class": sheep_class,
            "priority": priority,
            "payload": payload,
            "inputs": declared or None,
            "timeout": timeout,
            "callback_url": callback_url,
            "metadata": metadata,
        }
        answer = await self._http.request(
            "POST",
            "/start-job",
            ok=(200, 202),
            json={key: value for key, value in request.items() if value is not None},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        job = AsyncJob(self._http, answer.json()["job_id"])
        for name, path in uploads.items():
            await self._http.put_file(f"/jobs/{job.id}/input/{quote(name)}", path)
        return job

    async def jobs(
        self,
        *,
        state: str | Iterable[str] | None = None,
        model: Model | None = None,
        sheep: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = 100,
    ) -> AsyncIterator[JobStatus]:
        """The jobs, newest first, as summaries (state, model, sheep, times, error), fetched a
        page at a time as they are iterated; at most ``limit`` (None: every one). ``state``
        may name several; ``model`` without a version matches every version; ``since`` keeps
        the jobs accepted at or after it."""
        params: dict[str, str] = {}
        if state is not None:
            params["state"] = state if isinstance(state, str) else ",".join(state)
        if model is not None:
            params["model"] = model if isinstance(model, str) else ":".join(model)
        if sheep is not None:
            params["sheep"] = sheep
        if since is not None:
            params["since"] = since if isinstance(since, str) else since.isoformat()
        left = limit
        while left is None or left > 0:
            params["limit"] = str(min(left or PAGE, PAGE))
            page = (await self._http.request("GET", "/jobs", params=params)).json()
            for summary in page["jobs"]:
                yield JobStatus.of(summary)
            if left is not None:
                left -= len(page["jobs"])
            if page["next_cursor"] is None:
                return
            params["cursor"] = page["next_cursor"]

    async def map(
        self,
        model: Model,
        payloads: Iterable[Any],
        *,
        concurrency: int = 32,
        progress: bool = True,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Run ``model`` on each payload and return the results in input order, with at most
        ``concurrency`` jobs in flight (payloads are read as they are needed, so a generator
        of millions costs no more than ``concurrency`` jobs at a time). A failed item raises
        :class:`MapItemFailed` naming its index (the jobs still in flight are cancelled),
        or, with ``return_exceptions``, its exception takes its place. Cancelling the call
        (Ctrl-C) cancels the jobs it submitted that have not ended. The progress bar shows
        when ``progress`` is true and stderr is a terminal."""
        return await map_payloads(
            lambda payload: self.submit(model, payload),
            payloads,
            concurrency=concurrency,
            progress=progress,
            return_exceptions=return_exceptions,
        )


def _model(model: Model) -> dict[str, str]:
    if isinstance(model, tuple):
        name, version = model
    else:
        name, _, version = model.partition(":")
    return {"name": name, "version": version or "latest"}
