"""Whom a request is for: the `Patient/{id}` it names (subject, or an Appointment's actors)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Patient/{id}, also absolute or with a version: https://.../Patient/{id}/_history/2
PATIENT_REFERENCE = re.compile(
    r"(?:^|/)(Patient/[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]+)?$"
)


def patient_reference(reference: Any) -> str | None:
    """`Patient/{id}` of a Reference to a Patient, else None."""
    text = reference.get("reference") if isinstance(reference, Mapping) else None
    found = PATIENT_REFERENCE.search(text) if isinstance(text, str) else None
    return found.group(1) if found else None


def patients_of(request: Mapping[str, Any]) -> set[str]:
    """The patients a request is for: its subject, or (Appointment) its participants' actors."""
    if request.get("resourceType") == "Appointment":
        return {
            patient
            for participant in request.get("participant") or ()
            if isinstance(participant, Mapping)
            and (patient := patient_reference(participant.get("actor"))) is not None
        }
    patient = patient_reference(request.get("subject"))
    return {patient} if patient else set()
