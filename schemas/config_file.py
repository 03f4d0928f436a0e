"""Reading the configuration file: YAML, then ``${VAR}`` interpolation, then validation.

    config = load_config("examples/configs/shepherd-bare.yml")
    SHEPHERD_BROKER__URL=amqp://... shepherd up    # overrides broker.url (schemas.config)

Variables are replaced in the parsed values, never in the file's text: a value arrives
verbatim, whatever it holds (a newline, ``#``, ``*``, a leading zero, a backslash), and can
never change the file's structure. Relative paths are resolved against the file's directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings.exceptions import SettingsError

from schemas.config import BareSheepConfig, Config
from schemas.errors import format_validation_error


class ConfigError(ValueError):
    """The configuration file cannot be read, interpolated or validated."""


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, environ: Mapping[str, str] | None = None, where: str = "") -> Any:
    """``value`` (parsed YAML) with ``${VAR}`` and ``${VAR:-default}`` replaced in every string
    it holds; an unset variable without default is an error naming it and the key."""
    env = os.environ if environ is None else environ
    if isinstance(value, str):
        return _VAR.sub(lambda match: _lookup(match, env, where), value)
    if isinstance(value, dict):
        return {key: interpolate(item, env, _key(where, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def _lookup(match: re.Match[str], env: Mapping[str, str], where: str) -> str:
    name, default = match.group(1), match.group(2)
    if name in env:
        return env[name]
    if default is not None:
        return default
    at = f" in {where}" if where else ""
    raise ConfigError(f"environment variable {name} is not set (used as ${{{name}}}{at})")


def _key(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def load_config(path: str | Path | None = None) -> Config:
    """Read, interpolate and validate a config file; ``None`` gives the defaults (and the
    ``SHEPHERD_*`` overrides)."""
    if path is None:
        return _validate({}, "configuration")
    path = Path(path)
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        # Not ``from exc``: its message quotes the offending line, which may hold a secret.
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, not {type(raw).__name__}")
    try:
        raw = interpolate(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return _resolve_paths(_validate(raw, str(path)), path.parent.resolve())


def _validate(raw: dict[str, Any], origin: str) -> Config:
    try:
        return Config(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {format_validation_error(exc)}") from exc
    except SettingsError as exc:  # a SHEPHERD_* variable that is not valid JSON
        raise ConfigError(f"{origin}: {exc}") from None


def _resolve_paths(config: Config, base: Path) -> Config:
    def resolve(path: Path) -> Path:
        return path if path.is_absolute() else (base / path).resolve()

    config.data_root = resolve(config.data_root)
    for sheep in config.sheep.values():
        if isinstance(sheep, BareSheepConfig):
            sheep.working_directory = resolve(sheep.working_directory)
            sheep.stdout_file = sheep.stdout_file and resolve(sheep.stdout_file)
            sheep.stderr_file = sheep.stderr_file and resolve(sheep.stderr_file)
    return config


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without the snippet of the line that PyYAML appends."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return type(exc).__name__
    mark = exc.problem_mark
    context = f" ({exc.context})" if exc.context else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}"
