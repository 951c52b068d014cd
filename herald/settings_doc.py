"""docs/configuration.md, generated from the `Settings` class: every setting's variable,
default and description, grouped by the part of Herald it configures.

`herald config-doc` (or `python -m herald.settings_doc`) writes the page; a test fails when
the committed page differs from what this module generates, so edit the descriptions in
herald/settings.py, never the page.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic.fields import FieldInfo

from herald.settings import Settings

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

# (heading, setting name prefixes, the page that explains them); first match wins.
GROUPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Authentication and access", ("auth", "jwks_", "jwt_", "admin_scope", "audit",
     "api_docs", "metrics_access", "endpoint_allowlist", "email_allowlist"), "access.md"),
    ("Change stream", ("kafka_", "relay_", "outbox_"), "stream.md"),
    ("Subscriptions and channels", ("subscription", "delivery_", "dispatcher_", "websocket_",
     "smtp_", "email_", "queue_topics"), "subscriptions.md"),
    ("CarePlan scheduler", ("scheduler",), "scheduling.md"),
    ("Search limits and budgets", ("search_", "fhirpath_"), "search-limits.md"),
    ("Quarantine", ("quarantine_",), "operations.md"),
    ("Limits per client", ("limit_",), "limits.md"),
    ("Service", ("",), "operations.md"),
)  # fmt: skip

INTRO = """\
# Configuration

<!-- Generated from herald/settings.py by `herald config-doc`; do not edit by hand. -->

Every setting is an environment variable with the prefix `HERALD_` (read by
`pydantic-settings`); the command-line options of `herald` (`--database-url`, `--port`, ...)
override them. Every command finds the same database whatever the current directory: the
SQLite file `herald.db` in `HERALD_DATA_DIR`, unless `HERALD_DATABASE_URL` names another
(a PostgreSQL server, for a scaled-out deployment). Each command prints the database it uses
as its first line on stderr.
"""


def render() -> str:
    """The whole page."""
    fields = Settings.model_fields
    grouped: dict[str, list[str]] = {heading: [] for heading, _, _ in GROUPS}
    for name in fields:
        grouped[_group(name)].append(name)
    parts = [INTRO]
    for heading, _, page in GROUPS:
        names = grouped[heading]
        if not names:
            continue
        parts.append(f"## {heading}\n\nSee [{page}]({page}).\n")
        rows = [f"| `HERALD_{n.upper()}` | {_default(fields[n])} | {_meaning(fields[n])} |"
                for n in names]  # fmt: skip
        parts.append("| variable | default | meaning |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


def _group(name: str) -> str:
    return next(heading for heading, prefixes, _ in GROUPS if name.startswith(prefixes))


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])
    value = field.default
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _meaning(field: FieldInfo) -> str:
    return (field.description or "").replace("|", "\\|")


def write(path: Path = PAGE) -> Path:
    path.write_text(render())
    return path


if __name__ == "__main__":
    sys.stdout.write(f"wrote {write()}\n")
