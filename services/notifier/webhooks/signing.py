"""Standard Webhooks signatures and ids.

Each delivery carries ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``: ``v1,``
and the base64 HMAC-SHA256 of ``<id>.<timestamp>.<body>`` under the key a ``whsec_`` secret
encodes. The official ``standardwebhooks`` package signs, so that what receivers verify with
it (or any other Standard Webhooks library) is what was signed, byte for byte.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from standardwebhooks import Webhook

from schemas.webhooks import CloudEvent


def webhook_id(event: CloudEvent, target: str) -> str:
    """The same for the same event and receiver (``target``: a subscription's name, or the
    callback URL), on every attempt and after any redelivery, so that receivers can drop
    duplicates; different for different receivers, which may share a store of seen ids."""
    digest = hashlib.sha256(f"{event.id}\n{target}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def signature_headers(
    secret: str, msg_id: str, body: str, now: datetime | None = None
) -> dict[str, str]:
    """The three headers of one attempt. The timestamp is the attempt's, so a retry hours
    later still passes a receiver's five-minute tolerance."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
    }
