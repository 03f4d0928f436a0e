"""Wheels of distributions installed here, for the base image's Python and this machine's
architecture, downloaded once into a cache; and which distributions an installed one needs.

    needed = requirements_closure("shepherd", extra="services")   # ["aio-pika", ...]
    paths = download(needed, cache_dir / "wheels")                # at the versions here
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement

BASE_PYTHON = "3.11"
"""The python3 of the base image's Debian release: wheels are downloaded for it."""
BASE_GLIBC_MINOR = 36
"""Bookworm has glibc 2.36, so it runs wheels of any ``manylinux_2_X`` up to X = 36."""


class WheelsUnavailable(RuntimeError):
    """pip could not download a wheel of a distribution for the base image."""


def requirements_closure(distribution: str, extra: str | None = None) -> list[str]:
    """The installed distributions ``distribution`` (with ``extra``) needs, directly or not,
    for this Python, sorted; not itself."""
    seen: set[tuple[str, str | None]] = set()
    pending = [(distribution, extra)]
    while pending:
        name, wanted_extra = pending.pop()
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is not None and not marker.evaluate({"extra": wanted_extra or ""}):
                continue
            for needed in (None, *requirement.extras):  # the distribution, and each extra
                key = (_normalize(requirement.name), needed)
                if key not in seen:
                    seen.add(key)
                    pending.append((requirement.name, needed))
    return sorted({name for name, _ in seen} - {_normalize(distribution)})


def download(distributions: Iterable[str], cache: Path) -> list[Path]:
    """A wheel of each distribution, at the version installed here (one not installed is
    left out: an optional dependency), from ``cache`` or downloaded into it."""
    directory = cache / f"cp{BASE_PYTHON.replace('.', '')}-{platform.machine()}"
    wanted: dict[str, str] = {}
    for distribution in distributions:
        try:
            wanted[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    missing = [f"{d}=={v}" for d, v in wanted.items() if _cached(directory, d, v) is None]
    if missing and _pip(_download_for_base(missing, directory)) is not None:
        for requirement in missing:  # one by one: which has no wheel for the base image?
            if _pip(_download_for_base([requirement], directory)) is None:
                continue
            # Only a source distribution: a wheel built here, on this machine's Python (the
            # base image's release, as images are built on it).
            built = ["wheel", "--quiet", "--no-deps", "--wheel-dir", str(directory), requirement]
            if (failure := _pip(built)) is not None:
                raise WheelsUnavailable(failure)
    wheels = {d: _cached(directory, d, v) for d, v in wanted.items()}
    lacking = [d for d, wheel in wheels.items() if wheel is None]
    if lacking:
        raise WheelsUnavailable(f"pip download left no wheel of {', '.join(lacking)}")
    return [wheel for wheel in wheels.values() if wheel is not None]


def _download_for_base(requirements: list[str], directory: Path) -> list[str]:
    """pip's arguments to download wheels of ``requirements`` for the base image."""
    arch = platform.machine()
    abi = "cp" + BASE_PYTHON.replace(".", "")
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(BASE_GLIBC_MINOR, 4, -1)]
    platforms += [f"manylinux{legacy}_{arch}" for legacy in ("2014", "2010", "1")]
    return [
        *("download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(directory)),
        *("--python-version", BASE_PYTHON, "--implementation", "cp"),
        *("--abi", abi, "--abi", "abi3", "--abi", "none"),
        *(arg for name in platforms for arg in ("--platform", name)),
        *requirements,
    ]


def _pip(arguments: list[str]) -> str | None:
    """Run pip; None if it succeeded, else the end of what it said."""
    command = [sys.executable, "-m", "pip", *arguments]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return None
    tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
    return f"pip {arguments[0]} failed (exit {result.returncode}):\n{tail}"


def _cached(directory: Path, distribution: str, version: str) -> Path | None:
    name = _normalize(distribution)
    for wheel in directory.glob("*.whl"):
        wheel_name, wheel_version = wheel.name.split("-")[:2]
        if _normalize(wheel_name) == name and wheel_version == version:
            return wheel
    return None


def _normalize(distribution: str) -> str:
    return re.sub(r"[-_.]+", "_", distribution).lower()
