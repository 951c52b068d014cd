"""Bearer token authentication: a JWT verified and turned into a `Principal`.

- RS256 / ES256 against the issuer's JWKS (a file, or a URL fetched on first use and again when
  a token names a key id not seen yet); HS256 against a shared secret, for development.
- `iss` and `aud` must match the configured values when those are set; `exp` is required;
  `exp` and `nbf` are checked against Herald's clock with a small leeway for clock skew.
- The SMART claims: `scope` (space-separated; a `scp` list is also read), `patient` (the
  patient context), `client_id` or `azp` (the client).

Every refusal is `Unauthorized`, whose message says what was wrong with the token and which
the API answers with 401 and a `WWW-Authenticate: Bearer` challenge (RFC 6750).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from fhirstore.access.principal import Principal
from fhirstore.access.scopes import Scopes
from fhirstore.clock import Clock
from fhirstore.errors import FhirError

_ASYMMETRIC = ["RS256", "ES256"]


class Unauthorized(FhirError):
    status = 401
    code = "login"

    def challenge(self) -> str:
        description = self.diagnostics.replace('"', "'")
        return f'Bearer realm="herald", error="invalid_token", error_description="{description}"'


class MissingToken(Unauthorized):
    def challenge(self) -> str:
        return 'Bearer realm="herald"'


@dataclass(frozen=True, slots=True)
class TokenRules:
    secret: str | None = None  # HS256
    jwks_file: str | None = None
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: float = 30.0
    admin_scope: str = "herald/admin"

    def problem(self) -> str | None:
        """Why these rules cannot verify anything, or None."""
        if not (self.secret or self.jwks_file or self.jwks_url):
            return (
                "HERALD_AUTH=jwt needs a key: set HERALD_JWKS_URL or HERALD_JWKS_FILE "
                "(RS256/ES256), or HERALD_JWT_SECRET (HS256, development only)"
            )
        return None


class TokenVerifier:
    def __init__(self, rules: TokenRules, clock: Clock) -> None:
        problem = rules.problem()
        if problem:
            raise ValueError(problem)
        self._rules = rules
        self._clock = clock
        self._keys = _load_file(rules.jwks_file) if rules.jwks_file else None
        self._client = jwt.PyJWKClient(rules.jwks_url) if rules.jwks_url else None

    async def principal(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization` header value, or `Unauthorized`."""
        token = _bearer(authorization)
        claims = await self._claims(token)
        self._check_times(claims)
        scopes = Scopes.parse(claims.get("scope", claims.get("scp")))
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("the token has no `sub` claim; the issuer must name the subject")
        patient = claims.get("patient")
        client = claims.get("client_id", claims.get("azp"))
        return Principal(
            "token",
            subject,
            scopes,
            client=client if isinstance(client, str) else None,
            patient=patient if isinstance(patient, str) and patient else None,
            admin=scopes.has(self._rules.admin_scope),
        )

    async def _claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise Unauthorized(f"the bearer token is not a JWT: {error}") from None
        algorithm = header.get("alg")
        key = await self._key(algorithm, header.get("kid"))
        rules = self._rules
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],  # _key refused anything but a named algorithm
                audience=rules.audience,
                issuer=rules.issuer,
                options={
                    "require": ["exp"],
                    "verify_aud": rules.audience is not None,
                    "verify_iss": rules.issuer is not None,
                    # Times are checked against Herald's clock (_check_times).
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError:
            raise Unauthorized(
                f"the token is not for this server (aud must be {rules.audience!r})"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(
                f"the token's issuer is not trusted (iss must be {rules.issuer!r})"
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature does not verify") from None
        except jwt.PyJWTError as error:
            raise Unauthorized(f"the token was refused: {error}") from None
        return claims

    async def _key(self, algorithm: Any, kid: Any) -> Any:
        rules = self._rules
        if algorithm == "HS256" and rules.secret:
            return rules.secret
        if algorithm not in _ASYMMETRIC or not (self._keys or self._client):
            accepted = (["HS256"] if rules.secret else []) + (
                _ASYMMETRIC if self._keys or self._client else []
            )
            raise Unauthorized(f"tokens signed with {algorithm!r} are not accepted; use {accepted}")
        if self._keys is not None:
            return _pick(self._keys, kid)
        assert self._client is not None
        try:
            found = await asyncio.to_thread(self._client.get_signing_key, kid) if kid else None
        except jwt.PyJWKClientError as error:
            raise Unauthorized(f"the token's key could not be found in the JWKS: {error}") from None
        if found is None:
            raise Unauthorized("the token names no key id (`kid`); the JWKS has several keys")
        return found.key

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self._clock.now().timestamp()
        leeway = self._rules.leeway_seconds
        expires = claims.get("exp")
        if not isinstance(expires, int | float):
            raise Unauthorized("the token's `exp` is not a number of seconds")
        if now > expires + leeway:
            at = datetime.fromtimestamp(expires, UTC).isoformat()
            raise Unauthorized(f"the token expired at {at}; get a new one")
        not_before = claims.get("nbf")
        if isinstance(not_before, int | float) and now + leeway < not_before:
            at = datetime.fromtimestamp(not_before, UTC).isoformat()
            raise Unauthorized(f"the token is not valid before {at}")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise MissingToken(
            "this server needs a bearer token: send `Authorization: Bearer <access token>`"
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be `Bearer <access token>`")
    return token.strip()


def _load_file(path: str) -> jwt.PyJWKSet:
    try:
        return jwt.PyJWKSet.from_json(Path(path).read_text())
    except (OSError, jwt.PyJWTError, ValueError) as error:
        raise ValueError(f"HERALD_JWKS_FILE {path!r} is not a readable JWKS: {error}") from None


def _pick(keys: jwt.PyJWKSet, kid: Any) -> Any:
    if kid is None:
        if len(keys.keys) == 1:
            return keys.keys[0].key
        raise Unauthorized("the token names no key id (`kid`); the JWKS has several keys")
    for key in keys.keys:
        if key.key_id == kid:
            return key.key
    raise Unauthorized(f"the token's key id {kid!r} is not in the JWKS")
