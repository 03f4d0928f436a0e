"""The AsyncAPI document: valid AsyncAPI 3.0.0, internally consistent, and complete with
respect to the topology it describes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from schemas.__main__ import export
from schemas.asyncapi import build_asyncapi
from schemas.broker_names import Names
from schemas.events import JobEvent, JobRejectedEvent, JobRejection
from schemas.job import ModelRef
from schemas.status import JobState, JobStatus
from schemas.topology import build_topology

FIXTURES = Path(__file__).parents[1] / "fixtures" / "asyncapi"
NAMES = Names("ns")
SHEEP = ["gpu0"]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_asyncapi(NAMES, "mq.example:5672")


@pytest.fixture(scope="module")
def meta_schema() -> jsonschema_rs.Draft7Validator:
    """The official JSON Schema of AsyncAPI 3.0.0 (see the fixture's README)."""
    return jsonschema_rs.Draft7Validator(
        json.loads((FIXTURES / "asyncapi-3.0.0.schema.json").read_text())
    )


def test_the_document_is_valid_asyncapi_3(document, meta_schema):
    errors = [f"{e.instance_path}: {e}" for e in meta_schema.iter_errors(document)]
    assert errors == []
    assert document["asyncapi"] == "3.0.0"


def test_the_meta_schema_does_refuse_what_is_not_asyncapi_3(document, meta_schema):
    broken = json.loads(json.dumps(document))
    broken["operations"]["takeSubmission"]["action"] = "publish"  # AsyncAPI 2's word
    assert not meta_schema.is_valid(broken)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def test_every_reference_resolves(document):
    refs = set(_refs(document))
    assert len(refs) > 50
    for ref in refs:
        _resolve(document, ref)


def test_operations_name_existing_channels_and_only_their_messages(document):
    for operation_id, operation in document["operations"].items():
        channel_ref = operation["channel"]["$ref"]
        channel = _resolve(document, channel_ref)
        assert operation["messages"], operation_id
        for message in operation["messages"]:
            prefix, _, name = message["$ref"].rpartition("/")
            assert prefix == f"{channel_ref}/messages", operation_id
            assert name in channel["messages"], operation_id
        if reply := operation.get("reply"):
            reply_channel = reply["channel"]["$ref"]
            for message in reply["messages"]:
                assert message["$ref"].startswith(f"{reply_channel}/messages/")


def test_every_message_is_used_by_a_channel(document):
    used = {
        ref["$ref"].rpartition("/")[2]
        for channel in document["channels"].values()
        for ref in channel["messages"].values()
    }
    assert used == set(document["components"]["messages"])


def _channels(document: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [c for c in document["channels"].values() if c["bindings"]["amqp"]["is"] == kind]


def _address_pattern(address: str) -> re.Pattern[str]:
    """The address with each ``{parameter}`` standing for one word (dots excluded)."""
    return re.compile(re.sub(r"\\\{\w+\\\}", r"[^.]+", re.escape(address)))


def _topic_matches(pattern: list[str], words: list[str]) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` any number of them."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_topic_matches(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _topic_matches(rest, words[1:])


def _routes(exchange_type: str, binding_key: str, address: str | None) -> bool:
    """Whether a message published to ``address`` (a routing key, ``{parameters}`` standing
    for any word) can reach a binding with ``binding_key``."""
    if exchange_type in ("fanout", "headers"):
        return True  # the routing key plays no part
    if address is None:
        return exchange_type == "topic" and binding_key == "#"
    if exchange_type == "direct":
        return bool(_address_pattern(address).fullmatch(binding_key))
    sample = re.sub(r"\{\w+\}", "x", address)
    return _topic_matches(binding_key.split("."), sample.split("."))


def test_every_exchange_queue_and_binding_of_the_topology_is_described(document):
    topology = build_topology(NAMES, delivery_limit=3, sheep_ids=SHEEP)
    on_exchanges = _channels(document, "routingKey")
    exchanges = {c["bindings"]["amqp"]["exchange"]["name"] for c in on_exchanges}
    for exchange in topology.exchanges:
        assert exchange.name in exchanges, exchange.name
    for channel in on_exchanges:
        exchange = channel["bindings"]["amqp"]["exchange"]
        if exchange["name"]:  # not the default exchange, which has no declaration
            kind = next(e.type for e in topology.exchanges if e.name == exchange["name"])
            assert exchange["type"] == kind, exchange["name"]

    queues = _channels(document, "queue")
    for queue in topology.queues:
        assert any(_address_pattern(c["address"]).fullmatch(queue.name) for c in queues), queue.name

    types = {e.name: e.type for e in topology.exchanges}
    for binding in topology.bindings:
        addresses = [
            c["address"]
            for c in on_exchanges
            if c["bindings"]["amqp"]["exchange"]["name"] == binding.exchange
        ]
        assert any(_routes(types[binding.exchange], binding.routing_key, a) for a in addresses), (
            binding
        )


def test_the_submit_operation_documents_its_reply(document):
    take = document["operations"]["takeSubmission"]
    assert take["action"] == "receive"
    assert _resolve(document, take["channel"]["$ref"])["address"] == "ns.submit"
    assert take["reply"]["address"]["location"] == "$message.header#/reply_to"
    submit = document["channels"]["submit"]["bindings"]["amqp"]["exchange"]
    assert (submit["name"], submit["type"]) == ("ns.submit", "fanout")


def _payload_validator(document: dict[str, Any], message: str) -> jsonschema_rs.Validator:
    """The message's payload schema, with the document's components for its references."""
    payload = document["components"]["messages"][message]["payload"]
    return jsonschema_rs.validator_for({**payload, "components": document["components"]})


def _status(state: JobState) -> JobStatus:
    return JobStatus(job_id="j1", state=state, model=ModelRef(name="echo"))


def test_each_event_kind_has_a_payload_only_its_own_events_match(document):
    done = json.loads(JobEvent.of(_status(JobState.DONE), "/ns/notifier").model_dump_json())
    progress = json.loads(
        JobEvent.of(_status(JobState.RUNNING), "/ns/notifier", "progress").model_dump_json()
    )
    rejection = JobRejection(job_id=None, reason="not-json", detail="not JSON")
    refused = json.loads(JobRejectedEvent(source="/ns/gateway", data=rejection).model_dump_json())
    assert _payload_validator(document, "jobDoneEvent").is_valid(done)
    assert not _payload_validator(document, "jobFailedEvent").is_valid(done)
    assert _payload_validator(document, "jobProgressEvent").is_valid(progress)
    assert not _payload_validator(document, "jobRunningEvent").is_valid(progress)
    assert _payload_validator(document, "jobRejectedEvent").is_valid(refused)
    assert not _payload_validator(document, "jobDoneEvent").is_valid(refused)
    assert not _payload_validator(document, "jobRejectedEvent").is_valid(done)


def test_the_export_writes_the_document_of_the_default_namespace(tmp_path):
    export(tmp_path)
    written = json.loads((tmp_path / "asyncapi.json").read_text())
    assert written == build_asyncapi()
    assert written["channels"]["submit"]["bindings"]["amqp"]["exchange"]["name"] == (
        "shepherd.submit"
    )
