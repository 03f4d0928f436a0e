"""The pipeline with a docker sheep: model images pulled from the local registry, the runner in
a container on the real engine. The same cases as the bare sheep: echo, fail, sleep, timeout,
cancellation, runner death; plus what only containers have: pulling, labels, replacement."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import AsyncIterator

import docker
import httpx
import pytest
from docker.models.containers import Container

from schemas.config import Config, DockerSheepConfig
from schemas.job import ModelRef
from services.sheep.containers import LABEL_NAMESPACE, LABEL_OWNER, LABEL_SHEEP
from services.sheep.images import image_name
from tests.support.polling import eventually
from tests.support.stack import free_port, running_stack

EXAMPLES = ("echo", "sleep", "fail")


def docker_sheep() -> DockerSheepConfig:
    return DockerSheepConfig(
        port=free_port(), heartbeat_interval=0.5, heartbeat_timeout=5.0, load_timeout=60.0
    )


@pytest.fixture
async def stack(
    config: Config, broker, registry: str, example_images: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    config.registry.url = registry
    config.sheep = {"d1": docker_sheep()}
    async with running_stack(config) as client:
        yield client


def containers_of(client: docker.DockerClient, config: Config) -> list[Container]:
    labels = [f"{LABEL_SHEEP}=d1", f"{LABEL_NAMESPACE}={config.broker.namespace}"]
    return client.containers.list(all=True, filters={"label": labels})


def job(job_id: str, model: str, payload: object, **extra: object) -> dict:
    return {"job_id": job_id, "model": {"name": model, "version": "1"}, "payload": payload, **extra}


async def outcome(client: httpx.AsyncClient, job_id: str, seconds: float = 60) -> dict:
    answer = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": seconds})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def running(client: httpx.AsyncClient, job_id: str) -> None:
    """Until the runner reports progress on the job (a running job may still be starting
    its container)."""

    async def started() -> bool:
        return (await client.get(f"/jobs/{job_id}/status")).json()["progress"] is not None

    await eventually(started, within=60)


async def test_echo_runs_in_a_container_of_the_image_pulled_from_the_registry(
    stack, config, docker_client, registry, job_id
):
    image = image_name(registry, ModelRef(name="echo", version="1"))
    docker_client.images.remove(image, force=True)  # so the sheep has to pull it

    await stack.post("/start-job", json=job(job_id, "echo", {"from": "a container"}))
    assert (await outcome(stack, job_id))["state"] == "done"
    assert (await stack.get(f"/jobs/{job_id}/result")).json() == {"from": "a container"}
    docker_client.images.get(image)  # pulled
    [container] = containers_of(docker_client, config)
    assert container.image.tags == [image]
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"


async def test_a_failing_model_fails_its_job_and_the_sheep_goes_on(stack, job_id):
    await stack.post("/start-job", json=job(job_id, "fail", {}))
    failed = await outcome(stack, job_id)
    assert failed["state"] == "failed"
    assert failed["error"]["traceback"]
    other = f"{job_id}-next"
    await stack.post("/start-job", json=job(other, "echo", [1]))
    assert (await outcome(stack, other))["state"] == "done"


async def test_a_job_past_its_timeout_is_failed_and_the_next_gets_a_fresh_container(
    stack, config, docker_client, job_id
):
    await stack.post("/start-job", json=job(job_id, "sleep", {"seconds": 30}, timeout=2))
    failed = await outcome(stack, job_id)
    assert (failed["state"], failed["error"]["message"]) == ("failed", "timed out after 2 s")
    other = f"{job_id}-next"
    await stack.post("/start-job", json=job(other, "sleep", {"seconds": 0, "value": 3}))
    assert (await outcome(stack, other))["state"] == "done"
    assert len(containers_of(docker_client, config)) == 1  # the old one is gone


async def test_a_running_job_is_cancelled_within_two_seconds(stack, config, docker_client, job_id):
    await stack.post("/start-job", json=job(job_id, "sleep", {"seconds": 60}))
    await running(stack, job_id)
    [container] = containers_of(docker_client, config)

    started = asyncio.get_running_loop().time()
    assert (await stack.post(f"/jobs/{job_id}/cancel")).status_code == 202

    async def stopped() -> bool:
        try:
            await asyncio.to_thread(container.reload)
        except docker.errors.NotFound:
            return True
        return container.status != "running"

    await eventually(stopped, within=3)
    assert asyncio.get_running_loop().time() - started < 2.5
    assert (await outcome(stack, job_id))["state"] == "cancelled"


async def test_a_job_whose_container_dies_runs_again_in_a_fresh_one(
    stack, config, docker_client, job_id
):
    await stack.post("/start-job", json=job(job_id, "sleep", {"seconds": 3, "value": 7}))
    await running(stack, job_id)
    [container] = containers_of(docker_client, config)
    await asyncio.to_thread(container.kill)

    done = await outcome(stack, job_id)
    assert (done["state"], done["attempt"]) == ("done", 2)
    assert (await stack.get(f"/jobs/{job_id}/result")).json() == {"value": 7}
    [fresh] = containers_of(docker_client, config)
    assert fresh.id != container.id


async def test_a_model_without_an_image_fails_naming_the_image(stack, registry, job_id):
    await stack.post("/start-job", json=job(job_id, "nosuchmodel", {}))
    failed = await outcome(stack, job_id)
    assert failed["state"] == "failed"
    assert f"{registry}/nosuchmodel:1" in failed["error"]["message"]


async def test_switching_models_replaces_the_container(stack, config, docker_client, job_id):
    await stack.post("/start-job", json=job(job_id, "echo", [1]))
    await outcome(stack, job_id)
    [first] = containers_of(docker_client, config)
    other = f"{job_id}-sleep"
    await stack.post("/start-job", json=job(other, "sleep", {"seconds": 0}))
    await outcome(stack, other)
    [second] = containers_of(docker_client, config)
    assert second.id != first.id
    assert second.labels["io.shepherd.model"] == "sleep:1"


async def test_containers_left_by_crashed_sheep_are_removed_when_one_starts(
    config, broker, registry, example_images, docker_client
):
    """Its own container of a previous life, and that of a sheep of a class whose process on
    this machine is gone (its id is never seen again); not that of a live sheep."""
    config.registry.url = registry
    config.sheep = {"d1": docker_sheep()}
    dead_pid = await asyncio.to_thread(_dead_pid)
    host, namespace = socket.gethostname(), os.readlink("/proc/self/ns/pid")

    def runner(sheep_id: str, owner: str | None) -> Container:
        labels = {LABEL_SHEEP: sheep_id, LABEL_NAMESPACE: config.broker.namespace}
        return docker_client.containers.run(
            example_images["sleep"],
            ["--bind", f"tcp://127.0.0.1:{free_port()}", "--model", "sleep:1"],
            labels={**labels, **({LABEL_OWNER: owner} if owner else {})},
            network_mode="host",
            detach=True,
        )

    own = runner("d1", None)
    of_a_dead_class_sheep = runner("gpu-5f0c2e9b", f"{host} {namespace} {dead_pid}")
    of_a_live_sheep = runner("gpu-0a1b2c3d", f"{host} {namespace} {os.getpid()}")
    try:
        async with running_stack(config):
            for orphan in (own, of_a_dead_class_sheep):
                with pytest.raises(docker.errors.NotFound):
                    orphan.reload()
            of_a_live_sheep.reload()
    finally:
        namespace = [f"{LABEL_NAMESPACE}={config.broker.namespace}"]
        for leftover in docker_client.containers.list(all=True, filters={"label": namespace}):
            leftover.remove(force=True)


def _dead_pid() -> int:
    """A pid that ran, and is no more."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
