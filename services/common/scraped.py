"""A gauge computed when Prometheus scrapes, from state a service already keeps (the oldest
queued job, how long each sheep has been silent): nothing to update on the hot path.

    SILENCE = ScrapedGauge("shepherd_sheep_silence_seconds", "Seconds since ...", ["sheep"])
    SILENCE.add(fleet.silences)       # at start: a callable giving {(sheep_id,): seconds}
    SILENCE.remove(fleet.silences)    # at stop: a service stopped reports nothing

Several sources of one process (two notifiers under test) are merged, the largest value of
each label set kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

Values = Mapping[tuple[str, ...], float]
"""The value of each label set (the empty tuple for a gauge without labels)."""
Source = Callable[[], Values]


class ScrapedGauge(Collector):
    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = list(labels)
        self._sources: list[Source] = []
        REGISTRY.register(self)

    def add(self, source: Source) -> None:
        self._sources.append(source)

    def remove(self, source: Source) -> None:
        if source in self._sources:
            self._sources.remove(source)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        merged: dict[tuple[str, ...], float] = {}
        for source in self._sources:
            for labels, value in source().items():
                merged[labels] = max(value, merged.get(labels, value))
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labels)
        for labels, value in merged.items():
            family.add_metric(list(labels), value)
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self._name, self._documentation, labels=self._labels)
