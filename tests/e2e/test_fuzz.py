"""A hostile client, generated: mutated official examples, Bundles and search strings against a
real `herald serve` process, on SQLite and PostgreSQL.

Every request must come back (no hang) with a status below 500 (or a 503/507 that is an
OperationOutcome: a budget or the disk, not a bug), every refusal must be an OperationOutcome,
a refused write must leave nothing behind, and `/healthz` must answer within a second after
each example. Hypothesis drives it for a bounded number of examples: `HERALD_FUZZ_EXAMPLES`
(default 40 per test and database). In CI the run is derandomized, so a failure reproduces;
locally it explores new inputs each run (and Hypothesis shrinks what it finds).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhirstore.search.definitions import resource_types, search_params
from tests.support.databases import DATABASES, fresh_database_url
from tests.support.fhir_packages import example_files, read_example
from tests.support.process import HeraldProcess
from tests.support.services import in_ci

EXAMPLES = int(os.environ.get("HERALD_FUZZ_EXAMPLES", "40"))
REQUEST_TIMEOUT_S = 20.0
HEALTH_TIMEOUT_S = 1.0
SEED_TYPES = (
    "Patient",
    "Observation",
    "CarePlan",
    "Encounter",
    "Task",
    "MedicationRequest",
    "Condition",
    "Practitioner",
    "Bundle",
    "Subscription",
    "SubscriptionTopic",
)
SEEDS_PER_TYPE = 6
# Server errors a client may legitimately meet: a budget ran out, or the disk is full.
EXPECTED_5XX = frozenset({503, 507})

# -- the service under test ---------------------------------------------------------------------


@pytest.fixture(scope="module", params=DATABASES)
def herald(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HeraldProcess]:
    folder = tmp_path_factory.mktemp("fuzz")
    url = fresh_database_url(request, str(request.param), folder)
    process = HeraldProcess(
        {
            "HERALD_DATABASE_URL": url,
            # Fuzzed Subscriptions may name any endpoint: only loopback may ever be reached.
            "HERALD_ENDPOINT_ALLOWLIST": "127.0.0.1",
            "HERALD_LOG_LEVEL": "WARNING",
        },
        folder / "herald.log",
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def seeds(r4b_examples: Path) -> list[dict[str, Any]]:
    """A few official examples of each seed type (the first ones by file name)."""
    found: dict[str, list[dict[str, Any]]] = {t: [] for t in SEED_TYPES}
    for path in example_files(r4b_examples):
        example = read_example(path)
        if example is None or example.resource_type not in found:
            continue
        if len(found[example.resource_type]) < SEEDS_PER_TYPE:
            found[example.resource_type].append(example.resource)
    return [resource for group in found.values() for resource in group]


# -- generated input ----------------------------------------------------------------------------

_hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "\u0000",
            "a\u0000b",
            "\ud800",
            "<script>alert(1)</script>",
            "yes",
            "1e309",
            "9" * 40,
            "-0",
            "2024-02-30",
            "2024-01-01T25:00:00Z",
            "Patient/../../x",
            "urn:uuid:" + "0" * 36,
            "%00",
            "' OR 1=1 --",
            "x" * 5000,
        ]
    ),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _hostile_text,
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_hostile_text, inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _replace(value: Any, path: tuple[Any, ...], make: Callable[[Any], Any]) -> Any:
    if not path:
        return make(value)
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], make)
    return copy


@st.composite
def mutated(draw: st.DrawFn, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """An official example with a few of its elements replaced, dropped, wrapped or retyped."""
    resource: Any = seeds[draw(st.integers(min_value=0, max_value=len(seeds) - 1))]
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        paths = [p for p in _paths(resource) if p and p[-1] != "resourceType"]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        how = draw(st.sampled_from(["value", "drop", "wrap", "unwrap", "extra"]))
        if how == "value":
            new = draw(_json)
            resource = _replace(resource, path, lambda _old, new=new: new)
        elif how == "drop" and isinstance(path[-1], str):
            parent = _replace(resource, path[:-1], lambda old, key=path[-1]: dict(old))
            container = parent
            for part in path[:-1]:
                container = container[part]
            container.pop(path[-1], None)
            resource = parent
        elif how == "wrap":
            resource = _replace(resource, path, lambda old: [old, old])
        elif how == "unwrap":
            resource = _replace(
                resource, path, lambda old: old[0] if isinstance(old, list) and old else old
            )
        else:
            key = draw(_hostile_text)
            extra = draw(_json)
            resource = _replace(
                resource,
                path,
                lambda old, key=key, extra=extra: (
                    {**old, key: extra} if isinstance(old, dict) else old
                ),
            )
    if not isinstance(resource, dict):
        return {"resourceType": "Basic", "code": resource}
    return resource


@st.composite
def search_query(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    resource_type = draw(st.sampled_from(sorted(resource_types())))
    codes = sorted(search_params(resource_type))
    names = st.one_of(
        st.sampled_from(codes),
        st.sampled_from(["_sort", "_count", "_include", "_revinclude", "_total", "_elements"]),
        _hostile_text,
    )
    modifiers = st.sampled_from(
        ["", ":missing", ":exact", ":contains", ":not", ":text", ":above", ":below", ":in", ":x"]
    )
    prefixes = st.sampled_from(["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"])
    values = st.one_of(
        _hostile_text,
        st.builds(lambda p, d: f"{p}{d}", prefixes, st.dates().map(str)),
        st.lists(_hostile_text, min_size=1, max_size=60).map(",".join),
        st.sampled_from(["Patient/1", "Patient:Patient", "*", "http://x|y", "|", "$", "\\,"]),
    )
    params = draw(
        st.lists(st.builds(lambda n, m, v: (n + m, v), names, modifiers, values), max_size=12)
    )
    return resource_type, params


def _query_string(params: list[tuple[str, str]]) -> str:
    """Percent-encoded as UTF-8, lone surrogates included (as the bytes no decoder accepts)."""

    def encode(text: str) -> str:
        return quote(text.encode("utf-8", "surrogatepass"), safe="")

    return "&".join(f"{encode(name)}={encode(value)}" for name, value in params)


def _transaction(resources: list[dict[str, Any]], kind: str) -> tuple[dict[str, Any], list[str]]:
    """A Bundle that PUTs each resource under a fresh id (so what it wrote can be looked up)."""
    entries, urls = [], []
    for resource in resources:
        rtype = resource.get("resourceType")
        rtype = rtype if isinstance(rtype, str) and rtype in resource_types() else "Basic"
        rid = uuid.uuid4().hex
        urls.append(f"{rtype}/{rid}")
        entries.append(
            {"resource": {**resource, "id": rid}, "request": {"method": "PUT", "url": urls[-1]}}
        )
    return {"resourceType": "Bundle", "type": kind, "entry": entries}, urls


# -- what every answer must be ------------------------------------------------------------------


def _body(resource: Any) -> bytes:
    # ensure_ascii keeps lone surrogates as \ud800 escapes: hostile, but valid JSON text.
    return json.dumps(resource, ensure_ascii=True).encode()


def _sane(response: httpx.Response) -> None:
    status = response.status_code
    where = f"{response.request.method} {response.request.url}"
    assert status < 500 or status in EXPECTED_5XX, f"{where} -> {status}: {response.text[:500]}"
    if status >= 400:
        outcome = response.json()
        assert outcome.get("resourceType") == "OperationOutcome", f"{where}: {response.text[:300]}"
        assert outcome["issue"][0].get("diagnostics"), f"{where}: a refusal must say why"


def _absent(client: httpx.Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404, f"a refused write left {url} behind: {response.text[:300]}"


def _healthy(process: HeraldProcess) -> None:
    response = httpx.get(f"http://127.0.0.1:{process.port}/healthz", timeout=HEALTH_TIMEOUT_S)
    assert response.status_code == 200
    assert process.proc is not None and process.proc.poll() is None, "herald died"


def _client(herald: HeraldProcess) -> httpx.Client:
    return httpx.Client(
        base_url=herald.base,
        timeout=REQUEST_TIMEOUT_S,
        headers={"Content-Type": "application/fhir+json"},
    )


def _settings() -> settings:
    return settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=in_ci(),
        database=None if in_ci() else settings.default.database,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- the tests ----------------------------------------------------------------------------------


def test_mutated_resources_are_stored_whole_or_refused_whole(
    herald: HeraldProcess, seeds: list[dict[str, Any]]
) -> None:
    @_settings()
    @given(resource=mutated(seeds), by_put=st.booleans())
    def one(resource: dict[str, Any], by_put: bool) -> None:
        rtype = resource.get("resourceType")
        rtype = rtype if isinstance(rtype, str) and rtype in resource_types() else "Basic"
        with _client(herald) as client:
            if by_put:
                rid = uuid.uuid4().hex
                response = client.put(f"/{rtype}/{rid}", content=_body({**resource, "id": rid}))
                _sane(response)
                if response.status_code >= 400:
                    _absent(client, f"/{rtype}/{rid}")
            else:
                response = client.post(f"/{rtype}", content=_body(resource))
                _sane(response)
            if response.status_code in (200, 201):
                stored = response.json()
                read = client.get(f"/{rtype}/{stored['id']}")
                assert read.status_code == 200, read.text[:300]
        _healthy(herald)

    one()


def test_mutated_bundles_are_all_or_nothing(
    herald: HeraldProcess, seeds: list[dict[str, Any]]
) -> None:
    @_settings()
    @given(resources=st.lists(mutated(seeds), min_size=1, max_size=4))
    def one(resources: list[dict[str, Any]]) -> None:
        bundle, urls = _transaction(resources, "transaction")
        with _client(herald) as client:
            response = client.post("", content=_body(bundle))
            _sane(response)
            if response.status_code >= 400:
                for url in urls:
                    _absent(client, f"/{url}")
            else:
                statuses = [e["response"]["status"] for e in response.json()["entry"]]
                assert all(s.startswith(("200", "201")) for s in statuses), statuses
        _healthy(herald)

    one()


def test_generated_searches_answer_or_refuse(herald: HeraldProcess) -> None:
    @_settings()
    @given(query=search_query(), by_post=st.booleans())
    def one(query: tuple[str, list[tuple[str, str]]], by_post: bool) -> None:
        resource_type, params = query
        with _client(herald) as client:
            if by_post:
                response = client.post(
                    f"/{resource_type}/_search",
                    content=_query_string(params),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
            else:
                response = client.get(f"/{resource_type}?{_query_string(params)}")
            _sane(response)
            if response.status_code == 200:
                assert response.json()["resourceType"] == "Bundle"
        _healthy(herald)

    one()


def test_raw_bodies_are_refused_cleanly(herald: HeraldProcess) -> None:
    @_settings()
    @given(
        raw=st.one_of(
            st.binary(max_size=200),
            st.text(max_size=200).map(str.encode),
            st.sampled_from(
                [
                    b"{",
                    b'{"resourceType":"Patient"' + b"," * 1000,
                    b"[" * 5000 + b"]" * 5000,
                    b'{"resourceType":"Patient","name":' + b"[" * 3000 + b"]" * 3000 + b"}",
                    b'{"resourceType":"Patient","id":"a","id":"b"}',
                    b'{"resourceType":"Patient","active":NaN}',
                    b'\xef\xbb\xbf{"resourceType":"Patient"}',
                ]
            ),
        ),
        path=st.sampled_from(["/Patient", "", "/Bundle", "/Subscription", "/Patient/x"]),
    )
    def one(raw: bytes, path: str) -> None:
        with _client(herald) as client:
            method = "PUT" if path.endswith("/x") else "POST"
            response = client.request(method, path, content=raw)
            _sane(response)
        _healthy(herald)

    one()
