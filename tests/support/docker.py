"""The Docker engine, the registry and images, for the tests of images and docker sheep.

``scripts/services.sh up docker`` starts the engine (``dockerd --iptables=false
--bridge=none``) and the registry when they do not answer; without them the tests fail with
the script's reason, never skip. Images are built once a session, and across sessions they
come from the cache (``services/sheep/images.py``): the first build on a machine bootstraps
Debian (about a minute), so then the first test that needs an image gets a longer timeout.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from schemas.config import RegistryConfig
from schemas.job import ModelRef
from services.sheep import images

ROOT = Path(__file__).parents[2]
EXAMPLE_MODELS = ROOT / "examples" / "models"
EXAMPLE_IMAGES = ("echo", "sleep", "fail")
"""The examples the runner image can serve (iris needs scikit-learn, which it lacks)."""
IMAGE_BUILD_TIMEOUT = 900
"""Seconds for the first test needing an image when the base image must be bootstrapped."""

ModelImage = Callable[[str], str]
"""Builds ``examples/models/<name>/1`` as ``<registry>/<name>:1``, pushes it, names it."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if images.base_rootfs().exists():  # then every build takes seconds
        return
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if {"runner_image", "model_image", "example_images", "services_image"} & set(fixtures):
            item.add_marker(pytest.mark.timeout(IMAGE_BUILD_TIMEOUT), append=False)
            return


@pytest.fixture(scope="session")
def docker_services() -> None:
    """The engine and the registry, started if they do not answer (idempotent, fast)."""
    result = subprocess.run(
        [ROOT / "scripts" / "services.sh", "up", "docker"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"no Docker engine or registry: {result.stderr.strip()}", pytrace=False)


@pytest.fixture(scope="session")
def docker_client(docker_services: None) -> Iterator[docker.DockerClient]:
    try:
        client = images.connect()
    except images.ImageError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def registry(docker_services: None) -> str:
    """``host:port`` of the local registry (``registry.url``'s default)."""
    return RegistryConfig().url


@pytest.fixture(scope="session")
def runner_image(docker_client: docker.DockerClient, registry: str) -> str:
    return _built(lambda: images.ensure_runner_image(docker_client, registry))


@pytest.fixture(scope="session")
def services_image(docker_client: docker.DockerClient, registry: str) -> str:
    return _built(lambda: images.ensure_services_image(docker_client, registry))


@pytest.fixture(scope="session")
def model_image(docker_client: docker.DockerClient, registry: str, runner_image: str) -> ModelImage:
    built: dict[str, str] = {}

    def build(name: str) -> str:
        if name not in built:
            built[name] = _built(
                lambda: images.build_model_image(
                    docker_client,
                    EXAMPLE_MODELS / name / "1",
                    ModelRef(name=name, version="1"),
                    registry,
                )
            )
        return built[name]

    return build


@pytest.fixture(scope="session")
def example_images(model_image: ModelImage) -> dict[str, str]:
    """Images of the example models, in the registry: model name -> image."""
    return {name: model_image(name) for name in EXAMPLE_IMAGES}


def _built(build: Callable[[], str]) -> str:
    try:
        return build()
    except images.ImageError as exc:
        pytest.fail(str(exc), pytrace=False)
