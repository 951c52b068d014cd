"""The retry pace of `DeliveryPolicy.backoff`, by kind of failure, and every kind coded."""

from __future__ import annotations

import pytest

from channels.policy import DeliveryPolicy
from channels.transport import Failure
from subscriptions.status_error import FAILURE_KINDS

POLICY = DeliveryPolicy(base_url="http://herald.test/fhir", initial_backoff=1.0, max_backoff=64.0)


@pytest.mark.parametrize(
    "failure", [None, Failure.UNAVAILABLE, Failure.TIMEOUT, Failure.UNREACHABLE]
)
def test_a_failure_that_may_pass_backs_off_exponentially(failure: Failure | None) -> None:
    waits = [POLICY.backoff(attempt, failure) for attempt in range(8)]
    for attempt, wait in enumerate(waits):
        ceiling = min(64.0, 2.0**attempt)
        assert ceiling / 2 <= wait <= ceiling


@pytest.mark.parametrize("failure", [Failure.REJECTED, Failure.BLOCKED])
def test_a_failure_that_needs_someone_to_act_waits_the_longest_from_the_first_retry(
    failure: Failure,
) -> None:
    assert failure.permanent
    for attempt in range(4):
        assert 32.0 <= POLICY.backoff(attempt, failure) <= 64.0


def test_every_kind_of_failure_has_a_code_in_the_status() -> None:
    assert {f.value for f in Failure} == set(FAILURE_KINDS)
