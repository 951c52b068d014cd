"""FHIR JSON parsing keeps every decimal exactly as written, wherever a number may stand,
next to times with fractions of a second and hex ids that look like exponents (which are
strings, not numbers)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fhirstore import fhirjson


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"t":"2026-12-07T08:00:00.123+00:00","value":10.50}', Decimal("10.50")),
        (b'{"value":0.40,"t":"08:00:00.5"}', Decimal("0.40")),
        (b'{"t":"08:00:00.5","value": 1e-3}', Decimal("1e-3")),
        (b'{"t":"12:30:59.999Z","value":[1,66.899999999999991]}', Decimal("66.899999999999991")),
        (b'{"value":5E+2}', Decimal("5E+2")),
        (b'{"id":"9e4f1e5a","value":[0.5]}', Decimal("0.5")),
        (b'{"id":"3e8",\n  "value" :\n\t-2.50}', Decimal("-2.50")),
        (b'{"id":"a1e-3","value":[1, 7E-2]}', Decimal("7E-2")),
        (b'{"t":"08:00:00.5Z","value":[0,\r\n12e3]}', Decimal("12e3")),
    ],
)
def test_a_decimal_beside_a_time_keeps_its_digits(raw: bytes, value: Decimal) -> None:
    parsed = fhirjson.loads(raw)
    got = parsed["value"][-1] if isinstance(parsed["value"], list) else parsed["value"]
    assert isinstance(got, Decimal)
    assert value.as_tuple() == got.as_tuple()


def test_times_and_hex_ids_alone_parse_to_the_same_values() -> None:
    raw = (
        b'{"id":"5e1b3e-4a","meta":{"lastUpdated":"2026-12-07T08:00:00.123+00:00"},'
        b'"count":3,"v":"1.2","n":[-4, 0]}'
    )
    assert fhirjson.loads(raw) == {
        "id": "5e1b3e-4a",
        "meta": {"lastUpdated": "2026-12-07T08:00:00.123+00:00"},
        "count": 3,
        "v": "1.2",
        "n": [-4, 0],
    }


def test_a_decimal_alone_keeps_its_digits() -> None:
    got = fhirjson.loads(b" 1.250")
    assert isinstance(got, Decimal)
    assert got.as_tuple() == Decimal("1.250").as_tuple()
