"""The GPU check: a docker sheep with ``devices: [/dev/nvidia0]`` runs its model with that GPU.

It needs an NVIDIA GPU and the nvidia container runtime, so it runs only when asked:

    SHEPHERD_TEST_GPU=1 .venv/bin/python -m pytest tests/gpu -ra

(``make test`` reports it as skipped, with this reason.) What the sheep asks the engine for is
tested everywhere, without a GPU, in ``tests/unit/test_container_spec.py``.
"""

from __future__ import annotations

import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.config import DockerSheepConfig
from tests.support.stack import free_port, running_stack

pytestmark = pytest.mark.skipif(
    not os.environ.get("SHEPHERD_TEST_GPU"),
    reason="the GPU check: set SHEPHERD_TEST_GPU=1 on a machine with an NVIDIA GPU and the "
    "nvidia container runtime",
)

#: What the job allocates on its GPU, and so the least its peak GPU memory can be.
HOLD_BYTES = 256 * 1024 * 1024


async def test_a_docker_sheep_runs_its_model_on_the_configured_gpu_and_reports_it(
    config, broker, registry, model_image, job_id
):
    model_image("gpuinfo")
    config.registry.url = registry
    config.sheep = {"g0": DockerSheepConfig(port=free_port(), devices=["/dev/nvidia0"])}
    async with running_stack(config) as client:
        await client.post(
            "/start-job",
            json={
                "job_id": job_id,
                "model": {"name": "gpuinfo", "version": "1"},
                "payload": {"hold_bytes": HOLD_BYTES, "seconds": 1},
            },
        )
        ended = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 120})
        assert ended.json()["state"] == "done", ended.json()
        seen = (await client.get(f"/jobs/{job_id}/result")).json()
        metrics = {
            (sample.name, sample.labels.get("device")): sample.value
            for family in text_string_to_metric_families((await client.get("/metrics")).text)
            for sample in family.samples
            if sample.name.startswith("shepherd_gpu_")
        }
    assert seen["nvidia_visible_devices"] == "0"
    assert "/dev/nvidia0" in seen["devices"]
    # Its GPU's series, and the GPU seconds of the job.
    usage = ended.json()["usage"]
    assert usage["gpu_seconds"] == pytest.approx(usage["wall_seconds"])
    assert usage["max_gpu_memory_bytes"] >= HOLD_BYTES  # what it held, and its CUDA context
    device = "/dev/nvidia0"
    assert 0 <= metrics[("shepherd_gpu_utilization_ratio", device)] <= 1
    assert metrics[("shepherd_gpu_memory_total_bytes", device)] > 0
    assert metrics[("shepherd_gpu_memory_used_bytes", device)] >= 0
