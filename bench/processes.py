"""Processes of a benchmark run: starting and ending them, their memory and CPU time.

Every process started here is in a session of its own and is registered, so that
:func:`kill_everything` can end it (and its children, e.g. runners or pool processes)
whatever happened. This module stays light (psutil only): the peers' worker processes import
it, and their memory is measured.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def free_ports(count: int) -> list[int]:
    """``count`` different free ports: each socket is held until all are picked (one at a
    time, the kernel may hand out the same port twice)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def clean_environment() -> dict[str, str]:
    """This process's environment less SHEPHERD_* overrides and DEBUG: the generated
    configuration file is the whole truth for the services."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SHEPHERD_") and k != "DEBUG"}


_LIVE: set[ManagedProcess] = set()


@dataclass(eq=False)
class ManagedProcess:
    """A child process in a session of its own, its output appended to ``log``."""

    label: str
    command: list[str]
    log: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def signal(self, sig: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill_group(self, extra: Sequence[psutil.Process] = ()) -> None:
        """SIGKILL its process group and those of ``extra`` (children in sessions of their
        own, such as runners)."""
        groups = {self.pid} if self.popen is not None else set()
        for proc in extra:
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                groups.add(os.getpgid(proc.pid))
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
        _LIVE.discard(self)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL of the group (and of children in
        other sessions). Returns the exit code (None if it had to be killed)."""
        if self.popen is None:
            return None
        children = self.descendants()
        self.signal(signal.SIGTERM)
        code: int | None
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        self.kill_group([c for c in children if alive(c)])
        return code


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_everything() -> None:
    """The last resort: SIGKILL every process started here that is still registered."""
    for proc in list(_LIVE):
        proc.kill_group(proc.descendants())


# --- memory and CPU ------------------------------------------------------------------------


def memory_of(pid: int) -> dict[str, float] | None:
    """VmRSS (now) and VmHWM (peak since start) of ``pid``, in MiB; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            fields[key] = int(value.split()[0]) / 1024  # kB
    if len(fields) < 2:
        return None
    return {"pid": pid, "rss_mib": round(fields["VmRSS"], 1), "hwm_mib": round(fields["VmHWM"], 1)}


def snapshot(processes: dict[str, int]) -> dict[str, dict[str, float]]:
    """``memory_of`` each labelled pid that is still there."""
    out = {}
    for label, pid in processes.items():
        mem = memory_of(pid)
        if mem is not None:
            out[label] = mem
    return out


def cpu_seconds(processes: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each labelled process has used so far."""
    out = {}
    for label, pid in processes.items():
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            out[label] = times.user + times.system
    return out


def server_pids(amqp_port: int, s3_port: int) -> dict[str, int]:
    """The RabbitMQ (``beam.smp``) and MinIO processes listening on the ports the benchmark
    uses, so that their CPU time is charged to the right servers even when other instances
    (a test's private servers, say) run on the machine too."""
    wanted = {"beam.smp": ("rabbitmq", amqp_port), "minio": ("minio", s3_port)}
    found = {}
    for proc in psutil.process_iter(["name"]):
        role_port = wanted.get(proc.info["name"] or "")
        if role_port is None:
            continue
        with contextlib.suppress(psutil.Error):
            ports = {
                c.laddr.port
                for c in proc.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN
            }
            if role_port[1] in ports:
                found[role_port[0]] = proc.pid
    return found
