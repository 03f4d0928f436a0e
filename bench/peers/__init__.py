"""The peers Shepherd is measured against, on the same RabbitMQ and MinIO, each in a bucket
of its own without notifications, doing the same echo with as many worker processes as
Shepherd has sheep. Each module holds one peer's worker side and its :class:`Peer`."""

from __future__ import annotations

import importlib

from bench.peers.base import Peer

PEERS = {
    "celery": "bench.peers.celery_plain:CeleryPlain",
    "celery-guaranteed": "bench.peers.celery_guaranteed:CeleryGuaranteed",
    "dramatiq": "bench.peers.dramatiq_peer:DramatiqPeer",
}
"""Name -> class, imported only when that peer runs (each brings its task queue library)."""


def peer_class(name: str) -> type[Peer]:
    module, _, cls = PEERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)
