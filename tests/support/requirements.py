"""What a test needs from the machine: skipped without it on a developer's machine, failed
under CI (``CI=true``), where a missing tool or server is a broken setup, not a reason to test
less.

    if shutil.which("amqp-publish") is None:
        missing("amqp-publish is missing: apt-get install amqp-tools (make services does)")
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> NoReturn:
    """Skip, or under CI fail, naming what is missing."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: what a test needs must be there)", pytrace=False)
    pytest.skip(what)
