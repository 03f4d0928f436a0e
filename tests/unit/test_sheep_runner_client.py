"""The sheep's runner client against a scripted ROUTER peer: frames it must tolerate, and the
three ways a runner is lost (exit, silence, never ready)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import zmq
import zmq.asyncio

from schemas.runner import (
    Accounting,
    Done,
    Failed,
    Heartbeat,
    Hello,
    ProgressUpdate,
    Ready,
    Run,
    RunnerMessage,
    Started,
    Withdraw,
    Withdrawn,
    sheep_message,
)
from schemas.status import ErrorInfo
from services.sheep.runner_client import RunnerClient, RunnerLost
from tests.support.metrics import rejected

READY = Ready(model="echo:1", load_seconds=0.5, pid=4242)
RUN = Run(job_id="job-1", inputs_dir="/in", outputs_dir="/out")
DONE = Done(
    job_id="job-1",
    accounting=Accounting(
        wall_seconds=1, cpu_user_seconds=1, cpu_system_seconds=0, max_rss_bytes=1
    ),
)


class Peer:
    """The runner's side: a ROUTER that replies with whatever the test scripts."""

    def __init__(self, context: zmq.asyncio.Context) -> None:
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.identity = b""

    async def receive(self) -> Hello | Run | Withdraw:
        self.identity, frame = await self.socket.recv_multipart()
        return sheep_message.validate_json(frame)

    async def send(self, *messages: RunnerMessage | bytes) -> None:
        for message in messages:
            frame = message if isinstance(message, bytes) else message.model_dump_json().encode()
            await self.socket.send_multipart([self.identity, frame])


@pytest.fixture
async def context() -> AsyncIterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def peer(context: zmq.asyncio.Context) -> Peer:
    return Peer(context)


@pytest.fixture
async def exited() -> asyncio.Future[int]:
    return asyncio.get_running_loop().create_future()


async def connect(
    context: zmq.asyncio.Context,
    peer: Peer,
    exited: asyncio.Future[int],
    *,
    heartbeat_timeout: float = 5.0,
    load_timeout: float = 5.0,
) -> tuple[RunnerClient, Ready]:
    return await RunnerClient.connect(
        context,
        peer.address,
        exited,
        sheep_id="s1",
        heartbeat_timeout=heartbeat_timeout,
        load_timeout=load_timeout,
    )


async def handshake(peer: Peer, *before_ready: RunnerMessage | bytes) -> None:
    hello = await peer.receive()
    assert hello == Hello(sheep_id="s1")
    await peer.send(*before_ready, READY)


async def test_handshake_waits_for_ready_through_heartbeats_and_garbage(context, peer, exited):
    script = asyncio.create_task(handshake(peer, b"not json", b'{"type": "nope"}', Heartbeat()))
    client, ready = await connect(context, peer, exited)
    await script
    assert ready == READY
    client.close()


async def test_run_forwards_progress_and_ignores_what_is_not_about_its_job(context, peer, exited):
    script = asyncio.create_task(handshake(peer))
    client, _ = await connect(context, peer, exited)
    await script
    await peer.send(Heartbeat(), Heartbeat())  # queued while idle
    await asyncio.sleep(0.05)
    progress: list[ProgressUpdate] = []

    async def on_progress(update: ProgressUpdate) -> None:
        progress.append(update)

    running = asyncio.create_task(client.run(RUN, on_progress))
    assert await peer.receive() == RUN
    stale = ProgressUpdate(job_id="job-0", fraction=0.9)
    mine = ProgressUpdate(job_id="job-1", fraction=0.5, message="half")
    other_done = Done(job_id="job-0", accounting=DONE.accounting)
    await peer.send(b"\xff", stale, Heartbeat(job_id="job-1"), mine, other_done, DONE)

    assert (await running).outcome == DONE
    assert progress == [mine]
    client.close()


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        ([b"not json"], "not-json"),
        ([b"\xff\xfe\x00"], "not-json"),
        ([b"[" * 100_000 + b"]" * 100_000], "not-json"),
        ([b'{"type": "done", "job_id": "../x"}'], "invalid"),
        ([b"junk", b'{"type": "nope"}'], "invalid"),  # multipart: each part is refused
        ([b'{"type": "progress", "job_id": "' + b"a" * (64 << 20) + b'"}'], "invalid"),
    ],
    ids=["not-json", "not-utf8", "deeply-nested", "unsafe-job-id", "multipart", "huge"],
)
async def test_garbage_during_a_run_is_counted_and_ignored(context, peer, exited, garbage, reason):
    script = asyncio.create_task(handshake(peer))
    client, _ = await connect(context, peer, exited)
    await script
    before = rejected("runner", reason)
    running = asyncio.create_task(client.run(RUN, _ignore))
    await peer.receive()
    await peer.socket.send_multipart([peer.identity, *garbage])
    await peer.send(DONE)
    assert (await running).outcome == DONE
    assert rejected("runner", reason) >= before + 1
    client.close()


async def test_a_runner_babbling_garbage_is_as_lost_as_a_silent_one(context, peer, exited):
    script = asyncio.create_task(handshake(peer))
    client, _ = await connect(context, peer, exited, heartbeat_timeout=0.5)
    await script
    running = asyncio.create_task(client.run(RUN, _ignore))
    await peer.receive()

    async def babble() -> None:
        while True:
            await peer.send(b"garbage")
            await asyncio.sleep(0.05)

    babbler = asyncio.create_task(babble())
    try:
        async with asyncio.timeout(3):
            with pytest.raises(RunnerLost) as lost:
                await running
    finally:
        babbler.cancel()
    assert lost.value.error.type == "RunnerUnresponsive"
    client.close()


async def test_a_failure_without_job_id_ends_the_run(context, peer, exited):
    script = asyncio.create_task(handshake(peer))
    client, _ = await connect(context, peer, exited)
    await script
    running = asyncio.create_task(client.run(RUN, _ignore))
    await peer.receive()
    failed = Failed(error=ErrorInfo(type="ProtocolError", message="malformed message: x"))
    await peer.send(failed)
    assert (await running).outcome == failed
    client.close()


HELD = Run(job_id="job-2", inputs_dir="/in2", outputs_dir="/out2")


async def test_a_held_job_is_told_apart_and_its_words_kept_for_its_turn(context, peer, exited):
    script = asyncio.create_task(handshake(peer))
    client, _ = await connect(context, peer, exited)
    await script
    await client.start(RUN)
    await client.start(HELD)
    assert [await peer.receive(), await peer.receive()] == [RUN, HELD]
    done_held = Done(job_id="job-2", accounting=DONE.accounting, logs=(9, 4))
    half = ProgressUpdate(job_id="job-2", fraction=0.5)
    await peer.send(
        Started(job_id="job-1", logs=(0, 0)),
        Withdrawn(job_id="job-7"),  # about no job of ours: dropped
        DONE.model_copy(update={"logs": (5, 3)}),
        Started(job_id="job-2", logs=(6, 3)),
        half,
        done_held,
    )
    first = await client.verdict(RUN, _ignore)
    assert (first.outcome.job_id, first.logs) == ("job-1", ((0, 0), (5, 3)))
    progress: list[ProgressUpdate] = []

    async def on_progress(update: ProgressUpdate) -> None:
        progress.append(update)

    second = await client.verdict(HELD, on_progress)
    assert (second.outcome, second.logs) == (done_held, ((6, 3), (9, 4)))
    assert progress == [half]
    client.close()


@pytest.mark.parametrize("in_time", [True, False], ids=["in-time", "too-late"])
async def test_withdrawing_a_held_job_says_whether_it_never_ran(context, peer, exited, in_time):
    script = asyncio.create_task(handshake(peer))
    client, _ = await connect(context, peer, exited)
    await script
    await client.start(RUN)
    await client.start(HELD)
    await client.withdraw("job-2")
    assert [await peer.receive() for _ in range(3)] == [RUN, HELD, Withdraw(job_id="job-2")]
    if in_time:  # the runner's answer may come before the running job's outcome
        await peer.send(Withdrawn(job_id="job-2"), DONE)
    else:
        await peer.send(DONE, Started(job_id="job-2"))
    assert (await client.verdict(RUN, _ignore)).outcome == DONE
    assert await client.withdrawn("job-2") is in_time
    client.close()


async def test_silence_past_the_heartbeat_timeout_loses_the_runner(context, peer, exited):
    script = asyncio.create_task(handshake(peer))
    client, _ = await connect(context, peer, exited, heartbeat_timeout=0.2)
    await script
    running = asyncio.create_task(client.run(RUN, _ignore))
    await peer.receive()
    await peer.send(Heartbeat(job_id="job-1"))
    with pytest.raises(RunnerLost) as lost:
        await running
    assert lost.value.error == ErrorInfo(
        type="RunnerUnresponsive", message="runner stopped answering (no heartbeat for 0.2 s)"
    )
    client.close()


async def test_the_runner_exiting_mid_job_is_noticed_at_once(context, peer, exited):
    script = asyncio.create_task(handshake(peer))
    client, _ = await connect(context, peer, exited, heartbeat_timeout=60)
    await script
    running = asyncio.create_task(client.run(RUN, _ignore))
    await peer.receive()
    exited.set_result(-9)
    async with asyncio.timeout(1):
        with pytest.raises(RunnerLost, match=r"^runner exited with code -9$"):
            await running
    client.close()


async def test_a_runner_that_cannot_load_its_model_says_why(context, peer, exited):
    error = ErrorInfo(type="ImportError", message="no module named model", traceback="Tb")
    script = asyncio.create_task(peer.receive())
    connecting = asyncio.create_task(connect(context, peer, exited))
    await script
    await peer.send(Failed(error=error))
    with pytest.raises(RunnerLost) as lost:
        await connecting
    assert lost.value.error == ErrorInfo(
        type="ImportError", message="runner failed to start: no module named model", traceback="Tb"
    )


async def test_a_runner_that_never_becomes_ready_is_lost(context, peer, exited):
    with pytest.raises(RunnerLost) as lost:
        await connect(context, peer, exited, load_timeout=0.2)
    assert lost.value.error.type == "RunnerLoadTimeout"
    assert lost.value.error.message == "runner did not become ready within 0.2 s"


async def _ignore(update: ProgressUpdate) -> None:
    del update
