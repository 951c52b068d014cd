"""Which channels this server can deliver, given its configuration, and the transports for them.

REST hook and WebSocket always; email once an SMTP server is configured; the Kafka queue when
Herald runs with Kafka and the administrator allows topics (`HERALD_QUEUE_TOPICS`). A
Subscription asking for a channel the server cannot serve is refused at create with the reason.
"""

from __future__ import annotations

from channels import (
    EmailTransport,
    KafkaQueueTransport,
    QueueTopics,
    Recipients,
    SmtpConfig,
    Transport,
)
from fhirstore.wire import HERALD_TOPICS
from herald.settings import Settings
from subscriptions import Channel, ChannelSupport

CHANNEL_TYPES = frozenset({"rest-hook", "websocket", "email", "kafka"})


def queue_topics(settings: Settings) -> QueueTopics:
    """The administrator's allow-list; Herald's own topics (with the namespace) never pass."""
    names = {settings.kafka_namespace + topic for topic in HERALD_TOPICS}
    return QueueTopics.parse(settings.queue_topics, internal=names)


def channel_support(settings: Settings) -> ChannelSupport:
    topics = queue_topics(settings)

    def check(channel: Channel) -> str | None:
        if channel.type == "email":
            if not settings.smtp_host:
                return (
                    "this server has no email channel: the administrator sets HERALD_SMTP_HOST "
                    "(and HERALD_SMTP_FROM) to enable it"
                )
            if channel.content == "full-resource" and not settings.email_full_resource:
                return (
                    "full-resource content is not sent by email on this server, so that no "
                    "clinical data leaves by mail by accident: use id-only or empty (the "
                    "administrator may allow it with HERALD_EMAIL_FULL_RESOURCE=true)"
                )
        if channel.type == "kafka":
            if not settings.kafka_bootstrap:
                return "the kafka channel needs Herald to run with Kafka (HERALD_KAFKA_BOOTSTRAP)"
            try:
                topics.check(channel.endpoint)
            except ValueError as error:
                return str(error)
        return None

    return ChannelSupport(CHANNEL_TYPES, check)


def optional_transports(settings: Settings) -> dict[str, Transport]:
    """The email and Kafka queue transports this configuration enables."""
    transports: dict[str, Transport] = {}
    if settings.smtp_host:
        transports["email"] = EmailTransport(
            SmtpConfig(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_from,
                starttls=settings.smtp_starttls,
                tls=settings.smtp_tls,
                username=settings.smtp_username,
                password=settings.smtp_password,
            ),
            recipients=Recipients.parse(settings.email_allowlist, required=settings.auth != "off"),
        )
    if settings.kafka_bootstrap:
        transports["kafka"] = KafkaQueueTransport(settings.kafka_bootstrap)
    return transports
