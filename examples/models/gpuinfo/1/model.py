"""GPU info: which NVIDIA devices the runner can see; the GPU check of a docker sheep.

With ``{"hold_bytes": N, "seconds": S}`` it also allocates N bytes on its first GPU through
the CUDA driver (``libcuda``, which the nvidia runtime mounts; no framework needed) and holds
them S seconds, so that the job's peak GPU memory can be checked.
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import Any

from runner import JsonRunner


class GpuInfo(JsonRunner):
    def predict(self, payload: Any) -> Any:
        if payload.get("hold_bytes"):
            _hold_gpu_memory(int(payload["hold_bytes"]), float(payload.get("seconds", 1)))
        return {
            "nvidia_visible_devices": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "devices": sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*")),
        }


def _hold_gpu_memory(size: int, seconds: float) -> None:
    cuda = ctypes.CDLL("libcuda.so.1")

    def check(name: str, *args: Any) -> None:
        if (code := getattr(cuda, name)(*args)) != 0:
            raise RuntimeError(f"{name} failed with CUDA error {code}")

    device, context, pointer = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
    check("cuInit", 0)
    check("cuDeviceGet", ctypes.byref(device), 0)
    check("cuCtxCreate_v2", ctypes.byref(context), 0, device)
    try:
        check("cuMemAlloc_v2", ctypes.byref(pointer), ctypes.c_size_t(size))
        time.sleep(seconds)
        check("cuMemFree_v2", pointer)
    finally:
        check("cuCtxDestroy_v2", context)
