"""docs/configuration.md, generated from the settings themselves:

    python -m invoiceflow.settings_doc > docs/configuration.md

Each field's description (the string under it in invoiceflow/settings.py) is the
reference; this module only lays the fields out in tables, one per section, between
the hand-written text below. tests/test_configuration_page.py fails when the page and
the settings differ.
"""

from __future__ import annotations

import sys

from invoiceflow.settings import Settings, extra, variable

# The first field of each section of `Settings`, with the section's title and a line
# under it. A new field joins the section of the field above it.
SECTIONS = {
    "stripe_api_key": ("Stripe", ""),
    "trigger_token": ("The service and the ledger", ""),
    "retry_attempts": (
        "Retries",
        "How a Stripe call that fails is tried again: see [Retries](design.md#retries).",
    ),
    "billing_cron": (
        "Billing cycles",
        "What `invoiceflow serve` runs by itself: see [Billing cycles](billing-cycles.md).",
    ),
    "stripe_rate": ("The shared Stripe rate limit", ""),
}

HEADER = """\
# Configuration

[← README](../README.md) · [all docs](../README.md#the-docs)

<!-- Generated from the field descriptions in invoiceflow/settings.py by
`python -m invoiceflow.settings_doc > docs/configuration.md`: edit those, then rerun. -->

All settings are read in one place (`invoiceflow/settings.py`), from the
environment or `./.env`: `INVOICEFLOW_` and the setting's name, except Stripe's
own `STRIPE_API_KEY`, `STRIPE_API_BASE` and `STRIPE_WEBHOOK_SECRET`. A malformed
value fails at start with a message that names the variable and the fix, in one
line, exit 2: a negative or non-numeric number, a SQLite file in a directory that
does not exist. Secrets are never logged, stored or echoed back in errors.
`tests/test_secrets_audit.py` holds us to that: recognizable fake keys,
webhook secrets and trigger tokens go through the served stack (requests
accepted and refused, faults, a decline, forged webhooks, a wrong key, a killed
run), and then every log line, command output, ledger row, Prefect row, run,
state, log, artifact and event is searched for them, whole or in part
(`tests/secrets_scan.py`); it finds none.
"""

PREFECT = """\
## Prefect

Prefect is configured the usual way (`PREFECT_API_URL` for a server; unset means
local mode). invoiceflow only sets defaults:

- analytics off (offline it would log errors);
- our own log lines (`invoiceflow.*`: "Draft invoice … for request …", retries)
  sent to the Prefect API, so a run's page in the UI tells the whole story;
- a longer start timeout for the temporary server;
- flow heartbeats every 30 s, for crashed-run detection.

`invoiceflow invoice` prints one line, the outcome or `error: <reason>`; `-v`
shows the run's log as it happens.
"""


def shown_default(name: str) -> str:
    """A field's default as the page shows it: as typed in the environment."""
    field = Settings.model_fields[name]
    shown = extra(field, "shown_default")
    if shown is not None:
        return shown
    value = field.default
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if isinstance(value, list):
        return "`" + ",".join(f"{entry:g}" for entry in value) + "`"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def _row(name: str) -> str:
    meaning = " ".join((Settings.model_fields[name].description or "").split())
    meaning = meaning.replace("|", "\\|")  # a table cell
    return f"| `{variable(name)}` | {shown_default(name)} | {meaning} |"


def render() -> str:
    """The whole page."""
    parts = [HEADER]
    for name in Settings.model_fields:
        if name in SECTIONS:
            title, note = SECTIONS[name]
            parts.append(f"\n## {title}\n\n" + (f"{note}\n\n" if note else ""))
            parts.append("| variable | default | meaning |\n| --- | --- | --- |\n")
        parts.append(_row(name) + "\n")
    parts.append("\n" + PREFECT)
    return "".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
