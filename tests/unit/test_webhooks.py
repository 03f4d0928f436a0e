"""Webhook rules that need no server: patterns, the SSRF guard's address rules, retry
decisions, signatures, configuration, topology and the OpenAPI section."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pydantic import AnyHttpUrl, SecretStr, ValidationError
from standardwebhooks import Webhook

from schemas.broker_names import Names
from schemas.config import Config, NotifierConfig, WebhookSubscription
from schemas.topology import build_topology, retry_delays_ms
from schemas.webhooks import DEFAULT_RETRY_SCHEDULE, CloudEvent
from services.common.ssrf_guard import (
    CallbackCheck,
    RefusedTarget,
    check_callback,
    refusal,
    resolve,
)
from services.gateway.openapi import build_openapi
from services.notifier.webhooks.patterns import matches
from services.notifier.webhooks.retries import (
    JITTER,
    Backoff,
    ScheduleSpent,
    Verdict,
    retry_after,
    verdict,
)
from services.notifier.webhooks.signing import signature_headers, webhook_id
from tests.support.webhooks import secret

SECRET = secret()


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("job.done", "job.done", True),
        ("job.done", "job.failed", False),
        ("job.*", "job.progress", True),
        ("job.*", "job", False),
        ("job.#", "job", True),
        ("job.#", "job.done", True),
        ("#", "job.done", True),
        ("*.done", "job.done", True),
        ("job.*.x", "job.done", False),
        ("#.done", "job.done", True),
        ("sheep.*", "job.done", False),
    ],
)
def test_patterns_follow_topic_exchange_rules(pattern, key, expected):
    assert matches(pattern, key) is expected


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "not a globally routable"),  # shared address space (CGNAT)
        ("169.254.169.254", "link-local"),  # cloud metadata services
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback address (127.0.0.1 embedded)"),
        ("::ffff:10.1.1.1", "private address (10.1.1.1 embedded)"),
        ("2002:7f00:1::", "loopback address (127.0.0.1 embedded)"),  # 6to4
        ("64:ff9b::a9fe:a9fe", "link-local address (169.254.169.254 embedded)"),  # NAT64
    ],
)
def test_the_guard_refuses_non_public_addresses(address, why):
    assert why in (refusal(ipaddress.ip_address(address)) or "")


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_the_guard_lets_public_addresses_through(address):
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("allow_private", [False, True])
async def test_a_host_name_that_cannot_resolve_is_refused_naming_it(allow_private):
    """A DNS label over 63 characters passes URL parsing, then fails resolving with a
    UnicodeError: refused with the reason, at submission and at delivery alike."""
    host = "a" * 64 + ".example.com"
    config = NotifierConfig(callback_secret=SecretStr(SECRET), allow_private_targets=allow_private)
    why = (await check_callback(AnyHttpUrl(f"https://{host}/hook"), config)).refused
    assert why is not None and f"{host!r} is not a valid host name" in why
    with pytest.raises(RefusedTarget, match="not a valid host name"):
        await resolve(host, 443, allow_private)


async def test_a_callback_url_needs_the_callback_secret():
    url = AnyHttpUrl("https://hooks.example.com/x")
    assert "callback_secret" in ((await check_callback(url, NotifierConfig())).refused or "")
    allowed = NotifierConfig(callback_secret=SecretStr(SECRET), allow_private_targets=True)
    assert await check_callback(AnyHttpUrl("http://127.0.0.1/x"), allowed) == CallbackCheck()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (None, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (410, Verdict.GONE),
        (400, Verdict.GIVE_UP),
        (404, Verdict.GIVE_UP),
        (301, Verdict.GIVE_UP),
    ],
)
def test_verdicts(status, expected):
    assert verdict(status) is expected


def test_retry_after_takes_seconds_or_a_date():
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert retry_after("120") == 120.0
    assert retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after("soon") is None
    assert retry_after(None) is None


def test_backoff_follows_the_schedule_with_jitter_below_each_step():
    backoff = Backoff([1, 5, 30])
    for attempt, step in enumerate([1, 5, 30], start=1):
        for _ in range(50):
            retry = backoff.after(attempt, None)
            assert retry.queue_ms == step * 1000
            assert step * (1 - JITTER) <= retry.delay <= step
    with pytest.raises(ScheduleSpent, match="4 attempts"):
        backoff.after(4, None)


def test_backoff_waits_at_least_as_long_as_retry_after():
    backoff = Backoff([1, 5, 30])
    retry = backoff.after(1, 3.0)
    assert retry.delay == 3.0 and retry.queue_ms == 5000  # the next longer queue
    assert backoff.after(1, 30.0).queue_ms == 30_000
    with pytest.raises(ScheduleSpent, match="Retry-After"):
        backoff.after(1, 31.0)


def test_signatures_verify_and_ids_are_stable_per_event_and_receiver():
    event = CloudEvent(specversion="1.0", id="e1", source="/s", type="io.shepherd.job.done")
    body = '{"id":"e1"}'
    msg_id = webhook_id(event, "billing")
    assert msg_id == webhook_id(event, "billing") != webhook_id(event, "audit")
    now = datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    headers = signature_headers(SECRET, msg_id, body, now)
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{msg_id}.{headers['webhook-timestamp']}.{body}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    fresh = signature_headers(SECRET, msg_id, body)
    assert Webhook(SECRET).verify(body, fresh) == {"id": "e1"}


def test_notifier_defaults_are_safe():
    notifier = Config().notifier
    assert notifier.allow_private_targets is False
    assert notifier.webhook_timeout == 10.0
    assert notifier.webhook_retry_schedule == list(DEFAULT_RETRY_SCHEDULE)
    assert notifier.callback_secret is None


@pytest.mark.parametrize(
    "fields",
    [
        {"secret": "whsec_c2hvcnQ="},  # 5 bytes
        {"secret": "not-a-whsec-secret-at-all-0123456789"},
        {"secret": "whsec_***not*base64***not*base64***"},
        {"events": ["job.Done"]},
        {"events": ["job..done"]},
        {"events": []},
        {"url": "ftp://hooks.example.com/"},
        {"name": "../x"},
    ],
)
def test_bad_subscriptions_are_refused(fields):
    good = {"name": "billing", "url": "https://hooks.example.com/x", "secret": SECRET}
    with pytest.raises(ValidationError):
        WebhookSubscription(**{**good, **fields})


def test_subscription_names_are_unique_and_errors_do_not_quote_secrets():
    hook = {"name": "a", "url": "https://hooks.example.com/x", "secret": SECRET}
    with pytest.raises(ValidationError, match="same name"):
        NotifierConfig(webhooks=[hook, hook])
    with pytest.raises(ValidationError) as error:
        NotifierConfig(callback_secret=SecretStr("whsec_tooshort-verysecret"))
    assert "verysecret" not in str(error.value)


@pytest.mark.parametrize("schedule", [[0], [-1], [90_000]])
def test_retry_delays_are_bounded(schedule):
    with pytest.raises(ValidationError, match="every delay"):
        NotifierConfig(webhook_retry_schedule=schedule)


def test_the_topology_has_one_retry_queue_per_delay_back_to_the_deliveries():
    names = Names("ns")
    topology = build_topology(names, 3, [], [0.2, 5, 5, 30])
    assert retry_delays_ms([0.2, 5, 5, 30]) == [200, 5000, 30000]
    queues = {q.name: q.arguments for q in topology.queues}
    for delay in (200, 5000, 30000):
        arguments = queues[f"ns.webhook-retry.{delay}ms"]
        assert arguments["x-message-ttl"] == delay
        assert arguments["x-dead-letter-exchange"] == "ns.webhooks"
        assert arguments["x-dead-letter-routing-key"] == "deliver"
        assert arguments["x-queue-type"] == "quorum"
    bindings = {(b.exchange, b.queue, b.routing_key) for b in topology.bindings}
    # Bound by the notifier, and only while webhooks are configured.
    assert ("ns.events", "ns.webhook-events", "job.#") not in bindings
    assert ("ns.webhooks", "ns.webhook-deliveries", "deliver") in bindings
    assert ("ns.webhooks", "ns.webhook-retry.5000ms", "retry.5000ms") in bindings


def test_the_openapi_document_describes_webhook_deliveries():
    document = build_openapi()
    delivery = document["webhooks"]["jobEvent"]["post"]
    headers = {p["name"] for p in delivery["parameters"] if p["in"] == "header"}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    schema = delivery["requestBody"]["content"]["application/cloudevents+json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/JobEvent"}
    for hook in document["webhooks"].values():
        name = hook["post"]["requestBody"]["content"]["application/cloudevents+json"]["schema"]
        assert name["$ref"].rsplit("/", 1)[1] in document["components"]["schemas"]
    assert "security" not in delivery  # it is Shepherd that calls, not a client
