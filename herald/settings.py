"""Configuration: every setting comes from the environment with the HERALD_ prefix.

docs/configuration.md is generated from this class (`herald config-doc`); a test holds it there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fhirstore.search import DEFAULT_LIMITS, SearchLimits

DATABASE_FILE = "herald.db"  # the embedded SQLite database, in the data directory


def default_data_dir() -> Path:
    """The per-user data folder: `$XDG_DATA_HOME/herald`, else `~/.local/share/herald`."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "herald"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface the HTTP API listens on")
    port: int = Field(8080, description="Port the HTTP API listens on")
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Folder of the embedded SQLite database (herald.db): every command finds "
        "the same one whatever the current directory; HERALD_DATABASE_URL wins when set",
        json_schema_extra={"shown_default": "$XDG_DATA_HOME/herald or ~/.local/share/herald"},
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
        json_schema_extra={"shown_default": "herald.db in HERALD_DATA_DIR"},
    )
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset means the in-process bus"
    )
    kafka_namespace: str = Field(
        "", description="Prefix for every Kafka topic and consumer group (shared clusters)"
    )
    public_base_url: str | None = Field(
        None, description="Absolute FHIR base used in links (default: taken from each request)"
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, description="Largest accepted request body")
    default_page_size: int = Field(50, description="Search page size when _count is absent")
    max_page_size: int = Field(1000, description="Largest _count honoured")
    max_bundle_entries: int = Field(1000, description="Most entries in a transaction or batch")
    validation_workers: int = Field(
        1,
        ge=0,
        description="Processes that validate the resources of large transaction Bundles (32 "
        "resources or more) beside the event loop, started with the first such Bundle; 0 "
        "validates everything in the service's own process",
    )
    relay_poll_seconds: float = Field(0.5, description="Outbox poll interval (between wake-ups)")
    relay_batch_size: int = Field(500, description="Outbox events published per batch")
    outbox_retention_hours: float = Field(
        168, description="How long published outbox rows are kept"
    )
    subscriptions: bool = Field(
        True, description="Run the subscription matcher and dispatcher in this process"
    )
    search_reindex_at_start: bool = Field(
        True,
        description="When an older Herald built the search index, rebuild it in the background "
        "at start (false: searches needing the newer rows answer 503 until `herald reindex`)",
    )
    delivery_timeout_seconds: float = Field(
        10.0, description="REST hook timeout when a Subscription sets no backport-timeout"
    )
    delivery_initial_backoff_seconds: float = Field(1.0, description="First retry delay")
    delivery_max_backoff_seconds: float = Field(300.0, description="Longest retry delay")
    delivery_give_up_hours: float = Field(
        24.0, description="Age after which undeliverable events become dead letters"
    )
    delivery_lease_seconds: float = Field(
        30.0, description="How long a dispatcher holds a subscription without renewing"
    )
    delivery_max_connections: int = Field(200, description="REST hook connection pool size")
    dispatcher_sweep_seconds: float = Field(
        1.0, description="How often a dispatcher looks for owed work, heartbeats and `end`"
    )
    subscription_event_retention_hours: float = Field(
        168, description="How long delivered events stay available to $events"
    )
    websocket_token_seconds: float = Field(
        120, description="How long a $get-ws-binding-token token may be used to bind"
    )
    smtp_host: str | None = Field(None, description="SMTP server for the email channel")
    smtp_port: int = Field(25, description="SMTP port (587 with STARTTLS, 465 with TLS)")
    smtp_from: str = Field("herald@localhost", description="From address of notification emails")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS")
    smtp_tls: bool = Field(False, description="Connect to the SMTP server over TLS (port 465)")
    smtp_username: str | None = Field(None, description="SMTP login name, if it needs one")
    smtp_password: str | None = Field(None, description="SMTP login password")
    email_full_resource: bool = Field(
        False, description="Allow full-resource content on the email channel (clinical data)"
    )
    queue_topics: str = Field(
        "",
        description="Kafka topics the kafka channel may write: names or prefixes ending in *",
    )
    scheduler: bool = Field(
        True, description="Run the CarePlan scheduler (materialisation, wake-ups, sweeps) here"
    )
    scheduler_horizon_days: float = Field(
        14, gt=0, description="Tasks exist for CarePlan occurrences up to this many days ahead"
    )
    scheduler_lead_minutes: float = Field(
        0, ge=0, description="A Task becomes ready this many minutes before its scheduled time"
    )
    scheduler_grace_hours: float = Field(
        24,
        gt=0,
        description="A ready Task nobody started is marked missed this long after its time",
    )
    scheduler_appointment_lead_hours: float = Field(
        24,
        ge=0,
        description="An Appointment a CarePlan activity refers to gets its reminder Task this"
        " many hours before it starts",
    )
    scheduler_default_timezone: str = Field(
        "UTC", description="IANA zone of patients without the timezone extension"
    )
    scheduler_when_times: str = Field(
        "",
        description="Clock times of Timing.repeat.when codes, e.g. MORN=08:00,EVE=18:00 "
        "(overrides the built-in table)",
    )
    scheduler_careplan_tag: str | None = Field(
        None, description="Schedule only CarePlans with this meta.tag (system|code or code)"
    )
    scheduler_sweep_seconds: float = Field(
        300,
        gt=0,
        description="How often the leader reconciles every CarePlan and rolls the horizon",
    )
    scheduler_due_seconds: float = Field(1.0, gt=0, description="How often due Tasks are woken")
    auth: Literal["off", "jwt"] = Field(
        "off", description="off (embedded default: no authentication) or jwt (bearer tokens)"
    )
    jwks_url: str | None = Field(None, description="JWKS URL of the token issuer (RS256/ES256)")
    jwks_file: str | None = Field(None, description="JWKS file of the token issuer (RS256/ES256)")
    jwt_secret: str | None = Field(
        None, description="HS256 shared secret (development only; prefer a JWKS)"
    )
    jwt_issuer: str | None = Field(None, description="Required `iss` of every token")
    jwt_audience: str | None = Field(None, description="Required `aud` of every token")
    jwt_leeway_seconds: float = Field(
        30, ge=0, description="Clock skew tolerated on a token's exp and nbf"
    )
    admin_scope: str = Field(
        "herald/admin", description="Scope that makes a token an administrator"
    )
    endpoint_allowlist: str = Field(
        "",
        description="Hosts or CIDRs REST hooks may reach although private or loopback "
        "(comma-separated); setting it turns the endpoint guard on",
    )
    email_allowlist: str = Field(
        "",
        description="Email recipients (addresses, or @domain) the email channel may write to; "
        "empty: any, unless authentication is on",
    )
    audit: bool = Field(
        True,
        description="Record every request under the FHIR base and every delivery attempt in the "
        "audit trail (false: record nothing; what was recorded stays readable)",
    )
    audit_retention_days: float | None = Field(
        None, gt=0, description="Delete audit entries older than this (unset: keep them)"
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: Literal["console", "json"] = Field("console", description="console or json")
    # issue 20, budgets for client FHIRPath (SubscriptionTopic fhirPathCriteria)
    fhirpath_max_steps: int = Field(
        20_000,
        gt=0,
        description="Evaluation steps one evaluation of a client's FHIRPath may take (each node "
        "evaluated, each item an operation returns, each 1,000 characters it makes)",
    )
    fhirpath_timeout_ms: int = Field(
        250,
        gt=0,
        description="Milliseconds of CPU time one evaluation of a client's FHIRPath may take",
    )

    # Search limits (issue 20: searches): see docs/search-limits.md.
    search_max_or_values: int = Field(
        DEFAULT_LIMITS.max_or_values,
        ge=1,
        description="Most comma-separated (OR) values of one search parameter",
    )
    search_max_and_criteria: int = Field(
        DEFAULT_LIMITS.max_and_criteria,
        ge=1,
        description="Most search parameters (AND criteria) in one search",
    )
    search_max_id_values: int = Field(
        DEFAULT_LIMITS.max_id_values, ge=1, description="Most _id values in one search"
    )
    search_max_sort_keys: int = Field(
        DEFAULT_LIMITS.max_sort_keys, ge=1, description="Most _sort keys in one search"
    )
    search_max_includes: int = Field(
        DEFAULT_LIMITS.max_includes,
        ge=0,
        description="Most _include and _revinclude parameters in one search",
    )
    search_max_chain_depth: int = Field(
        DEFAULT_LIMITS.max_chain_depth,
        ge=1,
        description="Most references one chained or _has search parameter follows (each `.` "
        "and each `_has`)",
    )
    search_max_included: int = Field(
        DEFAULT_LIMITS.max_included,
        ge=0,
        description="Most resources one search page brings in with its includes",
    )
    search_max_include_depth: int = Field(
        DEFAULT_LIMITS.max_include_depth,
        ge=1,
        description="Most times _include:iterate / _revinclude:iterate are applied again to "
        "what the includes brought in",
    )
    search_max_page_bytes: int = Field(
        DEFAULT_LIMITS.max_page_bytes,
        ge=1,
        description="Resource bytes in one search page (matches and includes); a page past "
        "it stops early, with a next link",
    )
    search_max_valueset_codes: int = Field(
        DEFAULT_LIMITS.max_valueset_codes,
        ge=1,
        description=(
            "Most codes the ValueSets of one search's (or one subscription's filters') :in /"
            " :not-in expand to, together"
        ),
    )
    search_timeout_seconds: float = Field(
        DEFAULT_LIMITS.timeout_seconds or 0,
        ge=0,
        description="Longest a search's or history request's queries may run (then 503); "
        "0: no deadline",
    )

    @property
    def search_limits(self) -> SearchLimits:
        return SearchLimits(
            max_or_values=self.search_max_or_values,
            max_and_criteria=self.search_max_and_criteria,
            max_id_values=self.search_max_id_values,
            max_sort_keys=self.search_max_sort_keys,
            max_includes=self.search_max_includes,
            max_chain_depth=self.search_max_chain_depth,
            max_included=self.search_max_included,
            max_include_depth=self.search_max_include_depth,
            max_page_bytes=self.search_max_page_bytes,
            max_valueset_codes=self.search_max_valueset_codes,
            timeout_seconds=self.search_timeout_seconds or None,
        )

    # Access boundary (issue 20): the pages outside the FHIR API, when authentication is on.
    api_docs: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Serve /docs, /redoc and /openapi.json: on, off, or auto (only while "
        "authentication is off)",
    )
    metrics_access: Literal["public", "admin", "off"] = Field(
        "public",
        description="/metrics: public (no token; counters by route template and status, no "
        "ids, no content), admin (a bearer token with the administrator scope) or off",
    )

    # -- quarantine of what a consumer cannot process (docs/quarantine.md) --
    quarantine_attempts: int = Field(
        5,
        ge=1,
        description="Tries a consumer (matcher, scheduler, dispatcher) gives a change before it "
        "sets it aside in the quarantine and moves on (tries while the database is "
        "unreachable do not count)",
    )
    quarantine_initial_backoff_seconds: float = Field(
        0.5, gt=0, description="Wait before the second try of a failing change; doubled per try"
    )
    quarantine_max_backoff_seconds: float = Field(
        30.0, gt=0, description="Longest wait between two tries of a failing change"
    )
    quarantine_replay_seconds: float = Field(
        5.0,
        gt=0,
        description="How often each process looks for replays asked for (herald quarantine "
        "replay) of the consumers it runs",
    )

    # One client cannot hurt another: limits (docs/limits.md)
    limit_careplan_activities: int = Field(
        100, ge=1, description="Most activities in one CarePlan (more: 422)"
    )
    limit_careplan_tasks: int = Field(
        2000,
        ge=1,
        description="Most Tasks one active CarePlan may have within the scheduling horizon "
        "(more: 422 when it is written)",
    )
    limit_patient_tasks: int = Field(
        5000,
        ge=1,
        description="Most Tasks one patient's CarePlans may have within the scheduling horizon "
        "together (more: 422 when a CarePlan is written)",
    )
    limit_subscriptions_per_owner: int = Field(
        100,
        ge=1,
        description="Most Subscriptions one token subject may own (administrators: no limit)",
    )
    limit_topics_per_owner: int = Field(
        20,
        ge=1,
        description="Most SubscriptionTopics one token subject may own (administrators: no limit)",
    )

    @model_validator(mode="after")
    def _database_in_data_dir(self) -> Settings:
        """An absolute data folder, and the SQLite file in it unless a URL is given."""
        self.data_dir = self.data_dir.expanduser().absolute()
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / DATABASE_FILE}"
        return self

    @property
    def endpoint_guard(self) -> bool:
        """REST hook endpoints are checked whenever authentication is on or an allow-list
        is set."""
        return self.auth != "off" or bool(self.endpoint_allowlist.strip())

    @property
    def embedded_bus(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def fhir_base_path(self) -> str:
        return "/fhir"
