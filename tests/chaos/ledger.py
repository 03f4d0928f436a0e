"""What the chaos test checks its verdict against: the runs the tally model recorded, and the
blows the test dealt, each taken from outside Shepherd.

    runs = read_runs(ledger_file)           # job id -> every run the model made of it
    open_runs(ledger_file, pid)             # jobs a runner is in the middle of right now
    unexplained_reruns(runs, windows, blows)
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Run:
    """One execution of a job by a runner process: ``ended`` is None if it never finished."""

    pid: int
    started: float
    ended: float | None = None


@dataclass(frozen=True)
class Blow:
    """One thing the test killed, when, and the jobs it interrupted (a runner's job, which
    then runs again)."""

    what: str
    at: float
    victims: frozenset[str] = field(default_factory=frozenset)


def read_runs(ledger: Path) -> dict[str, list[Run]]:
    """Every run of every job, in the order the ledger recorded them."""
    runs: dict[str, list[Run]] = defaultdict(list)
    if not ledger.exists():
        return runs
    for line in ledger.read_text().splitlines():
        record = json.loads(line)
        job_runs = runs[record["job_id"]]
        if record["event"] == "start":
            job_runs.append(Run(record["pid"], record["at"]))
            continue
        for run in reversed(job_runs):
            if run.pid == record["pid"] and run.ended is None:
                run.ended = record["at"]
                break
    return runs


def open_runs(ledger: Path, pid: int) -> set[str]:
    """The jobs runner ``pid`` has started and not finished."""
    return {
        job_id
        for job_id, job_runs in read_runs(ledger).items()
        if any(run.pid == pid and run.ended is None for run in job_runs)
    }


def unexplained_reruns(
    runs: dict[str, list[Run]], in_flight: dict[str, tuple[float, float]], blows: list[Blow]
) -> dict[str, int]:
    """Jobs that ran more than once although no blow fell while they were in flight (from
    their submission until their outcome was announced), with how often they ran.

    At-least-once execution allows a second run only where something died under the job."""
    return {
        job_id: len(job_runs)
        for job_id, job_runs in runs.items()
        if len(job_runs) > 1 and not any(_within(blow.at, in_flight.get(job_id)) for blow in blows)
    }


def _within(moment: float, window: tuple[float, float] | None) -> bool:
    return window is not None and window[0] <= moment <= window[1]
