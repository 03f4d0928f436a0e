"""Which events a subscription wants: AMQP topic patterns over the routing key.

Subscriptions name events the way a queue bound to ``<ns>.events`` would (``job.done``,
``job.*``, ``job.#``), so one vocabulary serves AMQP subscribers and webhook receivers alike.
"""

from __future__ import annotations

from collections.abc import Iterable


def matches(pattern: str, routing_key: str) -> bool:
    """Topic-exchange matching: words separated by dots, ``*`` one word, ``#`` any number."""
    return _match(pattern.split("."), routing_key.split("."))


def matches_any(patterns: Iterable[str], routing_key: str) -> bool:
    return any(matches(pattern, routing_key) for pattern in patterns)


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[skip:]) for skip in range(len(words) + 1))
    return bool(words) and head in {"*", words[0]} and _match(rest, words[1:])
