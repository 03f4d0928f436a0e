"""What a job costs the servers, counted by the servers themselves.

* MinIO: S3 requests by API (``minio_api_requests_total``, every bucket) and of the system's
  own bucket (``minio_bucket_api_total``), and bucket notifications sent
  (``minio_notification_events_sent_total``), from its Prometheus endpoints. Version 3 of
  those (``/minio/metrics/v3/...``) is read, not ``/minio/v2/metrics/cluster``: v2 serves
  values cached for up to 10 s, v3 counts as it goes. Both want a bearer JWT signed HS512
  with the root secret key (``sub`` the access key, ``iss`` ``prometheus``).
* RabbitMQ: messages published (``rabbitmq_global_messages_received_total``), those
  published in confirm mode, and deliveries to consumers, from the Prometheus plugin's
  global counters (``scripts/services.sh`` enables it). The management API's
  ``/api/overview`` ``message_stats.publish`` counts the same publishes but lags by the
  statistics interval (5 s) and is rebuilt from channel samples; the global counters are
  exact when read.

:class:`CountWindow` reads them, with the CPU time of every process, around a phase, and
divides the differences by the jobs done.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from jwt.warnings import InsecureKeyLengthWarning

from bench.processes import cpu_seconds
from bench.stats import cpu_per_job

QUIET_S = 1.0
"""Counters unchanged this long count as settled: nothing of the phase is still in flight."""
SETTLE_LIMIT_S = 15.0
"""Settling gives up after this long (a periodic background task keeps counters moving)."""
POLL_S = 0.25


@dataclass
class ServerCounters:
    """Reads the counters of one MinIO (its S3 endpoint) and one RabbitMQ."""

    s3_endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    rabbitmq_metrics_url: str = "http://127.0.0.1:15692/metrics"
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10), repr=False)

    _token_cache: tuple[float, str] = field(default=(0.0, ""), repr=False)

    def _token(self) -> str:
        """A token valid for an hour, made anew once it is half spent. PyJWT warns that a key
        as short as MinIO's default secret is weak for HS512; it is MinIO's key, not ours."""
        made, token = self._token_cache
        if time.time() - made > 1800:
            claims = {"exp": int(time.time()) + 3600, "sub": self.access_key, "iss": "prometheus"}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InsecureKeyLengthWarning)
                token = jwt.encode(claims, self.secret_key, algorithm="HS512")
            self._token_cache = (time.time(), token)
        return token

    def _minio(self, path: str) -> list[tuple[str, dict[str, str], float]]:
        response = self._http.get(
            f"http://{self.s3_endpoint}/minio/metrics/v3{path}",
            headers={"Authorization": f"Bearer {self._token()}"},
        )
        response.raise_for_status()
        return parse_prometheus(response.text)

    def read(self) -> dict[str, float]:
        """Flat name -> value: ``minio_requests``, ``minio_requests:<API>``,
        ``bucket_requests``, ``bucket_requests:<API>``, ``notifications``, ``publishes``,
        ``confirmed_publishes``, ``deliveries``."""
        out: dict[str, float] = {}
        _sum_into(out, "minio_requests", self._minio("/api/requests"), "minio_api_requests_total")
        _sum_into(
            out,
            "bucket_requests",
            self._minio(f"/bucket/api/{self.bucket}"),
            "minio_bucket_api_total",
            lambda labels: labels.get("bucket") == self.bucket,
        )
        notified = self._minio("/notification")
        out["notifications"] = sum(
            v for n, _, v in notified if n == "minio_notification_events_sent_total"
        )
        response = self._http.get(self.rabbitmq_metrics_url)
        response.raise_for_status()
        for name, labels, value in parse_prometheus(response.text):
            key = RABBITMQ_COUNTERS.get(name)
            if key is not None and labels.get("protocol", "amqp091") == "amqp091":
                out[key] = out.get(key, 0.0) + value
        return out

    def settled(self, quiet: float = QUIET_S, limit: float = SETTLE_LIMIT_S) -> dict[str, float]:
        """The counters once they have not moved for ``quiet`` seconds (or after ``limit``):
        the notifications and status writes a phase leaves behind are then counted in it."""
        deadline = time.monotonic() + limit
        last = self.read()
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(POLL_S)  # between phases only, never on a measured path
            now = self.read()
            if now != last:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= quiet:
                break
        return last

    def close(self) -> None:
        self._http.close()


RABBITMQ_COUNTERS = {
    "rabbitmq_global_messages_received_total": "publishes",
    "rabbitmq_global_messages_received_confirm_total": "confirmed_publishes",
    "rabbitmq_global_messages_delivered_total": "deliveries",
}


def _sum_into(
    out: dict[str, float],
    key: str,
    samples: list[tuple[str, dict[str, str], float]],
    metric: str,
    keep: Callable[[dict[str, str]], bool] = lambda _: True,
) -> None:
    """Total of ``metric`` under ``key`` and, by its ``name`` label (the S3 API), under
    ``key:<name>``."""
    out.setdefault(key, 0.0)
    for name, labels, value in samples:
        if name != metric or not keep(labels):
            continue
        out[key] += value
        api = f"{key}:{labels.get('name', '?')}"
        out[api] = out.get(api, 0.0) + value


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(metric, labels, value) of each sample in Prometheus's text format (label values
    without escaped quotes or commas, as MinIO and RabbitMQ write them)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = {}
        for pair in rest.rstrip("}").split(","):
            key, _, quoted = pair.partition("=")
            if key:
                labels[key] = quoted.strip('"')
        try:
            samples.append((name, labels, float(value)))
        except ValueError:
            continue
    return samples


class CountWindow:
    """Server counters and the CPU time of ``processes`` around a phase.

    The counters are read once settled, before and after, so that the notifications and
    writes a phase leaves behind count in it. CPU time is read right before the first job and
    right after the last, so that neither the settling nor the reads of the counters (which
    cost MinIO and RabbitMQ some CPU) are charged to the jobs."""

    def __init__(self, counters: ServerCounters, processes: dict[str, int]) -> None:
        self.counters = counters
        self.processes = processes
        self.before: dict[str, float] = {}
        self.cpu_before: dict[str, float] = {}
        self.started = 0.0

    def open(self) -> None:
        self.before = self.counters.settled()
        self.cpu_before = cpu_seconds(self.processes)
        self.started = time.monotonic()

    def close(self, jobs_done: int) -> dict[str, Any]:
        """Per job done: each counter's difference, and CPU milliseconds by process."""
        seconds = time.monotonic() - self.started
        cpu_after = cpu_seconds(self.processes)
        after = self.counters.settled()
        if not jobs_done:
            return {"jobs_done": 0, "seconds": round(seconds, 2)}
        per_job = {
            key: round((value - self.before.get(key, 0.0)) / jobs_done, 3)
            for key, value in sorted(after.items())
            if value != self.before.get(key, 0.0) or ":" not in key
        }
        return {
            "jobs_done": jobs_done,
            "seconds": round(seconds, 2),
            "per_job": per_job,
            "cpu_ms_per_job_by_process": cpu_per_job(self.cpu_before, cpu_after, jobs_done),
        }
