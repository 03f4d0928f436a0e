"""Issue 11's targets and budgets, checked on a run: against the best peer on each measure
where the target is relative, against a fixed bound where it is not. Shepherd's speed and
per-job targets are checked for each submission path measured (HTTP and AMQP).

Each target: ``name``, ``target`` (the rule as written), ``bound`` (the number it came to in
this run), ``best_peer`` (whose value set it, if relative), ``measured``, ``unit`` and
``pass`` (None: not measured in this run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.table import SHEPHERD, Column, Row, best_peer, columns, dig, top_count


@dataclass(frozen=True)
class Rule:
    name: str
    row: Row
    op: str  # "<=" or ">="
    bound: float
    unit: str
    relative: bool = False
    """``bound`` is a factor of the best peer's value on ``row``."""


def _rules(results: dict[str, Any], col: Column) -> list[Rule]:
    """The rules that depend on the submission path, for Shepherd's column ``col``. The CPU
    budget is read where the issue's own figures come from: the throughput phase with the
    most workers, every process together (the counting phase's CPU is in the results too)."""
    count = str("4" if _has_count(results, "4") else top_count(results))
    via = col.via.upper()

    def on(*keys: str, better: str = "low") -> Row:
        return Row(col.via, lambda r, c: dig(c.data(r), keys[0], c.via, *keys[1:]), 2, better)

    throughput = on("throughput", count, "jobs_per_s", better="high")
    cpu = on("throughput", count, "cpu_ms_per_job", "total")
    return [
        Rule(f"throughput with {count} sheep, {via}", throughput, ">=", 1.2, "jobs/s", True),
        Rule(f"idle latency p50, {via}", on("latency", "p50_ms"), "<=", 0.8, "ms", True),
        Rule(f"idle latency p99, {via}", on("latency", "p99_ms"), "<=", 50, "ms"),
        Rule(
            f"MinIO requests per job, {via}",
            on("counts", "per_job", "minio_requests"),
            "<=",
            3,
            "requests",
        ),
        Rule(
            f"bucket notifications per inline job, {via}",
            on("counts", "per_job", "notifications"),
            "<=",
            0,
            "events",
        ),
        Rule(
            f"broker publishes per job, {via}",
            on("counts", "per_job", "publishes"),
            "<=",
            6,
            "publishes",
        ),
        Rule(f"CPU per job at {count} workers, all processes, {via}", cpu, "<=", 1.0, "ms", True),
    ]


def _has_count(results: dict[str, Any], count: str) -> bool:
    shepherd = results.get("systems", {}).get(SHEPHERD, {})
    return count in shepherd.get("throughput", {}).get("http", {})


def _system_rules() -> list[Rule]:
    """The rules on what does not depend on the submission path."""

    def on(*keys: str, better: str | None = None, scale: float = 1.0) -> Row:
        def get(r: dict[str, Any], c: Column) -> float | None:
            value = dig(c.data(r), *keys) if c.primary else None
            return None if value is None else value * scale

        return Row("", get, 2, better)

    return [
        Rule(
            "1 MB inputs through the gateway",
            on("large", "sizes", "1MB", "mb_per_s", better="high"),
            ">=",
            1.0,
            "MB/s",
            relative=True,
        ),
        Rule(
            "runner duty cycle, 50 ms jobs",
            on("duty", "model", "duty_cycle", scale=100),
            ">=",
            95,
            "%",
        ),
        Rule("notification backlog after throughput", on("notification_backlog_s"), "<=", 1, "s"),
        Rule(
            "GET /jobs, page of 100 of 1,000,000 jobs, p50",
            on("listing", "first_page", "p50_ms"),
            "<=",
            100,
            "ms",
        ),
        Rule("idle RSS gateway", on("rss_summary", "idle_rss_mib", "gateway"), "<=", 80, "MiB"),
        Rule("idle RSS notifier", on("rss_summary", "idle_rss_mib", "notifier"), "<=", 80, "MiB"),
        Rule(
            "idle RSS sheep (largest)", on("rss_summary", "idle_rss_mib", "sheep"), "<=", 80, "MiB"
        ),
        Rule(
            "RSS added by 100 MB input: gateway",
            on("rss_summary", "added_by_100MB_mib", "gateway"),
            "<=",
            64,
            "MiB",
        ),
        Rule(
            "RSS added by 100 MB input: sheep",
            on("rss_summary", "added_by_100MB_mib", "sheep"),
            "<=",
            64,
            "MiB",
        ),
        Rule("failed, missing or wrong jobs", on("failures", "total"), "<=", 0, "jobs"),
    ]


def _check(results: dict[str, Any], col: Column, rule: Rule) -> dict[str, Any]:
    measured = rule.row.get(results, col)
    bound: float | None = rule.bound
    best = best_peer(results, rule.row) if rule.relative else None
    target = f"{rule.op} {rule.bound:g} {rule.unit}"
    if rule.relative:
        target = f"{rule.op} {rule.bound:g} x best peer"
        bound = None if best is None else best[1] * rule.bound
    if measured is None or bound is None:
        passed = None
    else:
        passed = measured <= bound if rule.op == "<=" else measured >= bound
    return {
        "name": rule.name,
        "target": target,
        "bound": None if bound is None else round(bound, 3),
        "best_peer": best and best[0],
        "measured": None if measured is None else round(measured, 3),
        "unit": rule.unit,
        "pass": passed,
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue, measured (None where this run did not measure it)."""
    shepherd = [c for c in columns(results) if c.system == SHEPHERD]
    if not shepherd:
        return []
    out = [_check(results, col, rule) for col in shepherd for rule in _rules(results, col)]
    out += [_check(results, shepherd[0], rule) for rule in _system_rules()]
    return out
