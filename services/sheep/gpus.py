"""The GPUs a sheep's runner holds, read through NVML (``nvidia-ml-py``) when Prometheus
scrapes: utilisation and memory of each device. Where there is no GPU, no driver or no NVML
library, the series are absent and a line says why, never an error.

    gpus = SheepGpus.open("gpu0", ["0", "GPU-5e1f...", "/dev/nvidia2"])  # None: nothing to read
    if gpus:
        gpus.start()     # the gauges read it from now on
        ...
        gpus.close()

A device is named as ``sheep.<id>.devices`` names it: an index, a UUID, or a device path
ending in its index.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import pynvml

from services.common.job_metrics import GPU_MEMORY_TOTAL, GPU_MEMORY_USED, GPU_UTILIZATION
from services.common.scraped import Values

log = logging.getLogger(__name__)

_INDEX = re.compile(r"(\d+)$")


@dataclass
class SheepGpus:
    sheep_id: str
    handles: dict[str, Any]
    """NVML's handle of each device, by the name the configuration gives it."""

    @classmethod
    def open(cls, sheep_id: str, devices: list[str]) -> SheepGpus | None:
        """The sheep's GPUs through NVML; None (with a log line) if it has none to read."""
        if not devices:
            return None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            log.info("sheep %s: no GPU metrics (NVML: %s)", sheep_id, exc)
            return None
        handles = {}
        for device in devices:
            try:
                handles[device] = _handle(device)
            except (pynvml.NVMLError, ValueError) as exc:
                log.warning("sheep %s: no GPU metrics for device %s: %s", sheep_id, device, exc)
        if not handles:
            pynvml.nvmlShutdown()
            return None
        return cls(sheep_id, handles)

    def start(self) -> None:
        GPU_UTILIZATION.add(self.utilization)
        GPU_MEMORY_USED.add(self.memory_used)
        GPU_MEMORY_TOTAL.add(self.memory_total)

    def close(self) -> None:
        GPU_UTILIZATION.remove(self.utilization)
        GPU_MEMORY_USED.remove(self.memory_used)
        GPU_MEMORY_TOTAL.remove(self.memory_total)
        pynvml.nvmlShutdown()

    def utilization(self) -> Values:
        """Share of the last sample period each device was busy, 0 to 1."""
        return self._read(lambda h: pynvml.nvmlDeviceGetUtilizationRates(h).gpu / 100)

    def memory_used(self) -> Values:
        return self._read(lambda h: pynvml.nvmlDeviceGetMemoryInfo(h).used)

    def memory_total(self) -> Values:
        return self._read(lambda h: pynvml.nvmlDeviceGetMemoryInfo(h).total)

    def _read(self, read: Any) -> Values:
        values = {}
        for device, handle in self.handles.items():
            try:
                values[(self.sheep_id, device)] = float(read(handle))
            except pynvml.NVMLError as exc:  # a device lost or reset: absent this scrape
                log.debug("sheep %s: reading GPU %s: %s", self.sheep_id, device, exc)
        return values


def _handle(device: str) -> Any:
    """NVML's handle of a device named by index, UUID or device path."""
    if device.startswith(("GPU-", "MIG-")):
        return pynvml.nvmlDeviceGetHandleByUUID(device)
    match = _INDEX.search(device)
    if match is None:
        raise ValueError("neither an index, a UUID nor a device path ending in an index")
    return pynvml.nvmlDeviceGetHandleByIndex(int(match.group(1)))
