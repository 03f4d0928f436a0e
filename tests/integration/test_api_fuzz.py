"""Schemathesis against a whole running Shepherd: for requests generated from the gateway's own
OpenAPI document, valid and not, no 5xx, and every response is documented (status code,
content type, body schema).

The stack runs on an event loop in a thread of its own (an anyio portal), because Schemathesis
calls the API synchronously from the test's thread.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis import GenerationMode

from schemas.broker_names import Names
from schemas.config import BrokerConfig, Config, GatewayConfig, NotifierConfig, TokenConfig
from services.gateway.openapi import build_openapi
from tests.conftest import delete_namespace
from tests.support.servers import Servers
from tests.support.stack import bare_sheep, running_stack
from tests.support.webhooks import secret

TOKEN = f"shp_fuzz-{uuid.uuid4().hex}"
CALLBACK = "http://127.0.0.1:9/hook"
"""Where generated callback_urls are pointed: a closed local port, so that no webhook leaves
this machine (the guard lets it through: allow_private_targets is on)."""

pytestmark = pytest.mark.filterwarnings(  # Schemathesis's own strategies, not ours
    "ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning"
)


@pytest.fixture(scope="module")
def gateway(
    servers: Servers, test_bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The base URL of a running stack (auth on, one bare sheep, a class), in a namespace of
    its own."""
    names = Names(f"t{uuid.uuid4().hex[:10]}")
    config = Config(
        broker=BrokerConfig(url=SecretStr(servers.amqp_url), namespace=names.namespace),
        storage=servers.storage_config(test_bucket),
        notifier=NotifierConfig(callback_secret=SecretStr(secret()), allow_private_targets=True),
        gateway=GatewayConfig(
            auth="on",
            tokens=[TokenConfig(name="fuzz", scopes=["read", "submit"], token=SecretStr(TOKEN))],
        ),
        data_root=tmp_path_factory.mktemp("fuzz") / "data",
        sheep={"s1": bare_sheep()},
        sheep_classes={"c1": bare_sheep(port=None)},
    )
    with start_blocking_portal() as portal:
        try:
            with portal.wrap_async_context_manager(running_stack(config)) as client:
                yield str(client.base_url)
        finally:
            portal.call(delete_namespace, servers.amqp_url, names, list(config.sheep))


# Built like the gateway builds the one it serves (checked below), so that the operations are
# known when tests are collected.
schema = schemathesis.openapi.from_dict(
    build_openapi(),
    config=schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
            # Unknown query parameters are ignored, as HTTP APIs commonly do.
            "generation": {"allow-extra-parameters": False},
            "request-timeout": 30,
        }
    ),
)


def test_the_gateway_serves_the_document_fuzzed_here(gateway: str) -> None:
    assert httpx.get(f"{gateway}/openapi.json").json() == build_openapi()


@schema.parametrize()
@settings(
    max_examples=30,
    derandomize=True,  # the same requests on every run, so CI is reproducible
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_keeps_to_its_openapi_document(case: schemathesis.Case, gateway: str) -> None:
    body = case.body
    positive = case.meta is not None and case.meta.generation.mode is GenerationMode.POSITIVE
    if positive and isinstance(body, dict) and isinstance(body.get("sheep_id"), str):
        body["sheep_id"] = "s1"  # which sheep exist is configuration; another would be a 422
    if positive and isinstance(body, dict) and isinstance(body.get("sheep_class"), str):
        body["sheep_class"] = "c1"  # likewise
    if positive and isinstance(body, dict) and isinstance(body.get("callback_url"), str):
        body["callback_url"] = CALLBACK  # which receivers are allowed is configuration too
    timeout = (case.query or {}).get("timeout")
    if case.operation.path.endswith("/wait_ready") and isinstance(timeout, int | float):
        case.query["timeout"] = min(timeout, 0.5)  # a long-poll on a job waiting for inputs
    if case.operation.path.endswith("/events"):
        call_stream_and_validate(case, gateway)
    else:
        case.call_and_validate(base_url=gateway)


def call_stream_and_validate(case: schemathesis.Case, gateway: str) -> None:
    """A live stream never ends by itself: its status and headers are validated, and its
    body only when it is not a stream (a problem)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    request = case.as_transport_kwargs(gateway, headers=auth)
    # Generated headers may hold any Latin-1 character, which requests (Schemathesis's own
    # client) sends as such and httpx only as bytes.
    request["headers"] = {k: v.encode("latin-1") for k, v in request["headers"].items()}
    with httpx.Client(timeout=30) as http, http.stream(**request) as response:
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        content = b"" if streaming else response.read()
        answered = httpx.Response(
            response.status_code,
            headers=response.headers,
            content=content,
            request=response.request,
        )
    answered.elapsed = response.elapsed  # known once the stream is closed
    # Told which headers were sent, the auth check knows the token was ours, not generated.
    case.validate_response(answered, headers=auth)
