"""Who may do what on the broker: one RabbitMQ user per role, each with the least it needs.

RabbitMQ grants a user three regular expressions per virtual host, matched against queue and
exchange names: *configure* (declare, delete), *write* (publish to an exchange, bind to a
queue) and *read* (consume from a queue, bind from an exchange); and, per topic exchange, two
more matched against routing keys (topic permissions). For namespace ``shepherd``:

==========================  ==========================================================
user                        may
==========================  ==========================================================
``shepherd-services``       gateway, sheep and notifier: everything named
                            ``shepherd.*``; declare and bind from ``shepherd.storage``;
                            reply to submitters through the default exchange
``shepherd-storage``        MinIO's bucket notifications: declare and publish to
                            ``shepherd.storage``, nothing else
``shepherd-subscriber``     declare queues named ``shepherd-subscriber.*`` (or
                            server-named), bind them to ``shepherd.events`` for
                            ``job.*`` events and read them; read ``shepherd.event-stream``;
                            never publish to ``shepherd.events``
``shepherd-submitter``      publish to ``shepherd.submit``; declare and read its reply
                            queues, ``shepherd-submitter.*`` (or server-named)
==========================  ==========================================================

So only Shepherd's own components can publish job events, and no subscriber or submitter
can read Shepherd's queues. Subscribers sharing the one subscriber user share its queues
too: a team that must not read another's gets a user of its own, with the subscriber's
patterns and its own name as the queue prefix. ``python -m schemas definitions`` exports
these grants with the topology; ``make services`` creates the users (with generated
passwords) and imports them. ``guest`` keeps every right: it is for local development only.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from schemas.broker_names import Names

Role = Literal["services", "storage", "subscriber", "submitter"]
ROLES: tuple[Role, ...] = ("services", "storage", "subscriber", "submitter")

NOTHING = "^$"
"""The pattern that matches no resource name."""
SERVER_NAMED = r"amq\.gen-.*"
"""Queues the broker names (``declare_queue()`` without a name)."""
DEFAULT_EXCHANGE = "amq.default"
"""The resource name RabbitMQ checks for publishes to the default exchange (``""``)."""


@dataclass(frozen=True)
class TopicGrant:
    """Routing keys a user may publish (``write``) or bind (``read``) on one topic exchange."""

    exchange: str
    write: str
    read: str


@dataclass(frozen=True)
class Grant:
    """One user's rights in a virtual host."""

    user: str
    configure: str
    write: str
    read: str
    topics: tuple[TopicGrant, ...] = ()


def user_name(names: Names, role: Role) -> str:
    """``<namespace>-<role>``; subscribers and submitters name their queues after it."""
    return f"{names.namespace}-{role}"


def own_queues(names: Names, role: Role) -> str:
    """The prefix of the queues a subscriber or submitter may declare: ``<user>.``."""
    return f"{user_name(names, role)}."


def _exactly(name: str) -> str:
    return re.escape(name)


def _starting(prefix: str) -> str:
    return f"{re.escape(prefix)}.*"


def _any_of(*patterns: str) -> str:
    return f"^({'|'.join(patterns)})$"


def grant(names: Names, role: Role) -> Grant:
    """What ``role`` may do in ``names``' namespace (see the module docstring)."""
    user = user_name(names, role)
    if role == "services":
        own = _starting(f"{names.namespace}.")
        storage = _exactly(names.storage_exchange)
        return Grant(
            user,
            configure=_any_of(own, storage),
            write=_any_of(own, _exactly(DEFAULT_EXCHANGE)),
            read=_any_of(own, storage),
        )
    if role == "storage":
        storage = _any_of(_exactly(names.storage_exchange))
        return Grant(user, configure=storage, write=storage, read=NOTHING)
    queues = _starting(own_queues(names, role))
    if role == "subscriber":
        readable = (_exactly(names.events_exchange), _exactly(names.event_stream))
        return Grant(
            user,
            configure=_any_of(queues, SERVER_NAMED),
            write=_any_of(queues, SERVER_NAMED),  # binding a queue writes to it
            read=_any_of(*readable, queues, SERVER_NAMED),
            topics=(TopicGrant(names.events_exchange, write=NOTHING, read=r"^job\."),),
        )
    return Grant(
        user,
        configure=_any_of(queues, SERVER_NAMED),
        write=_any_of(_exactly(names.submit_exchange)),
        read=_any_of(queues, SERVER_NAMED),
    )


def grants(names: Names) -> list[Grant]:
    return [grant(names, role) for role in ROLES]


def to_definitions(granted: list[Grant], vhost: str = "/") -> dict[str, Any]:
    """The ``permissions`` and ``topic_permissions`` of a RabbitMQ definitions file. The users
    must exist before it is imported: they carry passwords, which a committed file cannot."""
    return {
        "permissions": [
            {
                "user": g.user,
                "vhost": vhost,
                "configure": g.configure,
                "write": g.write,
                "read": g.read,
            }
            for g in granted
        ],
        "topic_permissions": [
            {"user": g.user, "vhost": vhost} | asdict(t) for g in granted for t in g.topics
        ],
    }
