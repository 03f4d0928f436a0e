"""What a sheep needs from whatever hosts its runner (a subprocess, later a container).

The sheep only asks for "a runner holding model X, reachable at an address" and wants to
learn the moment that runner dies; how it is started is the backend's business.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

from schemas.job import ModelRef


class ModelNotFound(LookupError):
    """The requested model/version is not installed where this sheep looks for it."""


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
