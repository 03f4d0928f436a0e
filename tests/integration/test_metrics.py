"""Prometheus metrics from every process: the gateway, a notifier and a sheep each run alone,
each serving its own series, as an operator's Prometheus would scrape them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from services.common.outages import STORAGE_OUTAGES
from services.common.storage import Storage
from tests.conftest import serving
from tests.support.metered import MeteredStack, metered_stack
from tests.support.stack import bare_sheep, free_port

ECHO = {"name": "echo", "version": "1"}
FAIL = {"name": "fail", "version": "1"}


@pytest.fixture
async def stack(config, tmp_path) -> AsyncIterator[MeteredStack]:
    async with metered_stack(config, tmp_path) as stack:
        yield stack


async def scrape(client: httpx.AsyncClient, url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample at ``url``, keyed by name and labels."""
    answer = await client.get(f"{url}/metrics")
    answer.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_each_process_serves_the_series_of_what_it_did(stack, job_id):
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as client:
        for suffix, model in (("ok", ECHO), ("bad", FAIL)):
            submitted = await client.post(
                "/start-job", json={"job_id": f"{job_id}-{suffix}", "model": model, "payload": 1}
            )
            assert submitted.status_code == 202
            ready = await client.get(f"/jobs/{job_id}-{suffix}/wait_ready", params={"timeout": 30})
            assert ready.json()["state"] == ("done" if model is ECHO else "failed")
        unknown = await client.get("/jobs/no-such-job-here/status")

        gateway = await scrape(client, stack.gateway)
        assert value(gateway, "shepherd_jobs_submitted_total", way="http") == 2
        assert value(gateway, "shepherd_jobs_queued_total", trigger="declaration") == 2
        start = {"route": "/start-job", "method": "POST"}
        assert value(gateway, "shepherd_http_requests_total", **start, status="202") == 2
        assert value(gateway, "shepherd_http_request_duration_seconds_count", **start) == 2
        not_found = {"route": "/jobs/{job_id}/status", "method": "GET", "status": "404"}
        assert unknown.status_code == 404
        assert value(gateway, "shepherd_http_requests_total", **not_found) == 1

        notifier = await scrape(client, stack.notifier)
        for state, model in (("done", ECHO), ("failed", FAIL)):
            labels = {"model": model["name"], "version": "1"}
            ended = value(
                notifier, "shepherd_jobs_ended_total", state=state, sheep="solo", **labels
            )
            assert ended == 1, state
            for stage in ("queue_wait", "end_to_end"):
                count = "shepherd_job_stage_seconds_count"
                assert value(notifier, count, stage=stage, **labels) == 1, (state, stage)

        sheep = await scrape(client, stack.sheep)
        echo = {"model": "echo", "version": "1"}
        for stage in ("input_fetch", "run", "output_upload"):
            assert value(sheep, "shepherd_job_stage_seconds_count", stage=stage, **echo) == 1
        assert value(sheep, "shepherd_runner_load_seconds_count", sheep="solo", **echo) == 1
        restarts = value(
            sheep, "shepherd_runner_restarts_total", sheep="solo", cause="model_switch"
        )
        assert restarts == 1  # echo's runner made way for fail's
        assert value(sheep, "shepherd_sheep_busy_seconds_total", sheep="solo") > 0
        assert value(sheep, "shepherd_sheep_busy", sheep="solo") == 0
        assert value(sheep, "shepherd_sheep_jobs_in_flight", sheep="solo") == 0
        # Each process serves only its own: no job reached the gateway's stage histogram.
        assert value(gateway, "shepherd_job_stage_seconds_count", stage="run", **echo) is None


async def test_a_sheep_with_devices_but_no_gpu_runs_without_gpu_series(
    config, names, job_id, caplog
):
    """NVML finds no driver here: the GPU series are absent, the sheep says so once, and its
    jobs run (their usage counts GPU seconds for the device it holds)."""
    config.sheep = {"g0": bare_sheep(devices=["0"])}
    async with serving(config, names) as client:
        request = {"job_id": job_id, "model": ECHO, "payload": 1}
        assert (await client.post("/start-job", json=request)).status_code == 202
        ready = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 30})
        assert ready.json()["state"] == "done"
        usage = ready.json()["usage"]
        metrics = (await client.get("/metrics")).text
    assert usage["gpu_seconds"] == pytest.approx(usage["wall_seconds"])
    assert "shepherd_gpu_utilization_ratio{" not in metrics
    assert "shepherd_gpu_memory_used_bytes{" not in metrics
    assert "sheep g0: no GPU metrics (NVML: " in caplog.text


async def test_storage_outages_are_counted_by_cause(configured, storage):
    """A store refusing the credentials answers with an S3 code; one not listening, none."""
    refused = configured.storage.model_copy(update={"secret_key": SecretStr("not-the-secret")})
    unreachable = configured.storage.model_copy(update={"endpoint": f"127.0.0.1:{free_port()}"})
    for cause, settings in (("SignatureDoesNotMatch", refused), ("unreachable", unreachable)):
        before = _outages(cause)
        with pytest.raises(STORAGE_OUTAGES):
            await Storage(settings).get_bytes("any/key")
        assert _outages(cause) == before + 1, cause
    counted = _outages("SignatureDoesNotMatch"), _outages("unreachable")
    await storage.ping()  # the real store, with its credentials: nothing counted
    assert (_outages("SignatureDoesNotMatch"), _outages("unreachable")) == counted


def _outages(cause: str) -> float:
    sample = REGISTRY.get_sample_value("shepherd_storage_outages_total", {"cause": cause})
    return sample or 0.0
