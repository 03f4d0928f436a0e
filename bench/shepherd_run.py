"""Shepherd's phases, each on a freshly started stack of separate processes.

* counting: ``count_jobs`` echo jobs with a ~1 KB inline payload, one at a time, on one sheep,
  submitted over HTTP and then over AMQP; what each costs the servers by their own counters
  and every process's CPU (:class:`bench.counters.CountWindow`);
* latency: ``latency_jobs`` such jobs one at a time, over HTTP and over AMQP: from the start
  of the submission to the arrival of the job's ``job.done``; and where the time goes;
* throughput: ``jobs`` such jobs per sheep count with ``inflight`` submissions in flight,
  over HTTP at every count and over AMQP at the largest; jobs/s = jobs done / (last
  ``job.done`` - first submit), with the CPU every process spent per job;
* large inputs: 1 MB and 100 MB files streamed through the gateway after a declaration
  naming them, ``large_sheep`` at a time; peak RSS after each size;
* duty cycle: ``duty_jobs`` jobs of a model that works 50 ms (``bench/models/busy/1``)
  queued at once on one sheep before it starts; busy time / wall time by the model's own
  timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bench.counters import CountWindow, ServerCounters
from bench.listing import listing
from bench.processes import cpu_seconds, memory_of, server_pids, snapshot
from bench.profiles import Profiles
from bench.report import log
from bench.shepherd_client import AmqpSubmitter, Events, ShepherdClient, Submitter
from bench.stack import BENCH_MODELS, Infra, ShepherdStack, notifications_drained
from bench.stats import cpu_per_job, duty_cycle
from bench.workload import (
    check_digests,
    compare_outputs,
    failures,
    large_timeout,
    make_jobs,
    mb_per_s,
    phase_timeout,
    rates,
    sample,
)

BUSY = {"name": "busy", "version": "1"}
BUSY_SECONDS = 0.05


class ShepherdRun:
    """The state the phases share: config, servers, the event listener and AMQP submitter."""

    def __init__(self, cfg: dict[str, Any], infra: Infra, run_dir: Path) -> None:
        self.cfg = cfg
        self.infra = infra
        self.run_dir = run_dir
        self.rng = random.Random(1)
        self.events = Events()
        self.amqp = AmqpSubmitter()
        self.profiles = Profiles(run_dir / "profiles", enabled=cfg["profile"])
        self.counters = ServerCounters(
            infra.s3_endpoint,
            infra.access_key,
            infra.secret_key,
            infra.bucket,
            infra.rabbitmq_metrics_url,
        )
        self.out: dict[str, Any] = {
            "latency": {},
            "counts": {},
            "throughput": {"http": {}, "amqp": {}},
            "rss": {},
            "exit_codes": {},
            "verification": {},
        }

    def profiled(
        self, name: str, stack: ShepherdStack
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """The phase sampled, when profiling: every Shepherd process and this client."""
        return self.profiles.phase(name, {**stack.processes(), "client": os.getpid()})

    def watched(self, stack: ShepherdStack) -> dict[str, int]:
        """Every process whose CPU a job costs: the stack's, the servers' and this one."""
        servers = server_pids(self.infra.amqp_port, self.infra.s3_port)
        return {**stack.processes(), **servers, "client": os.getpid()}

    async def run(self) -> dict[str, Any]:
        await self.events.start(self.infra.amqp_url, self.infra.names.events_exchange)
        await self.amqp.start(self.infra.amqp_url, self.infra.names.submit_exchange)
        cfg = self.cfg
        try:
            top = max(cfg["sheep"])
            for n in sorted({*cfg["sheep"], cfg["latency_sheep"]}):
                async with self.measured_stack(f"shepherd-{n}sheep", n) as (stack, client, rss):
                    vias: list[Submitter] = [client.over_http, self.amqp]
                    if n == cfg["latency_sheep"]:
                        for via in vias:
                            await self.counting(stack, client, via)
                        for via in vias:
                            await self.latency(client, via, n)
                        rss["peak_after"]["latency"] = snapshot(stack.processes())
                    if n in cfg["sheep"]:
                        for via in vias if n == top else vias[:1]:
                            await self.throughput(stack, client, via, n)
                        rss["peak_after"]["throughput"] = snapshot(stack.processes())
            log("shepherd: waiting for MinIO's notifications of the writes so far")
            self.out["notification_backlog_s"] = await notifications_drained(self.infra)
            log(f"  drained after {self.out['notification_backlog_s']:.1f} s")
            self.out["large"] = await self.large()
            self.out["duty"] = await self.duty(pool=False)
            self.out["duty_pool"] = await self.duty(pool=True)
            self.out["listing"] = await listing(self.infra, self.run_dir)
            self.out["client_hwm_mib"] = (memory_of(os.getpid()) or {}).get("hwm_mib")
            if self.profiles.enabled:
                self.out["profiles"] = self.profiles.summary
        finally:
            await self.amqp.close()
            await self.events.close()
            self.counters.close()
        return self.out

    @asynccontextmanager
    async def measured_stack(
        self, label: str, sheep: int
    ) -> AsyncIterator[tuple[ShepherdStack, ShepherdClient, dict[str, Any]]]:
        """A freshly started stack of ``sheep`` sheep, warmed up, with its idle memory read
        into ``rss[label]`` (the phases add their peaks there); stopped on the way out."""
        stack = ShepherdStack(self.infra, self.run_dir, label, sheep, self.cfg["max_upload_bytes"])
        client = None
        try:
            await stack.start()
            client = ShepherdClient(stack.base_url, self.events, self.cfg["inflight"])
            await warm_up(client, stack.sheep_ids, label)
            rss = self.out["rss"][label] = {"idle": snapshot(stack.processes()), "peak_after": {}}
            yield stack, client, rss
            rss["crashed"] = stack.crashed()
        finally:
            if client is not None:
                await client.close()
            self.out["exit_codes"][label] = await stack.stop()

    async def counting(self, stack: ShepherdStack, client: ShepherdClient, via: Submitter) -> None:
        jobs = make_jobs(f"cnt-{via.via}", self.cfg["count_jobs"], self.rng)
        log(f"shepherd: counting, {len(jobs)} sequential jobs over {via.via.upper()}")
        window = CountWindow(self.counters, self.watched(stack))
        await asyncio.to_thread(window.open)
        async with self.profiled(f"one-at-a-time-{via.via}", stack):
            result = await client.latency(client.bodies(jobs), via, timeout=30)
        result.pop("latencies_ms")
        result.update(await asyncio.to_thread(window.close, result["done"]))
        self.out["counts"][via.via] = result
        per_job = result.get("per_job", {})
        log(
            f"  per job: {per_job.get('minio_requests')} MinIO requests, "
            f"{per_job.get('notifications')} notifications, {per_job.get('publishes')} publishes"
        )

    async def latency(self, client: ShepherdClient, via: Submitter, n: int) -> None:
        jobs = make_jobs(f"lat-{via.via}", self.cfg["latency_jobs"], self.rng)
        log(f"shepherd: latency, {len(jobs)} sequential jobs over {via.via.upper()} on {n} sheep")
        result = await client.latency(client.bodies(jobs), via, timeout=30)
        checked = sample(jobs, self.cfg["verify"], self.rng)
        outputs = [await client.result_json(job_id) for job_id, _ in checked]
        self.out["verification"][f"latency-{via.via}"] = compare_outputs(checked, outputs)
        result["stages_median_ms"] = await client.stages([job_id for job_id, _ in checked])
        self.out["latency"][via.via] = {"workers": n, **result}

    async def throughput(
        self, stack: ShepherdStack, client: ShepherdClient, via: Submitter, n: int
    ) -> None:
        jobs = make_jobs(f"tp-{via.via}{n}", self.cfg["jobs"], self.rng)
        log(f"shepherd: throughput, {len(jobs)} jobs over {via.via.upper()} on {n} sheep")
        watched = self.watched(stack)
        cpu = cpu_seconds(watched)
        async with self.profiled(f"throughput-{via.via}{n}", stack):
            tally = await client.throughput(
                client.bodies(jobs), via, timeout=phase_timeout(len(jobs), self.cfg["quick"])
            )
        tally["cpu_ms_per_job_by_process"] = cpu_per_job(cpu, cpu_seconds(watched), tally["done"])
        self.out["throughput"][via.via][str(n)] = rates(tally, len(jobs))
        checked = sample(jobs, self.cfg["verify"], self.rng)
        outputs = [await client.result_json(job_id) for job_id, _ in checked]
        self.out["verification"][f"throughput-{via.via}{n}"] = compare_outputs(checked, outputs)
        log(f"  {tally['jobs_per_s']:.1f} jobs/s, {failures(tally)} failed")

    async def large(self) -> dict[str, Any]:
        n = self.cfg["large_sheep"]
        large: dict[str, Any] = {"workers": n, "sizes": {}}
        async with self.measured_stack(f"shepherd-large-{n}sheep", n) as (stack, client, rss):
            for name, (size, count) in self.cfg["large"].items():
                path, digest = self.cfg["input_files"][name]
                job_ids = [f"big{name.lower()}-{i:03d}" for i in range(count)]
                log(f"shepherd: {count} x {name} inputs, {n} at a time")
                async with self.profiled(f"large-{name}", stack):
                    timeout = large_timeout(size, count)
                    tally = await client.large(job_ids, path, size, n, timeout)
                rss["peak_after"][name] = snapshot(stack.processes())
                tally.update(mb_per_s(tally, size, count))
                tally["stages_median_ms"] = await client.stages(job_ids)
                digests = [await client.result_digest(job_id) for job_id in job_ids]
                tally["verification"] = check_digests(digests, size, digest)
                large["sizes"][name] = tally
                log(f"  {tally['mb_per_s']:.1f} MB/s, {failures(tally)} failed")
        return large

    async def duty(self, *, pool: bool) -> dict[str, Any]:
        """The backlog is queued (every ``job.queued`` seen) before the sheep starts, so that
        what is measured is how the sheep feeds its runner, not how fast jobs arrive: in the
        sheep's own queue (the target's "backlog on one sheep"), or in the pool."""
        count = self.cfg["duty_jobs"]
        where = "pool" if pool else "own queue"
        label = f"shepherd-duty-1sheep-{'pool' if pool else 'own'}"
        log(f"shepherd: duty cycle, {count} jobs of {BUSY_SECONDS * 1000:.0f} ms, {where}")
        target = {} if pool else {"sheep_id": "s1"}
        stack = ShepherdStack(
            self.infra, self.run_dir, label, 1, self.cfg["max_upload_bytes"], BENCH_MODELS
        )
        queued = Events(keys=("job.queued",))
        client = None
        try:
            await queued.start(self.infra.amqp_url, self.infra.names.events_exchange)
            await stack.start(with_sheep=False)
            client = ShepherdClient(stack.base_url, self.events, self.cfg["inflight"])
            job_ids = [f"duty-{'pool' if pool else 'own'}-{i:04d}" for i in range(count)]
            bodies = [
                (
                    job_id,
                    client.request_body(
                        job_id, {"seconds": BUSY_SECONDS, "value": i}, BUSY, **target
                    ),
                )
                for i, job_id in enumerate(job_ids)
            ]
            in_queue = [queued.expect(job_id) for job_id, _ in bodies]
            timeout = phase_timeout(count, self.cfg["quick"]) + count * BUSY_SECONDS
            run = asyncio.create_task(client.throughput(bodies, client.over_http, timeout))
            await asyncio.wait_for(asyncio.gather(*in_queue), timeout)
            stack.start_sheep()
            tally = await run
            outputs = [await client.result_json(job_id) for job_id, _ in bodies]
        finally:
            await queued.close()
            if client is not None:
                await client.close()
            self.out["exit_codes"][label] = await stack.stop()
        spans = [
            (o["started"], o["ended"]) for o in outputs if isinstance(o, dict) and "started" in o
        ]
        tally["verification"] = {"checked": count, "mismatched": max(tally["done"] - len(spans), 0)}
        tally["model"] = duty_cycle(spans)
        log(f"  duty cycle {tally['model']['duty_cycle']}, {failures(tally)} failed")
        return tally


async def warm_up(client: ShepherdClient, sheep_ids: list[str], label: str) -> None:
    """One job per sheep (so every runner has loaded echo) and one per sheep through the
    pool; unmeasured. Raises if any does not finish."""
    jobs = [
        (f"warm-{label}-{s}", client.request_body(f"warm-{label}-{s}", {"warm": s}, sheep_id=s))
        for s in sheep_ids
    ] + [
        (f"warm-{label}-pool{i}", client.request_body(f"warm-{label}-pool{i}", {"warm": i}))
        for i in range(len(sheep_ids))
    ]
    tally = await client.throughput(jobs, client.over_http, timeout=90)
    if tally["done"] != len(jobs):
        raise RuntimeError(f"warm-up of {label}: {tally}")


async def run_shepherd(cfg: dict[str, Any], infra: Infra, run_dir: Path) -> dict[str, Any]:
    return await ShepherdRun(cfg, infra, run_dir).run()
