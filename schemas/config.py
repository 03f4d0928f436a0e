"""Configuration: one YAML file, ``${VAR}`` interpolation, ``SHEPHERD_*`` environment overrides.

    config = load_config("examples/configs/shepherd-bare.yml")
    SHEPHERD_BROKER__URL=amqp://... shepherd up    # overrides broker.url

Relative paths in the file are resolved against the file's own directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from schemas.errors import format_validation_error
from schemas.names import PathSegment

_DEFAULT_DATA_ROOT = Path("/tmp/shepherd-data")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrokerConfig(_Section):
    url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="AMQP URL; never logged.",
    )
    namespace: PathSegment = Field(
        default="shepherd",
        description="Prefix of every exchange and queue Shepherd declares (shepherd.jobs, ...).",
    )
    delivery_limit: PositiveInt = Field(
        default=5, description="Deliveries of one job before it is dead-lettered and failed."
    )
    reconnect_interval: PositiveFloat = Field(
        default=1.0, description="Seconds between reconnection attempts."
    )


class StorageConfig(_Section):
    endpoint: str = Field(default="127.0.0.1:9000", description="host:port of the S3 service.")
    access_key: SecretStr = SecretStr("minioadmin")
    secret_key: SecretStr = Field(default=SecretStr("minioadmin"), description="Never logged.")
    bucket: PathSegment = Field(default="shepherd", description="One prefix per job inside.")
    secure: bool = Field(default=False, description="Use HTTPS.")
    region: str | None = Field(default=None, description="S3 region, if the service needs one.")
    notification_exchange: str = Field(
        default="shepherd.storage",
        description="Exchange the S3 service publishes bucket notifications to.",
    )


class RegistryConfig(_Section):
    url: str = Field(default="127.0.0.1:5050", description="Docker registry host:port.")
    username: str | None = None
    password: SecretStr | None = None


class ModelDefaults(_Section):
    timeout: PositiveFloat | None = Field(
        default=None, description="Seconds a job of this model may run when it names none."
    )


class _SheepBase(_Section):
    port: int = Field(ge=1, le=65535, description="Loopback TCP port of the runner's socket.")
    devices: list[str] = Field(
        default_factory=list, description="GPU ids or device paths given to the runner."
    )
    heartbeat_interval: PositiveFloat = Field(
        default=2.0, description="Seconds between runner heartbeats."
    )
    heartbeat_timeout: PositiveFloat = Field(
        default=30.0, description="Silence after which the runner is deemed dead."
    )
    load_timeout: PositiveFloat = Field(
        default=300.0, description="Seconds a runner may take to load its model."
    )


class BareSheepConfig(_SheepBase):
    type: Literal["bare"] = "bare"
    working_directory: Path = Field(
        description="Holds <model>/<version>/ directories, each with a shepherd-runner.yaml."
    )
    stdout_file: Path | None = Field(
        default=None, description="Runner stdout; default <data_root>/<sheep>/.runner/stdout.log."
    )
    stderr_file: Path | None = Field(
        default=None, description="Runner stderr; default <data_root>/<sheep>/.runner/stderr.log."
    )


class DockerSheepConfig(_SheepBase):
    type: Literal["docker"] = "docker"
    env: dict[str, str] = Field(default_factory=dict, description="Container environment.")
    cpus: PositiveFloat | None = None
    memory: str | None = Field(default=None, description="Docker memory limit, e.g. 4g.")


SheepConfig = Annotated[BareSheepConfig | DockerSheepConfig, Field(discriminator="type")]


class GatewayConfig(_Section):
    host: str = Field(default="127.0.0.1", description="Address the HTTP API binds.")
    port: int = Field(default=5000, ge=0, le=65535, description="Its port.")
    max_payload_bytes: PositiveInt = Field(
        default=16 * 1024 * 1024, description="Largest request body accepted, in bytes."
    )
    public_url: str | None = Field(
        default=None, description="Base URL used in links; defaults to the request's."
    )


class WebhookSubscription(_Section):
    url: str = Field(description="Receiver of the deliveries.")
    events: list[str] = Field(
        default_factory=lambda: ["job.*"],
        description="Routing-key patterns of the events delivered.",
    )
    secret: SecretStr | None = Field(default=None, description="whsec_ signing secret.")


class NotifierConfig(_Section):
    webhooks: list[WebhookSubscription] = Field(
        default_factory=list, description="Global webhook subscriptions."
    )


class Config(BaseSettings):
    """The whole configuration; every section has defaults matching ``make services``."""

    model_config = SettingsConfigDict(
        env_prefix="SHEPHERD_", env_nested_delimiter="__", extra="forbid"
    )

    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="RabbitMQ.")
    storage: StorageConfig = Field(
        default_factory=StorageConfig, description="The S3 service (MinIO)."
    )
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig, description="Docker registry of model images."
    )
    data_root: Path = Field(
        default=_DEFAULT_DATA_ROOT, description="Scratch space: <data_root>/<sheep>/<job_id>/."
    )
    models: dict[str, ModelDefaults] = Field(
        default_factory=dict, description="Per-model defaults, keyed by name or name:version."
    )
    sheep: dict[PathSegment, SheepConfig] = Field(
        default_factory=dict, description="The compute slots, by id: bare or docker."
    )
    gateway: GatewayConfig = Field(default_factory=GatewayConfig, description="HTTP API.")
    notifier: NotifierConfig = Field(default_factory=NotifierConfig, description="Notifications.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: SHEPHERD_* variables override the file.
        return env_settings, init_settings

    def model_defaults(self, name: str, version: str) -> ModelDefaults:
        return self.models.get(f"{name}:{version}") or self.models.get(name) or ModelDefaults()


class ConfigError(ValueError):
    """The configuration file cannot be read, interpolated or validated."""


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""
    env = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set (used as ${{{name}}})")

    return _VAR.sub(substitute, text)


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


def load_config(path: str | Path | None = None) -> Config:
    """Read, interpolate and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw: Any = yaml.safe_load(interpolate(path.read_text()))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, not {type(raw).__name__}")
    try:
        config = Config(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc)}") from exc
    return _resolve_paths(config, path.parent.resolve())
