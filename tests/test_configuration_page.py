"""docs/configuration.md is generated from the settings' field descriptions, and stays so."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from invoiceflow.settings import (
    MIN_TRIGGER_TOKEN_LENGTH,
    MIN_WEBHOOK_SECRET_CHARS,
    Settings,
    SettingsError,
    load_settings,
    variable,
)
from invoiceflow.settings_doc import SECTIONS, render

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
REGENERATE = "run `python -m invoiceflow.settings_doc > docs/configuration.md`"


def test_the_page_is_what_the_settings_say() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(), (
        f"docs/configuration.md and invoiceflow/settings.py differ; {REGENERATE}"
    )


def test_the_command_prints_the_page(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "invoiceflow.settings_doc")  # run afresh, as -m does
    runpy.run_module("invoiceflow.settings_doc", run_name="__main__")
    assert capsys.readouterr().out == render()


def test_every_setting_is_on_the_page_with_its_description() -> None:
    page = render()
    first = next(iter(Settings.model_fields))
    assert first in SECTIONS, "the first field opens a section"
    for name, field in Settings.model_fields.items():
        assert field.description and len(field.description) > 20, f"{name} has no description"
        assert f"| `{variable(name)}` |" in page, name


def test_the_limits_the_descriptions_quote_are_the_ones_checked() -> None:
    # Descriptions are plain strings (the text under each field), so they cannot
    # interpolate the constants: hold them to the numbers the validators use.
    fields = Settings.model_fields
    assert f"at least {MIN_TRIGGER_TOKEN_LENGTH} characters" in str(
        fields["trigger_token"].description
    )
    assert f"at least {MIN_WEBHOOK_SECRET_CHARS} letters or digits" in str(
        fields["stripe_webhook_secret"].description
    )


@pytest.mark.usefixtures("clean_env")
def test_every_variable_on_the_page_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The names the page gives are the ones pydantic-settings reads: a value that
    cannot be right for any field is refused, naming that very variable."""
    for name in Settings.model_fields:
        if name in ("billing_source", "trigger_token"):  # a file name, a long enough token
            continue
        # Six fields: a cron refuses it before it imports Prefect to parse it.
        monkeypatch.setenv(variable(name), "[not valid for any of them")
        with pytest.raises(SettingsError) as refused:
            load_settings()
        assert str(refused.value).startswith(variable(name)), str(refused.value)
        assert "\n" not in str(refused.value)
        monkeypatch.delenv(variable(name))
