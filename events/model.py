"""The change event: one per create, update or delete, as published on `fhir.changes`.

The JSON field names are the wire contract with integrators (docs/stream.md, AsyncAPI); do
not rename.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fhirstore import fhirjson

Interaction = Literal["create", "update", "delete"]


class ChangeEvent(BaseModel):
    """A committed change to one FHIR resource."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    event_id: str = Field(alias="eventId", description="UUID; the same on every redelivery")
    sequence: int = Field(description="Outbox position: commit order across the whole store")
    resource_type: str = Field(alias="resourceType")
    id: str = Field(description="Logical id of the resource")
    version_id: str = Field(alias="versionId", description="meta.versionId after the change")
    previous_version_id: str | None = Field(
        default=None, alias="previousVersionId", description="None for a create"
    )
    interaction: Interaction
    timestamp: datetime = Field(description="meta.lastUpdated of the new version")
    resource: dict[str, Any] | None = Field(
        default=None, description="The new version; absent for a delete"
    )

    @property
    def key(self) -> str:
        """Partition key: per-resource order on the stream."""
        return f"{self.resource_type}/{self.id}"

    @classmethod
    def from_json(cls, raw: bytes | str) -> ChangeEvent:
        return cls.model_validate(fhirjson.loads(raw))
