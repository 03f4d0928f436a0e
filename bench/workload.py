"""The jobs every system is given, and how a phase's outcomes are tallied and checked.

Shared by Shepherd's phases and the peers', so that they do the same work and are counted the
same way: a job that fails, is refused or does not finish in time is never counted as done.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024
OUTCOMES = ("done", "failed", "missing", "rejected")

Job = tuple[str, dict[str, Any]]
"""A job id and its JSON payload."""
Outcome = tuple[str, float | None]
"""One of :data:`OUTCOMES` and when it was known (``time.perf_counter``), if it ended."""


def payload(i: int, rng: random.Random, size: int = 1024) -> dict[str, Any]:
    """A JSON object of about ``size`` bytes once serialized."""
    return {"i": i, "data": "".join(rng.choices(string.ascii_letters, k=size - 24))}


def make_jobs(prefix: str, count: int, rng: random.Random) -> list[Job]:
    return [(f"{prefix}-{i:05d}", payload(i, rng)) for i in range(count)]


def encoded(jobs: list[Job]) -> list[tuple[str, bytes]]:
    return [(job_id, json.dumps(data).encode()) for job_id, data in jobs]


def make_input_file(path: Path, size: int) -> str:
    """A JSON document of exactly ``size`` bytes, written in chunks; its SHA-256."""
    digest = hashlib.sha256()
    head, tail = b'{"blob":"', b'"}'
    rng = random.Random(size)
    alphabet = string.ascii_letters.encode()
    left = size - len(head) - len(tail)
    block = bytes(rng.choices(alphabet, k=min(CHUNK, left)))
    with path.open("wb") as out:
        for part in (head, *_repeat(block, left), tail):
            out.write(part)
            digest.update(part)
    return digest.hexdigest()


def _repeat(block: bytes, total: int) -> Iterator[bytes]:
    """``total`` bytes of ``block`` repeated, in pieces of at most ``len(block)``."""
    while total > 0:
        yield block[: min(total, len(block))]
        total -= len(block)


def sample(jobs: list[Any], k: int, rng: random.Random) -> list[Any]:
    return rng.sample(jobs, min(k, len(jobs)))


def phase_timeout(jobs: int, quick: bool) -> float:
    return 30.0 + jobs * (0.2 if quick else 0.5)


def large_timeout(size: int, count: int) -> float:
    return 60 + count * size / 2e6


# --- tallies ----------------------------------------------------------------------------------


def empty_outcomes() -> dict[str, int]:
    return dict.fromkeys(OUTCOMES, 0)


def tally(results: list[Outcome], start: float) -> dict[str, Any]:
    """Outcomes counted, and the seconds from ``start`` to the last job that ended."""
    outcomes = empty_outcomes()
    last = start
    for outcome, arrived in results:
        outcomes[outcome] += 1
        if arrived is not None:
            last = max(last, arrived)
    return {"seconds": last - start, **outcomes}


def sequential(latencies: list[float], outcomes: dict[str, int]) -> dict[str, Any]:
    """A one-job-at-a-time phase's result: every done job's latency (ms) and the outcomes."""
    return {"latencies_ms": latencies, **outcomes}


def rates(tally_: dict[str, Any], jobs: int) -> dict[str, Any]:
    """A throughput phase's tally with its jobs/s."""
    tally_["jobs"] = jobs
    tally_["jobs_per_s"] = tally_["done"] / tally_["seconds"] if tally_["done"] else 0
    return tally_


def mb_per_s(tally_: dict[str, Any], size: int, count: int) -> dict[str, Any]:
    done_bytes = tally_["done"] * size
    return {
        "size_bytes": size,
        "jobs": count,
        "bytes_done": done_bytes,
        "mb_per_s": done_bytes / 1e6 / tally_["seconds"] if tally_["done"] else 0.0,
    }


def failures(tally_: dict[str, Any]) -> int:
    return sum(tally_.get(k, 0) for k in OUTCOMES[1:])


# --- checks after the clock stopped -----------------------------------------------------------


def check_digests(got: list[tuple[int, str] | None], size: int, digest: str) -> dict[str, Any]:
    """Every output's size and SHA-256 against the input file's."""
    mismatched = sum(1 for item in got if item != (size, digest))
    return {"checked": len(got), "mismatched": mismatched}


def compare_outputs(jobs: list[Job], outputs: list[Any]) -> dict[str, Any]:
    """Each sampled job's output (parsed JSON, None if missing) against its payload: counts
    and the first mismatches."""
    mismatched = [job_id for (job_id, data), got in zip(jobs, outputs, strict=True) if got != data]
    return {"checked": len(jobs), "mismatched": len(mismatched), "mismatched_jobs": mismatched[:3]}


def verify_sync(jobs: list[Job], fetch: Callable[[str], Any]) -> dict[str, Any]:
    """:func:`compare_outputs` with each output read by ``fetch``."""
    return compare_outputs(jobs, [fetch(job_id) for job_id, _ in jobs])
