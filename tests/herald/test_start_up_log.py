"""What `herald serve` prints at start, to a file (not a terminal): the database first, one
line per part started, no library chatter at INFO and no colour codes."""

from __future__ import annotations

from pathlib import Path

from tests.support.process import HeraldProcess


def test_start_up_output_is_short_plain_and_names_the_database(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    server = HeraldProcess({"HERALD_DATA_DIR": str(tmp_path / "data")}, log_path)
    server.env.pop("HERALD_KAFKA_BOOTSTRAP", None)
    server.env.pop("HERALD_DATABASE_URL", None)
    server.env.pop("HERALD_LOG_LEVEL", None)
    server.start()
    server.stop()
    output = log_path.read_text()
    lines = output.splitlines()
    assert lines[0] == f"database: sqlite+aiosqlite:///{tmp_path / 'data' / 'herald.db'}"
    assert "\x1b[" not in output  # no terminal colour codes in a file
    for chatter in ("Running upgrade", "Context impl", "Added job", "Running job",
                    "Started server process", "Waiting for application startup"):  # fmt: skip
        assert chatter not in output, chatter
    assert sum("herald started" in line for line in lines) == 1
    assert sum("subscriptions loaded" in line for line in lines) == 1
    assert sum("Herald FHIR base: http://127.0.0.1:" in line for line in lines) == 1
    assert len(lines) <= 12, output
