"""Secrets stay secret and the gateway asks for tokens, end to end on real servers.

The stack runs with a RabbitMQ user and a MinIO user of the test's own, so that their
passwords can be searched for in every log line (DEBUG, aio-pika included), every answer,
every event and every byte Shepherd stored or wrote to disk.
"""

from __future__ import annotations

import asyncio
import logging
import re
import traceback
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import httpx
import pytest
from aiormq.exceptions import ProbableAuthenticationError
from minio import Minio
from pydantic import SecretStr

from schemas.config import (
    BrokerConfig,
    Config,
    GatewayConfig,
    TokenConfig,
    WebhookSubscription,
)
from services.common.broker import Broker
from services.common.storage import Storage
from services.gateway.app import Gateway
from services.gateway.openapi import build_openapi
from tests.support.credentials import Credentials, own_credentials
from tests.support.routes import gateway_routes
from tests.support.servers import Servers
from tests.support.stack import bare_sheep, free_port, running_stack

READ_TOKEN = f"shp_read-{uuid.uuid4().hex}"
BOTH_TOKEN = f"shp_both-{uuid.uuid4().hex}"
WRONG_TOKEN = f"shp_wrong-{uuid.uuid4().hex}"
REGISTRY_PASSWORD = f"registry-pw-{uuid.uuid4().hex}"
WEBHOOK_SECRET = f"whsec_{uuid.uuid4().hex}"
CALLBACK_SECRET = f"whsec_{uuid.uuid4().hex}"
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
BOTH = {"Authorization": f"Bearer {BOTH_TOKEN}"}


@dataclass
class Secured:
    config: Config
    credentials: Credentials
    routes: list[tuple[str, str]]

    @property
    def secrets(self) -> list[str]:
        """What must never show: every credential, and tokens, even a wrong one presented."""
        return [
            self.credentials.amqp_password,
            self.credentials.s3_secret_key,
            self.credentials.s3_access_key,
            REGISTRY_PASSWORD,
            WEBHOOK_SECRET,
            CALLBACK_SECRET,
            READ_TOKEN,
            BOTH_TOKEN,
            WRONG_TOKEN,
        ]


@pytest.fixture
async def secured(config: Config, broker: Broker, servers: Servers) -> AsyncIterator[Secured]:
    """The test config with credentials of its own, auth on and every kind of secret set."""
    original = (config.broker.url, config.storage.access_key, config.storage.secret_key)
    async with own_credentials(servers) as credentials:
        config.broker.url = SecretStr(credentials.amqp_url)
        config.storage.access_key = SecretStr(credentials.s3_access_key)
        config.storage.secret_key = SecretStr(credentials.s3_secret_key)
        config.registry.password = SecretStr(REGISTRY_PASSWORD)
        config.notifier.webhooks = [
            WebhookSubscription(
                name="hook",
                url=f"http://127.0.0.1:{free_port()}/hook",
                secret=SecretStr(WEBHOOK_SECRET),
            )
        ]
        config.notifier.callback_secret = SecretStr(CALLBACK_SECRET)
        config.notifier.allow_private_targets = True  # the hook is on loopback
        config.gateway = GatewayConfig(
            auth="on",
            max_payload_bytes=4096,
            tokens=[
                TokenConfig(name="reader", scopes=["read"], token=SecretStr(READ_TOKEN)),
                TokenConfig(name="ci", scopes=["read", "submit"], token=SecretStr(BOTH_TOKEN)),
            ],
        )
        try:
            yield Secured(config, credentials, gateway_routes(config, broker))
        finally:  # the broker fixture cleans up with these after the users are gone
            config.broker.url, config.storage.access_key, config.storage.secret_key = original


@asynccontextmanager
async def events_of(servers: Servers, exchange: str) -> AsyncIterator[list[bytes]]:
    """Every message published to ``exchange`` while inside."""
    bodies: list[bytes] = []
    connection = await aio_pika.connect(servers.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "#")

        mark, marked = uuid.uuid4().hex.encode(), asyncio.Event()

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if message.body == mark:
                marked.set()
            else:
                bodies.append(message.body)

        await queue.consume(keep, no_ack=True)
        yield bodies
        # What was published before the mark is in the queue before it.
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(mark), "test.mark")
        async with asyncio.timeout(10):
            await marked.wait()


def echo(job_id: str, **extra: object) -> dict:
    return {"job_id": job_id, "model": {"name": "echo", "version": "1"}, **extra}


async def wait_done(client: httpx.AsyncClient, job_id: str) -> httpx.Response:
    response = await client.get(f"/jobs/{job_id}/wait_ready?timeout=30", headers=READ)
    assert response.status_code == 200, response.text
    return response


def shown(response: httpx.Response) -> str:
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return f"{response.request.method} {response.request.url} -> {response.status_code}\n" + (
        f"{headers}\n{response.text}"
    )


async def stored(minio_client: Minio, bucket: str, prefixes: list[str]) -> dict[str, bytes]:
    def read() -> dict[str, bytes]:
        found = {}
        for prefix in prefixes:
            for obj in minio_client.list_objects(bucket, prefix=prefix, recursive=True):
                response = minio_client.get_object(bucket, obj.object_name)
                try:
                    found[obj.object_name] = response.read()
                finally:
                    response.close()
                    response.release_conn()
        return found

    return await asyncio.to_thread(read)


def written(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_no_secret_shows_in_logs_answers_events_status_or_files(
    secured, servers, names, minio_client, test_bucket, caplog, job_id
):
    caplog.set_level(logging.DEBUG)
    config = secured.config
    config.sheep = {"s1": bare_sheep()}
    uploaded, failing = f"{job_id}-upload", f"{job_id}-fail"
    wrong = {"Authorization": f"Bearer {WRONG_TOKEN}"}
    answers: dict[str, httpx.Response] = {}
    async with events_of(servers, names.events_exchange) as events, running_stack(config) as c:

        async def ask(name: str, status: int, method: str, url: str, **kw: Any) -> None:
            answers[name] = await c.request(method, url, **kw)
            assert answers[name].status_code == status, (name, answers[name].text)

        await ask("declare", 202, "POST", "/start-job", json=echo(job_id, payload=1), headers=BOTH)
        await ask(
            "declare inputs",
            202,
            "POST",
            "/start-job",
            json=echo(uploaded, inputs=["input.json"]),
            headers=BOTH,
        )
        await ask(
            "upload", 201, "PUT", f"/jobs/{uploaded}/input/input.json", content=b"2", headers=BOTH
        )
        fail = {"job_id": failing, "model": {"name": "fail", "version": "1"}, "payload": 1}
        await ask("declare failing", 202, "POST", "/start-job", json=fail, headers=BOTH)
        for one in (job_id, uploaded, failing):
            await ask(f"wait {one}", 200, "GET", f"/jobs/{one}/wait_ready?timeout=30", headers=READ)
        await ask("result", 200, "GET", f"/jobs/{job_id}/result", headers=READ)
        await ask("input", 200, "GET", f"/jobs/{uploaded}/input/input.json", headers=READ)
        await ask("failed result", 409, "GET", f"/jobs/{failing}/result", headers=READ)
        await ask("no token", 401, "GET", f"/jobs/{job_id}/status")
        await ask("wrong token", 401, "GET", f"/jobs/{job_id}/status", headers=wrong)
        await ask("no scope", 403, "POST", "/start-job", json=echo(f"{job_id}-x"), headers=READ)
        await ask("bad id", 400, "GET", "/jobs/.hidden/status", headers=READ)
        await ask("no route", 404, "GET", "/jobs/a%2Fb/status", headers=READ)
        await ask("unknown job", 404, "GET", "/jobs/no-such-job/status", headers=READ)
        too_big = echo(f"{job_id}-y", payload="x" * 5000)
        await ask("too big", 413, "POST", "/start-job", json=too_big, headers=BOTH)
        await ask("invalid", 422, "POST", "/start-job", json={"job_id": "x"}, headers=BOTH)
        await ask("method", 405, "PATCH", "/start-job", headers=BOTH)
        await ask("fleet", 200, "GET", "/status", headers=READ)
        await ask("health", 200, "GET", "/health")
        await ask("metrics", 200, "GET", "/metrics", headers=READ)
        await ask("openapi", 200, "GET", "/openapi.json")
    assert [answers[f"wait {j}"].json()["state"] for j in (job_id, uploaded, failing)] == [
        "done",
        "done",
        "failed",
    ]
    assert any(f'"subject":"{job_id}"'.encode() in e for e in events), "no job events seen"

    places = {f"answer {name}": shown(a) for name, a in answers.items()}
    places["logs"] = caplog.text
    places |= {f"event {i}": body.decode() for i, body in enumerate(events)}
    objects = await stored(
        minio_client, test_bucket, [f"{j}/" for j in (job_id, uploaded, failing)]
    )
    assert f"{failing}/status.json" in objects and f"{failing}/logs/stderr.txt" in objects
    places |= {key: data.decode("utf-8", "replace") for key, data in objects.items()}
    places |= {p: data.decode("utf-8", "replace") for p, data in written(config.data_root).items()}
    for secret in secured.secrets:
        leaks = [where for where, text in places.items() if secret in text]
        assert not leaks, f"{secret[:12]}... shows in {leaks}"


async def test_wrong_credentials_are_reported_without_showing_them(
    config, broker, names, servers, caplog
):
    caplog.set_level(logging.DEBUG)
    wrong_password, wrong_secret = f"wrong-amqp-{uuid.uuid4().hex}", f"wrong-s3-{uuid.uuid4().hex}"
    amqp = urlsplit(servers.amqp_url)
    wrong_url = f"amqp://{amqp.username}:{wrong_password}@{amqp.hostname}:{amqp.port or 5672}/"
    with pytest.raises(ProbableAuthenticationError) as refused:
        await Broker.connect(BrokerConfig(url=SecretStr(wrong_url)), names, "wrong-password")
    storage = Storage(config.storage.model_copy(update={"secret_key": SecretStr(wrong_secret)}))
    app = Gateway(config, broker, storage).app
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        health = await client.get("/health")
        lookup = await client.get("/jobs/some-job/status")
    assert health.status_code == 503
    assert lookup.status_code >= 500
    said = "".join(traceback.format_exception(refused.value)) + caplog.text
    said += shown(health) + shown(lookup)
    assert wrong_password not in said and wrong_secret not in said


async def test_every_route_but_health_docs_and_the_dashboard_page_needs_a_token(secured, job_id):
    secured.config.sheep = {}
    async with running_stack(secured.config) as client:
        for method, template in secured.routes:
            path = template.replace("{job_id}", job_id).replace("{file:path}", "a.json")
            anonymous = await client.request(method, path)
            if template in {"/health", "/openapi.json", "/asyncapi.json", "/docs", "/ui"}:
                assert anonymous.status_code in {200, 503}, (method, path)
                continue
            assert anonymous.status_code == 401, (method, path, anonymous.text)
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            # A live stream (GET /events) never ends by itself: its body is not waited for.
            request = client.build_request(method, path, headers=READ)
            reader = await client.send(request, stream=True)
            if not reader.headers["content-type"].startswith("text/event-stream"):
                await reader.aread()
            await reader.aclose()
            if method == "GET":
                assert reader.status_code not in {401, 403}, (method, path, reader.text)
            else:
                assert reader.status_code == 403, (method, path, reader.text)
                assert reader.json()["required_scope"] == "submit"
    assert ("DELETE", "/jobs/{job_id}") in secured.routes  # covered without being listed
    assert ("PUT", "/jobs/{job_id}/input/{file:path}") in secured.routes


ENV_DUMP = """
import json, os, sys
from pathlib import Path
from runner import Runner

class EnvDump(Runner):
    def process(self, inputs_dir: Path, outputs_dir: Path) -> None:
        dump = {"environ": dict(os.environ), "argv": sys.argv}
        (outputs_dir / "output.json").write_text(json.dumps(dump))
"""


async def test_the_runner_gets_no_credentials(secured, monkeypatch, tmp_path, job_id):
    model = tmp_path / "models" / "envdump" / "1"
    model.mkdir(parents=True)
    (model / "model.py").write_text(ENV_DUMP)
    (model / "shepherd-runner.yaml").write_text("runner: model:EnvDump\n")
    config, credentials = secured.config, secured.credentials
    config.sheep = {"s1": bare_sheep(working_directory=tmp_path / "models", devices=["3"])}
    # What a sheep's environment may hold: its own overrides, the store's and the broker's
    # usual variables, a token interpolated into the config, and credentials under any name.
    for name, value in {
        "SHEPHERD_BROKER__URL": credentials.amqp_url,
        "SHEPHERD_STORAGE__SECRET_KEY": credentials.s3_secret_key,
        "AWS_SECRET_ACCESS_KEY": credentials.s3_secret_key,
        "MINIO_ROOT_PASSWORD": credentials.s3_secret_key,
        "RABBITMQ_DEFAULT_PASS": credentials.amqp_password,
        "CI_TOKEN": BOTH_TOKEN,
        "BACKUP_BROKER": credentials.amqp_url,
        "DEPLOY_NOTES": f"registry password {REGISTRY_PASSWORD}",
        "LANG": "C.UTF-8",
        "MODEL_SETTING": "keep-me",
    }.items():
        monkeypatch.setenv(name, value)
    async with running_stack(config) as client:
        declared = await client.post(
            "/start-job",
            json={"job_id": job_id, "model": {"name": "envdump", "version": "1"}, "payload": 1},
            headers=BOTH,
        )
        assert declared.status_code == 202
        assert (await wait_done(client, job_id)).json()["state"] == "done"
        result = await client.get(f"/jobs/{job_id}/result", headers=READ)
    seen = result.json()
    environ, argv = seen["environ"], seen["argv"]
    assert environ["MODEL_SETTING"] == "keep-me" and environ["LANG"] == "C.UTF-8"
    assert environ["PATH"] and environ["HOME"]
    assert environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert argv[0].endswith("cli.py") and "--bind" in argv  # the runner's own command line
    for name in ("CI_TOKEN", "BACKUP_BROKER", "DEPLOY_NOTES"):
        assert name not in environ
    assert not [n for n in environ if n.startswith(("SHEPHERD_", "AWS_", "MINIO_", "RABBITMQ_"))]
    for secret in secured.secrets:
        assert secret not in result.text, f"{secret[:12]}... reached the runner"


def test_every_route_is_documented_and_every_documented_route_exists(secured):
    """``/metrics`` and ``/docs`` included: the document is the whole API, no more."""
    documented = {
        (method.upper(), path) for path, item in build_openapi()["paths"].items() for method in item
    }
    served = {(method, re.sub(r":\w+}", "}", path)) for method, path in secured.routes}
    assert served == documented


async def test_the_docs_page_is_served_whole_by_the_gateway(secured):
    """No script or style from elsewhere: the page works where no CDN can be reached, and,
    like the document it shows, without a token."""
    secured.config.sheep = {}
    async with running_stack(secured.config) as client:
        page = await client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        sources = re.findall(r'(?:src|href|spec-url)="([^"]+)"', page.text)
        assert sources and all(s.startswith("/") for s in sources), sources
        assert "/openapi.json" in sources
        for source in sources:
            fetched = await client.get(source)
            assert fetched.status_code == 200, (source, fetched.status_code)
        script = await client.get("/docs/static/rapidoc-min.js")
        assert "javascript" in script.headers["content-type"]
        assert "RapiDoc" in script.text
        assert (await client.get("/metrics")).status_code == 401  # the rest still needs one
