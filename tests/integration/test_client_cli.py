"""``shepherd-client``, the SDK's command, run as a user runs it (a process, the URL from the
environment) against the real stack: its outputs, JSON for scripts, and its exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.support.polling import eventually
from tests.support.stack import free_port

COMMAND = Path(sys.executable).parent / "shepherd-client"


async def cli(url: str, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``shepherd-client ARGS`` against ``url``."""
    process = await asyncio.create_subprocess_exec(
        str(COMMAND),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SHEPHERD_URL": url},
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def url(stack) -> str:
    return str(stack.base_url).rstrip("/")


async def test_submit_wait_and_read_a_job_from_the_shell(url, tmp_path):
    code, out, _ = await cli(url, "submit", "echo:1", '{"greeting": "hi"}', "--wait")
    assert (code, json.loads(out)) == (0, {"greeting": "hi"})

    code, out, _ = await cli(url, "--json", "submit", "echo:1", "[1, 2]")
    job_id = json.loads(out)["job_id"]
    code, out, _ = await cli(url, "--json", "wait", job_id)
    assert code == 0 and json.loads(out)["state"] == "done"
    code, out, _ = await cli(url, "status", job_id)
    assert (code, out.strip()) == (0, f"{job_id} done")
    assert (await cli(url, "result", job_id))[1].strip() == "[1, 2]"
    code, out, _ = await cli(url, "download", job_id, str(tmp_path / "out"))
    assert code == 0 and json.loads((tmp_path / "out" / "output.json").read_text()) == [1, 2]
    code, out, _ = await cli(url, "--json", "logs", job_id)
    assert code == 0 and set(json.loads(out)) >= {"stdout", "stderr"}


async def test_a_failed_job_exits_1_with_its_error(url):
    code, out, err = await cli(url, "submit", "fail:1", "{}", "--wait")
    assert code == 1 and "failed" in err
    code, out, _ = await cli(url, "--json", "submit", "sleep:1", '{"seconds": 30}')
    job_id = json.loads(out)["job_id"]
    code, out, _ = await cli(url, "cancel", job_id)
    assert code == 0 and out.strip().startswith(f"{job_id} cancelled")
    assert (await cli(url, "wait", job_id))[0] == 1


async def test_map_writes_one_json_line_per_line_in_input_order(url):
    lines = b"".join(json.dumps([n, 2 if n != 3 else -1]).encode() + b"\n" for n in range(8))
    code, out, _ = await cli(url, "map", "power:1", "--keep-going", "--no-progress", stdin=lines)
    results = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(results) == 8
    assert results[3]["error"]["type"] == "ValueError"
    assert [r for i, r in enumerate(results) if i != 3] == [n * n for n in range(8) if n != 3]
    code, _, err = await cli(url, "map", "power:1", "--no-progress", stdin=lines)
    assert code == 1 and "item 3 failed" in err


async def test_usage_errors_exit_2_and_an_unreachable_gateway_3(url):
    code, _, err = await cli(url, "submit", "echo:1", "{not json")
    assert code == 2 and "PAYLOAD is not JSON" in err
    code, _, err = await cli(url, "status", "no-such-job")
    assert code == 2 and "404" in err
    nobody = f"http://127.0.0.1:{free_port()}"
    code, _, err = await cli(nobody, "--retry-for", "1", "status", "any-job")
    assert code == 3 and "cannot reach" in err


async def test_jobs_lists_the_newest_first_as_a_table_or_json_lines(url):
    for payload in ("{}", "[1]"):
        assert (await cli(url, "submit", "echo:1", payload, "--wait"))[0] == 0
    assert (await cli(url, "submit", "fail:1", "{}", "--wait"))[0] == 1

    async def listed() -> list[dict]:
        code, out, _ = await cli(url, "--json", "jobs", "--state", "done", "--state", "failed")
        assert code == 0
        return [json.loads(line) for line in out.splitlines()]

    await eventually(lambda: _count(listed, 3), within=20)
    jobs = await listed()
    assert [job["model"]["name"] for job in jobs] == ["fail", "echo", "echo"]
    code, out, _ = await cli(url, "jobs", "--state", "failed")
    assert code == 0 and jobs[0]["job_id"] in out and "ValueError" in out
    code, _, err = await cli(url, "jobs", "--state", "finished")
    assert code == 2 and "state" in err


async def _count(listed, n: int) -> bool:
    return len(await listed()) == n


async def test_ctrl_c_during_map_cancels_the_jobs_it_submitted(url):
    """SIGINT, as Ctrl-C sends it, while the map's jobs run: they are cancelled, not left."""
    process = await asyncio.create_subprocess_exec(
        str(COMMAND),
        "map",
        "sleep:1",
        "--concurrency",
        "3",
        "--no-progress",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SHEPHERD_URL": url},
        # As from a terminal: a suite started in the background (``make test &``) passes on
        # an ignored SIGINT, and Python then leaves Ctrl-C ignored too.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdin is not None
    process.stdin.write(b'{"seconds": 30}\n' * 6)
    await process.stdin.drain()
    process.stdin.close()

    async def three_submitted() -> bool:  # one sheep: one runs, two wait, three never go
        code, out, _ = await cli(url, "--json", "jobs", "--model", "sleep")
        return code == 0 and len(out.splitlines()) == 3

    await eventually(three_submitted, within=30)
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    assert process.returncode == 130, err
    assert "interrupted" in err.decode()

    async def all_cancelled() -> bool:
        code, out, _ = await cli(url, "--json", "jobs", "--model", "sleep")
        states = [json.loads(line)["state"] for line in out.splitlines()]
        return code == 0 and states == ["cancelled"] * 3

    await eventually(all_cancelled, within=30)
