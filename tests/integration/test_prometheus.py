"""The deploy files against a real Prometheus: ``deploy/prometheus/prometheus.yml`` scraping a
stack that ran a done, a failed and a cancelled job, a retried webhook and a refused
submission; every query of every Grafana panel and every alert rule run through Prometheus's
HTTP API.

The copy of the deploy folder the test runs differs in what an operator edits: the targets
(this stack's ports), the two token files, and a one-second scrape and evaluation interval
(so that rates have samples within seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import subprocess
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import jwt
import pytest
import yaml
from jwt.warnings import InsecureKeyLengthWarning

from schemas.broker_names import Names
from schemas.config import Config
from schemas.notifier_config import WebhookSubscription
from tests.support.metered import MeteredStack, metered_stack
from tests.support.polling import eventually
from tests.support.receiver import Receiver, Reply
from tests.support.stack import free_port
from tests.support.webhooks import secret

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "shepherd.json"
RABBITMQ_METRICS = "127.0.0.1:15692"
#: The last series the first round of jobs makes (a cancelled job's end).
ENDED = 'shepherd_jobs_ended_total{state="cancelled"}'
#: Series that exist only where a sheep has GPUs: absent here, as they should be.
GPU_ONLY = re.compile(r"shepherd_gpu_")
#: The metric names a query reads.
METRIC = re.compile(r"\b((?:shepherd|rabbitmq|minio)_[a-z0-9_]+|up)\b(?!\s*\()")

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus is installed by make services"
)


def panel_queries() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def alert_rules() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def minio_token(config: Config) -> str:
    """MinIO's metrics token: a JWT signed with the root secret (MinIO's key length)."""
    claims = {"exp": int(time.time()) + 3600, "sub": config.storage.access_key.get_secret_value()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(
            {**claims, "iss": "prometheus"},
            config.storage.secret_key.get_secret_value(),
            algorithm="HS512",
        )


def deploy_copy(folder: Path, config: Config, stack: MeteredStack) -> Path:
    """The deploy folder, pointed at ``stack`` and this machine's servers."""
    shutil.copytree(DEPLOY, folder)
    host = lambda url: url.removeprefix("http://")  # noqa: E731
    targets = {
        "gateway": [host(stack.gateway)],
        "services": [host(stack.notifier), host(stack.sheep)],
        "rabbitmq": [RABBITMQ_METRICS],
        "minio": [config.storage.endpoint],
    }
    for name, addresses in targets.items():
        (folder / "targets" / f"{name}.json").write_text(json.dumps([{"targets": addresses}]))
    (folder / "gateway.token").write_text("")
    (folder / "minio.token").write_text(minio_token(config))
    settings = yaml.safe_load((folder / "prometheus.yml").read_text())
    settings["global"].update(scrape_interval="1s", evaluation_interval="1s")
    (folder / "prometheus.yml").write_text(yaml.safe_dump(settings))
    return folder


async def prometheus(folder: Path) -> AsyncIterator[str]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        "prometheus",
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=5) as client:

            async def ready() -> bool:
                try:
                    return (await client.get(f"{url}/-/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, within=30)
        yield url
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def query(client: httpx.AsyncClient, url: str, expr: str) -> list[dict[str, Any]]:
    answer = await client.get(f"{url}/api/v1/query", params={"query": expr})
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", (expr, body)
    assert body["data"]["resultType"] == "vector", expr
    return body["data"]["result"]


def test_promtool_accepts_the_config_and_the_rules(tmp_path, config):
    stack = MeteredStack("http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3")
    folder = deploy_copy(tmp_path / "prometheus", config, stack)
    for check in (["config", "prometheus.yml"], ["rules", "alerts.yml"]):
        done = subprocess.run(
            ["promtool", "check", *check], cwd=folder, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


async def run_jobs(stack: MeteredStack, config: Config, job_id: str) -> None:
    """Done, failed, cancelled, and a submission that is not JSON."""
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as client:
        jobs = {
            "done": {"name": "echo", "version": "1"},
            "failed": {"name": "fail", "version": "1"},
            "cancelled": {"name": "sleep", "version": "1"},
        }
        for state, model in jobs.items():
            payload = {"seconds": 30, "value": 1} if state == "cancelled" else 1
            answer = await client.post(
                "/start-job",
                json={"job_id": f"{job_id}-{state}", "model": model, "payload": payload},
            )
            assert answer.status_code == 202
        cancelled = f"/jobs/{job_id}-cancelled"

        async def running() -> bool:
            return (await client.get(f"{cancelled}/status")).json()["state"] == "running"

        await eventually(running, within=30)
        assert (await client.post(f"{cancelled}/cancel")).status_code in (200, 202)
        for state in jobs:
            ready = await client.get(f"/jobs/{job_id}-{state}/wait_ready", params={"timeout": 30})
            assert ready.json()["state"] == state
    connection = await aio_pika.connect(config.broker.url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(Names.for_config(config).submit_exchange)
        await exchange.publish(aio_pika.Message(b"not json"), routing_key="")


async def test_every_panel_and_alert_query_returns_data_from_a_real_prometheus(
    config, tmp_path, job_id
):
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(503), Reply(200))
        hook = WebhookSubscription(name="ops", url=receiver.url("/hook"), secret=secret())
        async with metered_stack(
            config,
            tmp_path,
            webhooks=[hook],
            allow_private_targets=True,
            webhook_retry_schedule=[0.2],
        ) as stack:
            folder = deploy_copy(tmp_path / "prometheus", config, stack)
            async for url in prometheus(folder):
                async with httpx.AsyncClient(timeout=10) as client:
                    await eventually(partial(all_up, client, url), within=30)
                    # A series is born with its first value, so rates need a second round
                    # of jobs once Prometheus has scraped the first.
                    await run_jobs(stack, config, f"{job_id}-1")
                    await eventually(partial(scraped, client, url, ENDED), within=30)
                    await run_jobs(stack, config, f"{job_id}-2")
                    await check_queries(client, url)


async def all_up(client: httpx.AsyncClient, url: str) -> bool:
    """Every target scraped, and up."""
    targets = (await client.get(f"{url}/api/v1/targets")).json()["data"]["activeTargets"]
    return len(targets) == 6 and all(t["health"] == "up" for t in targets)


async def scraped(client: httpx.AsyncClient, url: str, expr: str) -> bool:
    return bool(await query(client, url, expr))


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


async def check_queries(client: httpx.AsyncClient, url: str) -> None:
    async def every_panel_has_data() -> bool:
        for _, expr in panel_queries():
            if not GPU_ONLY.search(expr) and not finite(await query(client, url, expr)):
                return False
        return True

    with contextlib.suppress(TimeoutError):  # the assertions below name what lacks data
        await eventually(every_panel_has_data, within=30)
    for title, expr in panel_queries():
        result = await query(client, url, expr)
        if GPU_ONLY.search(expr):
            assert result == [], (title, expr)  # no GPU here: absent, not an error
            continue
        assert finite(result), (title, expr, result)

    for alert, expr in alert_rules():
        await query(client, url, expr)  # a vector, firing or not
        for name in set(METRIC.findall(expr)):
            series = await query(client, url, f'count({{__name__="{name}"}})')
            assert series, f"alert {alert} reads {name}, which no target exports"

    async def rules_evaluated() -> bool:
        groups = (await client.get(f"{url}/api/v1/rules")).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return len(rules) == len(list(alert_rules())) and all(
            rule["health"] == "ok" and rule["lastEvaluation"] > "0001" for rule in rules
        )

    await eventually(rules_evaluated, within=30)
