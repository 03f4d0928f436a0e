"""``pip install './client'`` in a fresh virtualenv, as a submitter does it: the SDK comes with
httpx and little else, and the README's SDK example runs as written against the real stack."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: What a submitter's environment must not carry: the services' own dependencies.
SERVICES_ONLY = {"aio-pika", "aiormq", "docker", "minio", "uvicorn", "starlette", "pyzmq"}


def readme_sdk_example() -> str:
    """The first Python block of README.md: the SDK's first job."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert match, "README.md shows no Python example"
    return match.group(1)


async def run(*argv: str | Path, within: float = 300) -> str:
    process = await asyncio.create_subprocess_exec(
        *map(str, argv), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(within):
        out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_a_fresh_virtualenv_runs_the_readme_sdk_example(stack, tmp_path):
    venv = tmp_path / "venv"
    await run(sys._base_executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    await run(
        python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", ROOT / "client"
    )

    installed = await run(python, "-m", "pip", "list", "--format=freeze")
    names = {line.split("==")[0].lower() for line in installed.splitlines()}
    assert "shepherd-client" in names and "httpx" in names
    assert not names & SERVICES_ONLY, names & SERVICES_ONLY

    example = readme_sdk_example().replace("http://127.0.0.1:5000", str(stack.base_url))
    out = await run(python, "-c", example, within=120)
    assert out.splitlines() == ["{'greeting': 'hello'}", "[1024, 9]"]
