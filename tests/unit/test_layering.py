"""Services never import each other: what two of them share lives in ``services/common/`` or
``schemas/``, and only the composition at the top (``services/cli.py``, ``services/runtime.py``)
knows them all. ``schemas/`` imports no service, and the runner nothing of Shepherd's but
``schemas/``."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from services.sheep.images import RUNNER_DISTRIBUTIONS

ROOT = Path(__file__).parents[2]
SERVICES = ("gateway", "notifier", "sheep")


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute names (the tree uses no relative imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.add(node.module or "")
    return names


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service(service):
    others = tuple(f"services.{s}" for s in SERVICES if s != service)
    crossing = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules(f"services/{service}")
        for name in imported(path)
        if name.startswith(others)
    }
    assert not crossing, sorted(crossing)


def test_common_code_imports_no_service():
    services = tuple(f"services.{s}" for s in SERVICES)
    crossing = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules("services/common")
        for name in imported(path)
        if name.startswith(services)
    }
    assert not crossing, sorted(crossing)


@pytest.mark.parametrize("folder", ["schemas", "runner"])
def test_schemas_and_the_runner_import_no_service(folder):
    crossing = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules(folder)
        for name in imported(path)
        if name.startswith("services")
    }
    assert not crossing, sorted(crossing)


SERVICE_LIBRARIES = (
    "aio_pika", "aiormq", "minio", "urllib3", "docker", "starlette", "uvicorn", "uvloop",
    "prometheus_client", "pydantic_settings", "httpcore", "standardwebhooks",
)  # fmt: skip


def test_the_runner_imports_none_of_the_services_libraries():
    """What a model image runs, ``python -m runner.cli``, with the ``services`` extra's
    libraries made unimportable: ``pip install '.[runner]'`` is enough for it."""
    blocker = f"""
import sys
import tomllib
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVICE_LIBRARIES!r}:
            raise ImportError("the runner imports " + name)
sys.meta_path.insert(0, Blocked())
import runner.cli, runner.server, runner.worker
"""
    done = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


def test_runner_images_carry_the_base_dependencies():
    base = {
        re.split(r"[<>=!~; \[]", requirement, maxsplit=1)[0].lower()
        for requirement in metadata.requires("shepherd") or []
        if "extra ==" not in requirement
    }
    assert base == {"pydantic", "pydantic-core", "pyzmq", "pyyaml"}
    assert base <= set(RUNNER_DISTRIBUTIONS)


def test_the_lock_pins_every_declared_dependency():
    """``make`` installs from requirements.lock, then Shepherd without its dependencies: one
    declared in pyproject.toml but not locked would be missing (run ``make lock``)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = declared["optional-dependencies"]
    wanted = [*declared["dependencies"], *extras["services"], *extras["dev"], *extras["examples"]]
    locked = {
        line.split("==")[0].lower()
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    names = {re.split(r"[<>=!~; \[]", r, maxsplit=1)[0].lower() for r in wanted}
    assert names - locked == set()
