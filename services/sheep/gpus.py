"""The GPUs a sheep's runner holds, read through NVML (``nvidia-ml-py``) by a sampling thread:
utilisation and memory of each device for Prometheus, and the peak GPU memory of each job.
Where there is no GPU, no driver or no NVML library, the series are absent and a line says
why, never an error.

    gpus = SheepGpus.open("gpu0", ["0", "GPU-5e1f...", "/dev/nvidia2"])  # None: nothing to read
    if gpus:
        gpus.start()                          # the thread samples; the gauges read its samples
    with job_gpus(gpus, devices=3) as used:   # around a job
        ...
    used.peak_memory_bytes                    # None where NVML could not tell
    gpus.close()

A device is named as ``sheep.<id>.devices`` names it: an index, a UUID, or a device path
ending in its index. NVML is never called on the event loop (a GPU in a bad state can make a
call slow): a scrape reads the last sample.

NVML has no event for memory, so the job's peak is sampled (every ``JOB_INTERVAL`` while a
job runs): a spike shorter than that can be missed. It is the GPU memory held by every compute
process on the sheep's devices, which are the sheep's own.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pynvml

from services.common.job_metrics import GPU_MEMORY_TOTAL, GPU_MEMORY_USED, GPU_UTILIZATION
from services.common.scraped import Values

log = logging.getLogger(__name__)

_INDEX = re.compile(r"(\d+)$")
#: Seconds between samples while no job runs: how fresh the gauges are.
IDLE_INTERVAL = 1.0
#: Seconds between samples while a job runs: the shortest memory spike a job's peak sees.
JOB_INTERVAL = 0.1


@dataclass(frozen=True)
class Sample:
    """One device's reading; None for a figure NVML could not give this time."""

    utilization: float | None
    memory_used: float | None
    memory_total: float | None
    process_memory: int | None
    """GPU memory held by the compute processes on the device."""


@dataclass
class JobGpus:
    """What a job used of its sheep's GPUs; the peak is filled as the job ends."""

    devices: int
    peak_memory_bytes: int | None = None


@dataclass
class SheepGpus:
    sheep_id: str
    handles: dict[str, Any]
    """NVML's handle of each device, by the name the configuration gives it."""
    _samples: dict[str, Sample] = field(default_factory=dict)
    _job_peak: int | None = None
    _job_running: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

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
        """Start sampling; the gauges read the samples from now on."""
        self._thread = threading.Thread(
            target=self._sample_until_closed, name=f"sheep-{self.sheep_id}-gpus", daemon=True
        )
        self._thread.start()
        GPU_UTILIZATION.add(self.utilization)
        GPU_MEMORY_USED.add(self.memory_used)
        GPU_MEMORY_TOTAL.add(self.memory_total)

    def close(self) -> None:
        """Stop sampling (blocks for the sample under way: call it off the event loop)."""
        GPU_UTILIZATION.remove(self.utilization)
        GPU_MEMORY_USED.remove(self.memory_used)
        GPU_MEMORY_TOTAL.remove(self.memory_total)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        pynvml.nvmlShutdown()

    @contextmanager
    def job(self, used: JobGpus) -> Iterator[None]:
        """Sample often while the block runs, and give ``used`` its peak memory at the end."""
        with self._lock:
            self._job_running, self._job_peak = True, None
        self._wake.set()  # a first sample now, at the job's pace after
        try:
            yield
        finally:
            with self._lock:
                used.peak_memory_bytes = self._job_peak
                self._job_running, self._job_peak = False, None

    def utilization(self) -> Values:
        """Share of NVML's last sample period each device was busy, 0 to 1."""
        return self._gauge(lambda sample: sample.utilization)

    def memory_used(self) -> Values:
        return self._gauge(lambda sample: sample.memory_used)

    def memory_total(self) -> Values:
        return self._gauge(lambda sample: sample.memory_total)

    def _gauge(self, figure: Callable[[Sample], float | None]) -> Values:
        with self._lock:
            samples = dict(self._samples)
        return {
            (self.sheep_id, device): value
            for device, sample in samples.items()
            if (value := figure(sample)) is not None
        }

    def _sample_until_closed(self) -> None:
        while not self._stopping.is_set():
            samples = {device: self._sample(device, h) for device, h in self.handles.items()}
            held = [sample.process_memory for sample in samples.values()]
            with self._lock:
                self._samples = samples
                if self._job_running and None not in held:  # a device unread: total unknown
                    self._job_peak = max(sum(held), self._job_peak or 0)
                interval = JOB_INTERVAL if self._job_running else IDLE_INTERVAL
            self._wake.wait(interval)
            self._wake.clear()

    def _sample(self, device: str, handle: Any) -> Sample:
        """A device's figures; one NVML call failing (a device lost or reset) leaves its figure
        out of this sample only."""
        memory = self._read(device, pynvml.nvmlDeviceGetMemoryInfo, handle)
        utilization = self._read(device, pynvml.nvmlDeviceGetUtilizationRates, handle)
        processes = self._read(device, pynvml.nvmlDeviceGetComputeRunningProcesses, handle)
        held = [p.usedGpuMemory for p in processes or () if p.usedGpuMemory is not None]
        return Sample(
            utilization=utilization.gpu / 100 if utilization is not None else None,
            memory_used=float(memory.used) if memory is not None else None,
            memory_total=float(memory.total) if memory is not None else None,
            # Processes NVML cannot measure (some drivers, vGPUs) leave the figure unknown.
            process_memory=None if processes is None or (processes and not held) else sum(held),
        )

    def _read(self, device: str, call: Callable[[Any], Any], handle: Any) -> Any:
        try:
            return call(handle)
        except pynvml.NVMLError as exc:
            log.debug("sheep %s: reading GPU %s: %s", self.sheep_id, device, exc)
            return None


@contextmanager
def job_gpus(gpus: SheepGpus | None, devices: int) -> Iterator[JobGpus]:
    """What the block's job uses of the sheep's ``devices`` GPUs; its peak memory where NVML
    reads them."""
    used = JobGpus(devices)
    if gpus is None:
        yield used
        return
    with gpus.job(used):
        yield used


def _handle(device: str) -> Any:
    """NVML's handle of a device named by index, UUID or device path."""
    if device.startswith(("GPU-", "MIG-")):
        return pynvml.nvmlDeviceGetHandleByUUID(device)
    match = _INDEX.search(device)
    if match is None:
        raise ValueError("neither an index, a UUID nor a device path ending in an index")
    return pynvml.nvmlDeviceGetHandleByIndex(int(match.group(1)))
