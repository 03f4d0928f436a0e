"""GPU info: which NVIDIA devices the runner can see; the GPU check of a docker sheep."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runner import JsonRunner


class GpuInfo(JsonRunner):
    def predict(self, payload: Any) -> Any:
        return {
            "nvidia_visible_devices": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "devices": sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*")),
        }
