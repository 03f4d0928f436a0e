"""Results of a benchmark run: derived numbers, targets, the JSON file, the console summary,
the plot and the docs table.

    python -m bench.report bench/results/20250101T000000Z.json [--update-doc]

redraws the plot and prints the summary of a stored run (and rewrites the table in
docs/performance.md with ``--update-doc``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from bench.plot import plot
from bench.stats import summarize_system
from bench.table import fmt, table_rows
from bench.targets import targets

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
TABLE_START = "<!-- bench:table:start -->"
TABLE_END = "<!-- bench:table:end -->"
_started = dt.datetime.now()


def log(message: str) -> None:
    elapsed = (dt.datetime.now() - _started).total_seconds()
    print(f"[bench {elapsed:6.1f}s] {message}", flush=True)


def derive(results: dict[str, Any]) -> None:
    """Statistics and targets, in place."""
    for system in results.get("systems", {}).values():
        summarize_system(system)
    results["targets"] = targets(results)


def stages_lines(results: dict[str, Any]) -> list[str]:
    """Where Shepherd's sequential latency goes (from the timestamps in the job status), and
    how long MinIO took to send the notifications the throughput phases caused."""
    shepherd = results.get("systems", {}).get("shepherd", {})
    lines = []
    for via, latency in shepherd.get("latency", {}).items():
        stages = latency.get("stages_median_ms")
        if stages:
            parts = ", ".join(f"{gap.replace('_at', '')} {fmt(ms)}" for gap, ms in stages.items())
            lines.append(f"Shepherd over {via.upper()}, latency by stage (median ms): {parts}.")
    backlog = shepherd.get("notification_backlog_s")
    if backlog is not None:
        lines.append(
            f"MinIO's notifications of the throughput phases' writes were all sent"
            f" {fmt(backlog)} s after the phases ended."
        )
    return lines


def _met(passed: bool | None, words: tuple[str, str, str]) -> str:
    return {True: words[0], False: words[1], None: words[2]}[passed]


def _target_text(t: dict[str, Any]) -> str:
    who = f" ({t['best_peer']})" if t.get("best_peer") else ""
    return f"{t['name']} {t['target']}{who}"


def markdown_table(results: dict[str, Any]) -> str:
    host, versions = results.get("host", {}), results.get("versions", {})
    commit = (versions.get("shepherd_commit") or "?")[:10]
    dirty = " (uncommitted changes)" if versions.get("shepherd_dirty") else ""
    packages = versions.get("packages", {})
    lines = [
        f"Run `{results['timestamp']}` ({results['mode']}, {results.get('wall_s', '?')} s,"
        f" systems in the order {', '.join(results.get('order', []))}):"
        f" {host.get('nproc')} cores ({host.get('cpu_model')}), {host.get('memory_gib')} GiB,"
        f" load average {fmt((host.get('loadavg_start') or [None])[0], 2)} at the start;"
        f" Shepherd {commit}{dirty}, Celery {packages.get('celery', '?')},"
        f" Dramatiq {packages.get('dramatiq', '?')}, {versions.get('rabbitmq', 'RabbitMQ ?')},"
        f" Python {versions.get('python')}.",
        "",
    ]
    table = table_rows(results)
    lines.append(f"| {' | '.join(table[0])} |")
    lines.append("|---" + "|---:" * (len(table[0]) - 1) + "|")
    lines += [f"| {' | '.join(row)} |" for row in table[1:]]
    if stages := stages_lines(results):
        lines += ["", " ".join(stages)]
    lines += ["", "| target (2 cores) | bound | measured | met |", "|---|---:|---:|:---:|"]
    for t in results.get("targets", []):
        lines.append(
            f"| {_target_text(t)} | {fmt(t['bound'], 2)} {t['unit']}"
            f" | {fmt(t['measured'], 2)} {t['unit']} | {_met(t['pass'], ('yes', '**no**', '-'))} |"
        )
    return "\n".join(lines)


def console_summary(results: dict[str, Any]) -> str:
    table = table_rows(results)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = []
    for i, row in enumerate(table):
        cells = [c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(row)]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if stages := stages_lines(results):
        lines += ["", *stages]
    lines.append("")
    for t in results.get("targets", []):
        met = _met(t["pass"], ("met   ", "MISSED", "n/a   "))
        lines.append(
            f"  [{met}] {_target_text(t)}: bound {fmt(t['bound'], 2)},"
            f" measured {fmt(t['measured'], 2)} {t['unit']}"
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


def finish(results: dict[str, Any], out_dir: Path, update_doc: bool | None) -> Path:
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
