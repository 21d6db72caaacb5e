"""POST /invoices: start the invoice deployment for one billing request.

    401  missing or wrong bearer token (checked before the body is read)
    413  body over MAX_BODY_BYTES
    400  not JSON, or not a valid request: {"errors": [every problem, one line each]}
    409  request_id already submitted with other content
    503  Prefect's API unreachable (safe to retry: the run is keyed by request_id)
    202  {"flow_run_id", "request_id", "state"}: the run was created (or already existed;
         if that one is dead, a new run of the request was started after it)

The run executes wherever the deployment is served, never in this process.

POST /invoices/amend: amend a sent request to the body's content (`invoiceflow amend`),
same token and body rules, answered when done. Unlike an invoice run it is a few
Stripe calls under the request's lease, made in this process (in a worker thread),
so the answer says how it ended:

    200  {"request_id", "version", "stripe_invoice_id", "invoice_number", "state",
         "changed"}: the version is sent (changed false: the body is the latest
         version already, nothing was written)
    404  no such request
    409  the invoice is paid or void, the request was never sent (POST /invoices
         sends it), another version is being made from other content, another run
         holds the request, or Stripe refused: {"errors": [reason]}
    400  not JSON, not a valid request, or another customer or currency
    503  Stripe or the database unreachable: retry, it resumes
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from invoiceflow import ledger, stale_runs
from invoiceflow.http_body import read_capped
from invoiceflow.request import BillingRequest, InvalidJson, RequestError, parse_request, read_json
from invoiceflow.run_tags import tags_for
from invoiceflow.service.deployments import INVOICE_DEPLOYMENT
from invoiceflow.settings import Settings

logger = logging.getLogger("invoiceflow.service")

# A full request of 250 lines with long names and descriptions is ~200 KB.
MAX_BODY_BYTES = 512 * 1024


def create_trigger_app(settings: Settings) -> Starlette:
    token = settings.trigger_token

    async def authorized_request(http: Request) -> BillingRequest | JSONResponse:
        """The billing request in the body of an authorized POST, or the refusal."""
        if token is None or not _authorized(http, token.get_secret_value()):
            _log_refusal(http, 401, _why_unauthorized(http, token is None))
            return _errors(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        body = await read_capped(http, MAX_BODY_BYTES)
        if body is None:
            _log_refusal(http, 413, f"body larger than {MAX_BODY_BYTES} bytes")
            return _errors(413, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            # The file loader's own parser: same keys, numbers and limits.
            return parse_request(read_json(body))
        except InvalidJson as exc:
            return _errors(400, f"body is not valid JSON: {exc}")
        except RequestError as exc:
            return JSONResponse({"errors": [str(p) for p in exc.problems]}, status_code=400)

    async def start_invoice(http: Request) -> JSONResponse:
        request = await authorized_request(http)
        if isinstance(request, JSONResponse):
            return request
        try:
            await run_in_threadpool(_submit, request)
        except ledger.RequestConflict as exc:
            return _errors(409, str(exc))
        try:
            run_id, state = await _start_run(request)
        except Exception as exc:  # Prefect down or overloaded: the caller retries
            name = type(exc).__name__
            logger.warning("could not start a run for %s: %s", request.request_id, name)
            return _errors(503, "Prefect API unavailable; retry (the same request is safe)")
        logger.info("request %s: flow run %s (%s)", request.request_id, run_id, state)
        payload = {"flow_run_id": run_id, "request_id": request.request_id, "state": state}
        return JSONResponse(payload, status_code=202)

    async def amend_invoice(http: Request) -> JSONResponse:
        request = await authorized_request(http)
        if isinstance(request, JSONResponse):
            return request
        return await run_in_threadpool(_amend, request)

    return Starlette(
        routes=[
            Route("/invoices", start_invoice, methods=["POST"]),
            Route("/invoices/amend", amend_invoice, methods=["POST"]),
        ]
    )


def _amend(request: BillingRequest) -> JSONResponse:
    """`invoiceflow amend`'s logic, answered with what became of it."""
    from invoiceflow.amend.revise import AmendInProgress, AmendRefused, NeverSent, NotRevisable
    from invoiceflow.amend.revise import amend as make_amendment
    from invoiceflow.outcomes import Exit, classify
    from invoiceflow.retry import describe
    from invoiceflow.runtime import get_runtime

    try:
        amended = make_amendment(get_runtime(), request)
    except ledger.RequestNotFound:
        return _errors(404, f"no request {request.request_id!r}; POST /invoices sends it")
    except (NotRevisable, AmendInProgress, NeverSent) as exc:
        return _errors(409, str(exc))
    except AmendRefused as exc:
        return _errors(400, str(exc))
    except Exception as exc:
        code = classify(exc)
        status = {Exit.TEMPORARY: 503, Exit.BUSY: 409, Exit.REFUSED: 409, Exit.BAD_INPUT: 400}
        logger.warning("amending %s failed: %s", request.request_id, type(exc).__name__)
        return _errors(status.get(code, 500), f"{request.request_id}: {describe(exc)}")
    row = amended.row
    logger.info("request %s: version %d %s", request.request_id, amended.version, row.point)
    payload = {
        "request_id": row.request_id,
        "version": amended.version,
        "stripe_invoice_id": row.stripe_invoice_id,
        "invoice_number": row.invoice_number,
        "state": row.recovery_point,
        "changed": amended.changed,
    }
    return JSONResponse(payload, status_code=200)


def _authorized(http: Request, token: str) -> bool:
    given = http.headers.get("authorization", "")
    # Constant time: the comparison must not tell how much of a guess was right.
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _why_unauthorized(http: Request, unset: bool) -> str:
    """For the log: which of the cases it was, never the token or what was sent."""
    given = http.headers.get("authorization")
    if unset:
        return "INVOICEFLOW_TRIGGER_TOKEN is not set, so every request is refused"
    if not given:
        return "no Authorization header"
    if not given.startswith("Bearer "):
        return "Authorization is not 'Bearer <token>'"
    return "wrong bearer token (not INVOICEFLOW_TRIGGER_TOKEN)"


def _log_refusal(http: Request, status: int, reason: str) -> None:
    sender = http.client.host if http.client else "unknown"
    logger.warning("refused POST /invoices from %s (%d): %s", sender, status, reason)


def _submit(request: BillingRequest) -> None:
    """Record the request now, so a conflicting resubmission is refused before any run."""
    from invoiceflow.runtime import get_runtime

    ledger.submit(get_runtime().engine, request)


# A request whose runs died this many times in a row is not started again by a
# POST: the answer shows the last one's end, for a person to look into.
MAX_RESTARTS = 20


async def _start_run(request: BillingRequest) -> tuple[str, str]:
    return await run_in_threadpool(_start_or_restart, request)


def _start_or_restart(request: BillingRequest) -> tuple[str, str]:
    """The request's run: the one its first POST created while that one lives, else a
    new run after it (a run is dead by `stale_runs.why_dead`: ended Crashed, Failed
    or Cancelled, or stranded Pending or Scheduled by a killed `serve`).

    The first run is keyed by the request id (Prefect's idempotency key), each next
    one by the dead run it follows (`<request id>:after:<run id>`): repeated and
    simultaneous POSTs walk the same chain and share its newest run, and a dead
    run is followed by exactly one. Running a request again never bills it twice:
    the invoice flow resumes where the ledger says the request stands.
    """
    from prefect.client.orchestration import get_client

    parameters = {"request": request.model_dump(mode="json")}
    tags = tags_for(request, trigger="http")
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(INVOICE_DEPLOYMENT)
        polls = stale_runs.Polls(client, {deployment.id: deployment.last_polled})
        key = request.request_id
        for _ in range(MAX_RESTARTS + 1):
            run = client.create_flow_run_from_deployment(
                deployment.id, parameters=parameters, tags=tags, idempotency_key=key
            )
            if stale_runs.judge(client, run, polls) is None:
                break
            reason = stale_runs.end(client, run.id)  # Crashed, saying why, if not final yet
            if reason is None:
                break  # it moved on since: alive after all
            logger.warning(
                "request %s: flow run %s %s; starting the request again",
                request.request_id,
                run.id,
                reason,
            )
            key = f"{request.request_id}:after:{run.id}"
        else:
            run = client.read_flow_run(run.id)  # the last of the chain, as it ended
    return str(run.id), run.state.type.value if run.state else "UNKNOWN"


def _errors(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    content: dict[str, Any] = {"errors": [message]}
    return JSONResponse(content, status_code=status, headers=headers)
