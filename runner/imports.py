"""Resolving ``"module:attr"`` strings from runner files into Python objects."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(spec: str, origin: str) -> Any:
    """Import ``module:attr``; ``origin`` (e.g. ``"shepherd-runner.yaml: runner"``) is named in
    the :class:`ImportError` so that the user knows which setting to fix."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ImportError(f"{origin}: {spec!r} is not of the form 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ImportError(f"{origin}: no module named {module_name!r}") from exc
        raise ImportError(f"{origin}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise ImportError(
            f"{origin}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"{origin}: module {module_name!r} has no {attr!r}") from None
