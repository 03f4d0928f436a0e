"""S3 event notifications, as MinIO publishes them to the ``shepherd.storage`` exchange.

Only the fields Shepherd uses are required; everything else MinIO (or another S3 service)
adds is tolerated, so a newer server never breaks parsing.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class S3Bucket(_Tolerant):
    name: str


class S3Object(_Tolerant):
    key: str = Field(description="URL-encoded, as in the S3 event format.")
    size: int | None = None
    e_tag: str | None = Field(default=None, alias="eTag")
    content_type: str | None = Field(default=None, alias="contentType")

    @property
    def decoded_key(self) -> str:
        return unquote_plus(self.key)


class S3Entity(_Tolerant):
    bucket: S3Bucket
    object: S3Object


class S3Record(_Tolerant):
    event_name: str = Field(alias="eventName", description="e.g. s3:ObjectCreated:Put")
    event_time: str | None = Field(default=None, alias="eventTime")
    s3: S3Entity

    @property
    def created(self) -> bool:
        return self.event_name.removeprefix("s3:").startswith("ObjectCreated:")

    @property
    def removed(self) -> bool:
        return self.event_name.removeprefix("s3:").startswith("ObjectRemoved:")


class S3EventNotification(_Tolerant):
    """One notification message; MinIO sends one record per message, AWS may batch."""

    records: list[S3Record] = Field(alias="Records", min_length=1)
