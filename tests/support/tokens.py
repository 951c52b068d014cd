"""Signed test tokens: keys generated when the tests start, a JWKS of their public halves, and
`token(...)` for a JWT with the claims a SMART authorisation server would put in it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://login.example.org"
AUDIENCE = "https://herald.example.org/fhir"
SECRET = "development-secret-that-is-long-enough-for-hs256"
ADMIN = "openid herald/admin"
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
STRANGER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks() -> dict[str, Any]:
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    ec_jwk = json.loads(ECAlgorithm.to_jwk(EC_KEY.public_key()))
    return {
        "keys": [
            {**rsa_jwk, "kid": "rsa-1", "use": "sig", "alg": "RS256"},
            {**ec_jwk, "kid": "ec-1", "use": "sig", "alg": "ES256"},
        ]
    }


def token(
    *,
    key: Any = RSA_KEY,
    algorithm: str = "RS256",
    kid: str | None = "rsa-1",
    scope: str = ADMIN,
    lifetime: float = 300,
    **claims: Any,
) -> str:
    issued = NOW.timestamp()
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "practitioner-7",
        "client_id": "ward-app",
        "scope": scope,
        "iat": int(issued),
        "exp": int(issued + lifetime),
        **claims,
    }
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def live_bearer(**claims: Any) -> dict[str, str]:
    """Headers with a token valid for the next hour of real time, for tests whose deliveries
    run on the system clock."""
    issued = int(time.time())
    return bearer(token(iat=issued, exp=issued + 3600, **claims))


def jwt_settings(folder: Path) -> dict[str, Any]:
    """Herald settings that verify these tokens: the JWKS written to `folder`, the HS256
    secret, the issuer and the audience."""
    path = folder / "jwks.json"
    path.write_text(json.dumps(jwks()))
    return {
        "auth": "jwt",
        "jwks_file": str(path),
        "jwt_secret": SECRET,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
    }


@asynccontextmanager
async def seeded_api(
    database_url: str, folder: Path, seed: Sequence[dict[str, Any]], admin: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """The FHIR API alone (no subscriptions, no scheduler) with authentication on and the clock
    at NOW, holding `seed` (PUT by the `admin` headers), for tests of what tokens reach."""
    from fhirstore.clock import FrozenClock
    from tests.support.herald import running_herald

    async with running_herald(
        database_url,
        clock=FrozenClock(NOW),
        **jwt_settings(folder),
        subscriptions=False,
        scheduler=False,
    ) as (_, client):
        for resource in seed:
            path = f"/{resource['resourceType']}/{resource['id']}"
            answer = await client.put(path, json=resource, headers=admin)
            assert answer.status_code == 201, answer.text
        yield client
