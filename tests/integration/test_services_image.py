"""The services image (``shepherd image services``): the ``shepherd`` command in a container,
serving jobs on the real broker and store, as Compose and Kubernetes run it."""

from __future__ import annotations

import asyncio
import contextlib
import re
from functools import partial

import docker
import httpx
from docker.errors import NotFound

from services.sheep import images
from tests.support.docker import EXAMPLE_MODELS
from tests.support.polling import eventually
from tests.support.processes import write_config
from tests.support.stack import bare_sheep, free_port, healthy


async def test_the_services_image_runs_a_job(
    docker_client: docker.DockerClient, services_image: str, registry: str, config, broker, tmp_path
):
    assert re.fullmatch(r".+/shepherd-services:\d+\.\d+\.\d+.*-[0-9a-f]{12}", services_image)
    released = f"{registry}/{images.SERVICES_REPOSITORY}:{images._project_version()}"
    assert docker_client.images.get(released).id == docker_client.images.get(services_image).id
    config.gateway.port = free_port()
    config.sheep = {"s1": bare_sheep(working_directory=EXAMPLE_MODELS)}
    config.data_root = tmp_path / "data"
    config_file = write_config(config, tmp_path / "shepherd.yml")
    container = docker_client.containers.run(
        services_image,
        ["up", "-c", str(config_file)],
        network_mode="host",
        volumes={
            str(tmp_path): {"bind": str(tmp_path), "mode": "rw"},
            str(EXAMPLE_MODELS): {"bind": str(EXAMPLE_MODELS), "mode": "ro"},
        },
        detach=True,
    )
    try:
        base = f"http://127.0.0.1:{config.gateway.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            await eventually(partial(healthy, client), within=60, every=0.2)
            answer = await client.post(
                "/start-job", json={"model": {"name": "echo", "version": "1"}, "payload": [4, 2]}
            )
            job_id = answer.json()["job_id"]
            ready = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 60})
            assert ready.json()["state"] == "done", ready.text
            assert (await client.get(f"/jobs/{job_id}/result")).content == b"[4,2]"
    except BaseException:
        print(container.logs(tail=60).decode(errors="replace"))
        raise
    finally:
        container.stop(timeout=20)
        with contextlib.suppress(NotFound):
            await asyncio.to_thread(container.remove, force=True)
