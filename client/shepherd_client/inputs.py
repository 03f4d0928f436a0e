"""The input files a submission uploads: paths, or a directory's files, each under the name
the runner will find it by (``inputs/<name>``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

Files = str | Path | Iterable[str | Path]
"""A directory (every file under it, by its path inside), a file, or several files (each by
its own name)."""


def named_files(files: Files) -> dict[str, Path]:
    """Each file to upload by its input name; a missing path or a name twice is an error."""
    paths = [Path(files)] if isinstance(files, str | Path) else [Path(f) for f in files]
    named: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            found = {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*"))}
            entries = {name: p for name, p in found.items() if p.is_file()}
        elif path.is_file():
            entries = {path.name: path}
        else:
            raise FileNotFoundError(f"input {path} is neither a file nor a directory")
        for name, entry in entries.items():
            if name in named:
                raise ValueError(f"two inputs named {name!r}: {named[name]} and {entry}")
            named[name] = entry
    return named
