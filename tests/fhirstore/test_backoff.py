"""The one backoff policy: the initial wait, doubled per failure, capped."""

from __future__ import annotations

from itertools import islice

from fhirstore.backoff import Backoff


def test_waits_double_after_each_failure_up_to_the_maximum() -> None:
    assert list(islice(Backoff(0.5, 10.0).delays(), 7)) == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_each_iterator_starts_afresh() -> None:
    backoff = Backoff(0.05, 5.0)
    first = backoff.delays()
    assert [next(first) for _ in range(3)] == [0.05, 0.1, 0.2]
    assert next(backoff.delays()) == 0.05


def test_an_initial_wait_above_the_maximum_is_kept_once_then_capped() -> None:
    # As the hand-written loops it replaced did: the first wait is always `initial`.
    assert list(islice(Backoff(30.0, 5.0).delays(), 3)) == [30.0, 5.0, 5.0]
