"""The bare backend: the runner is a ``python -m runner.cli`` subprocess on this machine.

It runs in ``<working_directory>/<model>/<version>/`` (which holds ``shepherd-runner.yaml``),
in a session of its own so that stopping it also stops whatever it spawned, with
``CUDA_VISIBLE_DEVICES`` set from the sheep's ``devices`` and without Shepherd's credentials
in its environment (``runner_environment``). Its pid is in ``.runner/runner.pid`` while it
runs. A sheep restarted after a crash kills the runner its previous life left behind, still
holding the runner port: found by its command line (``runner.cli --bind <address>``), not by
the pid file, which a sheep killed as it started a runner never got to write. A runner
also quits by itself once its sheep is gone (``--sheep-pid``): a sheep of a class, with an
id of its own each time, never comes back for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from schemas.config import BareSheepConfig
from schemas.config_file import ConfigError
from schemas.job import ModelRef
from services.sheep.backend import ModelNotFound, RunnerSlot

log = logging.getLogger(__name__)

RUNNER_FILE = "shepherd-runner.yaml"


class BareBackend(RunnerSlot):
    """Starts, restarts and stops one runner subprocess (see :class:`RunnerBackend`)."""

    def __init__(
        self,
        sheep_id: str,
        config: BareSheepConfig,
        data_root: Path,
        *,
        stop_grace: float = 3.0,
        reveals_secret: Callable[[str], bool] = lambda _: False,
    ) -> None:
        if not config.working_directory.is_dir():
            # Said at start, rather than by every job failing with ModelNotFound.
            raise ConfigError(
                f"sheep {sheep_id}: working_directory {config.working_directory} is not a "
                "directory (it holds <model>/<version>/ directories; a relative path is read "
                "from the config file's directory)"
            )
        # Job ids never start with ".", so this cannot collide with <data_root>/<id>/<job_id>.
        run_dir = data_root / sheep_id / ".runner"
        super().__init__(
            config.port,
            config.stdout_file or run_dir / "stdout.log",
            config.stderr_file or run_dir / "stderr.log",
        )
        self._sheep_id = sheep_id
        self._config = config
        self._stop_grace = stop_grace
        self._reveals_secret = reveals_secret
        self._pid_file = run_dir / "runner.pid"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """The runner's process id while it lives."""
        return self._process.pid if self._process and self._alive() else None

    def model_dir(self, model: ModelRef) -> Path:
        return self._config.working_directory / model.name / model.version

    async def ensure(self, model: ModelRef) -> bool:
        if self._alive() and self._model == model:
            return False
        directory = self.model_dir(model)
        runner_file = directory / RUNNER_FILE
        if not runner_file.is_file():
            raise ModelNotFound(
                f"model {model.name} version {model.version} is not installed on sheep "
                f"{self._sheep_id}: {runner_file} does not exist"
            )
        await self.stop()
        self._next_port()
        await self._start(model, directory)
        return True

    async def stop(self, grace: float | None = None) -> None:
        process, exited = self._process, self._exited
        if process is None or exited is None:
            return
        self._process, self._model = None, None
        if not exited.done():
            _signal_group(process.pid, signal.SIGTERM)
            await asyncio.wait({exited}, timeout=self._stop_grace if grace is None else grace)
        # SIGKILL the group even when the leader is gone: its children may linger.
        _signal_group(process.pid, signal.SIGKILL)
        code = await exited
        self._pid_file.unlink(missing_ok=True)
        log.info(
            "sheep %s: runner (pid %d) stopped, exit code %d", self._sheep_id, process.pid, code
        )

    async def _start(self, model: ModelRef, directory: Path) -> None:
        for path in (self._stdout, self._stderr, self._pid_file):
            path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "runner.cli",
            "--bind",
            self.address,
            "--config",
            RUNNER_FILE,
            "--heartbeat-interval",
            str(self._config.heartbeat_interval),
            "--sheep-pid",
            str(os.getpid()),
            "--model",
            str(model),
        ]
        with self._stdout.open("ab") as stdout, self._stderr.open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                *command,
                cwd=directory,
                env=runner_environment(self._config.devices, self._reveals_secret),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        self._process, self._model = process, model
        self._exited = asyncio.create_task(process.wait(), name=f"runner-{self._sheep_id}-exit")
        self._pid_file.write_text(f"{process.pid}\n")
        log.info(
            "sheep %s: runner for %s started (pid %d, %s)",
            self._sheep_id,
            model,
            process.pid,
            self.address,
        )

    async def recover(self) -> None:
        """Kill a runner left behind by a previous life of this sheep, and wait until it is
        gone (it holds the port the new runner binds)."""
        for pid in await asyncio.to_thread(_runners_bound_to, self.address):
            await self._kill_orphan(pid)

    async def _kill_orphan(self, pid: int) -> None:
        log.warning("sheep %s: killing orphaned runner (pid %d)", self._sheep_id, pid)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return
        try:
            loop = asyncio.get_running_loop()
            gone = asyncio.Event()
            loop.add_reader(pidfd, gone.set)  # a pidfd turns readable when the process ends
            try:
                _signal_group(pid, signal.SIGKILL)
                await asyncio.wait_for(gone.wait(), timeout=self._stop_grace)
            except TimeoutError:
                log.error("sheep %s: orphaned runner (pid %d) does not die", self._sheep_id, pid)
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)
        self._pid_file.unlink(missing_ok=True)


CREDENTIAL_PREFIXES = ("SHEPHERD_", "AWS_", "MINIO_", "RABBITMQ_", "AMQP_", "S3_", "DOCKER_")
"""Variables of Shepherd, its store, broker and registry: never passed to a runner."""


def runner_environment(
    devices: list[str], reveals_secret: Callable[[str], bool] = lambda _: False
) -> dict[str, str]:
    """The sheep's environment without Shepherd's credentials (variables named like
    ``CREDENTIAL_PREFIXES``, and any whose value ``reveals_secret``), so model code cannot
    reach the broker or the store; PATH, HOME, LANG, CUDA_* and the model's own settings pass.
    Unbuffered (log slices per job stay accurate), restricted to ``devices`` when some are
    configured (none: the runner sees the devices the sheep sees)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(CREDENTIAL_PREFIXES) and not reveals_secret(value)
    }
    env["PYTHONUNBUFFERED"] = "1"
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    return env


def _runners_bound_to(address: str) -> list[int]:
    """The processes of this machine that are runners bound to ``address``."""
    wanted = address.encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if b"runner.cli" in arguments and wanted in arguments:
            pids.append(int(entry.name))
    return pids


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
