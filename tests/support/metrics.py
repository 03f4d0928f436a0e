"""Reading Shepherd's Prometheus counters in tests."""

from __future__ import annotations

from prometheus_client import REGISTRY


def rejected(source: str, reason: str) -> float:
    """``shepherd_rejected_messages_total`` for one source and reason (0 before the first)."""
    labels = {"source": source, "reason": reason}
    return REGISTRY.get_sample_value("shepherd_rejected_messages_total", labels) or 0.0
