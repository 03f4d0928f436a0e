"""docs/architecture.md's layout table names every module of the folders it describes, so a
newcomer finds each one there."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
FOLDERS = [
    "schemas",
    "services/common",
    "services/gateway",
    "services/sheep",
    "services/notifier",
    "runner",
]


def _row(folder: str) -> str:
    """The layout table's row of ``folder``."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith(f"| `{folder}/`")]
    assert len(rows) == 1, f"no single layout row for {folder}/"
    return rows[0]


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_layout_table_names_every_module_of_the_folder(folder):
    row = _row(folder)
    modules = sorted(
        path.relative_to(ROOT / folder).as_posix()
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "__init__.py"
    )
    missing = [m for m in modules if f"`{m}`" not in row and f"`{Path(m).parent}/`" not in row]
    assert not missing, f"docs/architecture.md's row for {folder}/ does not name {missing}"
