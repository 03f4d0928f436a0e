"""Copy: every input file comes back as an output of the same name (directories kept), for
jobs whose inputs are files rather than a payload."""

from __future__ import annotations

import shutil
from pathlib import Path

from runner import Runner


class CopyRunner(Runner):
    def process(self, inputs_dir: Path, outputs_dir: Path) -> None:
        shutil.copytree(inputs_dir, outputs_dir, dirs_exist_ok=True)
