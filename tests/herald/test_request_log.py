"""Each log line of a request carries its request id, the one the client got in X-Request-ID."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.support.process import HeraldProcess


def test_log_lines_of_a_request_carry_the_request_id_the_client_got(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    server = HeraldProcess(
        {
            "HERALD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/h.db",
            "HERALD_LOG_FORMAT": "json",
            "HERALD_AUTH": "jwt",
            "HERALD_JWT_SECRET": "a-development-secret-of-enough-length",
        },
        log,
    )
    server.env.pop("HERALD_KAFKA_BOOTSTRAP", None)
    server.start()
    try:
        refused = httpx.get(
            f"{server.base}/Patient", params={"name": "Zyxwvutsrq"}, headers={"Authorization": "x"}
        )
        assert refused.status_code == 401
        request_id = refused.headers["X-Request-ID"]
        assert httpx.get(f"{server.base}/metadata").headers["X-Request-ID"] != request_id
    finally:
        server.stop()
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    [line] = [x for x in lines if x.get("event") == "request refused"]
    assert line["request_id"] == request_id
    assert "Zyxwvutsrq" not in log.read_text()  # a search value never reaches the log
