"""The docker backend: the runner is a container of the model's image.

Model ``<name>:<version>`` is image ``<registry>/<name>:<version>`` (built with ``shepherd
image model``), pulled when missing. The container runs on the host network, so the runner
binds the sheep's loopback port as a bare runner would; ``<data_root>/<sheep>`` is mounted at
the same path, so the job directories the sheep names are valid inside. GPUs from
``devices`` become an nvidia device request, CPU and memory limits come from the config.
Containers are labelled with their sheep, so that those a crashed sheep left behind are
removed when it starts again. The container's output is appended to the same log files as a
bare runner's, from which the sheep cuts each job's logs.

Docker SDK calls block, so each runs in a thread; the three that last as long as the
container (waiting for its exit, following its two output streams) get threads of their own,
so that they never starve the event loop's shared pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.types import DeviceRequest

from schemas.config import DockerSheepConfig, RegistryConfig
from schemas.job import ModelRef
from services.sheep.backend import ModelNotFound, RunnerSlot
from services.sheep.images import ImageError, image_name, registry_auth

log = logging.getLogger(__name__)

RUNNER_FILE = "shepherd-runner.yaml"
LABEL_SHEEP = "io.shepherd.sheep"
LABEL_NAMESPACE = "io.shepherd.namespace"
LABEL_MODEL = "io.shepherd.model"
LABEL_OWNER = "io.shepherd.owner"
"""``<host> <pid namespace> <pid>`` of the sheep process that started the container: a pid
means something only in its namespace (sheep in containers on the host network share the
host's name, not its pids)."""


def owner() -> str:
    """This sheep process, as ``LABEL_OWNER`` names it."""
    return f"{socket.gethostname()} {_pid_namespace()} {os.getpid()}"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "unknown"


def _owner_gone(label: str | None) -> bool:
    """Whether ``label`` names a process of this machine and pid namespace that no longer
    runs; anything else is not ours to judge."""
    host, namespace, pid = [*(label or "").split(" "), "", "", ""][:3]
    if host != socket.gethostname() or namespace != _pid_namespace() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


LOG_DRAIN_TIMEOUT = 2.0
"""Seconds the container's last output may take to reach the log files after it exits."""


def gpu_ids(devices: list[str]) -> list[str]:
    """Device ids for the nvidia runtime: ``/dev/nvidia3`` is GPU ``3``; ids and UUIDs pass."""
    return [d.removeprefix("/dev/nvidia") if d.startswith("/dev/nvidia") else d for d in devices]


def container_spec(
    *,
    sheep_id: str,
    namespace: str,
    config: DockerSheepConfig,
    model: ModelRef,
    image: str,
    data_dir: Path,
    environment: dict[str, str],
    address: str,
) -> dict[str, Any]:
    """The keyword arguments of ``containers.run`` for one runner container, binding
    ``address``."""
    environment = {**environment, "PYTHONUNBUFFERED": "1"}
    device_requests = None
    if config.devices:
        ids = gpu_ids(config.devices)
        environment["NVIDIA_VISIBLE_DEVICES"] = ",".join(ids)
        device_requests = [DeviceRequest(driver="nvidia", device_ids=ids, capabilities=[["gpu"]])]
    return {
        "image": image,
        "command": [
            "--bind",
            address,
            "--config",
            RUNNER_FILE,
            "--heartbeat-interval",
            str(config.heartbeat_interval),
            "--model",
            str(model),
        ],
        "name": f"shepherd-{namespace}-{sheep_id}",
        "labels": {
            LABEL_SHEEP: sheep_id,
            LABEL_NAMESPACE: namespace,
            LABEL_MODEL: str(model),
            LABEL_OWNER: owner(),
        },
        "network_mode": "host",
        "volumes": {str(data_dir): {"bind": str(data_dir), "mode": "rw"}},
        "environment": environment,
        "device_requests": device_requests,
        "nano_cpus": int(config.cpus * 1e9) if config.cpus else None,
        "mem_limit": config.memory,
        "detach": True,
    }


class DockerBackend(RunnerSlot):
    """Starts, replaces and stops one runner container (see :class:`RunnerBackend`)."""

    def __init__(
        self,
        sheep_id: str,
        config: DockerSheepConfig,
        registry: RegistryConfig,
        data_root: Path,
        namespace: str,
        *,
        stop_grace: float = 3.0,
        reveals_secret: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self._data_dir = (data_root / sheep_id).absolute()
        run_dir = self._data_dir / ".runner"
        super().__init__(config.port, run_dir / "stdout.log", run_dir / "stderr.log")
        self._sheep_id = sheep_id
        self._config = config
        self._registry = registry
        self._namespace = namespace
        self._stop_grace = stop_grace
        self._environment = {k: v for k, v in config.env.items() if not reveals_secret(v)}
        self._docker: docker.DockerClient | None = None
        self._container: Container | None = None
        self._watchers = ThreadPoolExecutor(3, thread_name_prefix=f"sheep-{sheep_id}-container")

    async def ensure(self, model: ModelRef) -> bool:
        if self._alive() and self._model == model:
            return False
        await self.stop()
        self._next_port()
        client = await asyncio.to_thread(self._client)
        try:
            image = image_name(self._registry.url, model)
        except ImageError as exc:
            raise ModelNotFound(str(exc)) from exc
        await asyncio.to_thread(self._pull_if_missing, client, image)
        self._stdout.parent.mkdir(parents=True, exist_ok=True)
        spec = container_spec(
            sheep_id=self._sheep_id,
            namespace=self._namespace,
            config=self._config,
            model=model,
            image=image,
            data_dir=self._data_dir,
            environment=self._environment,
            address=self.address,
        )
        try:
            container = await asyncio.to_thread(client.containers.run, **spec)
        except DockerException as exc:
            raise ModelNotFound(f"cannot start a container of {image}: {_reason(exc)}") from exc
        self._container, self._model = container, model
        self._exited = asyncio.create_task(self._watch(container), name=f"{container.name}-exit")
        log.info(
            "sheep %s: runner container %s of %s started", self._sheep_id, container.short_id, image
        )
        return True

    async def stop(self, grace: float | None = None) -> None:
        container, exited = self._container, self._exited
        if container is None or exited is None:
            return
        self._container, self._model = None, None
        timeout = self._stop_grace if grace is None else grace
        with contextlib.suppress(NotFound, APIError):
            await asyncio.to_thread(container.stop, timeout=max(1, round(timeout)))
        code = await exited
        with contextlib.suppress(NotFound, APIError):
            await asyncio.to_thread(container.remove, force=True)
        log.info(
            "sheep %s: runner container %s stopped, exit code %d",
            self._sheep_id,
            container.short_id,
            code,
        )

    def _client(self) -> docker.DockerClient:
        if self._docker is None:
            self._docker = docker.from_env()
        return self._docker

    async def recover(self) -> None:
        """Remove the containers that sheep processes that died left behind: this sheep's,
        and any of the namespace whose sheep process on this machine is gone (a sheep of a
        class, with a new id each life, never comes back for its own)."""
        await asyncio.to_thread(self._remove_orphans)

    def _remove_orphans(self) -> None:
        client = self._client()
        ours = client.containers.list(
            all=True, filters={"label": [f"{LABEL_NAMESPACE}={self._namespace}"]}
        )
        for container in ours:
            labels = container.labels or {}
            if labels.get(LABEL_SHEEP) == self._sheep_id or _owner_gone(labels.get(LABEL_OWNER)):
                log.warning(
                    "sheep %s: removing orphaned container %s", self._sheep_id, container.name
                )
                with contextlib.suppress(NotFound):
                    container.remove(force=True)

    def _pull_if_missing(self, client: docker.DockerClient, image: str) -> None:
        try:
            client.images.get(image)
            return
        except ImageNotFound:
            pass
        except DockerException as exc:
            raise ModelNotFound(f"cannot look up image {image}: {_reason(exc)}") from exc
        repository, _, tag = image.rpartition(":")
        log.info("sheep %s: pulling %s", self._sheep_id, image)
        try:
            client.images.pull(repository, tag=tag, auth_config=registry_auth(self._registry))
        except DockerException as exc:
            raise ModelNotFound(f"cannot pull image {image}: {_reason(exc)}") from exc

    async def _watch(self, container: Container) -> int:
        """The container's exit code, once its output is in the log files."""
        loop = asyncio.get_running_loop()
        drains = [
            loop.run_in_executor(self._watchers, partial(_append, container, path, stdout=out))
            for path, out in ((self._stdout, True), (self._stderr, False))
        ]
        try:
            result = await loop.run_in_executor(self._watchers, container.wait)
        except DockerException:  # removed underneath us
            result = {"StatusCode": -1}
        await asyncio.wait(drains, timeout=LOG_DRAIN_TIMEOUT)
        return int(result.get("StatusCode", -1))


def _append(container: Container, path: Path, *, stdout: bool) -> None:
    """Follow one of the container's streams into ``path`` until the container ends."""
    with path.open("ab") as sink, contextlib.suppress(DockerException):
        for chunk in _stream(container, stdout):
            sink.write(chunk)
            sink.flush()


def _stream(container: Container, stdout: bool) -> Iterator[bytes]:
    return container.logs(stdout=stdout, stderr=not stdout, stream=True, follow=True)


def _reason(exc: DockerException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)
