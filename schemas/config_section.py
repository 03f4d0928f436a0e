"""The base of every section of the configuration."""

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """Unknown keys are refused (a typo is an error, not a default); errors never quote the
    input, which may be a password or a token."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class MetricsEndpoint(Section):
    """Where a service run alone (``shepherd notifier``, ``shepherd sheep ID``) serves its
    Prometheus metrics; ``shepherd up`` and ``shepherd gateway`` serve them on the gateway's
    ``/metrics`` instead."""

    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="TCP port of /metrics when this service runs alone; none: not served.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address /metrics binds when this service runs alone (0.0.0.0 for a "
        "Prometheus on another machine).",
    )
