"""Configuration: the models of the YAML file, and ``SHEPHERD_*`` environment overrides.

config = Config(**parsed)                      # reading a file: schemas.config_file
SHEPHERD_BROKER__URL=amqp://... shepherd up    # overrides broker.url
"""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from schemas.config_section import MetricsEndpoint, Section
from schemas.job import Priority
from schemas.names import PathSegment
from schemas.nodes import broker_nodes, storage_nodes
from schemas.notifier_config import NotifierConfig as NotifierConfig
from schemas.notifier_config import WebhookSubscription as WebhookSubscription

_DEFAULT_DATA_ROOT = Path("/tmp/shepherd-data")


class BrokerConfig(Section):
    url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="AMQP URL; never logged. A cluster's nodes may be listed in it, "
        "comma-separated (amqp://user:pass@rabbit1:5672,rabbit2:5672/): each connection "
        "goes to the first that answers, and a lost one to the next.",
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
    publish_timeout: PositiveFloat = Field(
        default=5.0,
        description="Seconds to wait for the broker to confirm a message before giving up "
        "(a submission then answers 503).",
    )
    lease_time: PositiveFloat = Field(
        default=60.0,
        description="Seconds after which the job of a sheep that died (and did not come back) "
        "is queued again; running sheep renew their lease every third of it.",
    )
    lease_after: NonNegativeFloat = Field(
        default=60.0,
        description="Seconds a job runs on its unacknowledged delivery before its sheep "
        "leases it; shorter jobs cost no lease. Keep it well under RabbitMQ's "
        "consumer_timeout (30 minutes by default), which cuts off older deliveries.",
    )
    report_running_after: NonNegativeFloat = Field(
        default=0.2,
        description="Seconds a job runs before its sheep reports it running (at once if it "
        "reports progress). A quicker job is reported once, when it ends: the notifier "
        "announces job.running and the outcome together, stamped with the real times. "
        "0: at once.",
    )

    @field_validator("url")
    @classmethod
    def _amqp_url(cls, url: SecretStr) -> SecretStr:
        # aio-pika masks the password of a well-formed URL in its logs, but logs anything
        # else verbatim on every reconnection attempt; the message never quotes the URL.
        broker_nodes(url.get_secret_value())
        return url


class StorageConfig(Section):
    endpoint: str = Field(
        default="127.0.0.1:9000",
        description="host:port of the S3 service, or of each of its nodes, comma-separated "
        "(a distributed MinIO): requests go to the first that answers.",
    )
    access_key: SecretStr = SecretStr("minioadmin")
    secret_key: SecretStr = Field(default=SecretStr("minioadmin"), description="Never logged.")
    bucket: PathSegment = Field(default="shepherd", description="One prefix per job inside.")
    secure: bool = Field(default=False, description="Use HTTPS.")
    region: str | None = Field(default=None, description="S3 region, if the service needs one.")

    @field_validator("endpoint")
    @classmethod
    def _nodes(cls, endpoint: str) -> str:
        storage_nodes(endpoint)
        return endpoint

    notification_exchange: str = Field(
        default="shepherd.storage",
        description="Exchange the S3 service publishes bucket notifications to.",
    )


class RegistryConfig(Section):
    url: str = Field(default="127.0.0.1:5050", description="Docker registry host:port.")
    username: str | None = None
    password: SecretStr | None = None


class ModelDefaults(Section):
    timeout: PositiveFloat | None = Field(
        default=None, description="Seconds a job of this model may run when it names none."
    )
    max_attempts: PositiveInt = Field(
        default=2,
        description="Attempts a job gets when its runner dies under it (killed or crashed; not "
        "a timeout, an exception in the model or a cancellation): it runs again on a fresh "
        "runner until it has had that many, then fails with RunnerExited. Attempts are "
        "deliveries, as the job's status counts them (a sheep that died holding it used one).",
    )
    priority: Priority = Field(
        default="normal", description="The priority of a job of this model that names none."
    )


class _SheepBase(MetricsEndpoint):
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Loopback TCP port of the runner's socket; none: a free one, picked as "
        "each runner starts (a sheep of a class always picks).",
    )
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
    stop_grace: NonNegativeFloat = Field(
        default=30.0,
        description="On shutdown, seconds the current job may take to finish before it is "
        "stopped and queued again.",
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
    """The runner is a container of image ``<registry>/<model>:<version>`` (see
    ``shepherd image``), on the host network, with ``<data_root>/<sheep>`` mounted."""

    type: Literal["docker"] = "docker"
    env: dict[str, str] = Field(default_factory=dict, description="Container environment.")
    cpus: PositiveFloat | None = Field(default=None, description="CPU limit (cores).")
    memory: str | None = Field(default=None, description="Docker memory limit, e.g. 4g.")


SheepConfig = Annotated[BareSheepConfig | DockerSheepConfig, Field(discriminator="type")]


Scope = Literal["read", "submit"]
"""``read``: GET lookups; ``submit``: every other method (declaring, uploading, cancelling)."""

MIN_TOKEN_LENGTH = 16


def token_digest(token: str) -> str:
    """Hex SHA-256 of a bearer token. Tokens are random, so an unsalted hash suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the port on this machine (a hostname other than
    localhost counts as reachable from elsewhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class TokenConfig(Section):
    name: str = Field(
        min_length=1, max_length=64, description="Who holds it; logs name it, never the token."
    )
    scopes: list[Scope] = Field(min_length=1, description="Any of read, submit.")
    sha256: str = Field(
        pattern="^[0-9a-f]{64}$",
        description="Hex SHA-256 of the token, as `shepherd token` prints it; or give token.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="Instead of sha256: the token itself, e.g. ${CI_TOKEN}; hashed on load "
        "and not kept.",
    )

    @model_validator(mode="before")
    @classmethod
    def _hash_token(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        token = data.get("token")
        if token is None:
            if data.get("sha256") is None:
                raise ValueError("give sha256 (printed by `shepherd token`) or token")
            return {**data, "sha256": str(data["sha256"]).lower()}
        if data.get("sha256") is not None:
            raise ValueError("give either sha256 or token, not both")
        plain = token.get_secret_value() if isinstance(token, SecretStr) else str(token)
        if len(plain) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"token is shorter than {MIN_TOKEN_LENGTH} characters; "
                "mint one with `shepherd token`"
            )
        return {**data, "sha256": token_digest(plain), "token": None}


class GatewayConfig(Section):
    host: str = Field(default="127.0.0.1", description="Address the HTTP API binds.")
    port: int = Field(default=5000, ge=0, le=65535, description="Its port.")
    max_payload_bytes: PositiveInt = Field(
        default=16 * 1024 * 1024,
        description="Largest JSON request body (POST /start-job), in bytes.",
    )
    dispatch_payload_bytes: NonNegativeInt = Field(
        default=64 * 1024,
        description="Inline payloads up to this size (in bytes), of jobs that declare no "
        "inputs, are kept in job.json and travel in the job's message: the job's only input, "
        "which costs no object of its own and no read. Larger ones are stored as "
        "inputs/input.json, a declared input; 0: always.",
    )
    max_upload_bytes: PositiveInt = Field(
        default=1024**3,
        description="Largest file accepted by PUT /jobs/{job_id}/input/{file}, in bytes.",
    )
    public_url: str | None = Field(
        default=None, description="Base URL used in links; defaults to the request's."
    )
    keep_alive_timeout: float = Field(
        default=75.0,
        gt=0,
        le=3600,
        description=(
            "Seconds an idle client connection is kept open. Longer than clients' own pools "
            "(httpx 5 s, aiohttp 15 s) and load balancers' idle timeouts, so that the server "
            "is not the one closing a connection just as a client sends on it."
        ),
    )
    forget_sheep_after: PositiveFloat = Field(
        default=300.0,
        description="Seconds of silence after which GET /status drops a sheep of a class, "
        "once it is no longer alive (three announcement intervals, 15 s); one that stops "
        "cleanly is dropped at once. A named sheep stays listed, not alive.",
    )
    index_path: Path | None = Field(
        default=None,
        description="The job index GET /jobs pages through, a SQLite file kept up with the "
        "job events (rebuilt from them if removed); default "
        "<data_root>/.gateway/<namespace>.jobs.sqlite3. One per gateway.",
    )
    auth: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Bearer-token auth; auto: on unless host is a loopback address. YAML's "
        'unquoted on and off (booleans) are taken as "on" and "off".',
    )
    tokens: list[TokenConfig] = Field(
        default_factory=list, description="Accepted bearer tokens and their scopes."
    )

    @field_validator("auth", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        """``auth: on`` unquoted is the boolean true to YAML."""
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @property
    def auth_enabled(self) -> bool:
        return self.auth == "on" or (self.auth == "auto" and not is_loopback(self.host))

    @model_validator(mode="after")
    def _tokens_for_auth(self) -> GatewayConfig:
        if self.auth_enabled and not self.tokens:
            reason = (
                "gateway.auth is on"
                if self.auth == "on"
                else f"gateway.host {self.host} is not a loopback address, so auth (auto) is on"
            )
            raise ValueError(
                f"{reason} but gateway.tokens is empty: add a token (`shepherd token "
                "--scopes read,submit --name NAME` prints one) or set gateway.auth: off"
            )
        digests = [token.sha256 for token in self.tokens]
        if len(set(digests)) != len(digests):
            raise ValueError("two gateway.tokens are the same token")
        return self


class Config(BaseSettings):
    """The whole configuration; every section has defaults matching ``make services``."""

    model_config = SettingsConfigDict(
        env_prefix="SHEPHERD_", env_nested_delimiter="__", extra="forbid", hide_input_in_errors=True
    )

    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="RabbitMQ.")
    storage: StorageConfig = Field(
        default_factory=StorageConfig, description="The S3 service (MinIO)."
    )
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig, description="Docker registry of model images."
    )
    data_root: Path = Field(
        default=_DEFAULT_DATA_ROOT,
        description="Scratch space: <data_root>/<sheep>/<job_id>.<delivery>/.",
    )
    models: dict[str, ModelDefaults] = Field(
        default_factory=dict, description="Per-model defaults, keyed by name or name:version."
    )
    sheep: dict[PathSegment, SheepConfig] = Field(
        default_factory=dict, description="The named compute slots, by id: bare or docker."
    )
    sheep_classes: dict[PathSegment, SheepConfig] = Field(
        default_factory=dict,
        description="Kinds of sheep that join on their own: `shepherd sheep --class NAME` "
        "starts one with an id made at start (<class>-<random>), taking the class's jobs and "
        "the pool's; any number of them, on any machine. A class names no runner port; a "
        "metrics_port suits one sheep per host (a Kubernetes pod).",
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

    @model_validator(mode="after")
    def _classes_pick_ports(self) -> Config:
        for name, section in self.sheep_classes.items():
            if section.port is not None:
                raise ValueError(
                    f"sheep_classes.{name}.port: a class names no port (its sheep, many on "
                    "one machine, each pick a free one)"
                )
        return self

    def job_index_path(self) -> Path:
        """Where this gateway keeps its job index (``gateway.index_path``)."""
        default = self.data_root / ".gateway" / f"{self.broker.namespace}.jobs.sqlite3"
        return self.gateway.index_path or default

    def model_defaults(self, name: str, version: str) -> ModelDefaults:
        return self.models.get(f"{name}:{version}") or self.models.get(name) or ModelDefaults()

    def secrets(self) -> list[str]:
        """Every credential held in plain form: broker password, storage keys, registry
        password, webhook secrets (gateway tokens are held as digests only)."""
        held = [
            urlsplit(self.broker.url.get_secret_value()).password,
            self.storage.access_key.get_secret_value(),
            self.storage.secret_key.get_secret_value(),
            self.registry.password and self.registry.password.get_secret_value(),
            *(w.secret.get_secret_value() for w in self.notifier.webhooks),
            self.notifier.callback_secret and self.notifier.callback_secret.get_secret_value(),
        ]
        return [secret for secret in held if secret]

    def reveals_secret(self, text: str) -> bool:
        """Whether ``text`` holds one of :meth:`secrets` or is a gateway token. A credential
        shorter than 8 characters (the local default ``guest``) counts only as the whole
        text, so that ``/home/guest`` is not taken for it."""
        held = any(s in text if len(s) >= 8 else s == text for s in self.secrets())
        return held or token_digest(text) in {t.sha256 for t in self.gateway.tokens}
