"""docs/configuration.md is what `herald config-doc` generates from the settings class."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from herald.cli import app
from herald.settings import Settings
from herald.settings_doc import PAGE, render


def test_the_committed_configuration_page_is_the_generated_one() -> None:
    assert PAGE.read_text() == render(), "run `herald config-doc` and commit docs/configuration.md"


def test_every_setting_is_on_the_page_with_its_description() -> None:
    page = render()
    for name, field in Settings.model_fields.items():
        row = next(x for x in page.splitlines() if x.startswith(f"| `HERALD_{name.upper()}` |"))
        assert field.description and field.description.replace("|", "\\|") in row


def test_config_doc_writes_the_page(tmp_path: Path) -> None:
    target = tmp_path / "configuration.md"
    result = CliRunner().invoke(app, ["config-doc", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text() == render()
