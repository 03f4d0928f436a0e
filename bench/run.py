"""``python -m bench``: Shepherd and its peers, one after the other, on this machine's RabbitMQ
and MinIO, and the table that puts them side by side.

Systems: Shepherd (bench/shepherd_run.py; submitted over HTTP and over AMQP) and the peers
(bench/peers/: Celery as usually set up, Celery with Shepherd's guarantees, Dramatiq), each
doing the same echo through MinIO objects with as many worker processes as Shepherd has sheep,
in a bucket of its own. Each system starts once the previous one's queues are gone and the
servers' counters are still (a drained broker), and the order of the systems alternates from
one run to the next (``--order``). Per system: a counting phase (what a job costs the servers,
by their own counters, and every process's CPU), latency, throughput, large inputs; Shepherd
also has a runner duty-cycle phase. Failed, refused and missing jobs are counted, never as
done, and a sample of outputs is compared with its inputs after the clock stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.counters import ServerCounters
from bench.meta import describe_settings, host_info, versions
from bench.peer_run import run_peer
from bench.peers import PEERS
from bench.processes import kill_everything, memory_of
from bench.report import finish, log
from bench.servers import wait_queues_gone
from bench.shepherd_run import run_shepherd
from bench.stack import Infra, prepare_servers, teardown_servers
from bench.workload import make_input_file, payload

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ["shepherd", *PEERS]

FULL = {
    "count_jobs": 60,
    "latency_jobs": 200,
    "jobs": 1000,
    "duty_jobs": 200,
    "large": {"1MB": (1_000_000, 20), "100MB": (100_000_000, 3)},
    "verify": 50,
}
QUICK = {
    "count_jobs": 20,
    "latency_jobs": 30,
    "jobs": 80,
    "duty_jobs": 50,
    "large": {"1MB": (1_000_000, 5), "100MB": (100_000_000, 1)},
    "verify": 10,
}


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer jobs (make bench-quick)")
    parser.add_argument("--jobs", type=positive, help="throughput jobs per worker count")
    parser.add_argument("--latency-jobs", type=positive, help="sequential jobs for the latency")
    parser.add_argument("--count-jobs", type=positive, help="sequential jobs counted")
    parser.add_argument("--duty-jobs", type=positive, help="jobs of the duty-cycle backlog")
    parser.add_argument("--sheep", default="1,2,4", help="sheep (and peer worker) counts")
    parser.add_argument("--latency-sheep", type=positive, default=1, help="sheep for latency")
    parser.add_argument("--large-sheep", type=positive, default=2, help="sheep for large inputs")
    parser.add_argument(
        "--large-jobs", help="jobs of 1 MB and of 100 MB, e.g. 20,3 (0 skips a size)"
    )
    parser.add_argument("--inflight", type=positive, default=64, help="submissions in flight")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"which of {','.join(SYSTEMS)} to run"
    )
    parser.add_argument(
        "--order",
        choices=("auto", "forward", "reverse"),
        default="auto",
        help="order of the systems: as listed, reversed, or (auto) the opposite of the "
        "latest run stored in --out",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--update-doc",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rewrite the table in docs/performance.md (default: full runs only)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's data directory")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample Shepherd's processes with py-spy in the one-at-a-time, throughput and "
        "large-input phases (profiles in the run directory; the figures are then perturbed "
        "and the doc's table is left alone)",
    )
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("SHEPHERD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    parser.add_argument(
        "--s3-endpoint", default=os.environ.get("SHEPHERD_S3_ENDPOINT", "127.0.0.1:9000")
    )
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    mode = QUICK if args.quick else FULL
    large = dict(mode["large"])
    if args.large_jobs:
        counts = [int(c) for c in args.large_jobs.split(",")]
        large = {
            name: (size, c)
            for (name, (size, _)), c in zip(large.items(), counts, strict=True)
            if c > 0
        }
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}")
    biggest = max((size for size, _ in large.values()), default=0)
    return {
        "mode": "quick" if args.quick else "full",
        "quick": args.quick,
        "systems": [s for s in SYSTEMS if s in systems],
        "sheep": sorted({int(c) for c in args.sheep.split(",")}),
        "latency_sheep": args.latency_sheep,
        "large_sheep": args.large_sheep,
        "count_jobs": args.count_jobs or mode["count_jobs"],
        "latency_jobs": args.latency_jobs or mode["latency_jobs"],
        "jobs": args.jobs or mode["jobs"],
        "duty_jobs": args.duty_jobs or mode["duty_jobs"],
        "large": large,
        "inflight": args.inflight,
        "profile": args.profile,
        "verify": mode["verify"],
        "payload_bytes": len(json.dumps(payload(0, random.Random(0)))),
        "max_upload_bytes": max(1024**3, 2 * biggest),
    }


def order(systems: list[str], choice: str, out_dir: Path) -> tuple[list[str], str]:
    """The systems in this run's order, and which way it went (forward or reverse)."""
    if choice == "auto":
        choice = "forward"
        stored = sorted(out_dir.glob("*.json"))
        if stored:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                last = json.loads(stored[-1].read_text()).get("order_direction")
                choice = "reverse" if last == "forward" else "forward"
    return (systems if choice == "forward" else systems[::-1]), choice


class Runner:
    """Runs the systems one after the other, each on a drained broker."""

    def __init__(self, cfg: dict[str, Any], infra: Infra, run_dir: Path) -> None:
        self.cfg = cfg
        self.infra = infra
        self.run_dir = run_dir
        self.sheep_ids = [f"s{i + 1}" for i in range(max([*cfg["sheep"], cfg["large_sheep"]]))]
        self.leftovers: list[str] = []
        """Name prefixes of the queues the previous system declared."""
        self.shepherd_prepared = False

    def drain(self) -> dict[str, float]:
        """Until the previous system's queues are gone and nothing moves on the servers
        (no publishes, S3 requests or notifications for a second)."""
        gone = wait_queues_gone(self.infra.amqp_url, self.leftovers) if self.leftovers else 0.0
        counters = ServerCounters(
            self.infra.s3_endpoint,
            self.infra.access_key,
            self.infra.secret_key,
            self.infra.bucket,
            self.infra.rabbitmq_metrics_url,
        )
        start = time.monotonic()
        try:
            counters.settled(limit=60)
        finally:
            counters.close()
        return {
            "queues_gone_s": round(gone, 2),
            "quiet_after_s": round(time.monotonic() - start, 2),
        }

    def run(self, system: str) -> dict[str, Any]:
        drained = self.drain()
        log(f"{system}: starting on a drained broker ({drained})")
        if system == "shepherd":
            out = self.shepherd()
        else:
            out = run_peer(system, self.cfg, self.infra, self.run_dir)
            self.leftovers = out["queue_prefixes"]
        out["drained_before"] = drained
        return out

    def shepherd(self) -> dict[str, Any]:
        self.shepherd_prepared = True
        asyncio.run(prepare_servers(self.infra, self.sheep_ids))
        try:
            return asyncio.run(run_shepherd(self.cfg, self.infra, self.run_dir))
        finally:
            self.teardown_shepherd()
            self.leftovers = [f"{self.infra.namespace}."]

    def teardown_shepherd(self) -> None:
        """Its namespace and bucket removed (also after an error or an interruption)."""
        if not self.shepherd_prepared:
            return
        self.shepherd_prepared = False
        removed = asyncio.run(teardown_servers(self.infra, self.sheep_ids))
        namespace = self.infra.namespace
        log(f"shepherd: removed the {namespace} namespace, {removed} objects and the bucket")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = settings(args)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(tempfile.mkdtemp(prefix=f"shepherd-bench-{stamp}-"))
    infra = Infra(amqp_url=args.amqp_url, s3_endpoint=args.s3_endpoint)
    systems, direction = order(cfg["systems"], args.order, args.out)
    started = time.monotonic()
    results: dict[str, Any] = {
        "schema": 2,
        "timestamp": stamp,
        "mode": cfg["mode"],
        "order": systems,
        "order_direction": direction,
        "run_dir": str(run_dir),
        "logs": str(run_dir / "logs"),
        "systems": {},
    }

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    log(f"run directory {run_dir} (logs in logs/); systems in this order: {', '.join(systems)}")
    runner = Runner(cfg, infra, run_dir)
    try:
        results["host"] = host_info()
        inputs = run_dir / "inputs"
        inputs.mkdir()
        cfg["input_files"] = {}
        for name, (size, _) in cfg["large"].items():
            path = inputs / f"{name}.json"
            cfg["input_files"][name] = (path, make_input_file(path, size))
        results["versions"] = asyncio.run(versions(infra))
        results["settings"] = describe_settings(cfg, infra)
        for system in systems:
            results["systems"][system] = runner.run(system)
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        results["interrupted"] = True
        return 130
    finally:
        kill_everything()
        with contextlib.suppress(Exception):
            runner.teardown_shepherd()
        if not args.keep:  # the logs and configs stay; inputs and scratch data go
            shutil.rmtree(run_dir / "inputs", ignore_errors=True)
            for data in run_dir.glob("*/data"):
                shutil.rmtree(data, ignore_errors=True)
    client_mem = memory_of(os.getpid())
    results["client_rss_mib"] = client_mem and {
        "rss": client_mem["rss_mib"],
        "hwm": client_mem["hwm_mib"],
    }
    results["host"]["loadavg_end"] = os.getloadavg()
    results["wall_s"] = round(time.monotonic() - started, 1)
    finish(results, args.out, update_doc=False if args.profile else args.update_doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
