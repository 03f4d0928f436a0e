"""What a sheep needs from whatever hosts its runner (a subprocess, later a container).

The sheep only asks for "a runner holding model X, reachable at an address" and wants to
learn the moment that runner dies; how it is started is the backend's business.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Protocol

from schemas.job import ModelRef


class ModelNotFound(LookupError):
    """The requested model/version is not installed where this sheep looks for it."""


def free_port() -> int:
    """A loopback port free now, for a runner to bind. The kernel hands out ephemeral ports
    in turn, so another sheep starting at the same time is unlikely to get the same one; a
    runner that finds its port taken fails to start, and the job is given back."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunnerSlot:
    """What every backend keeps of its current runner: the loopback port it binds (the
    configured one, else one picked for each runner: :meth:`_next_port`), the files its
    output goes to, its model, and its exit. ``_model`` is None while there is none."""

    def __init__(self, port: int | None, stdout: Path, stderr: Path) -> None:
        self._fixed_port = port
        self._port = port or free_port()
        self._stdout = stdout
        self._stderr = stderr
        self._model: ModelRef | None = None
        self._exited: asyncio.Task[int] | None = None

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self._port}"

    def _next_port(self) -> None:
        """Before a runner starts: pick a free port, unless one is configured."""
        if self._fixed_port is None:
            self._port = free_port()

    @property
    def model(self) -> ModelRef | None:
        return self._model if self._alive() else None

    @property
    def exited(self) -> asyncio.Future[int] | None:
        return self._exited

    @property
    def log_files(self) -> tuple[Path, Path]:
        return self._stdout, self._stderr

    def _alive(self) -> bool:
        return self._model is not None and self._exited is not None and not self._exited.done()


class RunnerBackend(Protocol):
    @property
    def address(self) -> str:
        """The ZMQ address the runner binds and the sheep connects to."""
        ...

    @property
    def model(self) -> ModelRef | None:
        """The model of the current runner process; ``None`` when there is none."""
        ...

    @property
    def exited(self) -> asyncio.Future[int] | None:
        """Resolves with the exit code when the current runner process ends (negative:
        killed by that signal); ``None`` when no process was started. Never cancel it."""
        ...

    @property
    def log_files(self) -> tuple[Path, Path]:
        """The files the runner's stdout and stderr are appended to."""
        ...

    async def ensure(self, model: ModelRef) -> bool:
        """Make sure a live runner for ``model`` exists, restarting it for another model or
        after it died. True when a new process was started (connect to it anew).
        Raises :class:`ModelNotFound`."""
        ...

    async def recover(self) -> None:
        """Remove whatever runner a previous life of this sheep left behind (it may hold the
        port, or a GPU). Called once, when the sheep starts."""
        ...

    async def stop(self, grace: float | None = None) -> None:
        """Stop the runner process, if any, and reap it; it is killed outright after
        ``grace`` seconds (the backend's default when None)."""
        ...
