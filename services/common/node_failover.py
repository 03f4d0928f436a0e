"""An HTTP client for the MinIO SDK that sends each request to the storage node that last
answered and, when a node cannot be reached, to the next: the nodes of a distributed MinIO
serve the same objects.

    client = Minio(nodes[0], ..., http_client=NodeFailover(nodes, timeout=..., retries=...))

Requests keep the ``Host`` header the SDK signed them with (the first node's): MinIO checks
a signature against the ``Host`` it receives, so any node accepts them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

#: Failures after which the request goes to the next node: none of its bytes reached a node
#: that answered.
UNREACHABLE = (NewConnectionError, urllib3.exceptions.ConnectTimeoutError, ProtocolError)


class NodeFailover(urllib3.PoolManager):
    def __init__(self, nodes: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._nodes = nodes
        self._current = 0

    def urlopen(  # type: ignore[override]
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> urllib3.BaseHTTPResponse:
        parts = urlsplit(url)
        failure: Exception | None = None
        for step in range(len(self._nodes)):
            index = (self._current + step) % len(self._nodes)
            target = parts._replace(netloc=self._nodes[index]).geturl()
            try:
                response = super().urlopen(method, target, redirect=redirect, **kw)
            except MaxRetryError as exc:
                if not isinstance(exc.reason, UNREACHABLE):
                    raise
                failure = exc
                continue
            self._current = index
            return response
        assert failure is not None
        raise failure
