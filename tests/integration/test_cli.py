"""The ``shepherd`` command: each service as its own process, sharing one config file."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import delete_namespace
from tests.support.polling import eventually
from tests.support.stack import MODELS, free_port, healthy


def write_config(path: Path, config, port: int, sheep_port: int) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "data_root": str(config.data_root),
                "broker": {
                    "url": config.broker.url.get_secret_value(),
                    "namespace": config.broker.namespace,
                },
                "storage": {
                    "endpoint": config.storage.endpoint,
                    "bucket": config.storage.bucket,
                    "access_key": config.storage.access_key.get_secret_value(),
                    "secret_key": config.storage.secret_key.get_secret_value(),
                },
                "gateway": {"port": port},
                "sheep": {
                    "solo": {
                        "type": "bare",
                        "port": sheep_port,
                        "working_directory": str(MODELS),
                        "stdout_file": str(path.parent / "runner.out"),
                        "stderr_file": str(path.parent / "runner.err"),
                    }
                },
            }
        )
    )
    return path


@pytest.fixture
async def processes(config, names, tmp_path):
    port = free_port()
    config_file = write_config(tmp_path / "shepherd.yml", config, port, free_port())
    commands = [["gateway"], ["notifier"], ["sheep", "solo"]]
    procs = []
    for command in commands:
        with (tmp_path / f"{command[0]}.log").open("wb") as log:
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "services.cli",
                    *command,
                    "-c",
                    str(config_file),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        yield f"http://127.0.0.1:{port}", procs
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 30)
        await delete_namespace(config.broker.url.get_secret_value(), names, ["solo"])


async def test_separate_processes_run_a_job_and_stop_cleanly_on_sigterm(
    processes, job_id, tmp_path
):
    base, procs = processes
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await eventually(partial(healthy, client), within=30)
        submitted = await client.post(
            "/start-job",
            json={"job_id": job_id, "model": {"name": "echo", "version": "1"}, "payload": [1, 2]},
        )
        assert submitted.status_code == 202
        ready = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 30})
        assert ready.json()["state"] == "done"
        assert (await client.get(f"/jobs/{job_id}/result")).content == b"[1,2]"
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 30)
    assert codes == [0, 0, 0]
    # The runner's own output went to the configured files.
    assert "serving echo:1" in (tmp_path / "runner.err").read_text()
    assert (tmp_path / "runner.out").exists()


def test_a_bad_config_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("gateway:\n  port: lots\n")
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "up", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "gateway.port" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_sheep_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "sheep", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "nope" in result.stderr
