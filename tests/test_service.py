"""`invoiceflow serve` as a real process: a real Prefect server, the sandbox, a
SQLite ledger; runs started as the UI starts them and through POST /invoices.

One serve process for the module (starting one costs seconds); the last test
stops it with a signal. Ids are unique per test: the sandbox is not reset here.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from tests.conftest import REPO, TEST_KEY, app_env
from tests.helpers import assert_exactly_one_invoice, invoices_for, make_request, wait_for

pytestmark = pytest.mark.slow

TOKEN = "test-trigger-token-" + "x" * 16
RUN_TIMEOUT = 240  # seconds; a run takes a few, but the machine is shared and busy


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    stripe: stripe.StripeClient
    workdir: Path
    webhook_secret: str = ""  # the signing secret the sandbox made for serve's endpoint

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def post(self, body: Any, authorization: str | None = f"Bearer {TOKEN}") -> httpx.Response:
        headers = {"Authorization": authorization} if authorization is not None else {}
        return httpx.post(f"{self.url}/invoices", headers=headers, timeout=60, json=body)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Linux: the serve process gets SIGKILL if pytest itself dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _answers(url: str) -> bool:
    try:
        return httpx.post(f"{url}/invoices", timeout=2).status_code == 401
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _running_service(
    prefect_api: str,
    sandbox_url: str,
    workdir: Path,
    *,
    more_webhook_secrets: tuple[str, ...] = (),
    **extra_env: str,
) -> Iterator[Service]:
    """`invoiceflow serve` in a subprocess, answering, registered in the sandbox as
    the webhook endpoint for invoice events; killed with its flow runs after.
    `more_webhook_secrets` are accepted beside the endpoint's (as in a rotation).

    The billing cycle's schedules are off unless `extra_env` sets them: a
    scheduled run left on the session's server would start in the next test's
    service."""
    port = _free_port()
    client = stripe.StripeClient(
        TEST_KEY, base_addresses={"api": sandbox_url}, max_network_retries=0
    )
    endpoint = client.v1.webhook_endpoints.create(
        {"url": f"http://127.0.0.1:{port}/webhooks/stripe", "enabled_events": ["invoice.paid"]}
    )
    env = {
        **os.environ,
        **app_env(sandbox_url, f"sqlite:///{workdir / 'invoiceflow.db'}"),
        "INVOICEFLOW_TRIGGER_TOKEN": TOKEN,
        "STRIPE_WEBHOOK_SECRET": ",".join([endpoint.secret or "", *more_webhook_secrets]),
        "PREFECT_API_URL": prefect_api,
        **{f"INVOICEFLOW_{name}_CRON": "off" for name in ("BILLING", "DUNNING", "RECONCILE")},
        **extra_env,
    }
    log = workdir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "invoiceflow", "serve", "--port", str(port)],
            env=env,
            cwd=workdir,  # not the repository: the entrypoint must not depend on it
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its flow-run subprocesses share its process group
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    url = f"http://127.0.0.1:{port}"
    running = Service(process, url, log, client, workdir, endpoint.secret or "")
    try:
        deadline = time.monotonic() + 180
        while not _answers(running.url):
            assert process.poll() is None, f"serve exited: {running.output()}"
            assert time.monotonic() < deadline, f"serve did not answer: {running.output()}"
            time.sleep(0.25)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):  # what is left of its group: flow runs
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def service(
    prefect_api: str, sandbox_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    with _running_service(prefect_api, sandbox_server.url, tmp_path_factory.mktemp("serve")) as s:
        yield s


def _flow_run(run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id))


def _wait_final(run_id: str, service: Service) -> Any:
    def final() -> Any:
        run = _flow_run(run_id)
        return run if run.state is not None and run.state.is_final() else None

    run = wait_for(final, f"flow run {run_id} to finish", timeout=RUN_TIMEOUT)
    assert run.state.is_completed(), f"{run.state!r}\n{service.output()}"
    return run


def _unique(prefix: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"{prefix}-{tag}", f"cust-{tag}"


def test_a_run_started_as_the_ui_does_makes_one_invoice(service: Service) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    with get_client(sync_client=True) as client:
        schema = client.read_deployment_by_name("invoice/invoice").parameter_openapi_schema
    # The parameter is the pydantic model: "Custom run" in the UI shows its form.
    assert schema["properties"]["request"]["$ref"].endswith("/BillingRequest")

    request_id, customer = _unique("ui")
    request = make_request(request_id, customer)
    run = run_deployment(
        name="invoice/invoice",
        parameters={"request": request.model_dump(mode="json")},
        timeout=RUN_TIMEOUT,
    )
    assert run.state is not None and run.state.is_completed(), f"{run.state!r}\n{service.output()}"
    assert_exactly_one_invoice(service.stripe, request)
    tags = _tags(run.id)
    assert {"trigger:ui", f"customer:{customer}", "currency:usd"} <= tags, tags


def _tags(run_id: uuid.UUID) -> set[str]:
    return set(_flow_run(str(run_id)).tags)


def test_post_invoices_starts_one_run_and_a_repeat_returns_the_same_run(
    service: Service,
) -> None:
    request_id, customer = _unique("http")
    request = make_request(request_id, customer)
    body = request.model_dump(mode="json")

    first = service.post(body)
    assert first.status_code == 202, first.text
    run_id = first.json()["flow_run_id"]
    run = _wait_final(run_id, service)
    assert {"trigger:http", f"customer:{customer}", "currency:usd"} <= set(run.tags)
    assert not any(tag in run.tags for tag in ("trigger:ui", "trigger:cli"))
    assert_exactly_one_invoice(service.stripe, request)

    again = service.post(body)
    assert again.status_code == 202, again.text
    assert again.json()["flow_run_id"] == run_id
    assert again.json()["state"] == "COMPLETED"
    assert len(invoices_for(service.stripe, request_id)) == 1

    changed = {**body, "description": "Something else"}
    conflict = service.post(changed)
    assert conflict.status_code == 409, conflict.text
    assert request_id in conflict.json()["errors"][0]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-of-some-length", f"Bearer {TOKEN}x", TOKEN, f"Basic {TOKEN}"],
)
def test_post_invoices_without_the_right_token_is_refused(
    service: Service, authorization: str | None
) -> None:
    request_id, customer = _unique("auth")
    body = make_request(request_id, customer).model_dump(mode="json")
    response = service.post(body, authorization)
    assert response.status_code == 401
    assert response.json() == {"errors": ["missing or wrong bearer token"]}
    assert TOKEN not in response.text
    assert invoices_for(service.stripe, request_id) == []


def test_a_bad_body_lists_every_problem_at_once(service: Service) -> None:
    import yaml

    broken = yaml.safe_load((REPO / "examples" / "invalid.yaml").read_text())
    response = service.post(broken)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        "customer.email: 'not-an-email' is not a valid email address, e.g. 'billing@example.com'",
        "items[0].unit_price: '12.345' has more decimals than USD allows (2); use e.g. '12.34'",
        "items[1].unit_amount: must be greater than 0, got 0",
        "items[2].unit_price: must be a quoted decimal string like '9.99', not a number: "
        "numbers pass through binary floats and lose cents; quote it",
    ]

    not_json = httpx.post(
        f"{service.url}/invoices",
        headers={"Authorization": f"Bearer {TOKEN}"},
        content=b"{request_id: nope",
    )
    assert not_json.status_code == 400
    assert not_json.json()["errors"][0].startswith("body is not valid JSON")

    too_big = httpx.post(
        f"{service.url}/invoices",
        headers={"Authorization": f"Bearer {TOKEN}"},
        content=b" " * (2 * 1024 * 1024),
    )
    assert too_big.status_code == 413


def test_identical_posts_at_once_share_one_run(service: Service) -> None:
    from concurrent.futures import ThreadPoolExecutor

    request_id, customer = _unique("race")
    request = make_request(request_id, customer)
    body = request.model_dump(mode="json")
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: service.post(body), range(4)))
    assert [r.status_code for r in responses] == [202] * 4, [r.text for r in responses]
    run_ids = {r.json()["flow_run_id"] for r in responses}
    assert len(run_ids) == 1
    _wait_final(run_ids.pop(), service)
    assert_exactly_one_invoice(service.stripe, request)


def test_a_payment_arrives_by_webhook_and_one_settle_run_tells_the_end(
    service: Service,
) -> None:
    """POST /invoices → sent; the customer pays; Stripe's signed event reaches
    serve's receiver, which records `paid`; the sweeper starts exactly one
    `settle` run for the event, and it completes."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from invoiceflow import ledger
    from invoiceflow.db.engine import get_engine
    from invoiceflow.db.models import RecoveryPoint
    from invoiceflow.webhooks import inbox

    request_id, customer = _unique("paid-by-webhook")
    posted = service.post(make_request(request_id, customer).model_dump(mode="json"))
    assert posted.status_code == 202, posted.text
    _wait_final(posted.json()["flow_run_id"], service)
    [invoice] = invoices_for(service.stripe, request_id)

    service.stripe.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})

    engine = get_engine(f"sqlite:///{service.workdir / 'invoiceflow.db'}")
    wait_for(
        lambda: ledger.require(engine, request_id).point is RecoveryPoint.PAID,
        "the webhook to record the payment",
    )
    [event] = [e for e in inbox.events_for(engine, request_id) if e.type == "invoice.paid"]
    name = f"settle-{event.event_id}"

    def settle_runs() -> list[Any]:
        with get_client(sync_client=True) as client:
            return list(
                client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
                )
            )

    [run] = wait_for(settle_runs, f"the settle run {name}", timeout=RUN_TIMEOUT)
    _wait_final(str(run.id), service)
    assert len(settle_runs()) == 1
    assert {"trigger:webhook", f"customer:{customer}"} <= set(run.tags)
    assert inbox.get(engine, event.event_id).settle_started_at is not None  # type: ignore[union-attr]


def test_it_ships_the_crashed_runs_automation(service: Service) -> None:
    from prefect.automations import EventTrigger
    from prefect.client.orchestration import get_client

    from invoiceflow.service.automations import CRASHED_RUNS_AUTOMATION

    with get_client(sync_client=True) as client:
        [automation] = client.read_automations_by_name(CRASHED_RUNS_AUTOMATION)
    assert automation.enabled
    assert isinstance(automation.trigger, EventTrigger)
    assert automation.trigger.within.total_seconds() == 90  # 3 x our 30 s heartbeat
    assert automation.actions[0].type == "change-flow-run-state"


def test_sigterm_stops_it_cleanly_and_leaves_the_deployment_unpaused(service: Service) -> None:
    # Last in this module: it ends the module's serve process.
    from prefect.client.orchestration import get_client

    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=60) == 0, service.output()
    output = service.log.read_text(errors="replace")
    # None of our code failed on the way down. (Prefect 3.9's runner can log a
    # traceback of its own when a run it is cancelling has already ended:
    # "Cannot send a request, as the client has been closed" — its race, not ours.)
    assert not re.search(r'File ".*/(invoiceflow|flows|tasks)/', output), output
    assert "serving deployments invoice/invoice and settle/settle; POST http://127.0.0.1:" in output
    assert TOKEN not in output and TEST_KEY not in output  # nor anything logged by its runs
    with get_client(sync_client=True) as client:
        assert client.read_deployment_by_name("invoice/invoice").paused is False


def test_ctrl_c_stops_it_cleanly(prefect_api: str, sandbox_server: Any, tmp_path: Path) -> None:
    with _running_service(prefect_api, sandbox_server.url, tmp_path) as running:
        running.process.send_signal(signal.SIGINT)
        assert running.process.wait(timeout=60) == 0, running.output()
        assert "Traceback" not in running.output(), running.output()


def _refused(tmp_path: Path, *args: str, **env: str) -> str:
    """Run `invoiceflow serve`, expecting exit 2 and one line on stderr; that line."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    full_env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),  # no profile that names a server
        INVOICEFLOW_TRIGGER_TOKEN=TOKEN,
        STRIPE_WEBHOOK_SECRET="whsec_testRefusals0123456789abcdef",
        STRIPE_API_KEY=TEST_KEY,
        INVOICEFLOW_DATABASE_URL=f"sqlite:///{tmp_path / 'invoiceflow.db'}",
    )
    full_env.update(env)
    done = subprocess.run(
        [sys.executable, "-m", "invoiceflow", "serve", *args],
        env={k: v for k, v in full_env.items() if v},  # "" means: unset it
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_serve_without_a_prefect_server_exits_2_in_one_line(tmp_path: Path) -> None:
    line = _refused(tmp_path, "--port", "0")
    assert line.startswith("error: PREFECT_API_URL is not set; start a server with")


def test_serve_without_a_token_or_with_a_taken_port_exits_2_in_one_line(
    prefect_api: str, tmp_path: Path
) -> None:
    line = _refused(tmp_path, PREFECT_API_URL=prefect_api, INVOICEFLOW_TRIGGER_TOKEN="")
    assert line.startswith("error: INVOICEFLOW_TRIGGER_TOKEN is not set")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = _refused(tmp_path, "--port", port, PREFECT_API_URL=prefect_api)
    assert line == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.mark.usefixtures("prefect_api", "configured")
def test_a_direct_flow_call_is_tagged_as_cli() -> None:
    from flows.invoice import invoice_flow

    request_id, customer = _unique("cli")
    state = invoice_flow(make_request(request_id, customer), return_state=True)
    run_id = state.state_details.flow_run_id
    tags = _tags(run_id)
    assert {"trigger:cli", f"customer:{customer}", "currency:usd"} <= tags, tags
