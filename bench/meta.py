"""What a run records about itself: the host, the versions, the settings of every system."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
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
    "dramatiq",
    "pika",
    "matplotlib",
    "psutil",
    "pyjwt",
]


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
    """Every setting of the run; each peer's own are recorded with its results."""
    return {
        "mode": cfg["mode"],
        "systems": cfg["systems"],
        "count_jobs": cfg["count_jobs"],
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
        "duty_jobs": cfg["duty_jobs"],
        "verified_sample_per_phase": cfg["verify"],
        "shepherd": {
            "namespace": infra.namespace,
            "bucket": infra.bucket,
            "processes": "gateway, notifier and one process per bare sheep (shepherd CLI)",
            "model": "echo/1; busy/1 (bench/models) for the duty cycle",
            "max_upload_bytes": cfg["max_upload_bytes"],
            "sheep_stop_grace": 5,
            "log_level": "INFO",
            "submission": "POST /start-job (http); a confirmed publish to <ns>.submit (amqp)",
            "completion": "job.done/failed/cancelled/rejected events on <ns>.events (AMQP)",
        },
        "counters": {
            "minio": "/minio/metrics/v3: minio_api_requests_total (all buckets), "
            "minio_bucket_api_total (the system's bucket), minio_notification_events_sent_total",
            "rabbitmq": "rabbitmq_prometheus global counters: messages_received_total "
            "(publishes), messages_received_confirm_total, messages_delivered_total",
            "cpu": "user + system time of every process of the system, RabbitMQ's beam.smp and "
            "MinIO (those listening on the benchmark's ports) and the client",
        },
    }
