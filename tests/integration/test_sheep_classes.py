"""Sheep that join on their own: ``shepherd sheep --class NAME`` processes with ids made at
start take their class's jobs and the pool's, show in ``GET /status``, and leave without a
config change: cleanly (gone from the status at once, their lease queue deleted) or killed
(their job runs again elsewhere, their runner quits, the status drops them)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import httpx
import pytest

from schemas.config import Config
from services.setup import delete_namespace
from tests.support.polling import eventually
from tests.support.processes import write_config
from tests.support.stack import bare_sheep, running_stack

CLASS = "echoes"
ECHO = {"name": "echo", "version": "1"}


@dataclass
class Member:
    process: asyncio.subprocess.Process
    log: Path

    async def sheep_id(self) -> str:
        """The id the sheep made for itself, as it logs it once running."""

        async def logged() -> str | None:
            found = re.search(r"shepherd running: sheep:(\S+)", self.log.read_text())
            return found and found.group(1)

        return await eventually(logged, within=60, every=0.2)


async def join(config_file: Path, log: Path) -> Member:
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "services.cli", "sheep", "--class", CLASS),
            *("-c", str(config_file)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Member(process, log)


async def fleet(client: httpx.AsyncClient) -> dict[str, dict]:
    return (await client.get("/status")).json()["sheep"]


async def run_jobs(client: httpx.AsyncClient, count: int, **target: str) -> set[str]:
    """Submit ``count`` echo jobs, wait for each to be done; the sheep that ran them."""
    ids = []
    for n in range(count):
        answer = await client.post("/start-job", json={"model": ECHO, "payload": n, **target})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["job_id"])
    ran = set()
    for job_id in ids:
        status = (await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 60})).json()
        assert status["state"] == "done", status
        ran.add(status["sheep_id"])
    return ran


def runners_of(pid: int) -> list[int]:
    """The runner processes whose parent is ``pid``."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"runner.cli" in command:
            children.append(int(entry.name))
    return children


def exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def lease_queue_exists(config: Config, sheep_id: str, names) -> bool:
    connection = await aio_pika.connect(config.broker.url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(names.lease_queue(sheep_id), passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return True


@pytest.mark.timeout(240)
async def test_sheep_of_a_class_join_share_the_work_and_leave(config, names, tmp_path):
    config.sheep = {}
    config.sheep_classes = {CLASS: bare_sheep(port=None)}
    config.gateway.forget_sheep_after = 1.0  # after three announcement intervals all the same
    # The job the test kills a sheep under is leased (its expiring lease queue declared and
    # touched, the copy renewed) and comes back when its copy expires.
    config.broker.lease_after = 0.5
    config.broker.lease_time = 3.0
    members: list[Member] = []
    joined: list[str] = []
    try:
        async with running_stack(config) as client:
            config_file = write_config(config, tmp_path / "shepherd.yml")
            for n in range(3):
                members.append(await join(config_file, tmp_path / f"sheep{n}.log"))
            joined = [await member.sheep_id() for member in members]
            assert len(set(joined)) == 3 and all(s.startswith(f"{CLASS}-") for s in joined)

            await eventually(all_alive(client, joined), within=30, every=0.2)
            assert {s["sheep_class"] for s in (await fleet(client)).values()} == {CLASS}

            # Pool jobs and jobs for the class run on the members, more than one of them.
            ran = await run_jobs(client, 12) | await run_jobs(client, 12, sheep_class=CLASS)
            assert ran <= set(joined) and len(ran) >= 2
            unknown = await client.post(
                "/start-job", json={"model": ECHO, "sheep_class": "nope", "payload": 1}
            )
            assert unknown.status_code == 422 and "sheep_class" in unknown.text

            # A clean stop: the sheep says it leaves, its lease queue goes.
            leaving, left = members[0], joined[0]
            leaving.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(leaving.process.wait(), 30) == 0
            assert left not in await fleet(client)
            assert not await lease_queue_exists(config, left, names)

            # Killed while it runs a job: the job runs again elsewhere, the runner quits, the
            # status drops the sheep once it has been silent.
            job = {"model": {"name": "sleep", "version": "1"}, "sheep_class": CLASS}
            answer = await client.post("/start-job", json={**job, "payload": {"seconds": 3}})
            job_id = answer.json()["job_id"]

            async def running_on() -> str | None:
                status = (await client.get(f"/jobs/{job_id}/status")).json()
                return status["sheep_id"] if status["state"] == "running" else None

            victim_id = await eventually(running_on, within=30)
            victim = members[joined.index(victim_id)]
            runners = runners_of(victim.process.pid)
            assert runners
            victim.process.kill()
            await victim.process.wait()
            status = (await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 60})).json()
            assert status["state"] == "done" and status["sheep_id"] != victim_id
            assert status["attempt"] == 2

            async def runners_gone() -> bool:
                return not any(map(exists, runners))

            await eventually(runners_gone, within=15, every=0.2)

            async def dropped() -> bool:
                return victim_id not in await fleet(client)

            await eventually(dropped, within=30, every=0.5)

            # Two more join: no config change, and they take work at once.
            for n in range(2):
                members.append(await join(config_file, tmp_path / f"more{n}.log"))
            joined += [await member.sheep_id() for member in members[3:]]
            await eventually(all_alive(client, joined[3:]), within=30, every=0.2)
            assert await run_jobs(client, 12, sheep_class=CLASS) <= set(joined) - {left, victim_id}
    finally:
        for member in members:
            if member.process.returncode is None:
                member.process.send_signal(signal.SIGTERM)
        await asyncio.gather(*(m.process.wait() for m in members))
        await delete_namespace(
            config.broker.url.get_secret_value(),
            names,
            [],
            classes=[CLASS],
            joined=joined,
        )


def all_alive(client: httpx.AsyncClient, sheep_ids: list[str]):
    async def probe() -> bool:
        listed = await fleet(client)
        return all(listed.get(s, {}).get("alive") for s in sheep_ids)

    return probe
