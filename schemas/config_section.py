"""The base of every section of the configuration."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are refused (a typo is an error, not a default); errors never quote the
    input, which may be a password or a token."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
