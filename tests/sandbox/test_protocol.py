"""Stripe's wire protocol: auth, parameter checking, idempotency keys, faults, rate limits."""

from __future__ import annotations

import base64
import contextlib
import math
import threading
import time

import httpx
import pytest
import stripe

from stripe_sandbox import RunningSandbox
from tests.sandbox.conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _post(
    sandbox: RunningSandbox,
    path: str,
    data: dict[str, str],
    key: str | None = None,
    api_key: str = API_KEY,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api_key}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(sandbox.url + path, data=data, headers=headers)


# --- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sk_live_abcdefghijklmnop", "pk_test_abc", "nonsense"])
def test_non_test_keys_are_refused(sandbox: RunningSandbox, key: str) -> None:
    client = stripe.StripeClient(key, base_addresses={"api": sandbox.url}, max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError) as refused:
        client.v1.products.list()
    assert refused.value.http_status == 401
    assert key not in str(refused.value)  # keys are never echoed back


def test_missing_key_and_basic_auth(sandbox: RunningSandbox) -> None:
    missing = httpx.get(sandbox.url + "/v1/products")
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"
    basic = base64.b64encode(b"rk_test_restricted:").decode()
    ok = httpx.get(sandbox.url + "/v1/products", headers={"Authorization": f"Basic {basic}"})
    assert ok.status_code == 200 and ok.json()["object"] == "list"
    assert ok.headers["Request-Id"].startswith("req_")


# --- parameters ---------------------------------------------------------------------------


def test_unknown_and_missing_parameters(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.products.create({"name": "x", "colour": "red"})  # type: ignore[typeddict-unknown-key]
    assert unknown.value.code == "parameter_unknown"
    assert unknown.value.param == "colour"
    assert str(unknown.value.user_message) == "Received unknown parameter: colour"
    with pytest.raises(stripe.InvalidRequestError) as nested:
        client.v1.invoices.add_lines(
            "in_x",
            {"lines": [{"amount": 1, "bogus": "1"}]},  # type: ignore[typeddict-unknown-key]
        )
    assert nested.value.param == "lines[0][bogus]"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.products.create({})  # type: ignore[typeddict-item]
    assert missing.value.code == "parameter_missing" and missing.value.param == "name"
    with pytest.raises(stripe.InvalidRequestError) as bad_int:
        client.v1.products.list({"limit": 101})
    assert bad_int.value.param == "limit"


def test_unrecognized_url(sandbox: RunningSandbox) -> None:
    response = httpx.get(sandbox.url + "/v1/charges_of_doom", headers=AUTH)
    assert response.status_code == 404
    assert (
        "Unrecognized request URL (GET: /v1/charges_of_doom)" in response.json()["error"]["message"]
    )


def test_expand(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"email": "e@example.com"})
    invoice = client.v1.invoices.create({"customer": customer.id, "expand": ["customer"]})
    assert invoice.customer.email == "e@example.com"  # type: ignore[union-attr]
    listed = client.v1.invoices.list({"expand": ["data.customer"]})
    assert listed.data[0].customer.id == customer.id  # type: ignore[union-attr]


# --- idempotency ------------------------------------------------------------------------------


def test_replay_is_byte_for_byte(sandbox: RunningSandbox) -> None:
    first = _post(sandbox, "/v1/customers", {"email": "a@example.com"}, key="k-1")
    again = _post(sandbox, "/v1/customers", {"email": "a@example.com"}, key="k-1")
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Original-Request"] == first.headers["Request-Id"]
    assert len(httpx.get(sandbox.url + "/v1/customers", headers=AUTH).json()["data"]) == 1
    log = sandbox.requests()
    assert [entry["replayed"] for entry in log] == [False, True, False]
    assert log[0]["idempotency_key"] == "k-1" and log[0]["status"] == 200


def test_key_reused_with_other_parameters(sandbox: RunningSandbox) -> None:
    _post(sandbox, "/v1/customers", {"email": "a@example.com"}, key="k-2")
    other = _post(sandbox, "/v1/customers", {"email": "b@example.com"}, key="k-2")
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "idempotency_error"
    assert "same parameters" in other.json()["error"]["message"]
    other_path = _post(sandbox, "/v1/products", {"email": "a@example.com"}, key="k-2")
    assert other_path.json()["error"]["type"] == "idempotency_error"


def test_keys_are_scoped_per_api_key(sandbox: RunningSandbox) -> None:
    first = _post(sandbox, "/v1/customers", {"name": "x"}, key="shared")
    second = _post(
        sandbox, "/v1/customers", {"name": "x"}, key="shared", api_key="sk_test_other_account"
    )
    assert "Idempotent-Replayed" not in second.headers
    assert first.json()["id"] != second.json()["id"]


def test_validation_errors_are_not_saved(sandbox: RunningSandbox) -> None:
    bad = _post(sandbox, "/v1/products", {"name": "x", "colour": "red"}, key="k-3")
    assert bad.status_code == 400
    # Same key, corrected parameters: runs, because the failed request never executed.
    good = _post(sandbox, "/v1/products", {"name": "x"}, key="k-3")
    assert good.status_code == 200 and "Idempotent-Replayed" not in good.headers


def test_executed_errors_are_saved(client: stripe.StripeClient, sandbox: RunningSandbox) -> None:
    customer = client.v1.customers.create({"name": "Decline"})
    invoice = client.v1.invoices.create({"customer": customer.id})
    client.v1.invoice_items.create({"customer": customer.id, "invoice": invoice.id, "amount": 900})
    client.v1.invoices.finalize_invoice(invoice.id)
    path = f"/v1/invoices/{invoice.id}/pay"
    first = _post(sandbox, path, {"payment_method": "pm_card_chargeDeclined"}, key="pay-1")
    again = _post(sandbox, path, {"payment_method": "pm_card_chargeDeclined"}, key="pay-1")
    assert first.status_code == again.status_code == 402
    assert again.headers["Idempotent-Replayed"] == "true"
    assert client.v1.invoices.retrieve(invoice.id).attempt_count == 1


def test_key_longer_than_255_is_refused(sandbox: RunningSandbox) -> None:
    response = _post(sandbox, "/v1/customers", {"name": "x"}, key="k" * 256)
    assert response.status_code == 400
    assert _post(sandbox, "/v1/customers", {"name": "x"}, key="k" * 255).status_code == 200


def test_in_flight_key_gets_409(sandbox: RunningSandbox) -> None:
    # The first request is held open (a stall, logged as soon as it begins);
    # a second one with its key is refused while it is still in flight.
    sandbox.configure(
        stall_ms=3000,
        faults=[{"method": "POST", "path": "^/v1/customers$", "when": "stall_after_write"}],
    )
    results: list[httpx.Response] = []
    slow = threading.Thread(
        target=lambda: results.append(_post(sandbox, "/v1/customers", {"name": "x"}, key="k-4"))
    )
    slow.start()
    try:
        deadline = time.monotonic() + 30
        while not any(e["fault"] == "stall_after_write" for e in sandbox.requests()):
            assert time.monotonic() < deadline, "the first request never arrived"
            time.sleep(0.01)
        concurrent = _post(sandbox, "/v1/customers", {"name": "x"}, key="k-4")
        first_still_running = slow.is_alive()
    finally:
        slow.join()
    assert concurrent.status_code == 409
    assert first_still_running  # refused up front, not after the first one finished
    assert concurrent.json()["error"]["type"] == "idempotency_error"
    assert concurrent.json()["error"]["code"] == "idempotency_key_in_use"
    assert results[0].status_code == 200


def test_expired_keys_run_again(sandbox: RunningSandbox) -> None:
    first = _post(sandbox, "/v1/customers", {"name": "x"}, key="k-5")
    assert sandbox.expire_idempotency_keys() >= 1
    second = _post(sandbox, "/v1/customers", {"name": "x"}, key="k-5")
    assert "Idempotent-Replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]


def test_sdk_sends_keys_and_retries_replay(
    sandbox: RunningSandbox, retrying_client: stripe.StripeClient
) -> None:
    sandbox.configure(
        faults=[{"method": "POST", "path": "^/v1/customers$", "when": "drop_after_write"}]
    )
    customer = retrying_client.v1.customers.create({"name": "Dropped once"})
    log = sandbox.requests()
    assert [(e["fault"], e["replayed"]) for e in log] == [("drop_after_write", False), (None, True)]
    assert log[0]["status"] is None and log[0]["idempotency_key"] == log[1]["idempotency_key"]
    assert [c.id for c in retrying_client.v1.customers.list().data] == [customer.id]


# --- faults -----------------------------------------------------------------------------------


def test_fault_before_write(sandbox: RunningSandbox, client: stripe.StripeClient) -> None:
    sandbox.configure(faults=[{"method": "POST", "path": "^/v1/products$", "when": "before_write"}])
    with pytest.raises(stripe.APIError) as failed:
        client.v1.products.create({"name": "x"}, {"idempotency_key": "f-1"})
    assert failed.value.http_status == 500
    assert failed.value.headers["Stripe-Should-Retry"] == "true"
    assert client.v1.products.list().data == []
    retried = client.v1.products.create({"name": "x"}, {"idempotency_key": "f-1"})
    assert retried.name == "x"
    assert [e["fault"] for e in sandbox.requests()[:2]] == ["before_write", None]


def test_fault_after_write_replays_the_500(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    sandbox.configure(faults=[{"path": "^/v1/products$", "when": "after_write"}])
    with pytest.raises(stripe.APIError) as failed:
        client.v1.products.create({"name": "x"}, {"idempotency_key": "f-2"})
    assert failed.value.headers["Stripe-Should-Retry"] == "false"
    assert len(client.v1.products.list().data) == 1  # the write landed
    with pytest.raises(stripe.APIError):  # and the key now replays the 500
        client.v1.products.create({"name": "x"}, {"idempotency_key": "f-2"})
    assert [e["replayed"] for e in sandbox.requests()] == [False, False, True]


def test_fault_drop_after_write(sandbox: RunningSandbox, client: stripe.StripeClient) -> None:
    sandbox.configure(faults=[{"path": "^/v1/invoices$", "when": "drop_after_write"}])
    customer = client.v1.customers.create({"name": "x"})
    with pytest.raises(stripe.APIConnectionError):
        client.v1.invoices.create({"customer": customer.id}, {"idempotency_key": "f-3"})
    replayed = client.v1.invoices.create({"customer": customer.id}, {"idempotency_key": "f-3"})
    assert [i.id for i in client.v1.invoices.list().data] == [replayed.id]


def test_stall_after_write_is_visible_while_the_request_hangs(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    sandbox.configure(
        stall_ms=400, faults=[{"path": "^/v1/products$", "when": "stall_after_write"}]
    )
    worker = threading.Thread(target=lambda: client.v1.products.create({"name": "slow"}))
    worker.start()
    deadline = time.monotonic() + 5
    while not sandbox.requests() and time.monotonic() < deadline:
        time.sleep(0.01)
    [entry] = sandbox.requests()
    assert (entry["fault"], entry["status"]) == ("stall_after_write", None)
    assert [p.name for p in client.v1.products.list().data] == ["slow"]  # already written
    worker.join()
    assert sandbox.requests()[0]["status"] == 200


def test_stall_before_write_writes_nothing(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    sandbox.configure(
        stall_ms=100, faults=[{"path": "^/v1/products$", "when": "stall_before_write"}]
    )
    with pytest.raises(stripe.APIError) as failed:
        client.v1.products.create({"name": "x"}, {"idempotency_key": "s-1"})
    assert failed.value.headers["Stripe-Should-Retry"] == "true"
    assert client.v1.products.list().data == []
    assert client.v1.products.create({"name": "x"}, {"idempotency_key": "s-1"}).name == "x"


def test_a_truncated_body_is_never_executed(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    """A client killed mid-send: Stripe never ran it, so its key stays unused."""
    import socket
    from urllib.parse import urlsplit

    body = b"name=complete-product&metadata[k]=v"
    host, port = urlsplit(sandbox.url).hostname, urlsplit(sandbox.url).port
    with socket.create_connection((host, port)) as sock:
        sock.sendall(
            b"POST /v1/products HTTP/1.1\r\nHost: sandbox\r\n"
            + f"Authorization: Bearer {API_KEY}\r\n".encode()
            + b"Idempotency-Key: trunc-1\r\n"
            + b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        time.sleep(0.1)
    time.sleep(0.2)  # let the server notice the disconnect

    assert client.v1.products.list().data == []
    product = client.v1.products.create(
        {"name": "complete-product", "metadata": {"k": "v"}}, {"idempotency_key": "trunc-1"}
    )
    assert product.name == "complete-product"


def test_scripted_429_and_409_then_sdk_retries(
    sandbox: RunningSandbox, retrying_client: stripe.StripeClient
) -> None:
    sandbox.configure(
        faults=[
            {"method": "POST", "path": "/finalize$", "when": "status_429"},
            {"method": "POST", "path": "/finalize$", "when": "status_409"},
        ]
    )
    customer = retrying_client.v1.customers.create({"name": "x"})
    invoice = retrying_client.v1.invoices.create({"customer": customer.id})
    finalized = retrying_client.v1.invoices.finalize_invoice(invoice.id)
    assert finalized.status == "paid"  # nothing to collect: paid at finalization
    finalize_log = [e for e in sandbox.requests() if e["path"].endswith("/finalize")]
    assert [(e["status"], e["fault"]) for e in finalize_log] == [
        (429, "status_429"),
        (409, "status_409"),
        (200, None),
    ]
    assert sandbox.config()["faults"] == []  # consumed


def test_faults_match_method_and_count(
    sandbox: RunningSandbox, client: stripe.StripeClient
) -> None:
    sandbox.configure(
        faults=[{"method": "GET", "path": "^/v1/products$", "when": "before_write", "times": 2}]
    )
    client.v1.products.create({"name": "x"})  # POST: not matched
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            client.v1.products.list()
    assert len(client.v1.products.list().data) == 1
    assert httpx.get(sandbox.url + "/_sandbox/config").status_code == 200  # never faulted


def test_random_fault_fractions_are_seeded(sandbox: RunningSandbox) -> None:
    def run() -> list[str | None]:
        sandbox.reset()
        sandbox.configure(seed=7, fail_before_write=0.3, fail_after_write=0.2, drop_after_write=0.2)
        for n in range(30):
            with contextlib.suppress(httpx.TransportError):
                _post(sandbox, "/v1/customers", {"name": str(n)})
        return [entry["fault"] for entry in sandbox.requests()]

    first = run()
    assert first == run()
    assert {"before_write", "after_write", "drop_after_write", None} <= set(first)


def test_rate_limit(sandbox: RunningSandbox, client: stripe.StripeClient) -> None:
    # A bucket of 2 refilled at 2/s: of N back-to-back requests, at most the
    # burst plus what refilled while they ran get through, whatever the load.
    sandbox.configure(rate_limit=2)
    started = time.monotonic()
    statuses = [httpx.get(sandbox.url + "/v1/products", headers=AUTH) for _ in range(12)]
    elapsed = time.monotonic() - started
    limited = [r for r in statuses if r.status_code == 429]
    allowed = len(statuses) - len(limited)
    assert 2 <= allowed <= 2 + math.ceil(elapsed * 2) + 1
    assert limited, f"12 requests in {elapsed:.1f}s and none limited"
    body = limited[0].json()["error"]
    assert body["code"] == "rate_limit" and body["type"] == "invalid_request_error"
    assert limited[0].headers["Stripe-Should-Retry"] == "true"
    with pytest.raises(stripe.RateLimitError):
        client.v1.products.list()
    assert sandbox.configure(rate_limit="test")["rate_limit"] == 25.0


def test_latency(sandbox: RunningSandbox) -> None:
    sandbox.configure(latency_ms=150)
    response = httpx.get(sandbox.url + "/v1/products", headers=AUTH)
    assert response.elapsed.total_seconds() >= 0.14


def test_bad_config_is_refused(sandbox: RunningSandbox) -> None:
    with pytest.raises(ValueError, match="unknown sandbox setting"):
        sandbox.configure(latencyms=3)
    with pytest.raises(ValueError, match="when"):
        sandbox.configure(faults=[{"when": "sometimes"}])


def test_reset(sandbox: RunningSandbox, client: stripe.StripeClient) -> None:
    client.v1.customers.create({"name": "x"})
    sandbox.configure(latency_ms=1)
    sandbox.reset()
    assert client.v1.customers.list().data == []
    assert sandbox.config()["latency_ms"] == 1  # config kept
    assert len(sandbox.requests()) == 1
    sandbox.reset(config=True)
    assert sandbox.config()["latency_ms"] == 0


def test_faults_also_hit_replays(sandbox: RunningSandbox, client: stripe.StripeClient) -> None:
    sandbox.configure(faults=[{"path": "^/v1/customers$", "when": "drop_after_write", "times": 3}])
    for _ in range(3):
        with pytest.raises(stripe.APIConnectionError):
            client.v1.customers.create({"name": "x"}, {"idempotency_key": "r-1"})
    customer = client.v1.customers.create({"name": "x"}, {"idempotency_key": "r-1"})
    log = sandbox.requests()
    assert [(e["fault"], e["replayed"]) for e in log] == [
        ("drop_after_write", False),
        ("drop_after_write", True),
        ("drop_after_write", True),
        (None, True),
    ]
    assert [c.id for c in client.v1.customers.list().data] == [customer.id]
