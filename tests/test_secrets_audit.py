"""The secrets audit (issue 10): recognizable fake secrets go through every path
where a secret is near, and none of them shows up afterwards in a log line, a
database row, a Prefect object or a command's output; the trigger and the receiver
refuse whoever cannot prove who they are; a live key needs INVOICEFLOW_ALLOW_LIVE.

The served stack runs as separate processes (the sandbox, a Prefect server on
PostgreSQL, `invoiceflow serve`, each CLI command), all writing into one work
directory, which `tests/secrets_scan.py` then reads with the ledger, the Prefect
database and the Prefect API.

The workload is one function, `served_workload(env, workdir)`, a context manager
that yields the `Places` it left traces in while they can still be read. Once
`bench/chaos.py` exists, the soak can be audited instead by a function of the same
shape that runs `bench/chaos.py --requests 12 --kills 4 --seed 3 --workdir DIR
--keep` with `env` (it reads CHAOS_STRIPE_KEY, CHAOS_WEBHOOK_SECRET and
CHAOS_TRIGGER_TOKEN, which `audit_env` sets too) and yields
`Places([DIR], [soak.json's database_url, prefect_database_url])`.
"""

from __future__ import annotations

import contextlib
import json
import secrets as random_tokens
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from stripe_sandbox.webhooks import sign
from tests.conftest import TEST_KEY, app_env, run_cli
from tests.helpers import crash_cli_at, invoices_for, make_request, wait_for
from tests.secrets_scan import Finding, Places, Scanner, Secret, recognizable, report, scan
from tests.test_service import _refused, _running_service

RUN_TIMEOUT = 240  # seconds; a run takes a few, but the machine is shared and busy


@dataclass
class AuditSecrets:
    key: Secret = field(default_factory=lambda: recognizable("sk_test_", "AUDITKEY"))
    webhook: Secret = field(default_factory=lambda: recognizable("whsec_", "AUDITHOOK", ""))
    token: Secret = field(default_factory=lambda: recognizable("", "AUDITTOKEN"))
    # Used on purpose where they must be refused: a mistyped key (the hyphen makes
    # Stripe answer 401), a guessed token, a forger's signing secret.
    wrong_key: Secret = field(
        default_factory=lambda: recognizable("sk_test_", "AUDITWRONGKEY", "-")
    )
    wrong_token: Secret = field(default_factory=lambda: recognizable("", "AUDITWRONGTOKEN"))
    forger: Secret = field(default_factory=lambda: recognizable("whsec_", "AUDITFORGER", ""))
    more: list[Secret] = field(default_factory=list)  # learnt on the way (the endpoint's)

    def all(self) -> list[Secret]:
        fixed = [self.key, self.webhook, self.token, self.wrong_key, self.wrong_token, self.forger]
        return fixed + self.more


def audit_env(audit: AuditSecrets) -> dict[str, str]:
    """The secrets under the names invoiceflow reads, and under the soak harness's."""
    return {
        "STRIPE_API_KEY": audit.key.value,
        "STRIPE_WEBHOOK_SECRET": audit.webhook.value,
        "INVOICEFLOW_TRIGGER_TOKEN": audit.token.value,
        "CHAOS_STRIPE_KEY": audit.key.value,
        "CHAOS_WEBHOOK_SECRET": audit.webhook.value,
        "CHAOS_TRIGGER_TOKEN": audit.token.value,
    }


# --- what the workload saw on the way (asserted by the tests below) -----------------


@dataclass
class Observed:
    refused_posts: list[tuple[str, int]] = field(default_factory=list)  # (how, HTTP status)
    refused_post_traces: list[str] = field(default_factory=list)  # runs/rows it left
    forged_webhooks: list[tuple[str, int]] = field(default_factory=list)
    forged_webhook_traces: list[str] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)  # command → exit code
    # A request id: no secret, but it is in every place a secret could leak to, so
    # the scan must find it everywhere, or it did not look where it should have.
    canary: str = ""


@dataclass
class Audit:
    secrets: AuditSecrets
    observed: Observed
    findings: list[Finding]
    canary_places: set[str]  # kinds of place the canary was found in


# --- the served stack --------------------------------------------------------------


class Stack:
    """The processes of one audit and the ways to drive them."""

    def __init__(
        self, workdir: Path, env: dict[str, str], sandbox: Any, api_url: str, prefect_db: str
    ) -> None:
        self.workdir, self.env, self.sandbox, self.api_url = workdir, env, sandbox, api_url
        self.prefect_db = prefect_db
        self.logs = workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.ledger_url = f"sqlite:///{workdir / 'invoiceflow.db'}"
        self.stripe = stripe.StripeClient(
            TEST_KEY, base_addresses={"api": sandbox.url}, max_network_retries=0
        )
        self.observed = Observed()

    def places(self) -> Places:
        """Its logs and outputs, the ledger, the Prefect database and API."""
        return Places([self.workdir], [self.ledger_url, self.prefect_db], self.api_url)

    def cli_env(self, **overrides: str) -> dict[str, str]:
        return {
            **app_env(self.sandbox.url, self.ledger_url),
            **self.env,
            "PREFECT_API_URL": self.api_url,
            # Anything a client process keeps (results, profiles) lands in the audit.
            "PREFECT_HOME": str(self.workdir / "prefect-client"),
            "PREFECT_LOGGING_LEVEL": "INFO",  # production's level, not the tests' quiet one
            **overrides,
        }

    def cli(self, name: str, *args: str, **overrides: str) -> int:
        """`invoiceflow …` in a process of its own; its output kept in logs/<name>.log."""
        done = run_cli(*args, env=self.cli_env(**overrides), cwd=self.workdir, timeout=300)
        (self.logs / f"{name}.log").write_text(
            f"$ invoiceflow {' '.join(args)}\n{done.stdout}\n--- stderr\n{done.stderr}"
            f"\n--- exit {done.returncode}\n"
        )
        self.observed.exit_codes[name] = done.returncode
        return done.returncode

    def request_file(self, request_id: str) -> Path:
        request = make_request(request_id, f"cust-{request_id}")
        path = self.workdir / f"{request_id}.json"
        path.write_text(json.dumps(request.model_dump(mode="json")))
        return path

    def flow_runs(self) -> list[dict[str, Any]]:
        answer = httpx.post(f"{self.api_url}/flow_runs/filter", json={"limit": 200}, timeout=60)
        answer.raise_for_status()
        runs: list[dict[str, Any]] = answer.json()
        return runs

    def wait_run_final(self, run_id: str) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            run: dict[str, Any] = httpx.get(f"{self.api_url}/flow_runs/{run_id}", timeout=60).json()
            state = run.get("state") or {}
            done = state.get("type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
            return run if done else None

        result: dict[str, Any] = wait_for(final, f"flow run {run_id}", timeout=RUN_TIMEOUT)
        return result

    def point(self, request_id: str) -> str | None:
        from invoiceflow import ledger
        from invoiceflow.db.engine import get_engine

        row = ledger.load(get_engine(self.ledger_url), request_id)
        return row.recovery_point if row else None


@contextlib.contextmanager
def served_workload(audit: AuditSecrets, env: dict[str, str], workdir: Path) -> Iterator[Stack]:
    """Every path where a secret is near, through the served stack configured by
    `env`; yields the stack (its `places()`, `observed`) while the Prefect server
    still answers. `audit` holds the secrets that must be refused on the way."""
    from bench.stack import sandbox_process
    from invoiceflow_testing.local_prefect import local_prefect_server
    from invoiceflow_testing.local_workers import prefect_database
    from tests.conftest import POSTGRES_ADMIN_URL

    for home in ("prefect-server", "prefect-client"):
        (workdir / home).mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        sandbox = stack.enter_context(sandbox_process())
        prefect_db = stack.enter_context(prefect_database(POSTGRES_ADMIN_URL))
        server = stack.enter_context(
            local_prefect_server(
                home=workdir / "prefect-server",
                PREFECT_API_DATABASE_CONNECTION_URL=prefect_db,
                PREFECT_LOGGING_LEVEL="INFO",
            )
        )
        driven = Stack(workdir, env, sandbox, server.api_url, prefect_db)
        with _running_service(
            server.api_url,
            sandbox.url,
            workdir,
            more_webhook_secrets=(env["STRIPE_WEBHOOK_SECRET"],),
            STRIPE_API_KEY=env["STRIPE_API_KEY"],
            INVOICEFLOW_TRIGGER_TOKEN=env["INVOICEFLOW_TRIGGER_TOKEN"],
            PREFECT_HOME=str(workdir / "prefect-client"),
            PREFECT_LOGGING_LEVEL="INFO",
        ) as service:
            _learn_the_endpoint_secret(driven, service, audit)
            _drive(driven, service.url, audit)
            service.process.send_signal(signal.SIGTERM)  # its runs flush their logs
            service.process.wait(timeout=60)
        yield driven


def _learn_the_endpoint_secret(stack: Stack, service: Any, audit: AuditSecrets) -> None:
    """The sandbox made the endpoint's signing secret (serve accepts it beside ours):
    a secret too; the endpoint should hear every invoice event, declines included."""
    audit.more.append(Secret("the endpoint's signing secret", service.webhook_secret))
    endpoint = next(
        e for e in stack.stripe.v1.webhook_endpoints.list().data if e.url.startswith(service.url)
    )
    stack.stripe.v1.webhook_endpoints.update(endpoint.id, {"enabled_events": ["*"]})


def _drive(stack: Stack, url: str, audit: AuditSecrets) -> None:
    tag = uuid.uuid4().hex[:6]
    token = audit.token.value

    # 1. POST /invoices with the token: a run, an invoice, a card payment whose
    #    signed invoice.paid reaches serve's receiver (its sweeper tells the run Paid).
    http_id = stack.observed.canary = f"audit-http-{tag}"
    body = make_request(http_id, f"cust-http-{tag}").model_dump(mode="json")
    posted = httpx.post(
        f"{url}/invoices", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert posted.status_code == 202, posted.text
    stack.wait_run_final(posted.json()["flow_run_id"])
    [invoice] = invoices_for(stack.stripe, http_id)
    stack.stripe.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})
    wait_for(lambda: stack.point(http_id) == "paid", "the webhook to record the payment")

    # 2. POST /invoices without, with a wrong, with a malformed Authorization.
    refused_id = f"audit-refused-{tag}"
    refused = make_request(refused_id, f"cust-refused-{tag}").model_dump(mode="json")
    wrong = audit.wrong_token.value
    for how, header in [
        ("none", None),
        ("wrong token", f"Bearer {wrong}"),
        ("token without scheme", token),
        ("basic scheme", f"Basic {token}"),
        ("token with a suffix", f"Bearer {token}x"),
        ("empty bearer", "Bearer"),
    ]:
        headers = {"Authorization": header} if header is not None else {}
        answer = httpx.post(f"{url}/invoices", json=refused, headers=headers, timeout=60)
        stack.observed.refused_posts.append((how, answer.status_code))
    runs = [
        r["id"]
        for r in stack.flow_runs()
        if refused_id in json.dumps(r.get("parameters")) or refused_id in r.get("name", "")
    ]
    stack.observed.refused_post_traces += [f"flow run {r}" for r in runs]
    if stack.point(refused_id) is not None:
        stack.observed.refused_post_traces.append("ledger row")
    if invoices_for(stack.stripe, refused_id):
        stack.observed.refused_post_traces.append("Stripe invoice")

    # 3. The CLI, with Stripe faults on the way (a 500 after the write, a 429).
    stack.sandbox.configure(
        faults=[
            {"method": "POST", "path": "^/v1/invoices$", "when": "after_write"},
            {"method": "POST", "path": "/finalize$", "when": "status_429"},
        ]
    )
    cli_id = f"audit-cli-{tag}"
    assert stack.cli("invoice", "invoice", str(stack.request_file(cli_id)), "--no-wait") == 0

    # 4. A billing run, one request of which is declined when paid.
    stack.sandbox.configure(faults=[])
    batch_ids = [f"audit-batch-{tag}-{n}" for n in range(3)]
    source = stack.workdir / "billing.jsonl"
    source.write_text(
        "".join(
            json.dumps(make_request(i, f"cust-{i}").model_dump(mode="json")) + "\n"
            for i in batch_ids
        )
    )
    assert stack.cli("batch", "batch", str(source)) == 0
    [declined] = invoices_for(stack.stripe, batch_ids[0])
    with contextlib.suppress(stripe.CardError):
        stack.stripe.v1.invoices.pay(declined.id, {"payment_method": "pm_card_chargeDeclined"})
    wait_for(lambda: _payment_failed_recorded(stack, batch_ids[0]), "the decline to be recorded")

    # 5. Forged webhooks at serve's receiver: unsigned, signed by another secret, stale.
    _forge(stack, url, audit, declined.id)

    # 6. A wrong key: Stripe answers 401 and its message reaches the run's failure.
    wrong_key_id = f"audit-wrongkey-{tag}"
    request_file = stack.request_file(wrong_key_id)
    stack.cli(
        "wrong-key", "invoice", str(request_file), "--no-wait", STRIPE_API_KEY=audit.wrong_key.value
    )

    # 7. A run SIGKILLed after Stripe finalized the invoice, then its rerun.
    crash_id = f"audit-crash-{tag}"
    crashed = make_request(crash_id, f"cust-crash-{tag}")
    output = crash_cli_at(
        stack.sandbox, crashed, "/finalize$", "stall_after_write", stack.cli_env(), stack.workdir
    )
    (stack.logs / "crashed.log").write_text(output)
    rerun = stack.workdir / f"{crash_id}.json"
    wait_for(
        lambda: stack.cli("rerun", "invoice", str(rerun), "--no-wait") != 6, "the lease to lapse"
    )

    # 8. What an operator runs afterwards.
    stack.cli("status", "status")
    stack.cli("status-json", "status", "--json")
    stack.cli("reconcile", "reconcile", "--stale-minutes", "0")


def _payment_failed_recorded(stack: Stack, request_id: str) -> bool:
    from invoiceflow.db.engine import get_engine
    from invoiceflow.webhooks import inbox

    events = inbox.events_for(get_engine(stack.ledger_url), request_id)
    return any(e.type == "invoice.payment_failed" for e in events)


def _forge(stack: Stack, url: str, audit: AuditSecrets, invoice_id: str) -> None:
    from invoiceflow.db.engine import get_engine
    from invoiceflow.webhooks import inbox
    from tests.webhooks import event_of

    # The decline's genuine event, turned into a payment: what a forger would send.
    event = event_of(stack.stripe, "invoice.payment_failed", invoice_id)
    event_id = event["id"] = f"evt_forged{uuid.uuid4().hex[:16]}"
    event["type"] = "invoice.paid"
    invoice = event["data"]["object"]
    invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0)
    body = json.dumps(event).encode()
    now = int(time.time())
    endpoint_secret = audit.more[0].value
    for how, signature in [
        ("unsigned", None),
        ("signed by another secret", sign(body, audit.forger.value, now)),
        ("stale", sign(body, endpoint_secret, now - 400)),
    ]:
        headers = {"Stripe-Signature": signature} if signature else {}
        if signature:  # never logged, stored or echoed either (README "Webhooks")
            audit.more.append(Secret(f"{how} signature", signature.split("v1=")[1]))
        answer = httpx.post(f"{url}/webhooks/stripe", content=body, headers=headers, timeout=60)
        stack.observed.forged_webhooks.append((how, answer.status_code))
    if inbox.get(get_engine(stack.ledger_url), event_id) is not None:
        stack.observed.forged_webhook_traces.append(f"inbox row {event_id}")
    if stack.point(_request_of(invoice)) == "paid":
        stack.observed.forged_webhook_traces.append("the request was marked paid")


def _request_of(invoice: dict[str, Any]) -> str:
    return str(invoice["metadata"]["invoiceflow_request_id"])


# --- the audit ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def audit(postgres_unavailable: str | None, tmp_path_factory: pytest.TempPathFactory) -> Audit:
    if postgres_unavailable:
        pytest.skip(postgres_unavailable)
    secrets = AuditSecrets()
    workdir = tmp_path_factory.mktemp("secrets-audit")
    with served_workload(secrets, audit_env(secrets), workdir) as stack:
        canary = Secret(CANARY, stack.observed.canary)
        found = scan([*secrets.all(), canary], stack.places())
    leaks = [f for f in found if f.secret != CANARY]
    canary_places = {_kind_of(f.place) for f in found if f.secret == CANARY}
    return Audit(secrets, stack.observed, leaks, canary_places)


CANARY = "canary"


def _kind_of(place: str) -> str:
    """`file`, `sqlite`, `postgresql`, `prefect flow_runs`, … of a finding's place."""
    words = place.split()
    return " ".join(words[:2]) if words[0] == "prefect" else words[0]


@pytest.mark.heavy  # the served stack as processes, audited
def test_no_secret_reaches_a_log_a_row_prefect_or_an_output(audit: Audit) -> None:
    assert audit.findings == [], report(audit.findings)


@pytest.mark.heavy  # the served stack as processes, audited
def test_the_scan_looked_everywhere_a_secret_could_be(audit: Audit) -> None:
    assert {
        "file",
        "sqlite",
        "postgresql",
        "prefect flow_runs",
        "prefect logs",
        "prefect artifacts",
        "prefect event",
    } <= audit.canary_places, audit.canary_places


@pytest.mark.heavy  # the served stack as processes, audited
def test_the_workload_went_where_secrets_are(audit: Audit) -> None:
    """The audit proves something only if the paths near a secret really ran."""
    codes = audit.observed.exit_codes
    assert codes["invoice"] == 0 and codes["batch"] == 0 and codes["rerun"] == 0, codes
    assert codes["wrong-key"] != 0, codes  # Stripe's 401 for the wrong key
    assert codes["status"] == 0 and codes["status-json"] == 0, codes


@pytest.mark.heavy  # the served stack as processes, audited
def test_the_trigger_refuses_unauthenticated_posts_and_creates_nothing(audit: Audit) -> None:
    # tests/test_service.py checks the 401 body and that Stripe holds no invoice;
    # here: no flow run, no ledger row either.
    assert {status for _how, status in audit.observed.refused_posts} == {401}, (
        audit.observed.refused_posts
    )
    assert audit.observed.refused_post_traces == []


@pytest.mark.heavy  # the served stack as processes, audited
def test_the_receiver_refuses_forged_events_and_applies_nothing(audit: Audit) -> None:
    # tests/test_webhook_requests.py covers every refusal of the receiver in process;
    # here the same at `invoiceflow serve`'s receiver, with no inbox row left.
    assert {status for _how, status in audit.observed.forged_webhooks} == {400}, (
        audit.observed.forged_webhooks
    )
    assert audit.observed.forged_webhook_traces == []


# --- the scanner finds what it must (else a clean audit would prove nothing) --------

SCANNED = Secret("KEY", "sk_test_AUDITKEY_0123456789abcdef01234567", "AUDITKEY")


def test_the_scanner_finds_whole_cut_masked_and_encoded_copies_in_files(tmp_path: Path) -> None:
    import base64

    logs = tmp_path / "logs"
    logs.mkdir()
    value = SCANNED.value
    (logs / "whole.log").write_text(f"ok\nusing key={value}\n")
    (logs / "cut.log").write_text(f"key={value[:20]}…\n")  # sk_test_AUDITKEY_0123
    (logs / "masked.log").write_text(f"key=sk_test_{'*' * 20}{value[-12:]}\n")
    (logs / "upper.log").write_text(f"KEY={value[-14:].upper()}\n")
    basic = base64.b64encode(f"{value}:".encode()).decode()
    (logs / "basic.log").write_text(f"Authorization: Basic {basic}\n")
    (logs / "stripe.log").write_text(f"Invalid API Key provided: sk_test_{'*' * 28}{value[-4:]}\n")

    found = {(f.place, f.fragment) for f in scan([SCANNED], Places(directories=[logs]))}

    assert found == {
        ("file logs/whole.log:2", "whole"),
        ("file logs/cut.log:1", "marker"),
        ("file logs/masked.log:1", "window"),
        ("file logs/upper.log:1", "window"),
        ("file logs/basic.log:1", "base64"),
    }  # Stripe's own naming of a key (its last four) is not a leak
    assert all(value[-10:] not in str(f) for f in scan([SCANNED], Places(directories=[logs])))


def test_the_scanner_reads_every_column_of_every_table(database_url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE notes (id INTEGER, body TEXT, raw BYTEA)"
                if database_url.startswith("postgresql")
                else "CREATE TABLE notes (id INTEGER, body TEXT, raw BLOB)"
            )
        )
        connection.execute(
            text("INSERT INTO notes VALUES (1, 'clean', :raw), (2, :body, NULL)"),
            {"raw": f"x{SCANNED.value[-12:]}".encode(), "body": f"failed: {SCANNED.value}"},
        )
    engine.dispose()

    findings = scan([SCANNED], Places(databases=[database_url]))

    columns = {f.place.partition(": ")[2].removeprefix("public.") for f in findings}
    assert {"notes.body row 2", "notes.raw row 1"} <= columns
    if database_url.startswith("sqlite"):  # the file itself too
        assert any(f.place.startswith("sqlite file") for f in findings)


# --- live keys -------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["sk_live_", "rk_live_"])
def test_serve_refuses_a_live_key_unless_allowed(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, prefix: str
) -> None:
    # `invoiceflow invoice` is covered by tests/test_cli.py, Settings by tests/test_settings.py.
    # In process (CliRunner): refused before it talks to Prefect, so any API address will do.
    live = f"{prefix}AUDITLIVE{random_tokens.token_hex(12)}"
    api = "http://127.0.0.1:9/api"

    line = _refused(monkeypatch, request, "--port", "0", api_url=api, STRIPE_API_KEY=live)
    assert line == (
        "error: STRIPE_API_KEY is a live key; set INVOICEFLOW_ALLOW_LIVE=1 to bill real customers"
    )

    with socket.socket() as taken:  # allowed, it gets as far as listening
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = _refused(
            monkeypatch,
            request,
            "--port",
            port,
            api_url=api,
            STRIPE_API_KEY=live,
            INVOICEFLOW_ALLOW_LIVE="1",
        )
    assert line == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.mark.parametrize("command", ["batch", "reconcile"])
def test_every_stripe_command_refuses_a_live_key_in_one_line(
    tmp_path: Path,
    sandbox: Any,
    sqlite_url: str,
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from tests.inprocess_cli import configured_cli

    live = recognizable("sk_live_", "AUDITLIVE")
    source = tmp_path / "billing.jsonl"
    source.write_text(json.dumps(make_request("live-1").model_dump(mode="json")) + "\n")
    args = ["batch", str(source)] if command == "batch" else ["reconcile"]
    env = app_env(sandbox.url, sqlite_url, STRIPE_API_KEY=live.value, INVOICEFLOW_ALLOW_LIVE="0")
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # never reached

    done = configured_cli(monkeypatch, request, env)(*args)  # in process (CliRunner)

    assert (done.exit_code, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: STRIPE_API_KEY is a live key; set INVOICEFLOW_ALLOW_LIVE=1 to bill real customers"
    ]
    assert Scanner([live]).text("output", done.stderr) == []


@pytest.mark.heavy  # `invoiceflow invoice` running the flow in a subprocess
@pytest.mark.usefixtures("prefect_api")
def test_an_allowed_live_key_reaches_stripe_and_its_refusal_shows_no_key(
    tmp_path: Path, sandbox: Any, database_url: str
) -> None:
    """Allowed, the key goes to Stripe; the sandbox, a test account, answers 401, and
    neither the output nor the ledger keeps more of the key than Stripe's last four."""
    live = recognizable("sk_live_", "AUDITLIVE")
    request_file = tmp_path / "live.json"
    request_file.write_text(json.dumps(make_request("live-2").model_dump(mode="json")))
    env = app_env(sandbox.url, database_url, STRIPE_API_KEY=live.value, INVOICEFLOW_ALLOW_LIVE="1")

    done = run_cli("invoice", str(request_file), "--no-wait", env=env, cwd=tmp_path)

    assert done.returncode == 4, done.stdout + done.stderr  # refused by Stripe, for good
    assert "Invalid API Key provided" in done.stdout + done.stderr
    assert [e for e in sandbox.requests() if e["status"] == 401], "the key never reached Stripe"
    findings = Scanner([live]).text("output", done.stdout + done.stderr)
    findings += scan([live], Places(databases=[database_url]))  # last_error, audit log
    assert findings == [], report(findings)
