"""A sheep's GPU sampler, with NVML's device calls answered by a stand-in GPU: a machine
without a GPU cannot run the real ones (``tests/gpu`` does, where one exists). What is checked
is the sampler's own logic: a job's peak memory, figures NVML cannot give, the gauges read
from the samples."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from services.sheep.gpus import SheepGpus, job_gpus


@dataclass
class StandInGpus:
    """Device state by handle, and a count of process reads the tests can wait on."""

    held: dict[str, list[int | None]] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    reads: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)

    def memory(self, handle: str) -> Any:
        if handle in self.broken:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return SimpleNamespace(used=sum(h or 0 for h in self.held[handle]) + 1, total=1000)

    def utilization(self, handle: str) -> Any:
        return SimpleNamespace(gpu=40)

    def processes(self, handle: str) -> list[Any]:
        with self.changed:
            self.reads += 1
            self.changed.notify_all()
        return [SimpleNamespace(usedGpuMemory=held) for held in self.held[handle]]

    def sampled(self, times: int = 2) -> None:
        """Wait until every device was read ``times`` more (the last values were seen)."""
        with self.changed:
            until = self.reads + times * len(self.held)
            assert self.changed.wait_for(lambda: self.reads >= until, timeout=5)


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInGpus]:
    stand_in = StandInGpus(held={"h0": [], "h1": []})
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", stand_in.memory)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", stand_in.utilization)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", stand_in.processes)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    yield stand_in


@pytest.fixture
def gpus(gpu: StandInGpus) -> Iterator[SheepGpus]:
    sampler = SheepGpus("g0", {"0": "h0", "/dev/nvidia1": "h1"})
    sampler.start()
    yield sampler
    sampler.close()


def test_a_jobs_peak_is_the_most_memory_its_devices_held_together_while_it_ran(gpu, gpus):
    gpu.held["h0"] = [300]  # before the job: not its peak
    gpu.sampled()
    with job_gpus(gpus, devices=2) as used:
        gpu.held["h0"] = [100]
        gpu.sampled()
        gpu.held["h0"], gpu.held["h1"] = [100, 50], [200]
        gpu.sampled()
        gpu.held["h0"], gpu.held["h1"] = [10], []
        gpu.sampled()
    assert used.devices == 2
    assert used.peak_memory_bytes == 350

    with job_gpus(gpus, devices=2) as again:  # each job its own peak
        gpu.sampled()
    assert again.peak_memory_bytes == 10


def test_memory_nvml_cannot_measure_leaves_the_peak_unknown_not_zero(gpu, gpus):
    with job_gpus(gpus, devices=2) as used:
        gpu.held["h0"] = [None]
        gpu.sampled()
    assert used.peak_memory_bytes is None


def test_the_gauges_read_the_last_sample_and_leave_out_a_device_that_fails(gpu, gpus):
    gpu.held["h0"] = [99]
    gpu.broken.add("h1")
    gpu.sampled()
    assert gpus.utilization() == {("g0", "0"): 0.4, ("g0", "/dev/nvidia1"): 0.4}
    assert gpus.memory_used() == {("g0", "0"): 100.0}
    assert gpus.memory_total() == {("g0", "0"): 1000.0}


def test_a_sheep_without_gpus_to_read_still_counts_its_devices():
    with job_gpus(None, devices=1) as used:
        pass
    assert (used.devices, used.peak_memory_bytes) == (1, None)
