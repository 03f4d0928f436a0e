"""Results of a benchmark run: statistics, targets, the JSON file, the plot, the docs table.

    python -m bench.report bench/results/20250101T000000Z.json [--update-doc]

redraws the plot and prints the summary of a stored run (and rewrites the table in
docs/performance.md with ``--update-doc``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
TABLE_START = "<!-- bench:table:start -->"
TABLE_END = "<!-- bench:table:end -->"
PACKAGES = [
    "aio-pika",
    "aiormq",
    "starlette",
    "uvicorn",
    "httpx",
    "minio",
    "pyzmq",
    "pydantic",
    "celery",
    "kombu",
    "matplotlib",
    "psutil",
]
_started = dt.datetime.now()


def log(message: str) -> None:
    elapsed = (dt.datetime.now() - _started).total_seconds()
    print(f"[bench {elapsed:6.1f}s] {message}", flush=True)


# --- what the run records about itself -------------------------------------------------------


def host_info() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = round(int(line.split()[1]) / 1024**2, 1)
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_gib": mem_total,
        "kernel": platform.release(),
        "os": platform.platform(),
        "loadavg_start": os.getloadavg(),
    }


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


async def versions(infra: Any) -> dict[str, Any]:
    import aio_pika

    found: dict[str, Any] = {
        "python": platform.python_version(),
        "shepherd_commit": _git("rev-parse", "HEAD"),
        "shepherd_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "packages": {},
    }
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found["packages"][name] = metadata.version(name)
    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(infra.amqp_url)
        async with connection:
            props = connection.transport.connection.server_properties
            found["rabbitmq"] = f"{props.get('product')} {props.get('version')}"
    with contextlib.suppress(Exception):
        from minio.credentials import StaticProvider
        from minio.minioadmin import MinioAdmin

        admin = MinioAdmin(
            endpoint=infra.s3_endpoint,
            credentials=StaticProvider(infra.access_key, infra.secret_key),
            secure=False,
        )
        info = json.loads(admin.info())
        found["minio"] = sorted({s.get("version") for s in info.get("servers", [])})
    with contextlib.suppress(OSError):
        pinned = re.search(
            r'^MINIO_VERSION="([^"]+)"', (ROOT / "scripts/services.sh").read_text(), re.M
        )
        found["minio_pinned"] = pinned and pinned.group(1)
    return found


def describe_settings(cfg: dict[str, Any], infra: Any) -> dict[str, Any]:
    from bench.baseline import SETTINGS

    return {
        "mode": cfg["mode"],
        "latency_jobs": cfg["latency_jobs"],
        "latency_workers": cfg["latency_sheep"],
        "throughput_jobs_per_count": cfg["jobs"],
        "worker_counts": cfg["sheep"],
        "inflight_submissions": cfg["inflight"],
        "payload_bytes": cfg["payload_bytes"],
        "large_inputs": {
            name: {"bytes": size, "jobs": count} for name, (size, count) in cfg["large"].items()
        },
        "large_workers": cfg["large_sheep"],
        "verified_sample_per_phase": cfg["verify"],
        "shepherd": {
            "namespace": infra.namespace,
            "bucket": infra.bucket,
            "processes": "gateway, notifier and one process per bare sheep (shepherd CLI)",
            "model": "echo/1",
            "max_upload_bytes": cfg["max_upload_bytes"],
            "sheep_stop_grace": 5,
            "log_level": "INFO",
            "completion": "job.done/job.failed/job.cancelled events on <ns>.events (AMQP)",
        },
        "celery": {
            "queue": infra.celery_queue,
            "pool": "prefork",
            "object_prefix": infra.celery_prefix,
            "flags": "--without-gossip --without-mingle --without-heartbeat, log level INFO",
            **{k: v for k, v in SETTINGS.items() if k != "accept_content"},
        },
    }


# --- statistics ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_stats(values: list[float]) -> dict[str, Any]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 2)

    return {
        "n": len(values),
        "p50_ms": r(percentile(values, 50)),
        "p95_ms": r(percentile(values, 95)),
        "p99_ms": r(percentile(values, 99)),
        "mean_ms": r(sum(values) / len(values)) if values else None,
        "min_ms": r(min(values, default=None)),
        "max_ms": r(max(values, default=None)),
    }


def role(label: str) -> str:
    """gateway, notifier, sheep, runner; worker (Celery's main process), worker-child."""
    if label.startswith("celery:"):
        return "worker" if label == "celery:main" else "worker-child"
    return label.split(":", 1)[0]


def cpu_per_job(
    before: dict[str, float], after: dict[str, float], jobs: int
) -> dict[str, float] | None:
    """CPU milliseconds per job done, summed by role (every sheep together, ...), and the
    total; None when no job was done."""
    if not jobs:
        return None
    out: dict[str, float] = {}
    for label, end in after.items():
        if label in before:
            r = role(label).removesuffix("-child")
            out[r] = out.get(r, 0.0) + (end - before[label]) * 1000 / jobs
    out["total"] = sum(out.values())
    return {r: round(ms, 2) for r, ms in out.items()}


def by_role(snap: dict[str, dict[str, float]], field: str) -> dict[str, float]:
    """The largest value of ``field`` among the processes of each role."""
    out: dict[str, float] = {}
    for label, mem in snap.items():
        r = role(label)
        out[r] = max(out.get(r, 0.0), mem[field])
    return out


def summarize_system(system: dict[str, Any]) -> None:
    """Add the derived numbers in place: latency statistics, failures, RSS per role."""
    latency = system.get("latency")
    if latency is not None:
        raw = latency.pop("latencies_ms", latency.get("raw_ms", []))
        latency.update(latency_stats(raw))
        latency["raw_ms"] = [round(x, 3) for x in raw]
    tallies = [latency] if latency else []
    tallies += list(system.get("throughput", {}).values())
    tallies += list(system.get("large", {}).get("sizes", {}).values())
    system["failures"] = {
        kind: sum(t.get(kind, 0) for t in tallies) for kind in ("failed", "missing", "rejected")
    }
    mismatches = sum(v["mismatched"] for v in system.get("verification", {}).values())
    mismatches += sum(
        t.get("verification", {}).get("mismatched", 0)
        for t in system.get("large", {}).get("sizes", {}).values()
    )
    system["failures"]["mismatched_outputs"] = mismatches
    system["failures"]["total"] = sum(system["failures"].values())

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


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ratios(shepherd: dict[str, Any], celery: dict[str, Any]) -> dict[str, Any]:
    """Shepherd / Celery: above 1 is better for throughput, below 1 for latency."""
    out: dict[str, Any] = {"throughput": {}, "latency": {}, "large_mb_per_s": {}}
    for count, tally in shepherd.get("throughput", {}).items():
        other = celery.get("throughput", {}).get(count)
        if other:
            out["throughput"][count] = _ratio(tally["jobs_per_s"], other["jobs_per_s"])
    for stat in ("p50_ms", "p95_ms", "p99_ms", "mean_ms"):
        out["latency"][stat.removesuffix("_ms")] = _ratio(
            shepherd.get("latency", {}).get(stat), celery.get("latency", {}).get(stat)
        )
    for size, tally in shepherd.get("large", {}).get("sizes", {}).items():
        other = celery.get("large", {}).get("sizes", {}).get(size)
        if other:
            out["large_mb_per_s"][size] = _ratio(tally["mb_per_s"], other["mb_per_s"])
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets (for a 2-core machine), measured, each passed or not (None: not
    measured in this run)."""
    shepherd = results.get("shepherd", {})
    latency = shepherd.get("latency", {})
    top = str(max((int(c) for c in shepherd.get("throughput", {})), default=0))
    rss = shepherd.get("rss_summary", {})
    idle = rss.get("idle_rss_mib", {})
    added = rss.get("added_by_100MB_mib", {})
    rows = [
        ("idle latency p50", latency.get("p50_ms"), "<=", 15, "ms"),
        ("idle latency p99", latency.get("p99_ms"), "<=", 50, "ms"),
        (
            "throughput with 4 sheep",
            shepherd.get("throughput", {}).get("4", {}).get("jobs_per_s"),
            ">=",
            200,
            "jobs/s",
        ),
        (
            f"throughput vs Celery ({top} workers)",
            results.get("ratios", {}).get("throughput", {}).get(top),
            ">=",
            1.2,
            "x",
        ),
        (
            "p50 latency vs Celery",
            results.get("ratios", {}).get("latency", {}).get("p50"),
            "<=",
            0.8,
            "x",
        ),
        ("idle RSS gateway", idle.get("gateway"), "<=", 80, "MiB"),
        ("idle RSS notifier", idle.get("notifier"), "<=", 80, "MiB"),
        ("idle RSS sheep (largest)", idle.get("sheep"), "<=", 80, "MiB"),
        ("RSS added by 100 MB input: gateway", added.get("gateway"), "<=", 64, "MiB"),
        ("RSS added by 100 MB input: sheep", added.get("sheep"), "<=", 64, "MiB"),
        (
            "failed, missing or wrong jobs",
            shepherd.get("failures", {}).get("total"),
            "<=",
            0,
            "jobs",
        ),
    ]
    out = []
    for name, measured, op, bound, unit in rows:
        if measured is None:
            passed = None
        else:
            passed = measured <= bound if op == "<=" else measured >= bound
        out.append(
            {
                "name": name,
                "target": f"{op} {bound:g} {unit}",
                "measured": None if measured is None else round(measured, 3),
                "unit": unit,
                "pass": passed,
            }
        )
    return out


# --- presentation ----------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """measure, Shepherd, Celery, Shepherd/Celery."""
    s, c = results.get("shepherd", {}), results.get("celery", {})
    ratio = results.get("ratios", {})
    rows = []
    sl, cl = s.get("latency", {}), c.get("latency", {})
    n = sl.get("workers", 1)
    for stat in ("p50", "p95", "p99", "mean"):
        rows.append(
            [
                f"latency {stat}, 1 KB, {n} worker, one job at a time (ms)",
                _fmt(sl.get(f"{stat}_ms")),
                _fmt(cl.get(f"{stat}_ms")),
                _fmt(ratio.get("latency", {}).get(stat), 2),
            ]
        )
    for count in sorted(s.get("throughput", {}), key=int):
        st, ct = s["throughput"][count], c.get("throughput", {}).get(count, {})
        rows.append(
            [
                f"throughput, 1 KB, {count} sheep / workers (jobs/s)",
                _fmt(st.get("jobs_per_s")),
                _fmt(ct.get("jobs_per_s")),
                _fmt(ratio.get("throughput", {}).get(count), 2),
            ]
        )
    large_workers = s.get("large", {}).get("workers")
    for size, st in s.get("large", {}).get("sizes", {}).items():
        ct = c.get("large", {}).get("sizes", {}).get(size, {})
        rows.append(
            [
                f"{size} inputs, {st['jobs']} jobs, {large_workers} workers (MB/s)",
                _fmt(st.get("mb_per_s")),
                _fmt(ct.get("mb_per_s")),
                _fmt(ratio.get("large_mb_per_s", {}).get(size), 2),
            ]
        )
    top = max(s.get("throughput", {}), key=int, default=None)
    if top is not None:
        scpu = s["throughput"][top].get("cpu_ms_per_job") or {}
        ccpu = c.get("throughput", {}).get(top, {}).get("cpu_ms_per_job") or {}
        counterpart = {"sheep": "worker"}
        for r in ("gateway", "notifier", "sheep", "runner", "rabbitmq", "minio", "client", "total"):
            if r not in scpu:
                continue
            theirs = counterpart.get(r, r)
            who = f"{r} / Celery {theirs}" if theirs != r else r
            rows.append(
                [
                    f"CPU per job at {top} workers: {who} (ms)",
                    _fmt(scpu[r], 2),
                    _fmt(ccpu.get(theirs), 2),
                    "",
                ]
            )
    srss, crss = s.get("rss_summary", {}), c.get("rss_summary", {})
    pairs = [("gateway", "worker"), ("notifier", None), ("sheep", "worker-child"), ("runner", None)]
    for key, label in (
        ("idle_rss_mib", "idle RSS"),
        ("peak_after_1MB_mib", "peak RSS after 1 MB"),
        ("peak_after_100MB_mib", "peak RSS after 100 MB"),
        ("added_by_100MB_mib", "RSS added by 100 MB"),
    ):
        for mine, theirs in pairs:
            value = srss.get(key, {}).get(mine)
            if value is None:
                continue
            other = crss.get(key, {}).get(theirs) if theirs else None
            who = f"{mine} / Celery {theirs}" if theirs else mine
            rows.append([f"{label}: {who} (MiB)", _fmt(value), _fmt(other), ""])
    rows.append(
        [
            "failed, missing, rejected or wrong jobs",
            _fmt(s.get("failures", {}).get("total")),
            _fmt(c.get("failures", {}).get("total")),
            "",
        ]
    )
    return rows


def stages_line(results: dict[str, Any]) -> str | None:
    """Where Shepherd's sequential latency goes, from the timestamps in the job status."""
    stages = results.get("shepherd", {}).get("latency", {}).get("stages_median_ms")
    if not stages:
        return None
    parts = ", ".join(f"{gap.replace('_at', '')} {_fmt(ms)}" for gap, ms in stages.items())
    line = f"Shepherd latency by stage (median ms): {parts}."
    backlog = results.get("shepherd", {}).get("notification_backlog_s")
    if backlog is not None:
        line += (
            f" MinIO queues bucket notifications under load: the last of those the throughput"
            f" phases caused arrived {_fmt(backlog)} s after the phases ended."
        )
    return line


def markdown_table(results: dict[str, Any]) -> str:
    host, versions = results.get("host", {}), results.get("versions", {})
    commit = (versions.get("shepherd_commit") or "?")[:10]
    dirty = " (uncommitted changes)" if versions.get("shepherd_dirty") else ""
    lines = [
        f"Run `{results['timestamp']}` ({results['mode']}, {results.get('wall_s', '?')} s): "
        f"{host.get('nproc')} cores ({host.get('cpu_model')}), {host.get('memory_gib')} GiB, "
        f"load average {_fmt((host.get('loadavg_start') or [None])[0], 2)} at the start; "
        f"Shepherd {commit}{dirty}, Celery {versions.get('packages', {}).get('celery', '?')}, "
        f"{versions.get('rabbitmq', 'RabbitMQ ?')}, Python {versions.get('python')}.",
        "",
        "| measure | Shepherd | Celery | Shepherd/Celery |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in table_rows(results)]
    if stages := stages_line(results):
        lines += ["", stages]
    lines += ["", "| target (2 cores) | measured | met |", "|---|---:|:---:|"]
    for t in results.get("targets", []):
        met = {True: "yes", False: "**no**", None: "-"}[t["pass"]]
        lines.append(
            f"| {t['name']} {t['target']} | {_fmt(t['measured'], 2)} {t['unit']} | {met} |"
        )
    return "\n".join(lines)


def write_doc_table(results: dict[str, Any], doc: Path = DOC) -> bool:
    """Replace what is between the table markers of ``doc`` and draw the run's plot beside it
    (``performance.png``); False if the markers are missing."""
    text = doc.read_text()
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        return False
    new = text[: start + len(TABLE_START)] + "\n" + markdown_table(results) + "\n" + text[end:]
    doc.write_text(new)
    plot(results, doc.with_suffix(".png"))
    return True


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, (cdf, tput) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = {"shepherd": "tab:blue", "celery": "tab:orange"}
    for system in ("shepherd", "celery"):
        data = results.get(system)
        if not data:
            continue
        raw = sorted(data.get("latency", {}).get("raw_ms", []))
        if raw:
            fractions = [(i + 1) / len(raw) for i in range(len(raw))]
            p50 = data["latency"]["p50_ms"]
            cdf.step(
                raw,
                fractions,
                where="post",
                color=colors[system],
                label=f"{system.capitalize()} (p50 {p50:.1f} ms, n={len(raw)})",
            )
        counts = sorted(data.get("throughput", {}), key=int)
        if counts:
            tput.plot(
                [int(c) for c in counts],
                [data["throughput"][c]["jobs_per_s"] for c in counts],
                marker="o",
                color=colors[system],
                label=system.capitalize(),
            )
    for x, name in ((15, "p50 target"), (50, "p99 target")):
        cdf.axvline(x, color="grey", linestyle=":", linewidth=1)
        cdf.text(x, 0.98, f"{name} ", color="grey", fontsize=8, rotation=90, va="top", ha="right")
    cdf.set_xscale("log")
    cdf.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    cdf.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    cdf.xaxis.set_minor_formatter(NullFormatter())
    cdf.set_xlabel("submit-to-ready latency (ms, log scale)")
    cdf.set_ylabel("fraction of jobs")
    cdf.set_ylim(0, 1.02)
    cdf.set_title("Latency CDF: 1 KB echo, one job at a time")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(loc="lower right")
    tput.axhline(200, color="grey", linestyle=":", linewidth=1)
    tput.text(
        0.01,
        200,
        "target with 4 sheep: 200 jobs/s",
        color="grey",
        fontsize=8,
        va="bottom",
        transform=tput.get_yaxis_transform(),  # x in axes fractions, y in jobs/s
    )
    tput.set_xlabel("sheep / Celery worker processes")
    tput.set_ylabel("jobs/s")
    tput.set_xticks(
        sorted(
            {
                int(c)
                for s in ("shepherd", "celery")
                for c in results.get(s, {}).get("throughput", {})
            }
        )
        or [1]
    )
    tput.set_ylim(bottom=0)
    tput.set_title("Throughput: 1 KB echo jobs")
    tput.grid(True, alpha=0.3)
    tput.legend(loc="center right")
    host = results.get("host", {})
    fig.suptitle(
        f"Shepherd vs Celery, {results['timestamp']} ({results['mode']}), "
        f"{host.get('nproc')} cores {host.get('cpu_model') or ''}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def console_summary(results: dict[str, Any]) -> str:
    rows = [["measure", "Shepherd", "Celery", "S/C"], *table_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(widths[j]) if j == 0 else cell.rjust(widths[j])
                for j, cell in enumerate(row)
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if stages := stages_line(results):
        lines += ["", stages]
    lines.append("")
    for t in results.get("targets", []):
        met = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        lines.append(f"  [{met}] {t['name']} {t['target']}: {_fmt(t['measured'], 2)} {t['unit']}")
    return "\n".join(lines)


def derive(results: dict[str, Any]) -> None:
    """Statistics, ratios and targets, in place."""
    for system in ("shepherd", "celery"):
        if system in results:
            summarize_system(results[system])
    if "shepherd" in results and "celery" in results:
        results["ratios"] = ratios(results["shepherd"], results["celery"])
    results["targets"] = targets(results)


def finish(
    results: dict[str, Any], cfg: dict[str, Any], out_dir: Path, update_doc: bool | None
) -> Path:
    derive(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{results['timestamp']}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    png = path.with_suffix(".png")
    try:
        plot(results, png)
    except Exception as exc:  # the numbers matter more than the picture
        log(f"plotting failed: {type(exc).__name__}: {exc}")
    print()
    print(console_summary(results))
    print()
    log(f"results: {path}")
    log(f"plot:    {png}")
    if update_doc is None:
        update_doc = results["mode"] == "full"
    if update_doc:
        if write_doc_table(results):
            log(f"table:   {DOC.relative_to(ROOT)}")
        else:
            log(f"table markers missing in {DOC}; not updated")
    log(f"logs:    {results['logs']}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("results", type=Path, help="a bench/results/<timestamp>.json")
    parser.add_argument("--update-doc", action="store_true", help="rewrite the docs table")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    derive(results)
    plot(results, args.results.with_suffix(".png"))
    print(console_summary(results))
    if args.update_doc and not write_doc_table(results):
        print(f"table markers missing in {DOC}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
