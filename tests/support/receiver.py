"""A real HTTP webhook receiver for the tests: uvicorn on a loopback port, answers scripted
per path, every request recorded with its arrival time.

    async with Receiver() as receiver:
        receiver.script("/hook", Reply(503), Reply(200))   # then 200 for ever after
        ... deliver to receiver.url("/hook") ...
        first = await receiver.next("/hook")
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.polling import eventually
from tests.support.stack import free_port

WAIT = 15.0


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds before answering: a slow receiver, or a hanging one."""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    at: float
    """``time.monotonic()`` on arrival."""


class _Server(uvicorn.Server):
    """No signal handlers of its own: pytest owns the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[Received] = []
        self._scripts: dict[str, list[Reply]] = {}
        self._arrivals: defaultdict[str, asyncio.Queue[Received]] = defaultdict(asyncio.Queue)
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        self._server = _Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                lifespan="off",
                access_log=False,
                timeout_graceful_shutdown=1,
            )
        )
        self._task: asyncio.Task[None] | None = None

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with ``replies`` in turn, the last one for
        ever after; without a script, 200."""
        self._scripts[path] = list(replies)

    async def next(self, path: str, within: float = WAIT) -> Received:
        """The next request to ``path`` not taken yet, waiting for it if need be."""
        async with asyncio.timeout(within):
            return await self._arrivals[path].get()

    async def silent(self, path: str, within: float) -> None:
        """Assert that no request to ``path`` arrives within ``within`` seconds."""
        with contextlib.suppress(TimeoutError):
            extra = await self.next(path, within)
            raise AssertionError(f"unexpected request to {path}: {extra.body[:200]!r}")

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        received = Received(
            request.url.path,
            {k.lower(): v for k, v in request.headers.items()},
            body,
            time.monotonic(),
        )
        self.requests.append(received)
        self._arrivals[received.path].put_nowait(received)
        script = self._scripts.get(received.path) or [Reply()]
        reply = script.pop(0) if len(script) > 1 else script[0]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return Response(b"", status_code=reply.status, headers=reply.headers)

    async def __aenter__(self) -> Receiver:
        self._task = asyncio.create_task(self._server.serve(), name="webhook-receiver")
        await eventually(lambda: _started(self._server, self._task), within=10)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)


async def _started(server: uvicorn.Server, task: asyncio.Task[None] | None) -> bool:
    if task is not None and task.done():
        task.result()  # raises what stopped it
    return server.started
