"""Bearer token authentication with real signed tokens (keys generated here): RS256 and ES256
against a JWKS file, HS256 against a shared secret; 401 with a challenge for every bad token."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import jwt
import pytest

from fhirstore.clock import FrozenClock
from herald.runtime import Runtime
from tests.support.herald import running_herald, stored_counts
from tests.support.tokens import (
    ADMIN,
    AUDIENCE,
    EC_KEY,
    ISSUER,
    NOW,
    RSA_KEY,
    SECRET,
    STRANGER_KEY,
    bearer,
    jwt_settings,
    token,
)


@pytest.fixture
async def herald(tmp_path: Path) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient, FrozenClock]]:
    clock = FrozenClock(NOW)
    async with running_herald(
        f"sqlite+aiosqlite:///{tmp_path}/herald.db",
        clock=clock,
        **jwt_settings(tmp_path),
        subscriptions=False,
        scheduler=False,
    ) as (runtime, client):
        yield runtime, client, clock


@pytest.fixture
def client(herald: tuple[Runtime, httpx.AsyncClient, FrozenClock]) -> httpx.AsyncClient:
    return herald[1]


@pytest.mark.parametrize(
    "signed",
    [
        pytest.param(lambda: token(), id="RS256-jwks"),
        pytest.param(lambda: token(key=EC_KEY, algorithm="ES256", kid="ec-1"), id="ES256-jwks"),
        pytest.param(lambda: token(key=SECRET, algorithm="HS256", kid=None), id="HS256-secret"),
    ],
)
async def test_a_valid_administrator_token_is_served(client: httpx.AsyncClient, signed) -> None:
    created = await client.post(
        "/Patient", json={"resourceType": "Patient"}, headers=bearer(signed())
    )
    assert created.status_code == 201, created.text
    read = await client.get(created.headers["Location"], headers=bearer(signed()))
    assert read.status_code == 200


async def test_no_token_is_401_with_a_bearer_challenge_and_nothing_written(
    herald: tuple[Runtime, httpx.AsyncClient, FrozenClock],
) -> None:
    runtime, client, _ = herald
    before = await stored_counts(runtime)

    answer = await client.post("/Patient", json={"resourceType": "Patient"})

    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="herald"'
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Authorization: Bearer" in outcome["issue"][0]["diagnostics"]
    assert await stored_counts(runtime) == before


def _tampered() -> str:
    header, payload, signature = token(scope="patient/*.rs").split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["scope"] = ADMIN
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{header}.{forged}.{signature}"


def _hs256_signed_with_the_public_key() -> str:
    # The classic algorithm confusion: an HS256 token keyed with the issuer's public key.
    public = RSA_KEY.public_key().public_numbers()
    return jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "scope": ADMIN, "exp": NOW.timestamp() + 60},
        str(public.n),
        algorithm="HS256",
    )


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        pytest.param(lambda: token(aud="https://other.example/fhir"), "aud must be", id="audience"),
        pytest.param(lambda: token(iss="https://evil.example"), "iss must be", id="issuer"),
        pytest.param(_tampered, "signature", id="tampered"),
        pytest.param(lambda: token(key=STRANGER_KEY), "signature", id="unknown-key"),
        pytest.param(lambda: token(kid="rsa-2"), "not in the JWKS", id="unknown-kid"),
        pytest.param(lambda: token(lifetime=-120), "expired", id="expired"),
        pytest.param(lambda: token(nbf=int(NOW.timestamp()) + 600), "not valid before", id="nbf"),
        pytest.param(lambda: token(sub=""), "`sub`", id="no-subject"),
        pytest.param(lambda: "not.a.jwt", "not a JWT", id="garbage"),
        pytest.param(
            lambda: token(key=SECRET[:-1], algorithm="HS256", kid=None),
            "signature",
            id="wrong-secret",
        ),
        pytest.param(
            lambda: jwt.encode({"sub": "x", "exp": time.time() + 60}, None, algorithm="none"),
            "not accepted",
            id="alg-none",
        ),
    ],
)
async def test_a_bad_token_is_401_saying_why(client: httpx.AsyncClient, bad, says: str) -> None:
    answer = await client.get("/Patient", headers=bearer(bad()))

    assert answer.status_code == 401, answer.text
    assert says in answer.json()["issue"][0]["diagnostics"]
    challenge = answer.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="herald", error="invalid_token"')


async def test_algorithm_confusion_is_refused(client: httpx.AsyncClient) -> None:
    # HS256 is accepted for the shared secret only: a token keyed with anything else fails.
    answer = await client.get("/Patient", headers=bearer(_hs256_signed_with_the_public_key()))
    assert answer.status_code == 401


async def test_a_token_expires_on_herald_clock(
    herald: tuple[Runtime, httpx.AsyncClient, FrozenClock],
) -> None:
    _, client, clock = herald
    signed = token(lifetime=60)
    assert (await client.get("/Patient", headers=bearer(signed))).status_code == 200

    clock.advance(timedelta(seconds=60 + 29))  # inside the 30 s leeway for clock skew
    assert (await client.get("/Patient", headers=bearer(signed))).status_code == 200
    clock.advance(timedelta(seconds=2))
    answer = await client.get("/Patient", headers=bearer(signed))
    assert answer.status_code == 401
    assert "expired" in answer.json()["issue"][0]["diagnostics"]


async def test_a_token_without_a_scope_for_the_type_is_403_naming_the_scope(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/Observation", headers=bearer(token(scope="user/Patient.rs")))

    assert answer.status_code == 403
    outcome = answer.json()["issue"][0]
    assert outcome["code"] == "forbidden"
    assert "Observation.s" in outcome["diagnostics"]


async def test_the_capability_statement_needs_no_token(client: httpx.AsyncClient) -> None:
    answer = await client.get("/metadata")
    assert answer.status_code == 200
    assert answer.json()["resourceType"] == "CapabilityStatement"


async def test_health_needs_no_token(client: httpx.AsyncClient) -> None:
    answer = await client.get("http://herald.test/healthz")
    assert answer.status_code == 200
