"""Configuration: every setting comes from the environment with the HERALD_ prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface the HTTP API listens on")
    port: int = Field(8080, description="Port the HTTP API listens on")
    database_url: str = Field(
        "sqlite+aiosqlite:///./var/herald.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset means the in-process bus"
    )
    public_base_url: str | None = Field(
        None, description="Absolute FHIR base used in links (default: taken from each request)"
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, description="Largest accepted request body")
    default_page_size: int = Field(50, description="Search page size when _count is absent")
    max_page_size: int = Field(1000, description="Largest _count honoured")
    relay_poll_seconds: float = Field(0.5, description="Outbox poll interval (between wake-ups)")
    relay_batch_size: int = Field(500, description="Outbox events published per batch")
    outbox_retention_hours: float = Field(
        168, description="How long published outbox rows are kept"
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: Literal["console", "json"] = Field("console", description="console or json")

    @property
    def embedded_bus(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def fhir_base_path(self) -> str:
        return "/fhir"
