"""Container images, built on this machine without any remote registry.

Each is built only when missing:

* the base image ``shepherd/python:bookworm``: Debian's minbase with python3, made with
  debootstrap and ``docker import``, so no Docker Hub is needed. Its root filesystem is kept
  as a tarball in ``$SHEPHERD_CACHE_DIR/images`` (default ``~/.cache/shepherd/images``): an
  engine that lost the image imports it again in seconds instead of bootstrapping again;
* the runner image ``<registry>/shepherd-runner:<version>-<hash>``: the ``runner`` and
  ``schemas`` packages and their dependencies, unpacked from wheels downloaded once for the
  base image's Python. The hash covers everything that goes in, so any change is a new tag;
* model images ``<registry>/<name>:<version>``: a model directory on the runner image;
* the services image ``<registry>/shepherd-services:<version>-<hash>`` (and ``:<version>``),
  for Compose and Kubernetes: the ``services``, ``schemas`` and ``runner`` packages and
  every distribution Shepherd's ``services`` extra needs (``services.sheep.wheels``).

The calls block (debootstrap takes a minute); async callers run them in a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound
from docker.utils import parse_repository_tag

from runner.config import RUNNER_FILE
from schemas.config import RegistryConfig
from schemas.job import ModelRef
from services.sheep.wheels import WheelsUnavailable, download, requirements_closure

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = PROJECT_ROOT / "deploy" / "docker"

BASE_IMAGE = "shepherd/python:bookworm"
BASE_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ROOTFS_LABEL = "io.shepherd.rootfs-sha256"
"""On the base image: the digest of its root filesystem, part of the runner image's hash."""

SERVICES_REPOSITORY = "shepherd-services"
SERVICES_PACKAGES = ("services", "schemas", "runner")
RUNNER_REPOSITORY = "shepherd-runner"
RUNNER_PACKAGES = ("runner", "schemas")
RUNNER_DISTRIBUTIONS = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-extensions",
    "typing-inspection",  # pydantic >= 2.11 only
    "pyyaml",
    "pyzmq",
)
"""What ``import runner.cli`` needs besides the standard library, in the versions here."""
LABEL_MODEL = "io.shepherd.model"

# Docker's grammar: lowercase path components with separators inside; tags up to 128 chars.
_REPOSITORY_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

# Not in a slim image: apt's downloads and indexes, documentation, translations.
_TRIMMED = (
    "var/cache/apt",
    "var/lib/apt/lists",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)


class ImageError(RuntimeError):
    """An image could not be made, pushed or found; the message says which step and why."""


def connect() -> docker.DockerClient:
    """A client of the engine ``DOCKER_HOST`` names (the local socket by default)."""
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        raise ImageError(
            f"cannot reach the Docker engine ({exc}); start it with: make services"
        ) from exc
    return client


def cache_dir() -> Path:
    root = os.environ.get("SHEPHERD_CACHE_DIR") or Path.home() / ".cache" / "shepherd"
    return Path(root) / "images"


def base_rootfs() -> Path:
    """The cached root filesystem of the base image (a tarball), made by debootstrap."""
    return cache_dir() / f"rootfs-{BASE_SUITE}-python3-{platform.machine()}.tar"


def registry_auth(registry: RegistryConfig) -> dict[str, str] | None:
    """The SDK's ``auth_config`` for pushes and pulls; ``None`` for a registry without auth."""
    if registry.username is None or registry.password is None:
        return None
    return {"username": registry.username, "password": registry.password.get_secret_value()}


def image_name(registry: str, model: ModelRef) -> str:
    """``<registry>/<name>:<version>``; Docker wants the name in lowercase."""
    if not _REPOSITORY_COMPONENT.fullmatch(model.name):
        raise ImageError(
            f"model name {model.name!r} cannot name a Docker image: use lowercase letters and "
            "digits, with '.', '_', '__' or '-' only between them"
        )
    if not _TAG.fullmatch(model.version):
        raise ImageError(f"model version {model.version!r} cannot be a Docker image tag")
    return f"{registry}/{model.name}:{model.version}"


def ensure_base_image(client: docker.DockerClient) -> str:
    """The base image, imported from the cached root filesystem, made first if need be."""
    if _image_id(client, BASE_IMAGE):
        return BASE_IMAGE
    tarball = base_rootfs()
    if not tarball.exists():
        _bootstrap(tarball)
    started = time.monotonic()
    repository, tag = parse_repository_tag(BASE_IMAGE)
    try:
        client.api.import_image(
            src=str(tarball),
            repository=repository,
            tag=tag,
            changes=[f"LABEL {ROOTFS_LABEL}={_file_digest(tarball)}", 'CMD ["python3"]'],
        )
    except DockerException as exc:
        raise ImageError(f"importing {tarball} as {BASE_IMAGE} failed: {exc}") from exc
    log.info("imported %s from %s in %.1f s", BASE_IMAGE, tarball, time.monotonic() - started)
    return BASE_IMAGE


def ensure_runner_image(
    client: docker.DockerClient,
    registry: str,
    *,
    push: bool = True,
    auth: dict[str, str] | None = None,
) -> str:
    """The runner image of this checkout, built if missing and (``push``) in ``registry``."""
    return _ensure_python_image(
        client, registry, RUNNER_REPOSITORY, RUNNER_PACKAGES, RUNNER_DISTRIBUTIONS, push, auth
    )


def ensure_services_image(
    client: docker.DockerClient,
    registry: str,
    *,
    push: bool = True,
    auth: dict[str, str] | None = None,
) -> str:
    """The image of Shepherd's services (``shepherd`` as its entrypoint: gateway, notifier,
    sheep with bare runners) of this checkout, built if missing and (``push``) in
    ``registry``, also tagged with the project's version alone for manifests to name."""
    image = _ensure_python_image(
        client,
        registry,
        SERVICES_REPOSITORY,
        SERVICES_PACKAGES,
        requirements_closure("shepherd", extra="services"),
        push,
        auth,
    )
    released = f"{registry}/{SERVICES_REPOSITORY}:{_project_version()}"
    client.images.get(image).tag(released)
    if push:
        push_image(client, released, auth)
    return image


def _ensure_python_image(
    client: docker.DockerClient,
    registry: str,
    repository: str,
    packages: Iterable[str],
    distributions: Iterable[str],
    push: bool,
    auth: dict[str, str] | None,
) -> str:
    """``<registry>/<repository>:<version>-<hash>`` built from ``deploy/docker/<repository
    without shepherd->.Dockerfile`` on the base image: ``packages`` of this checkout and
    wheels of ``distributions``, unpacked into ``/opt/shepherd``."""
    base = ensure_base_image(client)
    try:
        wheels = download(distributions, cache_dir() / "wheels")
    except WheelsUnavailable as exc:
        raise ImageError(str(exc)) from exc
    sources = [
        (path.relative_to(PROJECT_ROOT), path)
        for package in packages
        for path in sorted((PROJECT_ROOT / package).rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    ]
    dockerfile = DOCKERFILES / f"{repository.removeprefix('shepherd-')}.Dockerfile"
    digest = hashlib.sha256(client.images.get(base).labels.get(ROOTFS_LABEL, base).encode())
    for name, path in [
        ("Dockerfile", dockerfile),
        *((wheel.name, wheel) for wheel in wheels),
        *((str(relative), path) for relative, path in sources),
    ]:
        digest.update(f"\0{name}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    image = f"{registry}/{repository}:{_project_version()}-{digest.hexdigest()[:12]}"
    if not _image_id(client, image):
        with tempfile.TemporaryDirectory(prefix=f"{repository}-image-") as tmp:
            context = Path(tmp)
            site = context / "site"
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as archive:
                    archive.extractall(site)
            for relative, path in sources:
                (site / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, site / relative)
            shutil.copyfile(dockerfile, context / "Dockerfile")
            _build(client, context, image, {"BASE": base}, {})
        # The images this one replaces go (model images on a runner image keep its layers).
        named = f"{registry}/{repository}"
        for old in client.images.list(name=named):
            for tag in old.tags:  # an image's tags in every repository
                if tag.startswith(f"{named}:{_project_version()}-") and tag != image:
                    _remove(client, tag)
    if push:
        push_image(client, image, auth)
    return image


def build_model_image(
    client: docker.DockerClient,
    model_dir: Path,
    model: ModelRef,
    registry: str,
    *,
    push: bool = True,
    auth: dict[str, str] | None = None,
) -> str:
    """Build ``<registry>/<name>:<version>`` from ``model_dir`` (pushed unless ``push`` is
    false, and then the runner image is not pushed either)."""
    image = image_name(registry, model)
    if not (model_dir / RUNNER_FILE).is_file():
        raise ImageError(f"{model_dir} is not a model directory: it has no {RUNNER_FILE}")
    runner = ensure_runner_image(client, registry, push=push, auth=auth)
    with tempfile.TemporaryDirectory(prefix="shepherd-model-image-") as tmp:
        context = Path(tmp)
        shutil.copytree(
            model_dir, context / "model", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        shutil.copyfile(DOCKERFILES / "model.Dockerfile", context / "Dockerfile")
        _build(client, context, image, {"RUNNER": runner}, {LABEL_MODEL: str(model)})
    if push:
        push_image(client, image, auth)
    return image


def push_image(client: docker.DockerClient, image: str, auth: dict[str, str] | None = None) -> None:
    repository, tag = parse_repository_tag(image)
    started = time.monotonic()
    try:
        for event in client.images.push(
            repository, tag=tag, stream=True, decode=True, auth_config=auth
        ):
            if "error" in event:
                raise ImageError(f"pushing {image} failed: {event['error']}")
    except DockerException as exc:
        raise ImageError(f"pushing {image} failed: {exc}") from exc
    log.info("pushed %s in %.1f s", image, time.monotonic() - started)


def debian_mirror(suite: str = BASE_SUITE) -> str:
    """The first apt source of ``suite`` on this machine (whose mirror and proxy settings
    are known to work here), else Debian's CDN."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            mirror = _deb822_mirror(text, suite)
        elif path.name == "sources.list" or path.suffix == ".list":
            mirror = _one_line_mirror(text, suite)
        else:  # disabled or backup files
            continue
        if mirror:
            return mirror
    return DEFAULT_MIRROR


def _deb822_mirror(text: str, suite: str) -> str | None:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith((" ", "\t", "#")):
                fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and suite in fields.get("suites", []):
            uris = fields.get("uris", [])
            if uris:
                return uris[0]
    return None


def _one_line_mirror(text: str, suite: str) -> str | None:
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            return words[1]
    return None


def _bootstrap(tarball: Path) -> None:
    """debootstrap a minbase root filesystem with python3 into ``tarball``."""
    if shutil.which("debootstrap") is None:
        raise ImageError(
            f"debootstrap is missing; it makes the base image {BASE_IMAGE} once. "
            "Install it with: apt-get install debootstrap"
        )
    if os.geteuid() != 0:
        raise ImageError(f"debootstrap needs root to make the base image {BASE_IMAGE}")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    started = time.monotonic()
    log.info("making %s: debootstrap %s from %s (a minute or more)", tarball, BASE_SUITE, mirror)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=tarball.parent) as tmp:
        root = Path(tmp) / "root"
        _run(
            "debootstrap",
            ["debootstrap", "--variant=minbase", "--include=python3", BASE_SUITE, root, mirror],
            log_file=root / "debootstrap" / "debootstrap.log",
        )
        for trimmed in _TRIMMED:
            for entry in (root / trimmed).glob("*"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        for doc in (root / "usr/share/doc").rglob("*"):
            if doc.is_file() and doc.name != "copyright":
                doc.unlink()
        partial = tarball.with_suffix(".partial")
        _run("tar", ["tar", "--numeric-owner", "-C", root, "-cf", partial, "."])
        partial.rename(tarball)
    log.info("made %s in %.0f s", tarball, time.monotonic() - started)


def _project_version() -> str:
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def _build(
    client: docker.DockerClient,
    context: Path,
    image: str,
    buildargs: dict[str, str],
    labels: dict[str, str],
) -> None:
    """Build ``image``, and remove the image it took the tag from unless something uses it,
    so that rebuilds do not pile up."""
    replaced = _image_id(client, image)
    started = time.monotonic()
    try:
        # No network: nothing in a build may fetch anything, and dockerd has no bridge.
        built, _ = client.images.build(
            path=str(context),
            tag=image,
            buildargs=buildargs,
            labels=labels,
            network_mode="none",
            rm=True,
            forcerm=True,
        )
    except BuildError as exc:
        raise ImageError(f"building {image} failed: {exc.msg}") from exc
    except DockerException as exc:
        raise ImageError(f"building {image} failed: {exc}") from exc
    log.info("built %s in %.1f s", image, time.monotonic() - started)
    if replaced not in (None, built.id):
        _remove(client, replaced)


def _image_id(client: docker.DockerClient, image: str) -> str | None:
    try:
        return str(client.images.get(image).id)
    except ImageNotFound:
        return None
    except DockerException as exc:
        raise ImageError(f"cannot look up {image} in the Docker engine: {exc}") from exc


def _remove(client: docker.DockerClient, image: str) -> None:
    """Remove an image that may still be in use (by a container: then it stays)."""
    with contextlib.suppress(APIError):
        client.images.remove(image)


def _file_digest(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _run(what: str, argv: Iterable[str | Path], log_file: Path | None = None) -> None:
    """Run a tool; its failure becomes an :class:`ImageError` with the end of its output."""
    command = [str(arg) for arg in argv]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        if log_file is not None and log_file.exists():
            output += "\n" + log_file.read_text(errors="replace")
        tail = "\n".join(output.splitlines()[-15:])
        raise ImageError(f"{what} failed (exit {result.returncode}):\n{tail}")
