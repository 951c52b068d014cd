"""A subscription's last error as a notification status shows it: a coded CodeableConcept.

The ledger keeps each error with the kind of delivery failure it was (the delivery core's
`Failure`: blocked, unreachable, timeout, rejected, unavailable), or none when it was no
delivery failure (a notification that could not be built, a filter over its budget).
`SubscriptionStatus.error` (R4B) and the R4 status's `error` parameter carry it as:

| kind          | `subscription-error` code (HL7) | Herald's `delivery-failure` code |
|---------------|---------------------------------|----------------------------------|
| `unreachable` | `no-response`                   | `unreachable`                    |
| `timeout`     | `no-response`                   | `timeout`                        |
| `rejected`    | `error-response`                | `rejected`                       |
| `unavailable` | `error-response`                | `unavailable`                    |
| `blocked`     | none (nothing was sent)         | `blocked`                        |
| none          | none                            | none                             |

and always `text`: what went wrong in words (the reply code, the endpoint's answer). HL7's
code system says the HTTP error itself belongs in an adjacent coding or the text: it is in the
text. Its `dns-resolution-error` is not used: the transports report a host that does not
resolve as `unreachable`, with the text saying which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirstore.wire import DELIVERY_FAILURE_SYSTEM, SUBSCRIPTION_ERROR_SYSTEM

# HL7's code and display for each kind of delivery failure that has one.
_HL7 = {
    "unreachable": ("no-response", "No response"),
    "timeout": ("no-response", "No response"),
    "rejected": ("error-response", "Error response"),
    "unavailable": ("error-response", "Error response"),
}
# Herald's display for each kind (`channels.transport.Failure`).
FAILURE_KINDS = {
    "blocked": "Not sent: the endpoint is not allowed",
    "unreachable": "No connection to the endpoint",
    "timeout": "No answer within the timeout",
    "rejected": "Refused by the endpoint until something changes",
    "unavailable": "The endpoint said not now",
}


@dataclass(frozen=True, slots=True)
class StatusError:
    """An error a status shows: its text and, for a delivery failure, its kind."""

    text: str
    failure: str | None = None  # a key of FAILURE_KINDS


def error_concept(error: StatusError) -> dict[str, Any]:
    """`error` as a CodeableConcept: HL7's code and Herald's kind where known, and the text."""
    coding: list[dict[str, str]] = []
    if error.failure in _HL7:
        code, display = _HL7[error.failure]
        coding.append({"system": SUBSCRIPTION_ERROR_SYSTEM, "code": code, "display": display})
    if error.failure in FAILURE_KINDS:
        coding.append(
            {
                "system": DELIVERY_FAILURE_SYSTEM,
                "code": error.failure,
                "display": FAILURE_KINDS[error.failure],
            }
        )
    concept: dict[str, Any] = {"coding": coding} if coding else {}
    concept["text"] = error.text
    return concept
