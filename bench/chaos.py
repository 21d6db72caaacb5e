"""The chaos soak (issue 10): N billing requests through billing runs, the CLI and
`POST /invoices`, while processes are killed and paused, Stripe fails, stalls and
rate-limits, and webhooks arrive duplicated, reordered, late and forged. Then
`bench/soak/verify.py` reads Stripe and our ledger and says whether every request
has exactly one invoice with exactly its lines, sent once, paid at most once.

    python bench/chaos.py [--requests 300] [--seed S] [--database-url URL]
        [--workdir DIR] [--kills 50] [--keep] [--without KIND,...]

Issue 19's fault kinds are on unless `--without` names them (bench/soak/kinds.py):
foreign_events, weak_signatures, serve_kill_at_start, worker_kill_pending,
redis_down (the rate limiter then shares a Redis of the soak's own, which the
monkey takes down for a while).

The stack is the production one, each part a process of its own: the Stripe
sandbox, a Prefect server on PostgreSQL (a work pool, `billing-shard` deployed,
two workers), `invoiceflow serve`, and the CLI runs. The last line printed is
the verdict (`soak OK: …` or `soak FAILED: …`); the exit code is 0 only when OK.
Everything it did is in the work directory: requests.jsonl, journal.jsonl,
soak.json, logs/. Keys, secrets and the trigger token come from CHAOS_STRIPE_KEY,
CHAOS_WEBHOOK_SECRET and CHAOS_TRIGGER_TOKEN when set (else they are made up) and
are never written there.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import stripe

from bench import stack
from bench.soak import kinds, workload
from bench.soak.driver import Soak
from bench.soak.journal import Journal
from bench.soak.limiter_store import LimiterStore
from bench.soak.monkey import Monkey
from bench.soak.payments import Payer
from bench.soak.processes import Processes
from bench.soak.triggers import Triggers

KEY_ENV = "CHAOS_STRIPE_KEY"
WEBHOOK_EVENTS = [
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.voided",
    "invoice.marked_uncollectible",
]
# A lease this short lets a SIGSTOP outlive it in seconds; the client timeout under
# the stall makes a stalled write a timeout, as a hung Stripe call is.
LEASE_SECONDS = 8
STRIPE_TIMEOUT_SECONDS = 4
# A run left Pending or Scheduled past this is crashed and rescheduled (issue 19); the
# default (3 minutes) is for production, a soak must see it happen in its time.
STALE_RUN_SECONDS = 45
# What serve must refuse in its list of webhook secrets: the public prefix alone.
WEAK_SECRET = "whsec_"
CHAOS = {
    "rate_limit": 25,
    "fail_before_write": 0.10,
    "fail_after_write": 0.10,
    "drop_after_write": 0.03,
    "stall_ms": 6_000,
    "webhook_duplicate": 0.25,
    "webhook_reorder": True,
    "webhook_reorder_window_ms": 2_000,
    "webhook_delay_ms": 300,
    # Stripe retries for days; here a receiver down for ~2 minutes still gets every event.
    "webhook_retry_base_ms": 500,
    "webhook_retry_max_ms": 8_000,
    "webhook_max_attempts": 25,
}


def main() -> int:
    args = parse_args()
    # SIGTERM unwinds like Ctrl-C: every process and database the soak made goes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="invoiceflow-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    key = os.environ.get(KEY_ENV) or f"sk_test_chaos{secrets.token_hex(12)}"
    os.environ[KEY_ENV] = key  # for a verifier that reads it by name (soak.json's api_key_env)
    token = os.environ.get("CHAOS_TRIGGER_TOKEN") or secrets.token_urlsafe(32)
    extra_secret = os.environ.get("CHAOS_WEBHOOK_SECRET")
    on = args.kinds
    rng = random.Random(args.seed)
    requests = workload.generate(args.requests, args.seed)
    workload.write(workdir / "requests.jsonl", requests)
    journal = Journal(workdir / "journal.jsonl")
    stack.say(
        f"chaos soak: {len(requests)} requests, seed {args.seed}, at least {args.kills} kills;"
        f" work directory {workdir}; {stack.load()}"
    )
    stack.say(f"fault kinds of issue 19: {', '.join(sorted(on)) or 'none'}")
    with ExitStack() as resources:
        sandbox = resources.enter_context(stack.sandbox_process(log_path=logs / "sandbox.log"))
        ledger_url = resources.enter_context(ledger(args, workdir))
        limiter_store = None
        limiter_env = {}
        if "redis_down" in on:
            limiter_store = LimiterStore(logs, stack.free_port(), journal)
            limiter_store.start()
            resources.callback(limiter_store.close)
            limiter_env = {"INVOICEFLOW_RATE_LIMIT_BACKEND": limiter_store.url}
        app_env = stack.app_env(
            sandbox.url,
            ledger_url,
            "",  # the workers' environment gets the Prefect server's URL
            STRIPE_API_KEY=key,
            INVOICEFLOW_STRIPE_RATE="test",  # Stripe's own rate, as a deployment would run
            INVOICEFLOW_LEASE_SECONDS=str(LEASE_SECONDS),
            INVOICEFLOW_STRIPE_TIMEOUT_SECONDS=str(STRIPE_TIMEOUT_SECONDS),
            INVOICEFLOW_TASK_RETRY_DELAYS_SECONDS="1,2",
            INVOICEFLOW_STALE_RUN_SECONDS=str(STALE_RUN_SECONDS),
            **limiter_env,
        )
        from invoiceflow_testing.local_workers import local_workers

        stack.say("starting the Prefect server on PostgreSQL, the work pool and 2 workers")
        topology = resources.enter_context(
            local_workers(2, app_env, log_dir=logs, keep_database=args.keep)
        )
        client = stripe.StripeClient(
            key, base_addresses={"api": sandbox.url}, max_network_retries=0
        )
        port = stack.free_port()
        endpoint = client.v1.webhook_endpoints.create(
            {"url": f"http://127.0.0.1:{port}/webhooks/stripe", "enabled_events": WEBHOOK_EVENTS}
        )
        webhook_secret = endpoint.secret or ""
        env = {
            **topology.env,
            # An extra accepted secret, as during a rotation: it must never leak either.
            "STRIPE_WEBHOOK_SECRET": ",".join(filter(None, [webhook_secret, extra_secret])),
            "INVOICEFLOW_TRIGGER_TOKEN": token,
            **{f"INVOICEFLOW_{name}_CRON": "off" for name in ("BILLING", "DUNNING", "RECONCILE")},
        }
        write_soak_json(workdir, args, ledger_url, sandbox.url, topology.database_url)
        processes = Processes(logs, env, topology, port, journal)
        resources.callback(processes.stop_serve)
        resources.callback(processes.close)
        processes.adopt_workers()
        run_database_upgrade(processes)
        if "weak_signatures" in on:
            weak_secret_refused(processes, journal)
        stack.say("starting invoiceflow serve")
        processes.start_serve()
        processes.wait_serve()
        triggers = Triggers(workdir, processes, journal, token)
        soak = Soak(
            workdir=workdir,
            requests=requests,
            processes=processes,
            triggers=triggers,
            monkey=Monkey(
                processes,
                sandbox,
                journal,
                random.Random(rng.random()),
                min_kills=args.kills,
                pause_seconds=LEASE_SECONDS + 4,
                pace_seconds=args.pace,
                kinds=on,
                triggers=triggers,
                limiter_store=limiter_store,
            ),
            payer=Payer(client, journal),
            sandbox=sandbox,
            journal=journal,
            database_url=ledger_url,
            webhook_secret=webhook_secret,
            rng=random.Random(rng.random()),
            parallel=args.parallel,
            lease_seconds=LEASE_SECONDS,
            chaos_config={**CHAOS, "seed": args.seed},
            kinds=on,
        )
        soak.run()
        processes.stop_serve()
        try:
            verdict = verify(workdir, client, sandbox.url, ledger_url)
        except Exception as exc:  # a soak it cannot judge is a failed soak, said in one line
            stack.say(f"soak FAILED: the verifier could not judge it: {exc}")
            print(f"the work directory is kept for inspection: {workdir}", file=sys.stderr)
            return 1
        update_soak_json(workdir, finished=time.time())
    problems = "".join(f"- {problem}\n" for problem in getattr(verdict, "problems", []))
    (workdir / "verdict.md").write_text(f"{verdict.table()}\n\n{problems}\n{verdict.line()}\n")
    stack.say(verdict.table())
    stack.say(problems.rstrip())
    stack.say(verdict.line())
    if verdict.ok and not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not verdict.ok:
        print(f"the work directory is kept for inspection: {workdir}", file=sys.stderr)
    return 0 if verdict.ok else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=positive, default=300, help="billing requests (300)")
    parser.add_argument("--seed", type=int, default=None, help="decides everything (random)")
    parser.add_argument(
        "--database-url",
        help="the ledger: a sqlite:/// URL, or a PostgreSQL server on which a fresh"
        " database is made (default: a SQLite file in the work directory)",
    )
    parser.add_argument("--workdir", help="where the soak writes (default: a fresh temp dir)")
    parser.add_argument("--kills", type=int, default=50, help="at least this many kills (50)")
    parser.add_argument("--parallel", type=positive, default=3, help="submissions at once (3)")
    parser.add_argument(
        "--pace", type=float, default=3.0, help="seconds between the monkey's acts, on average"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory and the databases"
    )
    parser.add_argument(
        "--without",
        default="",
        metavar="KIND,...",
        help=f"leave out these fault kinds of issue 19 ({', '.join(kinds.KINDS)})",
    )
    args = parser.parse_args()
    try:
        args.kinds = kinds.parse_without(args.without)
    except ValueError as exc:
        parser.error(str(exc))
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1_000_000)
    return args


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


@contextmanager
def ledger(args: argparse.Namespace, workdir: Path) -> Iterator[str]:
    """The ledger's URL: a given SQLite URL as is, else `stack.database` (a SQLite file
    in the work directory, or a fresh database on the PostgreSQL server named)."""
    if args.database_url and args.database_url.startswith("sqlite"):
        yield args.database_url
        return
    with stack.database(args.database_url, workdir, keep=args.keep) as (url, _):
        yield url


def run_database_upgrade(processes: Processes) -> None:
    """The ledger's schema before anyone reads it (the payer reads from the start)."""
    proc = processes.run("setup", "db-upgrade", "db", "upgrade")
    if proc.process.wait() != 0:
        raise SystemExit("invoiceflow db upgrade failed; see logs/db-upgrade-*.log")


def weak_secret_refused(processes: Processes, journal: Journal) -> None:
    """Start serve with the public prefix `whsec_` added to its webhook secrets, as a
    careless rotation would leave it: it must refuse to start, in one line. Should it
    start, an event signed with `whsec_` (for no invoice of ours) is posted to it, to
    show what anyone could then do. Journals `weak_secret_config`."""
    from bench.soak.payments import _event, post_event
    from stripe_sandbox.webhooks import sign

    env = {**processes.env}
    env["STRIPE_WEBHOOK_SECRET"] = f"{env['STRIPE_WEBHOOK_SECRET']},{WEAK_SECRET}"
    port = stack.free_port()
    log = processes.logs / "serve-weak-secret.log"
    command = [sys.executable, "-m", "invoiceflow", "serve", "--host", "127.0.0.1"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            env=env,
            cwd=stack.REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url, status = f"http://127.0.0.1:{port}", None
    deadline = time.monotonic() + 240
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if answers(url):
                payload = json.dumps(_event(f"evt_weak_{secrets.token_hex(8)}", "in_none")).encode()
                status = post_event(url, payload, sign(payload, WEAK_SECRET, int(time.time())))
                break
            time.sleep(0.5)
    finally:
        refused = process.poll() is not None
        if not refused:
            os.killpg(process.pid, signal.SIGKILL)
        code = process.wait()
    said = log.read_text(errors="replace").strip().splitlines()
    journal.note(
        "weak_secret_config",
        refused=refused,
        exit_code=code,
        output_lines=len(said),
        traceback=any("Traceback" in line for line in said),
        weak_signed_status=status,
    )
    stack.say(
        "  serve with a weak webhook secret: "
        + (f"refused to start (exit {code})" if refused else f"started; whsec_ signed: {status}")
    )


def answers(url: str) -> bool:
    import httpx

    try:
        return httpx.post(f"{url}/invoices", timeout=2).status_code == 401
    except httpx.HTTPError:
        return False


def write_soak_json(
    workdir: Path, args: argparse.Namespace, ledger_url: str, sandbox_url: str, prefect_url: str
) -> None:
    (workdir / "soak.json").write_text(
        json.dumps(
            {
                "seed": args.seed,
                "requests": args.requests,
                # A password in a URL is a secret too: shown as ***.
                "database_url": without_password(ledger_url),
                "sandbox_url": sandbox_url,
                "api_key_env": KEY_ENV,
                "prefect_database_url": without_password(prefect_url),
                "started": time.time(),
                "finished": None,
                "fault_kinds": sorted(args.kinds),
            },
            indent=2,
        )
    )


def without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def update_soak_json(workdir: Path, **changes: Any) -> None:
    path = workdir / "soak.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}, indent=2))


def verify(workdir: Path, client: stripe.StripeClient, sandbox_url: str, ledger_url: str) -> Any:
    stack.say("phase verify")
    from bench.soak.verify import verify as read_and_judge

    return read_and_judge(workdir, client, sandbox_url, ledger_url)


if __name__ == "__main__":
    sys.exit(main())
