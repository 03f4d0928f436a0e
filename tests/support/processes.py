"""Shepherd services as real processes (``python -m services.cli``), for tests that kill them.

config_file = write_config(config, tmp_path / "shepherd.yml")
sheep = ServiceProcess(["sheep", "s1"], config_file, tmp_path / "logs")
await sheep.start()
sheep.kill()          # kill -9: no shutdown code runs
await sheep.start()   # the same service again
await sheep.stop()    # SIGTERM, and its exit code
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import SecretStr

from schemas.config import Config
from tests.support.polling import eventually
from tests.support.stack import healthy

ROOT = Path(__file__).parents[2]


def write_config(config: Config, path: Path) -> Path:
    """``config`` as the YAML file a service process reads, secrets included."""
    path.write_text(yaml.safe_dump(_plain(config.model_dump(exclude_none=True))))
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, str | int | float | bool | None):
        return value
    return str(value)  # a path, a URL


class ServiceProcess:
    """One ``shepherd`` service process; its output is appended to ``<logs>/<name>.log``."""

    def __init__(self, command: list[str], config_file: Path, logs: Path) -> None:
        self.command = command
        self.config_file = config_file
        self.log_file = logs / f"{'-'.join(command)}.log"
        self.process: asyncio.subprocess.Process | None = None
        logs.mkdir(parents=True, exist_ok=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.cli",
                *self.command,
                "-c",
                str(self.config_file),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """kill -9 the service process (not the runner it may have started)."""
        if self.running:
            assert self.process is not None
            self.process.kill()

    async def wait(self, timeout: float = 30) -> int:  # noqa: ASYNC109
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop(self, timeout: float = 60) -> int:  # noqa: ASYNC109
        """SIGTERM, then its exit code; kill -9 if it overstays ``timeout``."""
        if self.process is None:
            return 0
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            self.kill()
            return await self.wait()

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


def runner_pid(config: Config, sheep_id: str) -> int | None:
    """The pid of the sheep's runner, from its pid file, if one is there and alive."""
    pid_file = config.data_root / sheep_id / ".runner" / "runner.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, IndexError):
        return None
    return pid


def kill_runner(config: Config, sheep_id: str) -> int | None:
    """kill -9 the runner process group of a sheep, if it runs; the pid it had."""
    pid = runner_pid(config, sheep_id)
    if pid is None:
        return None
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    return pid


async def wait_healthy(base_url: str, timeout: float = 30) -> None:  # noqa: ASYNC109
    """Until ``GET /health`` answers 200."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        await eventually(partial(healthy, client), within=timeout, every=0.1)
