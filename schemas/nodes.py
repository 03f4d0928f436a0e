"""Several nodes behind one setting: a broker URL and a storage endpoint may each list the
nodes of a cluster, and clients connect to whichever answers.

    broker_nodes("amqp://u:p@rabbit1:5672,rabbit2:5672/prod")
    # ["amqp://u:p@rabbit1:5672/prod", "amqp://u:p@rabbit2:5672/prod"]
    storage_nodes("minio1:9000,minio2:9000")  # ["minio1:9000", "minio2:9000"]

The comma-separated host list is the form RabbitMQ's own clients and MongoDB's URLs take.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<netloc>[^/?#]*)(?P<rest>.*)$", re.I)


def broker_nodes(url: str) -> list[str]:
    """One AMQP URL per host of ``url``; raises ValueError if ``url`` is not an amqp:// or
    amqps:// URL naming at least one host (the message never quotes the URL: it holds the
    password)."""
    match = _URL.match(url)
    if match is None or match["scheme"].lower() not in {"amqp", "amqps"}:
        raise ValueError("must be an amqp:// or amqps:// URL with a host")
    user, at, hosts = match["netloc"].rpartition("@")
    nodes = [f"{match['scheme']}://{user}{at}{host}{match['rest']}" for host in hosts.split(",")]
    for node in nodes:
        try:
            parts = urlsplit(node)
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            parts = None
        if parts is None or not parts.hostname:
            raise ValueError(
                "must be an amqp:// or amqps:// URL with a host (or hosts, comma-separated)"
            )
    return nodes


def storage_nodes(endpoint: str) -> list[str]:
    """The ``host:port`` of each node of a comma-separated storage endpoint."""
    nodes = [node.strip() for node in endpoint.split(",")]
    for node in nodes:
        try:
            parts = urlsplit(f"//{node}")
            parts.port  # noqa: B018
        except ValueError:
            parts = None
        if parts is None or not parts.hostname or parts.path or parts.username:
            raise ValueError(f"{node!r} is not host:port")
    return nodes
