"""The Prometheus series of jobs, sheep and runners: what operators graph and alert on.

Each process counts what it sees: the gateway the jobs submitted, the notifier the jobs ended
and the stages measured between status timestamps (queue wait, end to end), each sheep the
stages it times itself (input fetch, run, output upload), its runner and its duty cycle. In
``shepherd up`` they share one registry, served on the gateway's ``/metrics``; a notifier or a
sheep run alone serves its own on ``metrics_port``.

    child(SUBMITTED, "http").inc()           # label children made once (metrics.child)
    child(QUEUED, "upload").inc()
    with stage("input_fetch", model).time():
        ...

Labels are bounded: a model name and version (the first :data:`MAX_MODELS` seen, the rest
``other``: submitters choose model names), a configured sheep id, a state, a reason, a cause.
Never a job id.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter, Gauge, Histogram

from schemas.job import ModelRef
from schemas.status import JobState, JobStatus
from services.common.metrics import child
from services.common.scraped import ScrapedGauge

#: Distinct models labelled in one process; later ones are counted as ``other``.
MAX_MODELS = 200
#: Histogram buckets in seconds, from a quick echo job to an hour-long training step.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600,
)  # fmt: skip

Way = Literal["http", "amqp"]
"""How a job came in: ``POST /start-job`` or ``<ns>.submit``."""
Trigger = Literal["declaration", "upload", "recovery"]
"""What queued a job: its declaration (no inputs to wait for), its last input's upload
(through the gateway or straight to the store), or a gateway recovering pending jobs."""
Stage = Literal["queue_wait", "input_fetch", "run", "output_upload", "end_to_end"]
"""``queue_wait``: queued to running; ``end_to_end``: accepted to its final state."""
RestartCause = Literal["model_switch", "crash", "timeout", "lost", "cancel", "stop"]
"""Why a runner was stopped: another model was needed, it died, it overran a job's timeout,
it fell silent (missed heartbeats), a job on it was cancelled, or the sheep stopped."""

SUBMITTED = Counter(
    "shepherd_jobs_submitted",
    "Jobs declared by a gateway, by the way they came in.",
    ["way"],
)
QUEUED = Counter(
    "shepherd_jobs_queued",
    "Jobs queued for a sheep, by what queued them (see Trigger).",
    ["trigger"],
)
ENDED = Counter(
    "shepherd_jobs_ended",
    "Jobs that reached a final state (done, failed, cancelled), by model and sheep.",
    ["state", "model", "version", "sheep"],
)
STAGE_SECONDS = Histogram(
    "shepherd_job_stage_seconds",
    "How long each stage of a job took, by model.",
    ["stage", "model", "version"],
    buckets=LATENCY_BUCKETS,
)
RUNNER_LOAD_SECONDS = Histogram(
    "shepherd_runner_load_seconds",
    "How long a runner took to start and load its model.",
    ["sheep", "model", "version"],
    buckets=LATENCY_BUCKETS,
)
RUNNER_RESTARTS = Counter(
    "shepherd_runner_restarts",
    "Runners stopped, by cause (see RestartCause).",
    ["sheep", "cause"],
)
JOBS_IN_FLIGHT = Gauge(
    "shepherd_sheep_jobs_in_flight",
    "Jobs a sheep holds: the one on its runner and the next, being prepared.",
    ["sheep"],
)
BUSY = Gauge(
    "shepherd_sheep_busy",
    "1 while a job is on the sheep's runner, 0 while it is idle.",
    ["sheep"],
)
BUSY_SECONDS = Counter(
    "shepherd_sheep_busy_seconds",
    "Seconds a job was on the sheep's runner; its rate is the sheep's duty cycle.",
    ["sheep"],
)

OLDEST_QUEUED = ScrapedGauge(
    "shepherd_oldest_queued_job_age_seconds",
    "Seconds the job queued longest has waited for a sheep (0 when none waits).",
)
SHEEP_SILENCE = ScrapedGauge(
    "shepherd_sheep_silence_seconds",
    "Seconds since each configured sheep was last heard (since the gateway started, for one "
    "never heard).",
    ["sheep"],
)

GPU_UTILIZATION = ScrapedGauge(
    "shepherd_gpu_utilization_ratio",
    "Share of NVML's last sample period each GPU of a sheep was busy (0 to 1).",
    ["sheep", "device"],
)
GPU_MEMORY_USED = ScrapedGauge(
    "shepherd_gpu_memory_used_bytes", "GPU memory in use on each device.", ["sheep", "device"]
)
GPU_MEMORY_TOTAL = ScrapedGauge(
    "shepherd_gpu_memory_total_bytes", "GPU memory of each device.", ["sheep", "device"]
)

_labelled: set[tuple[str, str]] = set()


def model_labels(model: ModelRef) -> tuple[str, str]:
    """The ``model`` and ``version`` label values of ``model``: ``other`` once
    :data:`MAX_MODELS` distinct models have been labelled."""
    key = (model.name, model.version)
    if key not in _labelled:
        if len(_labelled) >= MAX_MODELS:
            return ("other", "other")
        _labelled.add(key)
    return key


def stage(name: Stage, model: ModelRef) -> Histogram:
    """The histogram of one stage of ``model``'s jobs."""
    return child(STAGE_SECONDS, name, *model_labels(model))


def observe_transition(status: JobStatus, kind: str) -> None:
    """Count what a status change tells: the queue wait once a job runs, the end to end and
    the final state once it ends. The notifier calls this once per change it applies."""
    if kind == JobState.RUNNING.value and status.started_at and status.enqueued_at:
        wait = (status.started_at - status.enqueued_at).total_seconds()
        stage("queue_wait", status.model).observe(max(0.0, wait))
    if status.state.terminal:
        name, version = model_labels(status.model)
        child(ENDED, status.state.value, name, version, status.sheep_id or "none").inc()
        if status.finished_at and status.accepted_at:
            took = (status.finished_at - status.accepted_at).total_seconds()
            stage("end_to_end", status.model).observe(max(0.0, took))


@dataclass
class Timed:
    seconds: float = 0.0
    """Set once the timed block is left."""


@contextmanager
def on_runner(sheep_id: str, model: ModelRef) -> Iterator[Timed]:
    """A job on the sheep's runner: the sheep busy meanwhile, the time counted as busy and as
    the job's ``run`` stage, and given to the caller."""
    busy = child(BUSY, sheep_id)
    busy.set(1)
    timed = Timed()
    started = time.perf_counter()
    try:
        yield timed
    finally:
        timed.seconds = time.perf_counter() - started
        busy.set(0)
        child(BUSY_SECONDS, sheep_id).inc(timed.seconds)
        stage("run", model).observe(timed.seconds)
