"""The side-by-side table: one column per system and submission path, the best peer on each
measure, and Shepherd's ratio to it. Shared by the console summary and the docs table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SHEPHERD = "shepherd"
SHEPHERD_VIAS = {"http": "Shepherd HTTP", "amqp": "Shepherd AMQP"}


@dataclass(frozen=True)
class Column:
    """A system as submitted one way (``via``); ``primary`` is the system's first column,
    which shows what does not depend on the submission path (large inputs, memory)."""

    system: str
    via: str
    title: str
    peer: bool
    primary: bool

    def data(self, results: dict[str, Any]) -> dict[str, Any]:
        return results.get("systems", {}).get(self.system, {})


def columns(results: dict[str, Any]) -> list[Column]:
    """Shepherd's columns first, then each peer's, in the order they were listed to run."""
    systems = results.get("systems", {})
    out = []
    shepherd = systems.get(SHEPHERD, {})
    vias = [v for v in SHEPHERD_VIAS if v in shepherd.get("latency", {})] or (
        ["http"] if shepherd else []
    )
    for i, via in enumerate(vias):
        out.append(Column(SHEPHERD, via, SHEPHERD_VIAS[via], False, i == 0))
    for name in results.get("settings", {}).get("systems", list(systems)):
        if name != SHEPHERD and name in systems:
            out.append(Column(name, "amqp", systems[name].get("title", name), True, True))
    return out


Getter = Callable[[dict[str, Any], Column], float | None]


@dataclass(frozen=True)
class Row:
    """A measure: how to read it for a column, its digits, and which way is better (None:
    no best peer or ratio, as for CPU or memory of one role)."""

    label: str
    get: Getter
    digits: int = 1
    better: str | None = None


def dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def top_count(results: dict[str, Any]) -> str | None:
    """The largest worker count with a throughput phase."""
    counts = {
        c
        for system in results.get("systems", {}).values()
        for by_count in system.get("throughput", {}).values()
        for c in by_count
    }
    return max(counts, key=int, default=None)


def best_peer(results: dict[str, Any], row: Row) -> tuple[str, float] | None:
    """The peer best on ``row`` (highest or lowest, as it says), and its value."""
    if row.better is None:
        return None
    found = [
        (col.system, value)
        for col in columns(results)
        if col.peer and (value := row.get(results, col)) is not None
    ]
    if not found:
        return None
    pick = max if row.better == "high" else min
    return pick(found, key=lambda item: item[1])


def rows(results: dict[str, Any]) -> list[Row]:
    """Every measure the table can show; :func:`table_rows` leaves out those no column has."""
    out: list[Row] = []

    def via(*keys: str) -> Getter:
        return lambda r, c: dig(c.data(r), keys[0], c.via, *keys[1:])

    def system(*keys: str) -> Getter:
        return lambda r, c: dig(c.data(r), *keys) if c.primary else None

    for stat in ("p50", "p95", "p99", "mean"):
        label = f"latency {stat}, 1 KB, 1 worker, one job at a time (ms)"
        out.append(Row(label, via("latency", f"{stat}_ms"), 1, "low"))
    counts = sorted(
        {
            c
            for col in columns(results)
            for c in dig(col.data(results), "throughput", col.via) or {}
        },
        key=int,
    )
    for count in counts:
        out.append(
            Row(
                f"throughput, 1 KB, {count} workers (jobs/s)",
                via("throughput", count, "jobs_per_s"),
                1,
                "high",
            )
        )
    workers = results.get("settings", {}).get("large_workers")
    for size in ("1MB", "100MB"):
        getter = system("large", "sizes", size, "mb_per_s")
        out.append(Row(f"{size} inputs, {workers} workers (MB/s)", getter, 1, "high"))
    for key, label in (
        ("minio_requests", "MinIO requests"),
        ("notifications", "bucket notifications"),
        ("publishes", "broker publishes"),
    ):
        out.append(Row(f"per job, one at a time: {label}", via("counts", "per_job", key), 2, "low"))
    out.append(
        Row(
            "per job, one at a time: CPU, all processes (ms)",
            via("counts", "cpu_ms_per_job", "total"),
            2,
            "low",
        )
    )
    top = top_count(results)
    roles = (
        "gateway",
        "notifier",
        "sheep",
        "runner",
        "worker",
        "rabbitmq",
        "minio",
        "client",
        "total",
    )
    for r in roles if top else ():
        getter = via("throughput", top, "cpu_ms_per_job", r)
        better = "low" if r == "total" else None  # roles differ between systems
        out.append(Row(f"CPU per job at {top} workers: {r} (ms)", getter, 2, better))
    out.append(Row("runner duty cycle, 50 ms jobs, backlog on 1 sheep (%)", _duty("duty"), 1))
    out.append(Row("runner duty cycle, the same backlog in the pool (%)", _duty("duty_pool"), 1))
    out.append(
        Row("notification backlog after throughput (s)", system("notification_backlog_s"), 1)
    )
    for query, label in (
        ("first_page", "first page"),
        ("state_failed", "state=failed"),
        ("later_pages", "later pages (cursor)"),
    ):
        out.append(Row(f"GET /jobs of 1,000,000 jobs, {label}, p50 (ms)", _listing(query), 1))
    for key, label in (
        ("idle_rss_mib", "idle RSS"),
        ("peak_after_1MB_mib", "peak RSS after 1 MB"),
        ("peak_after_100MB_mib", "peak RSS after 100 MB"),
        ("added_by_100MB_mib", "RSS added by 100 MB"),
    ):
        for r in ("gateway", "notifier", "sheep", "runner", "worker", "worker-child"):
            out.append(Row(f"{label}: {r} (MiB)", system("rss_summary", key, r)))
    out.append(Row("failed, missing, rejected or wrong jobs", system("failures", "total"), 0))
    return out


def _duty(phase: str) -> Callable[[dict[str, Any], Column], float | None]:
    def percent(results: dict[str, Any], col: Column) -> float | None:
        value = dig(col.data(results), phase, "model", "duty_cycle") if col.primary else None
        return None if value is None else value * 100

    return percent


def _listing(query: str) -> Callable[[dict[str, Any], Column], float | None]:
    def p50(results: dict[str, Any], col: Column) -> float | None:
        return dig(col.data(results), "listing", query, "p50_ms") if col.primary else None

    return p50


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def header(results: dict[str, Any]) -> list[str]:
    cols = columns(results)
    shepherd = [c for c in cols if not c.peer]
    return [
        "measure",
        *(c.title for c in cols),
        "best peer",
        *(f"{c.via.upper()}/best" for c in shepherd),
    ]


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """Header first, then one line of cells per measure."""
    cols = columns(results)
    shepherd = [c for c in cols if not c.peer]
    lines = [header(results)]
    for row in rows(results):
        values = [row.get(results, c) for c in cols]
        if all(v is None for v in values):
            continue
        best = best_peer(results, row)
        cells = [row.label, *(fmt(v, row.digits) for v in values)]
        cells.append(fmt(best[1], row.digits) if best else "")
        for col in shepherd:
            mine = row.get(results, col)
            ratio = mine / best[1] if best and mine is not None and best[1] else None
            cells.append(fmt(ratio, 2) if ratio is not None else "")
        lines.append(cells)
    return lines
