"""Signed webhooks (Standard Webhooks) for job events: see :mod:`.service`."""

from services.notifier.webhooks.service import Webhooks

__all__ = ["Webhooks"]
