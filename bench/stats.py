"""Numbers derived from a run's raw measurements: percentiles, CPU and memory by role,
failures, the duty cycle."""

from __future__ import annotations

import itertools
import math
import statistics
from typing import Any


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _round(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def latency_stats(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_ms": _round(percentile(values, 50)),
        "p95_ms": _round(percentile(values, 95)),
        "p99_ms": _round(percentile(values, 99)),
        "mean_ms": _round(sum(values) / len(values)) if values else None,
        "min_ms": _round(min(values, default=None)),
        "max_ms": _round(max(values, default=None)),
    }


def role(label: str) -> str:
    """gateway, notifier, sheep, runner; worker (a peer's main process), worker-child; the
    servers (rabbitmq, minio) and the client."""
    return label.split(":", 1)[0]


def cpu_by_role(per_process: dict[str, float]) -> dict[str, float]:
    """CPU milliseconds per job summed by role (every sheep together, a peer's worker with
    its children, ...), and the total."""
    out: dict[str, float] = {}
    for label, ms in per_process.items():
        r = role(label).removesuffix("-child")
        out[r] = out.get(r, 0.0) + ms
    out["total"] = sum(out.values())
    return {r: round(ms, 2) for r, ms in out.items()}


def cpu_per_job(
    before: dict[str, float], after: dict[str, float], jobs: int
) -> dict[str, float] | None:
    """CPU milliseconds per job done by process, from CPU seconds by process before and
    after a phase; None when no job was done."""
    if not jobs:
        return None
    return {
        label: round((end - before[label]) * 1000 / jobs, 3)
        for label, end in after.items()
        if label in before
    }


def by_role(snap: dict[str, dict[str, float]], field: str) -> dict[str, float]:
    """The largest value of ``field`` among the processes of each role."""
    out: dict[str, float] = {}
    for label, mem in snap.items():
        r = role(label)
        out[r] = max(out.get(r, 0.0), mem[field])
    return out


def duty_cycle(spans: list[tuple[float, float]]) -> dict[str, Any]:
    """How busy the model kept itself, from when it started and ended each job: busy time /
    wall time from the first start to the last end, and the idle gaps between jobs."""
    if not spans:
        return {"jobs": 0, "duty_cycle": None}
    spans = sorted(spans)
    busy = sum(end - start for start, end in spans)
    wall = max(end for _, end in spans) - spans[0][0]
    gaps = [(b[0] - a[1]) * 1000 for a, b in itertools.pairwise(spans)]
    return {
        "jobs": len(spans),
        "busy_s": round(busy, 3),
        "wall_s": round(wall, 3),
        "duty_cycle": round(busy / wall, 4) if wall > 0 else None,
        "gap_median_ms": _round(statistics.median(gaps)) if gaps else None,
        "gap_p95_ms": _round(percentile(gaps, 95)),
    }


def _tallies(system: dict[str, Any]) -> list[dict[str, Any]]:
    """Every tally of a system's phases that counts outcomes."""
    out: list[dict[str, Any]] = []
    for phase in ("latency", "counts"):
        out += list(system.get(phase, {}).values())
    for by_count in system.get("throughput", {}).values():
        out += list(by_count.values())
    out += list(system.get("large", {}).get("sizes", {}).values())
    if system.get("duty"):
        out.append(system["duty"])
    return out


def summarize_system(system: dict[str, Any]) -> None:
    """Add the derived numbers in place: latency statistics, CPU by role, failures, RSS by
    role."""
    for latency in system.get("latency", {}).values():
        raw = latency.pop("latencies_ms", latency.get("raw_ms", []))
        latency.update(latency_stats(raw))
        latency["raw_ms"] = [round(x, 3) for x in raw]
    tallies = _tallies(system)
    for tally in tallies:
        per_process = tally.get("cpu_ms_per_job_by_process")
        if per_process:
            tally["cpu_ms_per_job"] = cpu_by_role(per_process)
    failures = {
        kind: sum(t.get(kind, 0) for t in tallies) for kind in ("failed", "missing", "rejected")
    }
    failures["mismatched_outputs"] = sum(
        v["mismatched"] for v in system.get("verification", {}).values()
    ) + sum(t.get("verification", {}).get("mismatched", 0) for t in tallies)
    failures["total"] = sum(failures.values())
    system["failures"] = failures
    summarize_memory(system)


def summarize_memory(system: dict[str, Any]) -> None:
    """Idle RSS, peaks and what large inputs added, by role, from the large-input stack."""
    large_stack = next((k for k in system.get("rss", {}) if "large" in k), None)
    if large_stack is None:
        return
    stack = system["rss"][large_stack]
    idle = by_role(stack["idle"], "rss_mib")
    summary: dict[str, Any] = {"stack": large_stack, "idle_rss_mib": idle}
    for size, snap in stack["peak_after"].items():
        peak = by_role(snap, "hwm_mib")
        summary[f"peak_after_{size}_mib"] = peak
        summary[f"added_by_{size}_mib"] = {
            r: round(peak[r] - idle[r], 1) for r in peak if r in idle
        }
    system["rss_summary"] = summary
