"""Live streams (server-sent events) on a whole Shepherd and the real broker: a job's stream to
its end, every job's stream, resuming with Last-Event-ID, and nothing held once clients go."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote, urlsplit

import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import REGISTRY

from schemas.status import JobState, JobStatus
from tests.conftest import delete_namespace
from tests.support.broker_users import MANAGEMENT_PORT
from tests.support.metrics import rejected
from tests.support.polling import eventually
from tests.support.requirements import missing
from tests.support.servers import Servers
from tests.support.sse import Event, read_events
from tests.support.stack import running_stack

WAIT = 30
ORDER = ["job.accepted", "job.queued", "job.running", "job.progress", "job.done"]


def sleep_job(job_id: str, seconds: float) -> dict:
    return {
        "job_id": job_id,
        "model": {"name": "sleep", "version": "1"},
        "payload": {"seconds": seconds, "value": 1},
    }


def echo_job(job_id: str) -> dict:
    return {"job_id": job_id, "model": {"name": "echo", "version": "1"}, "payload": job_id}


@asynccontextmanager
async def stream(
    client: httpx.AsyncClient, path: str, **headers: str
) -> AsyncIterator[AsyncIterator[Event]]:
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        yield read_events(response)


async def published_until_done(
    published: asyncio.Queue[AbstractIncomingMessage], job_id: str
) -> list[dict]:
    """The CloudEvents of ``job_id`` the notifier published, up to its done event."""
    events = []
    async with asyncio.timeout(WAIT):
        while not events or events[-1]["type"] != "io.shepherd.job.done":
            event = json.loads((await published.get()).body)
            if event["subject"] == job_id:
                events.append(event)
    return events


def in_lifecycle_order(kinds: list[str]) -> bool:
    return [ORDER.index(k) for k in kinds] == sorted(ORDER.index(k) for k in kinds)


def subscriptions() -> float:
    return REGISTRY.get_sample_value("shepherd_event_subscriptions") or 0.0


async def test_a_jobs_stream_opens_with_its_status_and_ends_after_done(stack, subscriber, job_id):
    assert (await stack.post("/start-job", json=sleep_job(job_id, 2))).status_code == 202
    async with stream(stack, f"/jobs/{job_id}/events") as events:
        received = [event async for event in events]  # ends by itself

    opening, live = received[0], received[1:]
    assert opening.event == "status" and opening.id is None
    shown = JobStatus.model_validate(opening.json())
    assert shown.job_id == job_id and not shown.ready
    kinds = [e.event for e in live]
    assert kinds[-1] == "job.done" and "job.progress" in kinds
    assert in_lifecycle_order(kinds), kinds
    offsets = [e.offset for e in live]
    assert offsets == sorted(set(offsets)), "ids are increasing stream offsets"
    for event in live:
        cloudevent = event.json()
        assert cloudevent["subject"] == job_id
        assert cloudevent["type"] == "io.shepherd.job." + event.event.removeprefix("job.")
    # Exactly the published events the opening status did not already include.
    reference = await published_until_done(subscriber, job_id)
    ids = [e["id"] for e in reference]
    assert [e.json()["id"] for e in live] == ids[len(ids) - len(live) :]
    for skipped in reference[: len(ids) - len(live)]:
        assert JobState(skipped["data"]["state"]).rank <= shown.state.rank, (skipped, shown)


async def test_progress_reaches_the_stream(stack, job_id):
    assert (await stack.post("/start-job", json=sleep_job(job_id, 2))).status_code == 202
    async with stream(stack, f"/jobs/{job_id}/events") as events:
        progress = [e.json()["data"]["progress"] async for e in events if e.event == "job.progress"]
    assert [p["fraction"] for p in progress][-1] == 1.0
    assert progress[0]["message"].startswith("slept") and progress[-1]["message"] == "awake"


async def test_every_jobs_stream_sees_several_jobs_and_filters_by_kind(stack):
    job_ids = [f"many-{i}" for i in range(3)]
    async with (
        stream(stack, "/events") as everything,
        stream(stack, "/events?types=job.done,job.failed") as outcomes,
    ):
        for job_id in job_ids:
            assert (await stack.post("/start-job", json=echo_job(job_id))).status_code == 202
        async with asyncio.timeout(WAIT):
            done = []
            async for event in outcomes:
                assert event.event == "job.done", event
                done.append(event.json()["subject"])
                if len(done) == len(job_ids):
                    break
            assert sorted(done) == job_ids
            seen: dict[str, list[str]] = {job_id: [] for job_id in job_ids}
            async for event in everything:
                seen[event.json()["subject"]].append(event.event)
                if all(kinds and kinds[-1] == "job.done" for kinds in seen.values()):
                    break
    for kinds in seen.values():
        assert kinds == ["job.accepted", "job.queued", "job.running", "job.done"], seen


async def test_a_reconnect_with_last_event_id_replays_exactly_what_was_missed(
    stack, subscriber, job_id
):
    assert (await stack.post("/start-job", json=sleep_job(job_id, 3))).status_code == 202
    before: list[Event] = []
    async with stream(stack, f"/jobs/{job_id}/events") as events:
        async for event in events:
            before.append(event)
            if event.event == "job.progress":
                break  # and the connection drops, mid-job
    last = before[-1]
    assert (await stack.get(f"/jobs/{job_id}/status")).json()["state"] == "running"
    # Away until the job has ended: the rest of its events are published meanwhile.
    ended = await stack.get(f"/jobs/{job_id}/wait_ready", params={"timeout": WAIT})
    assert ended.json()["state"] == "done"

    async with stream(stack, f"/jobs/{job_id}/events", **{"Last-Event-ID": last.id}) as events:
        after = [event async for event in events]

    assert after, "events were missed, and replayed"
    assert after[-1].event == "job.done"
    assert all(e.offset > last.offset for e in after)
    live = [e.json()["id"] for e in before[1:] + after]  # the opening status has no id
    assert len(live) == len(set(live)), "none twice"
    reference = [e["id"] for e in await published_until_done(subscriber, job_id)]
    assert live == reference[reference.index(live[0]) :], "none lost"

    # Reconnecting after the end: nothing more to say, and EventSource is told to stop.
    gone = await stack.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": after[-1].id})
    assert gone.status_code == 204


async def test_every_jobs_stream_resumes_after_its_last_event_id(stack):
    async with stream(stack, "/events?types=job.done") as events:
        assert (await stack.post("/start-job", json=echo_job("first"))).status_code == 202
        async with asyncio.timeout(WAIT):
            first = await anext(events)
    assert first.json()["subject"] == "first"
    for job_id in ("second", "third"):
        assert (await stack.post("/start-job", json=echo_job(job_id))).status_code == 202
        await stack.get(f"/jobs/{job_id}/wait_ready", params={"timeout": WAIT})
    async with stream(stack, "/events?types=job.done", **{"Last-Event-ID": first.id}) as events:
        async with asyncio.timeout(WAIT):
            replayed = [(await anext(events)).json()["subject"] for _ in range(2)]
    assert replayed == ["second", "third"]


async def test_a_finished_jobs_stream_is_its_final_status(stack, job_id):
    assert (await stack.post("/start-job", json=echo_job(job_id))).status_code == 202
    await stack.get(f"/jobs/{job_id}/wait_ready", params={"timeout": WAIT})
    async with stream(stack, f"/jobs/{job_id}/events") as events:
        received = [event async for event in events]
    assert [(e.event, e.json()["state"]) for e in received] == [("status", "done")]


async def test_unknown_jobs_and_bad_parameters_are_refused(stack, job_id):
    unknown = await stack.get(f"/jobs/{job_id}/events")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    resumed = await stack.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "7"})
    assert resumed.status_code == 404
    for path, headers in [
        ("/events", {"Last-Event-ID": "seven"}),
        ("/events", {"Last-Event-ID": "-1"}),
        ("/events?types=done", {}),
        ("/events?types=job.done,JOB.FAILED", {}),
    ]:
        refused = await stack.get(path, headers=headers)
        assert refused.status_code == 400, (path, headers, refused.text)
        assert refused.json()["errors"][0]["field"] in {"Last-Event-ID", "types"}
    head = await stack.head("/events")
    assert head.status_code == 200 and head.content == b""


@pytest.fixture
async def management(servers: Servers) -> AsyncIterator[httpx.AsyncClient]:
    """RabbitMQ's management API (its statistics lag by a few seconds)."""
    amqp = urlsplit(servers.amqp_url)
    async with httpx.AsyncClient(
        base_url=f"http://{amqp.hostname}:{MANAGEMENT_PORT}/api",
        auth=(amqp.username or "guest", amqp.password or "guest"),
        timeout=5,
    ) as client:
        try:
            await client.get("/overview")
        except httpx.TransportError as exc:
            missing(f"RabbitMQ's management API is not reachable: {exc}")
        yield client


async def test_streams_let_go_of_their_consumers_when_clients_leave(
    stack, names, management, job_id
):
    async def consumers() -> int:
        found = (await management.get("/consumers")).json()
        # A consumer whose channel is gone can linger in the statistics: not counted.
        return sum(
            1 for c in found if c["queue"]["name"] == names.event_stream and c["channel_details"]
        )

    # The gateway's lookups and its job index follow the stream too, a consumer each.
    readers = 2

    async def consuming(count: int) -> bool:
        return await consumers() == readers + count

    assert (await stack.post("/start-job", json=sleep_job(job_id, 30))).status_code == 202
    async with (
        stream(stack, f"/jobs/{job_id}/events") as one,
        stream(stack, "/events"),
        stream(stack, "/events?types=job.done"),
    ):
        assert (await anext(one)).event == "status"
        await eventually(lambda: consuming(3), within=15)
        # Relative to now: other tests' streams may still be closing in this process.
        inside = subscriptions()

    async def released() -> bool:
        return subscriptions() <= inside - 3

    # The clients are gone: their consumers and channels with them.
    await eventually(released, within=5)
    await eventually(lambda: consuming(0), within=15)
    await stack.post(f"/jobs/{job_id}/cancel")


async def test_streams_end_when_the_broker_drops_them_and_resume_afterwards(
    stack, names, management
):
    """The connection of the live streams is closed by RabbitMQ (as a restart would): the
    stream ends instead of hanging, and the client resumes where it was."""
    async with stream(stack, "/events?types=job.done") as events:
        assert (await stack.post("/start-job", json=echo_job("before"))).status_code == 202
        async with asyncio.timeout(WAIT):
            before = await anext(events)

        async def connection() -> str | None:
            found = (await management.get("/connections")).json()
            return next(
                (
                    c["name"]
                    for c in found
                    if c["client_properties"].get("connection_name")
                    == f"{names.namespace}-live-streams"
                ),
                None,
            )

        name = await eventually(connection, within=15)
        closed = await management.delete(
            f"/connections/{quote(name, safe='')}", headers={"X-Reason": "test"}
        )
        assert closed.status_code == 204
        async with asyncio.timeout(WAIT):
            assert [event async for event in events] == []  # ended, no error
    assert (await stack.post("/start-job", json=echo_job("during"))).status_code == 202
    await stack.get("/jobs/during/wait_ready", params={"timeout": WAIT})
    resumed = {"Last-Event-ID": before.id}
    async with stream(stack, "/events?types=job.done", **resumed) as events:
        async with asyncio.timeout(WAIT):
            assert (await anext(events)).json()["subject"] == "during"


async def test_stopping_the_gateway_ends_its_streams(config, names):
    config.sheep = {}
    baseline = subscriptions()
    try:
        async with running_stack(config) as client:
            listener = httpx.AsyncClient(base_url=client.base_url, timeout=WAIT)
            response = await listener.send(listener.build_request("GET", "/events"), stream=True)
            assert response.status_code == 200
        # The stack stopped (within running_stack's 30 s) with the stream open: it ended it.
        assert [event async for event in read_events(response)] == []
        await response.aclose()
        await listener.aclose()
        assert subscriptions() == baseline
    finally:
        await delete_namespace(config.broker.url.get_secret_value(), names, [])


FORGED_KIND = {  # a well-formed event, published under another event's routing key
    "specversion": "1.0",
    "id": "forged-1",
    "source": "/elsewhere",
    "type": "io.shepherd.job.failed",
    "subject": "nobody",
    "data": {"job_id": "nobody", "state": "failed", "model": {"name": "echo", "version": "1"}},
}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe\x00 not utf-8", "not-json"),
        (b"garbage!!", "not-json"),
        (b'{"type": "io.shepherd.job.done"}', "invalid"),
        (json.dumps(FORGED_KIND).encode(), "invalid"),
    ],
    ids=["not-utf8", "not-json", "wrong-shape", "wrong-routing-key"],
)
async def test_a_bad_record_is_skipped_and_every_stream_goes_on_past_it(
    stack, broker, names, job_id, body, reason
):
    before_it, after_it = f"{job_id}-before", f"{job_id}-after"
    before = rejected("events", reason)
    async with stream(stack, "/events?types=job.done") as events:
        assert (await stack.post("/start-job", json=echo_job(before_it))).status_code == 202
        async with asyncio.timeout(WAIT):
            first = await anext(events)
        await broker.publish(names.events_exchange, "job.done", body)
        assert (await stack.post("/start-job", json=echo_job(after_it))).status_code == 202
        async with asyncio.timeout(WAIT):
            second = await anext(events)  # the stream lived through it, and did not relay it
    assert [first.json()["subject"], second.json()["subject"]] == [before_it, after_it]
    assert rejected("events", reason) >= before + 1

    # Resuming from before the bad record reads past it, to the next good one.
    async with stream(stack, "/events?types=job.done", **{"Last-Event-ID": first.id}) as events:
        async with asyncio.timeout(WAIT):
            resumed = await anext(events)
    assert (resumed.id, resumed.json()["subject"]) == (second.id, after_it)
