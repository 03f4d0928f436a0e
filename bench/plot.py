"""A run's picture: the latency CDF of every column, and throughput against workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.table import columns, dig


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, (cdf, tput) = plt.subplots(1, 2, figsize=(12, 4.8))
    counts: set[int] = set()
    for col in columns(results):
        latency = dig(col.data(results), "latency", col.via) or {}
        raw = sorted(latency.get("raw_ms", []))
        if raw:
            fractions = [(i + 1) / len(raw) for i in range(len(raw))]
            label = f"{col.title} (p50 {latency['p50_ms']:.1f} ms, n={len(raw)})"
            cdf.step(raw, fractions, where="post", label=label)
        by_count = dig(col.data(results), "throughput", col.via) or {}
        xs = sorted(by_count, key=int)
        if xs:
            counts.update(int(x) for x in xs)
            tput.plot(
                [int(x) for x in xs],
                [by_count[x]["jobs_per_s"] for x in xs],
                marker="o",
                label=col.title,
            )
    cdf.axvline(50, color="grey", linestyle=":", linewidth=1)
    cdf.text(50, 0.98, "p99 target ", color="grey", fontsize=8, rotation=90, va="top", ha="right")
    cdf.set_xscale("log")
    cdf.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    cdf.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    cdf.xaxis.set_minor_formatter(NullFormatter())
    cdf.set_xlabel("submit-to-done latency (ms, log scale)")
    cdf.set_ylabel("fraction of jobs")
    cdf.set_ylim(0, 1.02)
    cdf.set_title("Latency CDF: 1 KB echo, one job at a time")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(loc="lower right", fontsize=8)
    tput.set_xlabel("sheep / worker processes")
    tput.set_ylabel("jobs/s")
    tput.set_xticks(sorted(counts) or [1])
    tput.set_ylim(bottom=0)
    tput.set_title("Throughput: 1 KB echo jobs")
    tput.grid(True, alpha=0.3)
    tput.legend(loc="best", fontsize=8)
    host = results.get("host", {})
    fig.suptitle(
        f"Shepherd and its peers, {results['timestamp']} ({results['mode']}), "
        f"{host.get('nproc')} cores {host.get('cpu_model') or ''}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
