"""The `invoiceflow` command line: exit codes, messages, and nothing created on a refusal.

Bad input and bad configuration run in-process through Typer's CliRunner (stderr is
captured separately by Click 8.2+), and what a failed run reports is proven on the
plain pipeline with the same `classify`/`describe` the command uses. The default
tier keeps two real `python -m invoiceflow` processes: the happy path end to end
(invoice, status, resubmission, conflict; the session's Prefect server), and a bad
setting read at import in a fresh process. The other subprocess runs are heavy.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import stripe
import yaml
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from invoiceflow.cli import app
from invoiceflow.request import parse_request
from tests.conftest import app_env, run_cli
from tests.helpers import bill_plain, invoices_for, writes

Invoke = Callable[..., Result]


def valid_request(request_id: str = "acme:2024-06") -> dict[str, Any]:
    return {
        "request_id": request_id,
        "customer": {"id": "cust-1", "email": "billing@acme.example", "name": "Acme Ltd"},
        "currency": "usd",
        "days_until_due": 14,
        "metadata": {"po": "4711"},
        "items": [
            {"sku": "widget", "name": "Widget", "unit_amount": 1500, "quantity": 2},
            {"sku": "gadget", "name": "Gadget", "unit_price": "12.50"},
        ],
    }


def write_request(directory: Path, data: Any, suffix: str = ".json", name: str = "req") -> Path:
    path = directory / f"{name}{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(data), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def stored_requests(database_url: str) -> int:
    """Rows in billing_request of a SQLite database; 0 when the file or table is absent."""
    path = Path(make_url(database_url).database or "")
    if not path.exists():
        return 0
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        if "billing_request" not in tables:
            return 0
        return int(connection.execute("SELECT count(*) FROM billing_request").fetchone()[0])


@pytest.fixture
def cli(
    sandbox: Any, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Invoke]:
    """`invoiceflow …` in this process, configured for the sandbox and a fresh SQLite file.

    The working directory is tmp_path, so no `.env` and no default ./invoiceflow.db
    of the checkout can take part.
    """
    from invoiceflow.runtime import reset_runtime

    monkeypatch.chdir(tmp_path)
    for name, value in app_env(sandbox.url, sqlite_url).items():
        monkeypatch.setenv(name, value)
    reset_runtime()
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), catch_exceptions=False)

    yield invoke
    reset_runtime()


def assert_refused_untouched(result: Result, sandbox: Any, database_url: str) -> None:
    """Exit 2 with an `error:` message, and not one request to Stripe or row in our database."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert sandbox.requests() == [], "a refused run talked to Stripe"
    assert stored_requests(database_url) == 0, "a refused run stored a request"


# --- 1. bad input ------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    id: str
    # Substrings stderr must contain; "{file}" stands for the request file's path.
    expect: tuple[str, ...]
    edit: Callable[[dict[str, Any]], object] | None = None  # applied to valid_request()
    text: str | None = None  # raw file content instead of an edited valid_request()
    suffix: str = ".json"
    create: bool = True


def _item(index: int, **fields: Any) -> Callable[[dict[str, Any]], object]:
    """Set (or, with value None, delete) fields of items[index]."""

    def edit(data: dict[str, Any]) -> None:
        item = data["items"][index]
        for name, value in fields.items():
            if value is None:
                item.pop(name, None)
            else:
                item[name] = value

    return edit


def _priced(currency: str, price: str) -> Callable[[dict[str, Any]], object]:
    """Currency `currency`, items[0] priced by the decimal string `price`."""

    def edit(data: dict[str, Any]) -> None:
        data["currency"] = currency
        _item(0, unit_amount=None, unit_price=price)(data)

    return edit


def _set(**fields: Any) -> Callable[[dict[str, Any]], object]:
    return lambda data: data.update(fields)


def _metadata(**entries: Any) -> Callable[[dict[str, Any]], object]:
    return lambda data: data["metadata"].update(entries)


def _items(count: int) -> Callable[[dict[str, Any]], object]:
    return _set(
        items=[{"sku": f"sku-{i}", "name": f"Item {i}", "unit_amount": 100} for i in range(count)]
    )


BAD_INPUT = [
    Bad(
        "unit_amount-negative", ("items[0].unit_amount", "greater than 0"), _item(0, unit_amount=-5)
    ),
    Bad("unit_amount-zero", ("items[0].unit_amount", "greater than 0"), _item(0, unit_amount=0)),
    Bad("unit_amount-float", ("items[0].unit_amount", "whole number"), _item(0, unit_amount=15.5)),
    Bad("unit_amount-bool", ("items[0].unit_amount", "boolean"), _item(0, unit_amount=True)),
    Bad("unit_amount-string", ("items[0].unit_amount", "whole number"), _item(0, unit_amount="15")),
    Bad("unit_price-number", ("items[1].unit_price", "quoted"), _item(1, unit_price=12.5)),
    Bad(
        "amount-and-price",
        ("items[0]: give exactly one", "both given"),
        _item(0, unit_price="15.00"),
    ),
    Bad(
        "neither-amount",
        ("items[0]: give exactly one", "neither given"),
        _item(0, unit_amount=None),
    ),
    Bad("currency-unknown", ("currency", "'usx' is not a currency"), _set(currency="USX")),
    Bad(
        "usd-3-decimals", ("items[0].unit_price", "more decimals than USD"), _priced("usd", "1.234")
    ),
    Bad("jpy-decimals", ("items[0].unit_price", "more decimals than JPY"), _priced("jpy", "12.5")),
    Bad(
        "kwd-4-decimals",
        ("items[0].unit_price", "more decimals than KWD"),
        _priced("kwd", "1.2345"),
    ),
    Bad("kwd-last-digit", ("items[0].unit_price", "must end in 0"), _priced("kwd", "1.234")),
    Bad("items-none", ("items", "at least 1"), _set(items=[])),
    Bad("items-251", ("items", "has 251; at most 250"), _items(251)),
    Bad(
        "email-bad",
        ("customer.email", "not a valid email"),
        lambda d: d["customer"].update(email="a@b"),
    ),
    Bad("request_id-missing", ("request_id: is required",), lambda d: d.pop("request_id")),
    Bad("customer-missing", ("customer: is required",), lambda d: d.pop("customer")),
    Bad("items-missing", ("items: is required",), lambda d: d.pop("items")),
    Bad("field-unknown", ("colour: unknown field",), _set(colour="blue")),
    Bad("field-misspelt", ("items[0].quantiy", "did you mean 'quantity'"), _item(0, quantiy=2)),
    Bad("quantity-zero", ("items[0].quantity", "at least 1"), _item(0, quantity=0)),
    Bad(
        "metadata-51-keys",
        ("metadata: has 51 keys; at most 45",),
        _set(metadata={f"k{i}": "v" for i in range(51)}),
    ),
    Bad(
        "metadata-long-key", (f"metadata.{'k' * 41}", "41 characters"), _metadata(**{"k" * 41: "v"})
    ),
    Bad("metadata-long-value", ("metadata.po", "501 characters"), _metadata(po="v" * 501)),
    Bad("metadata-reserved", ("metadata.invoiceflow_x", "reserved"), _metadata(invoiceflow_x="1")),
    Bad("metadata-number", ("metadata.seats", "must be a string"), _metadata(seats=3)),
    Bad("json-invalid", ("{file}, line 1", "invalid JSON"), text='{"request_id": "r1",'),
    Bad(
        "json-duplicate-key",
        ("{file}", "duplicate key 'currency'"),
        text='{"currency": "usd", "currency": "eur"}',
    ),
    Bad("json-not-mapping", ("{file}", "top level must be a mapping", "a list"), text="[1, 2]"),
    Bad("file-missing", ("{file}", "cannot read"), create=False),
    Bad("file-type-unknown", ("{file}", "unknown file type '.txt'"), text="{}", suffix=".txt"),
    # YAML: the same checks, plus what YAML does to unquoted values.
    Bad(
        "yaml-not-mapping",
        ("{file}", "top level must be a mapping", "a list"),
        text="- a\n- b\n",
        suffix=".yaml",
    ),
    Bad(
        "yaml-scalar", ("{file}", "top level must be a mapping"), text="just words\n", suffix=".yml"
    ),
    Bad("yaml-syntax", ("{file}", "invalid YAML"), text="request_id: [unclosed\n", suffix=".yaml"),
    Bad(
        "yaml-unit_price-float",
        ("items[1].unit_price", "quoted"),
        _item(1, unit_price=12.5),
        suffix=".yaml",
    ),
    Bad(
        "yaml-email-bad",
        ("customer.email",),
        lambda d: d["customer"].update(email="nobody"),
        suffix=".yaml",
    ),
    Bad(
        "yaml-quantity-string",
        ("items[0].quantity", "remove the quotes"),
        _item(0, quantity="2"),
        suffix=".yaml",
    ),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=lambda case: case.id)
def test_bad_input_exits_2_naming_the_field_and_creates_nothing(
    case: Bad, cli: Invoke, sandbox: Any, sqlite_url: str, tmp_path: Path
) -> None:
    path = tmp_path / f"request{case.suffix}"
    if case.text is not None:
        path.write_text(case.text, encoding="utf-8")
    elif case.create:
        data = valid_request()
        if case.edit is not None:
            case.edit(data)
        write_request(tmp_path, data, case.suffix, name="request")

    result = cli("invoice", str(path), "--no-wait")

    assert_refused_untouched(result, sandbox, sqlite_url)
    for expected in case.expect:
        assert expected.format(file=path) in result.stderr, result.stderr


def test_yaml_date_is_not_taken_for_a_request_id(
    cli: Invoke, sandbox: Any, sqlite_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "request.yaml"
    text = yaml.safe_dump(valid_request(), sort_keys=False)
    path.write_text(text.replace("request_id: acme:2024-06", "request_id: 2024-06-01"))

    result = cli("invoice", str(path), "--no-wait")

    assert_refused_untouched(result, sandbox, sqlite_url)
    assert "request_id: must be a string" in result.stderr


def test_every_violation_is_reported_at_once(
    cli: Invoke, sandbox: Any, sqlite_url: str, tmp_path: Path
) -> None:
    data = valid_request()
    data["customer"]["email"] = "not-an-email"
    data["currency"] = "usx"
    data["items"][0]["unit_amount"] = -1
    data["items"][1]["quantity"] = 0
    data["metadata"]["invoiceflow_request_id"] = "mine"
    path = write_request(tmp_path, data)

    result = cli("invoice", str(path), "--no-wait")

    assert_refused_untouched(result, sandbox, sqlite_url)
    lines = result.stderr.removeprefix("error: ").splitlines()
    fields = {line.split(":", 1)[0] for line in lines}
    assert fields == {
        "customer.email",
        "currency",
        "items[0].unit_amount",
        "items[1].quantity",
        "metadata.invoiceflow_request_id",
    }, result.stderr


# --- 2. configuration ----------------------------------------------------------


def test_missing_stripe_key_exits_2_before_anything(
    cli: Invoke, sandbox: Any, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRIPE_API_KEY")
    path = write_request(tmp_path, valid_request())

    result = cli("invoice", str(path), "--no-wait")

    assert_refused_untouched(result, sandbox, sqlite_url)
    assert "STRIPE_API_KEY is not set" in result.stderr


@pytest.mark.parametrize("prefix", ["sk_live_", "rk_live_"])
def test_live_key_is_refused_without_allow_live_and_never_echoed(
    prefix: str,
    cli: Invoke,
    sandbox: Any,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = f"{prefix}51HxSECRETdoNotPrintMe0123456789"
    monkeypatch.setenv("STRIPE_API_KEY", secret)
    monkeypatch.delenv("INVOICEFLOW_ALLOW_LIVE", raising=False)
    path = write_request(tmp_path, valid_request())

    result = cli("invoice", str(path), "--no-wait")

    assert_refused_untouched(result, sandbox, sqlite_url)
    assert "INVOICEFLOW_ALLOW_LIVE" in result.stderr
    assert "SECRETdoNotPrintMe" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "url, message",
    [
        ("not a url", "INVOICEFLOW_DATABASE_URL is not a database URL"),
        ("mysql://root@127.0.0.1/billing", "backend 'mysql' is not supported"),
    ],
    ids=["unparsable", "unsupported-backend"],
)
@pytest.mark.parametrize("command", ["invoice", "status", "db-upgrade"])
def test_malformed_database_url_exits_2_in_every_command(
    command: str,
    url: str,
    message: str,
    cli: Invoke,
    sandbox: Any,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INVOICEFLOW_DATABASE_URL", url)
    if command == "invoice":
        args = ["invoice", str(write_request(tmp_path, valid_request())), "--no-wait"]
    else:
        args = command.split("-")

    result = cli(*args)

    assert_refused_untouched(result, sandbox, sqlite_url)
    assert message in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        ["req.json"] if command == "invoice" else []
    ), "a database file appeared"


@pytest.mark.parametrize("command", ["invoice", "status", "db-upgrade"])
def test_unreachable_database_exits_5_with_one_line(
    command: str, cli: Invoke, sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on port 1: the database is down, the configuration is fine.
    monkeypatch.setenv(
        "INVOICEFLOW_DATABASE_URL", "postgresql+psycopg://root@127.0.0.1:1/test?connect_timeout=2"
    )
    if command == "invoice":
        args = ["invoice", str(write_request(tmp_path, valid_request())), "--no-wait"]
    else:
        args = command.split("-")

    result = cli(*args)

    assert result.exit_code == 5
    assert result.stderr.startswith("error: database unreachable: ")
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert sandbox.requests() == []


# --- 4. and 5. db upgrade, status ------------------------------------------------


def test_db_upgrade_creates_the_schema_and_is_repeatable(cli: Invoke, sqlite_url: str) -> None:
    from invoiceflow.db.migrate import head_revision

    first = cli("db", "upgrade")
    second = cli("db", "upgrade")

    for result in (first, second):
        assert result.exit_code == 0, result.stderr
        assert result.stdout.strip() == f"schema at revision {head_revision()}"
    path = make_url(sqlite_url).database
    assert path is not None
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"alembic_version", "billing_request"} <= tables
    assert stored_requests(sqlite_url) == 0


def test_status_of_an_unknown_request_exits_2(cli: Invoke) -> None:
    result = cli("status", "no-such-request")

    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "error: no request 'no-such-request'"
    assert result.stdout == ""


def test_status_names_the_database_it_reads(cli: Invoke, sqlite_url: str) -> None:
    """A ledger that moved (cron from another directory, a new container) is
    spotted at a glance: status says which one it read, on stderr."""
    plain, as_json = cli("status"), cli("status", "--json")

    for result in (plain, as_json):
        assert result.stderr == f"database: {sqlite_url}\n"
    assert json.loads(as_json.stdout) == []


def test_status_of_an_empty_database(cli: Invoke) -> None:
    plain, as_json = cli("status"), cli("status", "--json")

    assert (plain.exit_code, plain.stdout) == (0, "no requests yet\n")
    assert (as_json.exit_code, json.loads(as_json.stdout)) == (0, [])


# --- 3. the happy path, in a real process --------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_invoice_status_resubmit_and_conflict_through_the_cli(  # a default-tier smoke test
    sandbox: Any, stripe_client: stripe.StripeClient, database_url: str, tmp_path: Path
) -> None:
    env = app_env(sandbox.url, database_url)
    data = valid_request("acme:2024-06")
    expected_total = parse_request(data).total_amount()
    path = write_request(tmp_path, data)

    sent = run_cli("invoice", str(path), "--no-wait", env=env)

    assert sent.returncode == 0, sent.stderr
    (invoice,) = invoices_for(stripe_client, "acme:2024-06")
    (line,) = sent.stdout.splitlines()
    assert line.startswith("acme:2024-06: sent — ")
    assert invoice.id in line
    assert "42.50 USD" in line

    one = run_cli("status", "acme:2024-06", "--json", env=env)
    assert one.returncode == 0, one.stderr
    status = json.loads(one.stdout)
    assert status["request_id"] == "acme:2024-06"
    assert status["state"] == "sent"
    assert status["stripe_invoice_id"] == invoice.id
    assert status["total_amount"] == expected_total == invoice.total == 4250
    assert status["currency"] == "usd"
    assert status["last_error"] is None

    listing = run_cli("status", env=env)
    assert listing.returncode == 0, listing.stderr
    # One request listed has its totals too (they must agree with it).
    assert listing.stdout.splitlines() == [
        line,
        "total USD: 1 request, billed 42.50 USD, paid 0.00 USD, "
        "outstanding 42.50 USD, overdue 0.00 USD",
    ]

    before = len(writes(sandbox))
    again = run_cli("invoice", str(path), "--no-wait", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == sent.stdout
    assert len(writes(sandbox)) == before, "a resubmission wrote to Stripe"

    data["items"][0]["quantity"] = 3
    changed = write_request(tmp_path, data, name="changed")
    conflict = run_cli("invoice", str(changed), "--no-wait", env=env)
    assert conflict.returncode == 3, (conflict.stdout, conflict.stderr)
    assert conflict.stderr.startswith("error: ")
    assert "different content" in conflict.stderr
    assert "acme:2024-06" in conflict.stderr
    assert conflict.stdout == ""
    assert len(writes(sandbox)) == before, "a conflicting resubmission wrote to Stripe"
    assert invoices_for(stripe_client, "acme:2024-06") == [invoice]
    after = json.loads(run_cli("status", "acme:2024-06", "--json", env=env).stdout)
    assert (after["state"], after["total_amount"]) == ("sent", 4250)


# --- 6. Stripe refuses for good --------------------------------------------------


def _archived_widget_price(stripe_client: stripe.StripeClient) -> tuple[dict[str, Any], str]:
    """A request for one widget, whose price someone archived in the Dashboard; its id."""
    from invoiceflow.stripe_keys import price_lookup_key, product_id

    data = valid_request("acme:refused")
    data["items"] = [{"sku": "widget", "name": "Widget", "unit_amount": 1500}]
    pid = product_id("widget")
    stripe_client.v1.products.create({"id": pid, "name": "Widget"})
    archived = stripe_client.v1.prices.create(
        {
            "product": pid,
            "currency": "usd",
            "unit_amount": 1500,
            "lookup_key": price_lookup_key("widget", "usd", 1500),
        }
    )
    stripe_client.v1.prices.update(archived.id, {"active": False})
    return data, archived.id


def test_a_permanent_stripe_refusal_is_exit_4_and_recorded_before_any_price_or_invoice(
    cli: Invoke, sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    """Someone archived our price for this sku and amount in the Dashboard. It keeps its
    lookup key; taking the key over would overrule that decision, so the run is refused
    (exit 4) with what to do, before any new price or invoice is written. In process:
    the run on the plain pipeline, its exit code and line as `invoice` makes them."""
    from invoiceflow.catalog import ArchivedPrice
    from invoiceflow.outcomes import Exit, classify
    from invoiceflow.retry import describe

    data, archived = _archived_widget_price(stripe_client)
    before = len(writes(sandbox))

    with pytest.raises(ArchivedPrice) as refused:
        bill_plain(parse_request(data))

    assert classify(refused.value) is Exit.REFUSED
    message = f"error: acme:refused: {describe(refused.value)}"
    assert message.startswith("error: acme:refused: ArchivedPrice")
    assert f"price {archived}" in message
    assert "reactivate it in the Dashboard" in message
    later = [e["path"] for e in writes(sandbox)[before:]]
    assert not [p for p in later if p.startswith(("/v1/prices", "/v1/invoices"))], later

    shown = cli("status", "acme:refused", "--json")
    assert shown.exit_code == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["state"] == "failed"
    assert status["stripe_invoice_id"] is None
    assert "is archived in Stripe" in status["last_error"]


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.usefixtures("prefect_api")
def test_a_permanent_stripe_refusal_exits_4_and_records_the_failure(
    sandbox: Any, stripe_client: stripe.StripeClient, sqlite_url: str, tmp_path: Path
) -> None:
    """The same refusal through `invoiceflow invoice` in a real process: exit 4, one line."""
    data, archived_id = _archived_widget_price(stripe_client)
    env = app_env(sandbox.url, sqlite_url)
    path = write_request(tmp_path, data)
    before = len(writes(sandbox))

    refused = run_cli("invoice", str(path), "--no-wait", env=env)

    assert refused.returncode == 4, (refused.stdout, refused.stderr)
    (message,) = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert message.startswith("error: acme:refused: ArchivedPrice")
    assert f"price {archived_id}" in message
    assert "reactivate it in the Dashboard" in message
    assert refused.stdout == ""
    # (The customer branch runs in parallel and may create the customer: harmless, idempotent.)
    later = [e["path"] for e in writes(sandbox)[before:]]
    assert not [p for p in later if p.startswith(("/v1/prices", "/v1/invoices"))], later

    status = json.loads(run_cli("status", "acme:refused", "--json", env=env).stdout)
    assert status["state"] == "failed"
    assert status["stripe_invoice_id"] is None
    assert "is archived in Stripe" in status["last_error"]


# --- 7. configuration mistakes people make: one line, exit 2, no traceback ------------


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_negative_await_seconds_is_refused_naming_the_option(
    value: str, cli: Invoke, sandbox: Any, sqlite_url: str, tmp_path: Path
) -> None:
    path = write_request(tmp_path, valid_request())

    result = cli("invoice", str(path), f"--await-seconds={value}")

    assert_refused_untouched(result, sandbox, sqlite_url)
    assert result.stderr == "error: --await-seconds must be 0 or more seconds (0: don't wait)\n"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("INVOICEFLOW_TASK_RETRY_DELAYS_SECONDS", "5,-30", "entry 2 must be 0 or more seconds"),
        ("INVOICEFLOW_TASK_RETRY_DELAYS_SECONDS", "5,,30", "entry 2 is empty"),
        ("INVOICEFLOW_LEASE_SECONDS", "abc", "Input should be a valid number"),
        ("INVOICEFLOW_DATABASE_URL", "sqlite:///{tmp}/missing/x.db", "does not exist"),
    ],
)
@pytest.mark.parametrize("command", ["invoice", "status", "db-upgrade"])
def test_bad_settings_are_one_line_in_every_command(
    command: str,
    variable: str,
    value: str,
    message: str,
    cli: Invoke,
    sandbox: Any,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, value.format(tmp=tmp_path))
    if command == "invoice":
        args = ["invoice", str(write_request(tmp_path, valid_request())), "--no-wait"]
    else:
        args = command.split("-")

    result = cli(*args)

    assert_refused_untouched(result, sandbox, sqlite_url)
    assert result.stderr.startswith(f"error: {variable}: ")
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "missing").exists()


@pytest.mark.slow
# `invoice` is a default-tier smoke test (refused at once); `demo` is heavy.
@pytest.mark.parametrize("command", ["invoice", pytest.param("demo", marks=pytest.mark.heavy)])
def test_a_bad_setting_read_when_the_flow_is_imported_is_one_line(
    command: str, sandbox: Any, sqlite_url: str, tmp_path: Path
) -> None:
    """tasks/billing.py reads the retry delays at import; a fresh process, where that
    import really happens, still gets one line and exit 2."""
    env = app_env(sandbox.url, sqlite_url, INVOICEFLOW_TASK_RETRY_DELAYS_SECONDS="5,-30")
    request_file = write_request(tmp_path, valid_request())
    args = ["invoice", str(request_file)] if command == "invoice" else ["demo"]

    result = run_cli(*args, env=env, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        "error: INVOICEFLOW_TASK_RETRY_DELAYS_SECONDS: entry 2 must be 0 or more seconds"
    )
    assert "Traceback" not in result.stdout + result.stderr
    assert sandbox.requests() == []
    assert [p.name for p in tmp_path.iterdir()] == ["req.json"], "a database appeared"


def test_sandbox_on_a_busy_port_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = CliRunner().invoke(app, ["sandbox", "--port", str(port)])

    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        f"error: port {port} on 127.0.0.1 is in use; pass --port N (0 = any free port)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "-1"], "error: --port must be 0-65535, got -1 (0 = any free port)\n"),
        (
            ["--port", "0", "--rate-limit", "bogus"],
            "error: invalid value for rate_limit: 'bogus'\n",
        ),
    ],
)
def test_sandbox_bad_options_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["sandbox", *args])

    assert (result.exit_code, result.stderr, result.stdout) == (2, message, "")


def test_stripe_retries_are_said_as_progress_notes(
    cli: Invoke, sandbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """No silent waits: a throttled Stripe is one progress note per retry (the notes
    `invoice` prints on stderr; that wiring is the heavy test below)."""
    sandbox.configure(
        faults=[{"method": "POST", "path": "^/v1/invoices$", "when": "status_429", "times": 2}]
    )

    with caplog.at_level("INFO", logger="invoiceflow.progress"):
        bill_plain(parse_request(valid_request("acme:retried")))

    said = [r.getMessage() for r in caplog.records if r.name == "invoiceflow.progress"]
    notes = [line for line in said if line.startswith("Stripe: ")]
    assert len(notes) == 2, said
    assert "create invoice for acme:retried" in notes[0] and "retry 1" in notes[0]


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.usefixtures("prefect_api")
def test_stripe_retries_are_said_on_stderr_without_verbose(
    sandbox: Any, database_url: str, tmp_path: Path
) -> None:
    """No silent waits: a throttled Stripe shows up as one line per retry."""
    sandbox.configure(
        faults=[{"method": "POST", "path": "^/v1/invoices$", "when": "status_429", "times": 2}]
    )
    path = write_request(tmp_path, valid_request("acme:retried"))

    result = run_cli("invoice", str(path), "--no-wait", env=app_env(sandbox.url, database_url))

    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("… Stripe: ")]
    assert len(notes) == 2, result.stderr
    assert "create invoice for acme:retried" in notes[0] and "retry 1" in notes[0]
