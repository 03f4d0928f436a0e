"""py-spy profiles of every Python process of a Shepherd phase (``python -m bench --profile``):
where the CPU per job by process goes.

    profiles = Profiles(run_dir / "profiles", enabled=cfg["profile"])
    async with profiles.phase("throughput-http4", stack_pids):
        ...                                     # the phase
    out["profiles"] = profiles.summary         # the functions most samples were in

Each process is sampled by its own ``py-spy record`` (``--nonblocking``: the process is never
paused; ``--gil``: only the thread holding the GIL, so time waiting on sockets and in event
loops is left out) into ``<phase>/<label>.txt``, collapsed stacks that flamegraph tools and
speedscope read. The samplers take CPU of their own, so a profiled run's figures are not the ones to
quote: profile in a run of its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.report import log

RATE = 100
"""Samples a second: few enough that eight samplers leave the two cores to the run."""
TOP = 15
"""Functions kept in the summary, per process and kind (self, inclusive)."""
STOP_TIMEOUT = 20.0
"""Seconds a sampler gets to write its file once told to stop."""

_LINE_NUMBER = re.compile(r":\d+\)$")


class Profiles:
    def __init__(self, directory: Path, *, enabled: bool) -> None:
        self.directory = directory
        self.enabled = enabled
        self.summary: dict[str, dict[str, Any]] = {}
        # Beside this interpreter (the venv's bin, maybe not on PATH), else on PATH.
        search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        self._py_spy = shutil.which("py-spy", path=search)
        if enabled and self._py_spy is None:
            raise SystemExit("--profile needs py-spy (pip install py-spy; make bench installs it)")

    @contextlib.asynccontextmanager
    async def phase(self, name: str, pids: dict[str, int]) -> AsyncIterator[None]:
        """Sample every process in ``pids`` (label -> pid) while the block runs."""
        if not self.enabled:
            yield
            return
        folder = self.directory / name
        folder.mkdir(parents=True, exist_ok=True)
        samplers = {
            label: await self._sample(pid, folder / f"{label}.txt") for label, pid in pids.items()
        }
        try:
            yield
        finally:
            for sampler in samplers.values():
                with contextlib.suppress(ProcessLookupError):
                    sampler.send_signal(signal.SIGINT)
            for sampler in samplers.values():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sampler.wait(), STOP_TIMEOUT)
            self.summary[name] = {label: summarise(folder / f"{label}.txt") for label in samplers}
            log(f"  profiles in {folder}")

    async def _sample(self, pid: int, output: Path) -> asyncio.subprocess.Process:
        assert self._py_spy is not None
        return await asyncio.create_subprocess_exec(
            self._py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(RATE),
            "--format",
            "raw",
            "--nonblocking",
            "--gil",  # only threads holding the GIL: Python at work, not waiting on I/O
            "--output",
            str(output),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )


def summarise(path: Path) -> dict[str, Any]:
    """Samples in all, and the functions most samples were in: at the top of the stack (self)
    and anywhere on it (inclusive), as shares of the samples."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    with contextlib.suppress(FileNotFoundError), path.open() as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
            if not frames:
                continue
            samples = int(count)
            total += samples
            own[frames[-1]] += samples
            for frame in set(frames):
                anywhere[frame] += samples
    if total == 0:
        return {"samples": 0}
    return {
        "samples": total,
        "self": {frame: round(n / total, 3) for frame, n in own.most_common(TOP)},
        "inclusive": {frame: round(n / total, 3) for frame, n in anywhere.most_common(TOP)},
    }
