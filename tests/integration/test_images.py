"""The runner and model images against the real Docker engine and the local registry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import httpx
import pytest
import zmq.asyncio
from docker.errors import ImageNotFound
from docker.models.containers import Container

from schemas.job import ModelRef
from schemas.runner import Done, Run
from services.sheep import images
from services.sheep.runner_client import RunnerClient
from tests.support.docker import EXAMPLE_MODELS
from tests.support.stack import free_port

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def test_the_runner_image_runs_the_runner(docker_client: docker.DockerClient, runner_image: str):
    assert re.fullmatch(r".+/shepherd-runner:\d+\.\d+\.\d+.*-[0-9a-f]{12}", runner_image)
    output = docker_client.containers.run(
        runner_image, ["--help"], network_mode="host", remove=True
    )
    assert b"usage: shepherd-runner" in output


def test_a_built_runner_image_is_found_again_without_building(
    docker_client: docker.DockerClient, registry: str, runner_image: str
):
    started = time.monotonic()
    assert images.ensure_runner_image(docker_client, registry) == runner_image
    assert time.monotonic() - started < 10


@pytest.fixture
def unique_echo(
    docker_client: docker.DockerClient, tmp_path: Path, registry: str
) -> Iterator[tuple[Path, ModelRef]]:
    """The echo model with a file of its own, so its top layer exists nowhere but here, and a
    tag of its own; the image is removed from the engine and the registry afterwards."""
    model_dir = tmp_path / "echo"
    shutil.copytree(EXAMPLE_MODELS / "echo" / "1", model_dir)
    nonce = uuid.uuid4().hex[:12]
    (model_dir / "nonce.txt").write_text(nonce)
    model = ModelRef(name="echo", version=f"test-{nonce}")
    yield model_dir, model
    with contextlib.suppress(ImageNotFound):
        docker_client.images.remove(images.image_name(registry, model), force=True)
    _delete_from_registry(registry, model)


async def test_a_model_image_comes_back_from_the_registry_and_serves(
    docker_client: docker.DockerClient,
    registry: str,
    unique_echo: tuple[Path, ModelRef],
    tmp_path: Path,
):
    model_dir, model = unique_echo
    image = images.build_model_image(docker_client, model_dir, model, registry)
    assert image == f"{registry}/echo:{model.version}"
    docker_client.images.remove(image)
    with pytest.raises(ImageNotFound):
        docker_client.images.get(image)

    repository, tag = image.rsplit(":", 1)
    statuses = {
        event.get("status")
        for event in docker_client.api.pull(repository, tag=tag, stream=True, decode=True)
    }
    assert "Pull complete" in statuses  # the model's own layer came from the registry

    port = free_port()
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "input.json").write_text(json.dumps({"greeting": "from a pulled image"}))
    async with runner_container(
        docker_client,
        image,
        ["--bind", f"tcp://127.0.0.1:{port}", "--model", "echo:1"],
        volumes={str(tmp_path): {"bind": str(tmp_path), "mode": "rw"}},
    ) as (container, exited):
        context = zmq.asyncio.Context()
        client, ready = await RunnerClient.connect(
            context,
            f"tcp://127.0.0.1:{port}",
            exited,
            sheep_id="test",
            heartbeat_timeout=10,
            load_timeout=30,
        )
        try:
            assert ready.model == "echo:1"
            run = Run(
                job_id="job-1", inputs_dir=str(tmp_path / "in"), outputs_dir=str(tmp_path / "out")
            )
            assert isinstance((await client.run(run, _ignore_progress)).outcome, Done)
        finally:
            client.close()
            context.term()
        assert b"serving echo:1" in container.logs(stdout=False, stderr=True)
    assert (tmp_path / "out" / "output.json").read_text() == (
        tmp_path / "in" / "input.json"
    ).read_text()


def test_a_model_directory_needs_a_runner_file(
    docker_client: docker.DockerClient, registry: str, tmp_path: Path
):
    with pytest.raises(images.ImageError, match=r"has no shepherd-runner\.yaml"):
        images.build_model_image(docker_client, tmp_path, ModelRef(name="echo"), registry)


def test_model_names_docker_cannot_take_are_refused_before_building(registry: str):
    with pytest.raises(images.ImageError, match="lowercase"):
        images.image_name(registry, ModelRef(name="Echo", version="1"))


def test_a_refused_push_names_the_image_and_the_reason(
    docker_client: docker.DockerClient, runner_image: str, unique_echo: tuple[Path, ModelRef]
):
    model_dir, model = unique_echo
    nowhere = f"127.0.0.1:{free_port()}"
    try:
        with pytest.raises(images.ImageError, match=rf"pushing {nowhere}/.+ connection refused"):
            images.build_model_image(docker_client, model_dir, model, nowhere)
    finally:
        for image in docker_client.images.list(name=f"{nowhere}/*"):
            for name in image.tags:
                if name.startswith(f"{nowhere}/"):  # the same image has our registry's tags
                    docker_client.images.remove(name)
    docker_client.images.get(runner_image)  # another registry's image left ours alone


@contextlib.asynccontextmanager
async def runner_container(
    client: docker.DockerClient, image: str, command: list[str], **options: object
) -> AsyncIterator[tuple[Container, asyncio.Task[int]]]:
    """A detached container on the host network, its exit code as a task; removed after."""
    container = client.containers.run(image, command, network_mode="host", detach=True, **options)

    async def exit_code() -> int:
        return int((await asyncio.to_thread(container.wait))["StatusCode"])

    exited = asyncio.create_task(exit_code())
    try:
        yield container, exited
    finally:
        container.remove(force=True)
        with contextlib.suppress(Exception):
            await exited


async def _ignore_progress(_: object) -> None:
    return None


def _delete_from_registry(registry: str, model: ModelRef) -> None:
    """Registries delete manifests by digest only (``storage.delete`` is enabled in ours)."""
    url = f"http://{registry}/v2/{model.name}/manifests"
    head = httpx.head(f"{url}/{model.version}", headers={"Accept": MANIFEST_V2})
    if head.status_code == 200:
        httpx.delete(f"{url}/{head.headers['Docker-Content-Digest']}").raise_for_status()
