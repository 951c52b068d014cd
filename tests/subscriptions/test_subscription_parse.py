"""Subscription parsing: what a client sees when Herald accepts or refuses a Subscription."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from fhirstore.errors import Unprocessable
from fhirstore.search.values import RangeValue, ReferenceValue, TokenValue, ValueSetRef
from fhirstore.wire import (
    CHANNEL_TYPE,
    ENCOUNTER_START,
    FILTER_CRITERIA,
    HEARTBEAT_PERIOD,
    HERALD_CHANNEL_TYPES,
    MAX_COUNT,
    PAYLOAD_CONTENT,
    RESOURCE_CHANGE,
    SIGNING_SECRET,
    TASK_READY,
    TIMEOUT,
)
from subscriptions.builtin_topics import BUILTIN_TOPICS
from subscriptions.channel import ChannelSupport
from subscriptions.model import ANY_RESOURCE, Channel, SubscriptionSpec, Topic, classic_topic_url
from subscriptions.subscription import TYPE_PARAM, classic_topic, parse_subscription
from subscriptions.topics import parse_topic

TOPICS = {topic.url: topic for topic in map(parse_topic, BUILTIN_TOPICS)}
HOOK = "https://receiver.example.org/hook"
CHANNEL_TYPES = "http://terminology.hl7.org/CodeSystem/subscription-channel-type"
FILTER_PATH = "Subscription.criteria.extension[{}]"


def find_topic(url: str) -> Topic | None:
    return TOPICS.get(url)


def subscription(criteria: str = ENCOUNTER_START, *filters: str, **changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": "sub-1",
        "status": "requested",
        "reason": "test",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": HOOK, "payload": "application/fhir+json"},
    }
    if filters:
        resource["_criteria"] = {
            "extension": [{"url": FILTER_CRITERIA, "valueString": text} for text in filters]
        }
    resource.update(changes)
    return resource


def channel(**changes: Any) -> dict[str, Any]:
    return {"type": "rest-hook", "endpoint": HOOK, "payload": "application/fhir+json", **changes}


def parse(resource: dict[str, Any], **options: Any) -> SubscriptionSpec:
    return parse_subscription(resource, find_topic, **options)


def refused(resource: dict[str, Any], **options: Any) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        parse(resource, **options)
    assert caught.value.status == 422
    return caught.value


# -- topic-based subscriptions --------------------------------------------------------------------


def test_a_topic_subscription_with_defaults() -> None:
    spec = parse(subscription())
    assert spec.id == "sub-1"
    assert spec.topic_url == ENCOUNTER_START
    assert not spec.classic
    assert spec.filters == ()
    assert spec.status == "requested"
    assert spec.channel.type == "rest-hook"
    assert spec.channel.endpoint == HOOK
    assert (spec.channel.payload, spec.channel.content) == ("application/fhir+json", "id-only")
    assert spec.channel.max_count == 1
    assert spec.end is None and spec.secret is None


def test_a_versioned_topic_canonical_is_accepted() -> None:
    assert parse(subscription(ENCOUNTER_START + "|1.0.0")).topic_url == ENCOUNTER_START


def test_an_unknown_topic_is_refused() -> None:
    error = refused(subscription("http://example.org/SubscriptionTopic/nope"))
    assert error.expression == ["Subscription.criteria"]
    assert "nope" in error.diagnostics


@pytest.mark.parametrize(
    "text",
    ["Encounter?patient=Patient/1", "Encounter.patient=Patient/1", "patient=Patient/1"],
)
def test_filter_forms(text: str) -> None:
    (item,) = parse(subscription(ENCOUNTER_START, text)).filters
    assert item.resource_type == "Encounter"
    assert item.criterion.param.code == "patient"
    assert item.criterion.values == (ReferenceValue(("Patient/1",)),)
    assert item.text == text


def test_several_parameters_and_several_extensions_are_all_kept() -> None:
    spec = parse(
        subscription(ENCOUNTER_START, "Encounter?patient=Patient/1&class:not=EMER", "type=ADMS")
    )
    assert [(f.criterion.param.code, f.criterion.modifier) for f in spec.filters] == [
        ("patient", None),
        ("class", "not"),
        ("type", None),
    ]


def test_filter_values_are_percent_decoded_and_plus_stays() -> None:
    spec = parse(subscription(RESOURCE_CHANGE, "Observation?code=http%3A%2F%2Floinc.org%7C8867-4"))
    assert spec.filters[0].criterion.values == (
        TokenValue(code="8867-4", system="http://loinc.org"),
    )
    dated = parse(subscription(RESOURCE_CHANGE, "Observation?date=ge2024-01-01T00:00:00+01:00"))
    (value,) = dated.filters[0].criterion.values
    assert isinstance(value, RangeValue) and value.prefix == "ge"
    assert value.low == datetime(2023, 12, 31, 23, tzinfo=UTC).timestamp()


def test_a_filter_the_topic_does_not_allow_is_refused_with_what_it_allows() -> None:
    error = refused(subscription(TASK_READY, "status=ready"))
    assert error.expression == ["Subscription.criteria.extension[0]"]
    assert "based-on, code, focus, owner, patient, requester" in error.diagnostics


def test_a_filter_on_a_type_the_topic_is_not_about_is_refused() -> None:
    error = refused(subscription(TASK_READY, "Observation?patient=Patient/1"))
    assert "Task" in error.diagnostics and "Observation" in error.diagnostics


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Observation?frobnication=1", "frobnication"),
        ("Observation?date=yesterday", "date"),
        ("Observation?code:exact=1", ":exact"),
        ("Observation?subject.name=peter", "chained"),
        ("Obsrvation?code=1", "Obsrvation"),
        ("Observation?code", "name=value"),
    ],
)
def test_invalid_filters_are_refused_naming_the_extension(text: str, words: str) -> None:
    error = refused(subscription(RESOURCE_CHANGE, "_type=Observation", text))
    assert error.expression == ["Subscription.criteria.extension[1]"]
    assert words in error.diagnostics


def test_in_and_not_in_filters_name_their_value_sets_until_expanded() -> None:
    """Parsing reads no store: the ValueSets stay references, which the registry expands
    through the owner's reach (tests/subscriptions/test_value_set_filters.py)."""
    spec = parse(
        subscription(
            RESOURCE_CHANGE,
            "Observation?code:in=http://example.org/ValueSet/vitals",
            "Observation?category:not-in=ValueSet/excluded",
        )
    )
    assert [(f.criterion.modifier, f.criterion.values, f.path) for f in spec.filters] == [
        ("in", (ValueSetRef("http://example.org/ValueSet/vitals"),), FILTER_PATH.format(0)),
        ("not-in", (ValueSetRef("ValueSet/excluded"),), FILTER_PATH.format(1)),
    ]
    classic = parse(subscription("Observation?code:in=ValueSet/vitals"))
    assert classic.filters[0].criterion.values == (ValueSetRef("ValueSet/vitals"),)


def test_a_filter_extension_without_a_string_is_refused() -> None:
    resource = subscription(ENCOUNTER_START)
    resource["_criteria"] = {"extension": [{"url": FILTER_CRITERIA, "valueCode": "x"}]}
    assert refused(resource).expression == ["Subscription.criteria.extension[0]"]


def test_type_restricts_resource_change() -> None:
    spec = parse(subscription(RESOURCE_CHANGE, "_type=Observation,Patient"))
    (item,) = spec.filters
    assert item.resource_type == ANY_RESOURCE
    assert item.criterion.param == TYPE_PARAM
    assert set(item.criterion.values) == {TokenValue("Observation"), TokenValue("Patient")}


def test_a_typed_filter_outside_the_type_filter_is_refused() -> None:
    error = refused(subscription(RESOURCE_CHANGE, "_type=Patient", "Observation?code=1"))
    assert error.expression == ["Subscription.criteria.extension[1]"]
    assert "_type" in error.diagnostics


def test_an_untyped_filter_on_resource_change_needs_a_single_type() -> None:
    error = refused(subscription(RESOURCE_CHANGE, "patient=Patient/1"))
    assert "resource type" in error.diagnostics
    spec = parse(subscription(RESOURCE_CHANGE, "patient=Patient/1", "_type=Observation"))
    assert spec.filters[0].resource_type == "Observation"
    assert refused(subscription(RESOURCE_CHANGE, "_type=Observation,Patient", "patient=Patient/1"))


@pytest.mark.parametrize(
    ("criteria", "text"),
    [
        (RESOURCE_CHANGE, "_type=Frobnication"),
        (RESOURCE_CHANGE, "Observation?_type=Patient"),
        (RESOURCE_CHANGE, "_type:not=Patient"),
        (RESOURCE_CHANGE, "_type="),
        (RESOURCE_CHANGE, "_type=Patient&_type=Observation"),
        (TASK_READY, "_type=Task"),
    ],
)
def test_invalid_type_filters_are_refused(criteria: str, text: str) -> None:
    assert refused(subscription(criteria, text)).expression == [
        "Subscription.criteria.extension[0]"
    ]


# -- classic subscriptions ------------------------------------------------------------------------


def test_classic_criteria() -> None:
    spec = parse(subscription("Observation?code=http://loinc.org|1234&subject=Patient/1"))
    assert spec.classic
    assert spec.topic_url == classic_topic_url("Observation")
    assert [(f.resource_type, f.criterion.param.code) for f in spec.filters] == [
        ("Observation", "code"),
        ("Observation", "subject"),
    ]
    assert spec.channel.content == "full-resource"


def test_classic_without_payload_sends_nothing_and_bare_type_has_no_filters() -> None:
    resource = subscription("Observation", channel={"type": "rest-hook", "endpoint": HOOK})
    spec = parse(resource)
    assert spec.filters == ()
    assert (spec.channel.payload, spec.channel.content) == (None, "empty")


@pytest.mark.parametrize(
    ("payload", "content"),
    [
        ("text/plain", "empty"),
        ("text/html", "empty"),
        ("text/plain;attach=application/fhir+json", "full-resource"),
        ("application/fhir+json", "full-resource"),  # a plain mail with the resource attached
        (None, "empty"),
    ],
)
def test_classic_email_mails_the_resource_only_as_an_attachment(
    payload: str | None, content: str
) -> None:
    channel = {"type": "email", "endpoint": "mailto:care@example.org"}
    if payload is not None:
        channel["payload"] = payload
    spec = parse(subscription("Observation", channel=channel), channels=ALL_CHANNELS)
    assert spec.channel.content == content


def test_classic_topic() -> None:
    topic = classic_topic("Observation")
    assert topic.url == classic_topic_url("Observation")
    (trigger,) = topic.triggers
    assert (trigger.resource_type, trigger.interactions) == ("Observation", {"create", "update"})
    assert topic.can_filter_by == {"Observation": frozenset({"*"})}


@pytest.mark.parametrize(
    ("criteria", "words"),
    [
        ("Observation?frobnication=1", "frobnication"),
        ("Obsrvation?code=1", "Obsrvation"),
        ("Observation?_count=10", "_count"),
        ("observation?code=1", "canonical URL"),
    ],
)
def test_invalid_classic_criteria_are_refused(criteria: str, words: str) -> None:
    error = refused(subscription(criteria))
    assert error.expression == ["Subscription.criteria"]
    assert words in error.diagnostics


# -- channel --------------------------------------------------------------------------------------


ALL_CHANNELS = ChannelSupport(frozenset({"rest-hook", "websocket", "email", "kafka"}))
KAFKA_TYPE = {"url": CHANNEL_TYPE, "valueCoding": {"system": HERALD_CHANNEL_TYPES, "code": "kafka"}}


def test_other_channel_types_are_not_supported_unless_enabled() -> None:
    resource = subscription(channel={"type": "websocket"})
    error = refused(resource)
    assert error.expression == ["Subscription.channel.type"]
    assert "not supported" in error.diagnostics
    spec = parse(resource, channels=ALL_CHANNELS)
    assert (spec.channel.type, spec.channel.endpoint) == ("websocket", "")


@pytest.mark.parametrize("kind", ["message", "sms"])
def test_fhir_messaging_and_sms_are_refused(kind: str) -> None:
    error = refused(subscription(channel=channel(type=kind)), channels=ALL_CHANNELS)
    assert error.expression == ["Subscription.channel.type"]
    if kind == "message":
        assert HERALD_CHANNEL_TYPES in error.diagnostics  # says how to ask for a Kafka queue


def test_classic_websocket_subscriptions_are_refused() -> None:
    classic = subscription("Observation?code=1", channel={"type": "websocket"})
    error = refused(classic, channels=ALL_CHANNELS)
    assert error.expression == ["Subscription.channel.type"]
    assert "topic-based" in error.diagnostics


def test_an_unknown_channel_type_is_refused() -> None:
    error = refused(subscription(channel=channel(type="carrier-pigeon")))
    assert error.expression == ["Subscription.channel.type"]


def test_backport_channel_type_extension() -> None:
    ext = {"url": CHANNEL_TYPE, "valueCoding": {"system": CHANNEL_TYPES, "code": "websocket"}}
    resource = subscription(channel={"_type": {"extension": [ext]}})
    spec = parse(resource, channels=ALL_CHANNELS)
    assert spec.channel.type == "websocket"
    ext["valueCoding"] = {"system": "http://example.org/channels", "code": "zulip"}
    error = refused(resource, channels=ALL_CHANNELS)
    assert error.expression == ["Subscription.channel.type.extension[0]"]
    assert "zulip" in error.diagnostics


def test_a_kafka_queue_is_a_message_channel_with_herald_channel_type() -> None:
    queue = {"type": "message", "_type": {"extension": [KAFKA_TYPE]}, "endpoint": "kafka:alerts"}
    spec = parse(subscription(channel=queue), channels=ALL_CHANNELS)
    assert (spec.channel.type, spec.channel.endpoint) == ("kafka", "kafka:alerts")
    error = refused(subscription(channel={**queue, "endpoint": "alerts"}), channels=ALL_CHANNELS)
    assert error.expression == ["Subscription.channel.endpoint"]
    error = refused(subscription(channel={**queue, "type": "rest-hook"}), channels=ALL_CHANNELS)
    assert error.expression == ["Subscription.channel.type"]


def test_email_needs_mailto_and_defaults_to_empty_content() -> None:
    mail = {"type": "email", "endpoint": "mailto:care@example.org", "payload": "application/json"}
    spec = parse(subscription(channel=mail), channels=ALL_CHANNELS)
    assert spec.channel.content == "empty"
    both = {**mail, "endpoint": "mailto:a@example.org,b@example.org"}
    assert parse(subscription(channel=both), channels=ALL_CHANNELS).channel.endpoint.endswith(
        "b@example.org"
    )
    error = refused(
        subscription(channel={**mail, "endpoint": "care@example.org"}), channels=ALL_CHANNELS
    )
    assert error.expression == ["Subscription.channel.endpoint"]


def test_the_servers_channel_check_refuses_with_its_reason() -> None:
    def no_mail(parsed: Channel) -> str | None:
        return "no SMTP server here" if parsed.type == "email" else None

    support = ChannelSupport(ALL_CHANNELS.types, no_mail)
    mail = {"type": "email", "endpoint": "mailto:care@example.org"}
    error = refused(subscription(channel=mail), channels=support)
    assert error.expression == ["Subscription.channel"]
    assert "no SMTP server here" in error.diagnostics
    assert parse(subscription(), channels=support).channel.type == "rest-hook"


@pytest.mark.parametrize(
    "endpoint",
    [
        None,
        "ftp://receiver.example.org/",
        "receiver.example.org/hook",
        "https://",
        "http://h:99999/",
        "https://receiver example.org/",
    ],
)
def test_a_rest_hook_needs_an_absolute_http_url(endpoint: str | None) -> None:
    error = refused(subscription(channel=channel(endpoint=endpoint)))
    assert error.expression == ["Subscription.channel.endpoint"]


@pytest.mark.parametrize(
    ("payload", "words"),
    [("application/fhir+xml", "XML"), ("text/plain", "application/fhir+json")],
)
def test_only_json_payloads(payload: str, words: str) -> None:
    error = refused(subscription(channel=channel(payload=payload)))
    assert error.expression == ["Subscription.channel.payload"]
    assert words in error.diagnostics


def test_json_payload_with_parameters_is_kept() -> None:
    payload = "application/fhir+json; fhirVersion=4.3"
    assert parse(subscription(channel=channel(payload=payload))).channel.payload == payload


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
def test_payload_content_extension(content: str) -> None:
    ext = {"url": PAYLOAD_CONTENT, "valueCode": content}
    spec = parse(subscription(channel=channel(_payload={"extension": [ext]})))
    assert spec.channel.content == content


def test_no_payload_means_empty_and_an_unknown_content_is_refused() -> None:
    spec = parse(subscription(channel={"type": "rest-hook", "endpoint": HOOK}))
    assert (spec.channel.payload, spec.channel.content) == (None, "empty")
    ext = {"url": PAYLOAD_CONTENT, "valueCode": "everything"}
    error = refused(subscription(channel=channel(_payload={"extension": [ext]})))
    assert error.expression == ["Subscription.channel.payload.extension[0]"]


def test_headers() -> None:
    spec = parse(subscription(channel=channel(header=["Authorization: Bearer abc", "X-A:b"])))
    assert spec.channel.headers == (("Authorization", "Bearer abc"), ("X-A", "b"))
    error = refused(subscription(channel=channel(header=["X-A: b", "no colon here"])))
    assert error.expression == ["Subscription.channel.header[1]"]


def test_heartbeat_timeout_and_max_count() -> None:
    extensions = [
        {"url": HEARTBEAT_PERIOD, "valueUnsignedInt": 60},
        {"url": TIMEOUT, "valueUnsignedInt": 10},
        {"url": MAX_COUNT, "valuePositiveInt": 20},
    ]
    spec = parse(subscription(channel=channel(extension=extensions)))
    assert (spec.channel.heartbeat_period, spec.channel.timeout, spec.channel.max_count) == (
        60,
        10,
        20,
    )


@pytest.mark.parametrize(
    ("extension", "element"),
    [
        ({"url": HEARTBEAT_PERIOD, "valueUnsignedInt": 0}, "extension[0].valueUnsignedInt"),
        ({"url": TIMEOUT, "valueUnsignedInt": 100_000}, "extension[0].valueUnsignedInt"),
        ({"url": MAX_COUNT, "valuePositiveInt": -1}, "extension[0].valuePositiveInt"),
        ({"url": MAX_COUNT, "valueString": "5"}, "extension[0]"),
        ({"url": TIMEOUT, "valueUnsignedInt": True}, "extension[0].valueUnsignedInt"),
    ],
)
def test_limits_out_of_range_are_refused(extension: dict[str, Any], element: str) -> None:
    error = refused(subscription(channel=channel(extension=[extension])))
    assert error.expression == [f"Subscription.channel.{element}"]


# -- the rest -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-02T03:04:05Z", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        (
            "2030-01-02T03:04:05+02:00",
            datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("2030-01-02", datetime(2030, 1, 2, tzinfo=UTC)),
    ],
)
def test_end(text: str, expected: datetime) -> None:
    assert parse(subscription(end=text)).end == expected


@pytest.mark.parametrize("text", ["2030-01-02T03:04:05", "next week"])
def test_an_end_without_time_zone_is_refused(text: str) -> None:
    assert refused(subscription(end=text)).expression == ["Subscription.end"]


@pytest.mark.parametrize("status", ["requested", "active", "error", "off"])
def test_status_as_given(status: str) -> None:
    assert parse(subscription(status=status)).status == status


@pytest.mark.parametrize("status", [None, "paused"])
def test_a_missing_or_unknown_status_is_refused(status: str | None) -> None:
    assert refused(subscription(status=status)).expression == ["Subscription.status"]


def test_signing_secret() -> None:
    ext = {"url": SIGNING_SECRET, "valueString": "s3cret"}
    assert parse(subscription(extension=[ext])).secret == "s3cret"
    ext["valueString"] = ""
    assert refused(subscription(extension=[ext])).expression == [
        "Subscription.extension[0].valueString"
    ]


@pytest.mark.parametrize(
    ("changes", "element"),
    [
        ({"criteria": None}, "Subscription.criteria"),
        ({"criteria": 42}, "Subscription.criteria"),
        ({"channel": None}, "Subscription.channel"),
        ({"channel": "rest-hook"}, "Subscription.channel"),
        ({"channel": channel(header="X-A: b")}, "Subscription.channel.header"),
        ({"_criteria": {"extension": {"url": FILTER_CRITERIA}}}, "Subscription.criteria.extension"),
    ],
)
def test_wrong_shapes_are_refused_not_crashed_on(changes: dict[str, Any], element: str) -> None:
    assert refused(subscription(**changes)).expression == [element]
