"""Every `herald` command finds the same database whatever the current directory, says which
one it uses, and a command that reads a running Herald's data refuses a missing database
instead of making an empty one. `herald load` runs no scheduler and ends cleanly.

Each command runs as a real process, from a directory of its own, as an operator would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def herald(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `herald args` in `cwd` with a clean HERALD_ environment plus `env`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    environment.update(env, PYTHONPATH=str(ROOT))
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "herald.cli", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_commands_in_different_directories_use_the_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = herald(tmp_path / "here", "migrate", HERALD_DATA_DIR=str(data))
    assert created.returncode == 0, created.stderr
    database = data / "herald.db"
    assert database.exists()
    assert created.stderr.splitlines()[0] == f"database: sqlite+aiosqlite:///{database}"
    listed = herald(tmp_path / "elsewhere", "dead-letters", HERALD_DATA_DIR=str(data))
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.splitlines()[0] == f"database: sqlite+aiosqlite:///{database}"
    assert "no dead letters" in listed.stderr
    assert not list((tmp_path / "elsewhere").iterdir())  # nothing made where it ran


def test_the_default_data_directory_is_per_user_not_per_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = herald(tmp_path / "a", "migrate", HOME=str(home), XDG_DATA_HOME="")
    assert first.returncode == 0, first.stderr
    database = home / ".local" / "share" / "herald" / "herald.db"
    assert database.exists()
    second = herald(tmp_path / "b", "quarantine", "list", HOME=str(home), XDG_DATA_HOME="")
    assert second.returncode == 0, second.stderr
    assert f"database: sqlite+aiosqlite:///{database}" in second.stderr
    assert "nothing is quarantined" in second.stderr


def test_a_database_url_wins_over_the_data_directory(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/chosen.db"
    done = herald(
        tmp_path, "migrate", HERALD_DATA_DIR=str(tmp_path / "data"), HERALD_DATABASE_URL=url
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == f"database: {url}"
    assert (tmp_path / "chosen.db").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "command",
    [["dead-letters"], ["replay", "1"], ["quarantine", "list"], ["quarantine", "replay", "1"]],
)
def test_reading_a_database_that_is_not_there_is_refused(
    tmp_path: Path, command: list[str]
) -> None:
    data = tmp_path / "data"
    done = herald(tmp_path, *command, HERALD_DATA_DIR=str(data))
    assert done.returncode == 2
    [line] = [x for x in done.stderr.splitlines() if x.startswith("cannot start:")]
    assert f"there is no Herald database at {data / 'herald.db'}" in line
    assert "HERALD_DATA_DIR" in line and "herald serve" in line
    assert "no dead letters" not in done.stderr and "nothing is quarantined" not in done.stderr
    assert not data.exists()


def test_load_runs_no_scheduler_and_ends_without_a_traceback(tmp_path: Path) -> None:
    careplan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p1"},
        "activity": [
            {
                "detail": {
                    "status": "scheduled",
                    "code": {"text": "walk"},
                    "scheduledTiming": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                }
            }
        ],
    }
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "p1.json").write_text(json.dumps({"resourceType": "Patient", "id": "p1"}))
    (tmp_path / "in" / "plan.json").write_text(json.dumps(careplan))
    done = herald(tmp_path, "load", "in", HERALD_DATA_DIR=str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    assert "loaded 2 resources from 2 files; 0 failed" in done.stderr
    assert "Traceback" not in done.stderr and "[error" not in done.stderr
    assert "CancelledError" not in done.stderr and "sweep" not in done.stderr
    # No Task was materialised by the load: a reconcile afterwards still has them to create.
    swept = herald(tmp_path, "scheduler", "reconcile", HERALD_DATA_DIR=str(tmp_path / "data"))
    assert swept.returncode == 0, swept.stderr
    created = re.search(r"created\W+(\d+)", swept.stderr)
    assert created and int(created.group(1)) > 0, swept.stderr
