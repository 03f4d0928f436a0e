"""The AsyncAPI 3.0 document of Shepherd's AMQP interface, built from ``schemas``.

Served by the gateway at ``/asyncapi.json`` and written by ``python -m schemas export``. It
describes Shepherd as one application, so its operations are Shepherd's own: it *sends* what
its services publish and *receives* what they consume; a client's view is the mirror image
(a client sends job requests to ``submit``, receives ``job.<kind>`` events).

AMQP bindings (0.3.0) allow a channel to be an exchange with a routing key *or* a queue, not
both, so there are two kinds of channel:

* one per address on each exchange (``is: routingKey``): what publishers need, routing keys
  with ``{parameters}`` where they vary (``sheep.{sheep_id}``);
* one per queue of the topology (``is: queue``): what Shepherd's services consume, and what
  the exchanges route to.

The channels, their messages and descriptions are the declarations of the topology
(:meth:`Topology.documented`: each exchange's addresses, each queue and what it is bound to),
the operations those of ``schemas.amqp_contract``, the messages those of
``schemas.asyncapi_messages``; this module only shapes them, in loops. Message payloads
are the pydantic models' JSON Schemas, under ``components.schemas``. The runner protocol
(ZeroMQ) and HTTP are not AMQP and are described elsewhere: the JSON Schemas of
``python -m schemas export`` and the gateway's OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.amqp_contract import OPERATIONS, PARAMETERS, REPLIES, SUBMISSION_REPLIES, Operation
from schemas.asyncapi_messages import JSON, MODELS, messages
from schemas.broker_names import Names
from schemas.events import CLOUDEVENT_TYPE_PREFIX
from schemas.topology import Address, Binding, Queue, Topology

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
_DURABLE = {"durable": True, "autoDelete": False, "vhost": "/"}


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}


def build_asyncapi(names: Names | None = None, broker_host: str = "127.0.0.1:5672") -> dict:
    """The document for the namespace of ``names`` (``shepherd`` by default), whose broker
    listens at ``broker_host`` (host and port only: never credentials)."""
    names = names or Names()
    topology = Topology.documented(names)
    channels = {
        address.channel: _address(address, exchange.name, exchange.type)
        for exchange in topology.exchanges
        for address in exchange.addresses
    }
    channels[SUBMISSION_REPLIES.channel] = _address(SUBMISSION_REPLIES, "", "default")
    for queue in topology.queues:
        bound = [b for b in topology.bindings if b.queue == queue.name]
        channels[queue.channel] = _queue(queue, bound)
    _, definitions = models_json_schema(MODELS, ref_template="#/components/schemas/{model}")
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Shepherd",
            "version": "1",
            "description": "Asynchronous jobs on GPU and CPU machines. Submit a job request "
            f"to the exchange {names.submit_exchange}, follow it through the "
            f"CloudEvents job.<kind> on {names.events_exchange} (type "
            f"{CLOUDEVENT_TYPE_PREFIX}<kind>). Every message is persistent and every "
            "publish confirmed; every Shepherd queue is a quorum queue that dead-letters "
            f"into {names.dead_letter_exchange}.",
        },
        "defaultContentType": JSON,
        "servers": {
            "rabbitmq": {
                "host": broker_host,
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "RabbitMQ, virtual host /.",
            }
        },
        "channels": channels,
        "operations": {o.id: _operation(o, channels) for o in OPERATIONS},
        "components": {"schemas": definitions["$defs"], "messages": messages()},
    }


def _address(address: Address, exchange: str, kind: str) -> dict[str, Any]:
    amqp = {"is": "routingKey", "exchange": {"name": exchange, "type": kind, **_DURABLE}}
    return _shaped(address.routing_key, address.description, address.messages, amqp)


def _queue(queue: Queue, bindings: list[Binding]) -> dict[str, Any]:
    amqp = {"is": "queue", "queue": {"name": queue.name, "exclusive": False, **_DURABLE}}
    description = " ".join([*_bound(bindings), queue.description])
    return _shaped(queue.name, description, queue.messages, amqp)


def _bound(bindings: list[Binding]) -> list[str]:
    """What the bindings of a queue route to it, in words: one sentence per exchange and
    reason."""
    keys: dict[tuple[str, str], list[str]] = {}
    for b in bindings:
        matched = [f"{k} = {v}" for k, v in b.arguments.items() if k != "x-match"]
        where = f" where {', '.join(matched)}" if matched else ""
        why = f": {b.description}" if b.description else ""
        keys.setdefault((b.exchange + where, why), []).extend(filter(None, [b.routing_key]))
    return [
        f"Bound to {source}{' for ' + ' and '.join(k) if k else ''}{why}."
        for (source, why), k in keys.items()
    ]


def _shaped(
    address: str | None, description: str, messages: tuple[str, ...], amqp: dict[str, Any]
) -> dict[str, Any]:
    parameters = {p: PARAMETERS[p] for p in PARAMETERS if f"{{{p}}}" in (address or "")}
    return {
        "address": address,
        "description": description,
        "messages": {m: _ref("components", "messages", m) for m in messages},
        **({"parameters": parameters} if parameters else {}),
        "bindings": {"amqp": {**amqp, "bindingVersion": AMQP_BINDING_VERSION}},
    }


def _operation(operation: Operation, channels: dict[str, Any]) -> dict[str, Any]:
    channel = operation.channel
    amqp: dict[str, Any] = (
        {"deliveryMode": 2, "mandatory": True} if operation.action == "send" else {"ack": True}
    )
    reply = REPLIES.get(operation.id)
    return {
        "action": operation.action,
        "channel": _ref("channels", channel),
        "summary": operation.summary,
        "messages": [
            _ref("channels", channel, "messages", m) for m in channels[channel]["messages"]
        ],
        **({"reply": _reply(*reply)} if reply else {}),
        "bindings": {"amqp": {**amqp, "bindingVersion": AMQP_BINDING_VERSION}},
    }


def _reply(channel: str, message: str) -> dict[str, Any]:
    return {
        "address": {
            "location": "$message.header#/reply_to",
            "description": "The submission's AMQP reply_to property.",
        },
        "channel": _ref("channels", channel),
        "messages": [_ref("channels", channel, "messages", message)],
    }
