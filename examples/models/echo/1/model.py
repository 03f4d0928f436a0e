"""Echo: the job's ``input.json`` comes back as ``output.json``, byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

from runner import Runner


class EchoRunner(Runner):
    """A plain :class:`Runner`: it copies the file, so even non-JSON input survives intact."""

    def process(self, inputs_dir: Path, outputs_dir: Path) -> None:
        shutil.copyfile(inputs_dir / "input.json", outputs_dir / "output.json")
