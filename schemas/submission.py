"""Submitting jobs over AMQP: what the gateway answers, and how it marks what it refused.

Any AMQP client may publish a :class:`~schemas.job.JobRequest` (the ``POST /start-job`` body)
to ``<ns>.submit``; the gateway declares it exactly as it declares an HTTP request. A
submission that carries ``reply_to`` (and ``correlation_id``) gets a :class:`SubmissionReply`
there. A refused one is also dead-lettered: the gateway publishes it, body and headers
unchanged, to ``<ns>.dlx`` with routing key :data:`DEAD_LETTER_KEY` and two headers added,
:data:`REJECTION_HEADER` and :data:`REJECTION_DETAIL_HEADER`, and announces it as a
``job.rejected`` event (:class:`~schemas.events.JobRejectedEvent`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import JobRejection
from schemas.names import JobId

DEAD_LETTER_KEY = "submit.rejected"
"""Routing key of refused submissions on ``<ns>.dlx``; they land in ``<ns>.dead``."""
REJECTION_HEADER = "x-shepherd-rejection"
"""Header of a refused submission's dead letter: the :class:`JobRejection` ``reason``."""
REJECTION_DETAIL_HEADER = "x-shepherd-rejection-detail"
"""Header of a refused submission's dead letter: the :class:`JobRejection` ``detail``."""


class SubmissionReply(BaseModel):
    """The gateway's answer to a submission that names a ``reply_to`` queue.

    ``accepted``: a new job (``POST /start-job`` answers 202); ``repeated``: the same request
    as the job's declaration, which it completes if a first attempt broke off (200);
    ``rejected``: refused, see ``rejection`` (4xx).
    """

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["accepted", "repeated", "rejected"]
    job_id: JobId | None = Field(
        description="The job declared, or the one a refused submission names (if valid)."
    )
    queued: bool = Field(
        default=False,
        description="Whether this declaration queued the job: its declared inputs (or, "
        "declaring none, its payload) were all there.",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="What the submitter should know, as POST /start-job's notes: e.g. that "
        "the callback_url's host does not resolve now.",
    )
    rejection: JobRejection | None = None
