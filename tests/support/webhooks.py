"""Webhook helpers shared by the tests: secrets, and the deliveries counter."""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable

from prometheus_client import REGISTRY


def secret() -> str:
    """A fresh Standard Webhooks secret."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def delivered(target: str, outcome: str = "delivered") -> float:
    """``shepherd_webhook_deliveries_total`` for one target and outcome (0 before the first)."""
    labels = {"target": target, "outcome": outcome}
    return REGISTRY.get_sample_value("shepherd_webhook_deliveries_total", labels) or 0.0


def counted(
    target: str, expected: float, outcome: str = "delivered"
) -> Callable[[], Awaitable[bool]]:
    """A probe for ``eventually``: the counter has reached ``expected``."""

    async def probe() -> bool:
        return delivered(target, outcome) >= expected

    return probe
