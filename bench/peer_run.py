"""A peer's phases: the same work, counts and checks as Shepherd's, with as many worker
processes as Shepherd has sheep in each. A peer submits over AMQP (its input object put in
MinIO, then its task published), so its results are filed under ``amqp``."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from bench.counters import CountWindow, ServerCounters
from bench.peers.base import Peer
from bench.processes import cpu_seconds, memory_of, server_pids, snapshot
from bench.report import log
from bench.stack import Infra
from bench.stats import cpu_per_job
from bench.workload import (
    check_digests,
    encoded,
    failures,
    large_timeout,
    make_jobs,
    mb_per_s,
    phase_timeout,
    rates,
    sample,
    verify_sync,
)

VIA = "amqp"


class PeerRun:
    def __init__(self, peer: Peer, cfg: dict[str, Any], infra: Infra) -> None:
        self.peer = peer
        self.cfg = cfg
        self.infra = infra
        self.rng = random.Random(1)
        self.counters = ServerCounters(
            infra.s3_endpoint,
            infra.access_key,
            infra.secret_key,
            peer.bucket,
            infra.rabbitmq_metrics_url,
        )
        self.out: dict[str, Any] = {
            "title": peer.title,
            "description": peer.description(),
            "latency": {},
            "counts": {},
            "throughput": {VIA: {}},
            "rss": {},
            "exit_codes": {},
            "verification": {},
        }

    def watched(self) -> dict[str, int]:
        servers = server_pids(self.infra.amqp_port, self.infra.s3_port)
        return {**self.peer.processes(), **servers, "client": os.getpid()}

    def run(self) -> dict[str, Any]:
        cfg, name = self.cfg, self.peer.name
        try:
            for n in sorted({*cfg["sheep"], cfg["latency_sheep"]}):
                label = f"{name}-{n}workers"
                try:
                    rss = self.start(n, label)
                    if n == cfg["latency_sheep"]:
                        self.counting()
                        self.latency(n)
                        rss["peak_after"]["latency"] = snapshot(self.peer.processes())
                    if n in cfg["sheep"]:
                        self.throughput(n)
                        rss["peak_after"]["throughput"] = snapshot(self.peer.processes())
                finally:
                    self.out["exit_codes"][label] = self.peer.stop()
            self.out["large"] = self.large()
            self.out["client_hwm_mib"] = (memory_of(os.getpid()) or {}).get("hwm_mib")
        finally:
            self.counters.close()
        return self.out

    def start(self, workers: int, label: str) -> dict[str, Any]:
        """The worker, warmed up; its idle memory read into ``rss[label]``."""
        self.peer.start(workers, label)
        rss = self.out["rss"][label] = {"idle": snapshot(self.peer.processes()), "peak_after": {}}
        return rss

    def counting(self) -> None:
        jobs = make_jobs(f"cnt-{self.peer.name}", self.cfg["count_jobs"], self.rng)
        log(f"{self.peer.name}: counting, {len(jobs)} sequential jobs")
        window = CountWindow(self.counters, self.watched())
        window.open()
        result = self.peer.latency(encoded(jobs), timeout=30)
        result.pop("latencies_ms")
        result.update(window.close(result["done"]))
        self.out["counts"][VIA] = result

    def latency(self, n: int) -> None:
        jobs = make_jobs(f"lat-{self.peer.name}", self.cfg["latency_jobs"], self.rng)
        log(f"{self.peer.name}: latency, {len(jobs)} sequential jobs on {n} worker(s)")
        self.out["latency"][VIA] = {"workers": n, **self.peer.latency(encoded(jobs), timeout=30)}
        self.verify("latency", jobs)

    def throughput(self, n: int) -> None:
        jobs = make_jobs(f"tp-{self.peer.name}{n}", self.cfg["jobs"], self.rng)
        log(f"{self.peer.name}: throughput, {len(jobs)} jobs on {n} worker(s)")
        watched = self.watched()
        cpu = cpu_seconds(watched)
        tally = self.peer.throughput(
            encoded(jobs), timeout=phase_timeout(len(jobs), self.cfg["quick"])
        )
        tally["cpu_ms_per_job_by_process"] = cpu_per_job(cpu, cpu_seconds(watched), tally["done"])
        self.out["throughput"][VIA][str(n)] = rates(tally, len(jobs))
        self.verify(f"throughput-{n}", jobs)
        log(f"  {tally['jobs_per_s']:.1f} jobs/s, {failures(tally)} failed")

    def verify(self, phase: str, jobs: list[Any]) -> None:
        checked = sample(jobs, self.cfg["verify"], self.rng)
        self.out["verification"][phase] = verify_sync(checked, self.peer.output_json)

    def large(self) -> dict[str, Any]:
        n = self.cfg["large_sheep"]
        label = f"{self.peer.name}-large-{n}workers"
        large: dict[str, Any] = {"workers": n, "sizes": {}}
        try:
            rss = self.start(n, label)
            for name, (size, count) in self.cfg["large"].items():
                path, digest = self.cfg["input_files"][name]
                job_ids = [f"big{name.lower()}-{i:03d}" for i in range(count)]
                log(f"{self.peer.name}: {count} x {name} inputs, {n} at a time")
                tally = self.peer.large(job_ids, path, n, large_timeout(size, count))
                rss["peak_after"][name] = snapshot(self.peer.processes())
                tally.update(mb_per_s(tally, size, count))
                digests = [self.peer.output_digest(job_id) for job_id in job_ids]
                tally["verification"] = check_digests(digests, size, digest)
                large["sizes"][name] = tally
                log(f"  {tally['mb_per_s']:.1f} MB/s, {failures(tally)} failed")
        finally:
            self.out["exit_codes"][label] = self.peer.stop()
        return large


def run_peer(name: str, cfg: dict[str, Any], infra: Infra, run_dir: Path) -> dict[str, Any]:
    """Prepare the peer's bucket and queues, run its phases, remove them again."""
    from bench.peers import peer_class

    peer = peer_class(name)(infra, run_dir, cfg["inflight"])
    peer.prepare()
    try:
        out = PeerRun(peer, cfg, infra).run()
        out["queue_prefixes"] = peer.queue_prefixes()
        return out
    finally:
        removed = peer.teardown()
        log(f"{name}: removed its queues, {removed} objects and its bucket")
