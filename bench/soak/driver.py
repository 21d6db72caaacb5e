"""The soak's phases, in order:

1. chaos: every request submitted through its trigger(s) while the monkey kills,
   pauses and stalls, the sandbox fails writes and abuses webhooks, the payer
   acts on sent invoices and forged events hit the receiver;
2. finish: faults off; requests not yet sent are billed again (rounds of
   `invoiceflow batch`, bounded) and the changed resubmissions are made;
3. payments: every remaining fate is acted on; a few more forged events;
4. webhooks: until the ledger shows every payment and void Stripe made;
5. reconcile: `invoiceflow reconcile`.

Progress goes to stdout every few seconds.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.soak.journal import Journal
from bench.soak.monkey import Monkey
from bench.soak.payments import BAD_SIGNATURES, WEAK_SIGNATURES, Payer, forge, forge_foreign
from bench.soak.processes import Processes
from bench.soak.triggers import Triggers
from bench.soak.workload import changed
from bench.stack import Sandbox, say

DONE = {"sent", "paid", "void", "uncollectible"}
FINISH_ROUNDS = 12
SETTLE_SECONDS = 300.0
PROGRESS_SECONDS = 5.0
MIN_FORGED = 3


@dataclass
class Soak:
    workdir: Path
    requests: list[dict[str, Any]]
    processes: Processes
    triggers: Triggers
    monkey: Monkey
    payer: Payer
    sandbox: Sandbox
    journal: Journal
    database_url: str
    webhook_secret: str
    rng: random.Random
    parallel: int
    lease_seconds: float
    chaos_config: dict[str, Any]
    kinds: frozenset[str] = frozenset()  # the issue-19 fault kinds switched on (kinds.py)

    def __post_init__(self) -> None:
        from invoiceflow.db.engine import get_engine

        self.engine = get_engine(self.database_url)
        self.phase = "setup"
        self.submitted = 0
        self.outcomes: Counter[str] = Counter()
        self._forged = 0
        self._foreign = 0
        self._by_id = {r["request_id"]: r for r in self.requests}
        self.triggers.billed = self._billed

    def _billed(self, request_id: str) -> bool:
        from invoiceflow import ledger

        row = ledger.load(self.engine, request_id)
        return row is not None and row.recovery_point in DONE

    # --- what the ledger says ----------------------------------------------------

    def states(self) -> dict[str, tuple[str, str | None]]:
        from invoiceflow import ledger

        rows = ledger.list_requests(self.engine)
        return {
            r.request_id: (r.recovery_point, r.stripe_invoice_id)
            for r in rows
            if r.request_id in self._by_id
        }

    def _note_phase(self, name: str) -> None:
        self.phase = name
        self.journal.note("phase", name=name)
        say(f"phase {name}")

    def _progress(self, stop: threading.Event) -> None:
        while not stop.wait(PROGRESS_SECONDS):
            states = self.states()
            done = sum(1 for state, _ in states.values() if state in DONE)
            say(
                f"  {self.phase}: submitted {self.submitted}/{len(self.requests)},"
                f" recorded {len(states)}, sent {done}, kills {self.monkey.kills},"
                f" stops {self.monkey.stops}, stalls {self.monkey.stalls},"
                f" forged {self._forged}, foreign {self._foreign},"
                f" fates acted {len(self.payer.done)}"
            )

    # --- the run -----------------------------------------------------------------

    def run(self) -> None:
        stop = threading.Event()
        progress = threading.Thread(target=self._progress, args=(stop,), daemon=True)
        progress.start()
        try:
            self._chaos()
            self._finish()
            self._payments()
            self._settle()
            self._reconcile()
        finally:
            stop.set()
            progress.join()

    def _chaos(self) -> None:
        self._note_phase("chaos")
        self.sandbox.configure(**self.chaos_config)
        self.monkey.start()
        quit_paying = threading.Event()
        paying = threading.Thread(target=self._pay_while, args=(quit_paying,), daemon=True)
        paying.start()
        pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="submit")
        try:
            for outcome in pool.map(self._submit, self._jobs()):
                self.outcomes[outcome] += 1
        finally:  # on Ctrl-C, not waiting: the runs are stopped, their threads end
            pool.shutdown(wait=False, cancel_futures=True)
        say(f"  every request submitted ({dict(self.outcomes)}); monkey finishing its kills")
        self.monkey.finish()
        quit_paying.set()
        paying.join()

    def _jobs(self) -> list[list[dict[str, Any]]]:
        """Each job is one request (cli, http) or a group of them (batch), shuffled."""
        jobs: list[list[dict[str, Any]]] = []
        group: list[dict[str, Any]] = []
        size = self.rng.randint(3, 10)
        for request in self.requests:
            if request["_soak"]["triggers"][0] != "batch":
                jobs.append([request])
                continue
            group.append(request)
            if len(group) >= size:
                jobs.append(group)
                group, size = [], self.rng.randint(3, 10)
        if group:
            jobs.append(group)
        self.rng.shuffle(jobs)
        return jobs

    def _submit(self, job: list[dict[str, Any]]) -> str:
        seconds = [r for r in job if len(r["_soak"]["triggers"]) > 1]
        helpers = [
            threading.Thread(target=self._trigger, args=(r, r["_soak"]["triggers"][1]))
            for r in seconds
        ]
        for request in seconds:
            self.journal.note(
                "duplicate_submission",
                request_id=request["request_id"],
                triggers=request["_soak"]["triggers"],
            )
        for helper in helpers:
            helper.start()
        first = job[0]["_soak"]["triggers"][0]
        if first == "batch":
            name = f"batch-{job[0]['request_id']}"
            outcome = f"batch:{self.triggers.batch(job, name, self.rng.choice([1, 2]))}"
        else:
            outcome = self._trigger(job[0], first)
        for helper in helpers:
            helper.join()
        self.submitted += len(job)
        return outcome

    def _trigger(self, request: dict[str, Any], trigger: str) -> str:
        if trigger == "http":
            return f"http:{self.triggers.http(request)}"
        if trigger == "cli":
            return f"cli:{self.triggers.cli(request)}"
        name = f"batch-{request['request_id']}-again"
        return f"batch:{self.triggers.batch([request], name, 1)}"

    def _pay_while(self, quit_paying: threading.Event) -> None:
        """During chaos: act on the fates of sent invoices, forge an event now and then."""
        while not quit_paying.wait(self.rng.uniform(2, 6)):
            self._act_on_fates(limit=3)
            if self.rng.random() < 0.4:
                self._forge_one()
            if "foreign_events" in self.kinds and self.rng.random() < 0.3:
                self._foreign_one()

    def _act_on_fates(self, limit: int | None = None) -> None:
        acted = 0
        for request_id, (state, invoice_id) in self.states().items():
            fate = self._by_id[request_id]["_soak"]["fate"]
            if state != "sent" or invoice_id is None or request_id in self.payer.done:
                continue
            if fate == "leave":
                continue
            self.payer.act(request_id, invoice_id, fate)
            acted += 1
            if limit is not None and acted >= limit:
                return

    def _forge_one(self) -> None:
        """A forged `invoice.paid`, for an invoice nobody pays (fate leave or decline) when
        there is one: accepted, it would show as a payment that never happened."""
        invoices = {
            invoice_id: self._by_id[request_id]["_soak"]["fate"]
            for request_id, (_, invoice_id) in self.states().items()
            if invoice_id
        }
        unpaid = [i for i, fate in invoices.items() if fate in ("leave", "decline")]
        targets = sorted(unpaid or invoices)
        hows: tuple[str, ...] = BAD_SIGNATURES
        if "weak_signatures" in self.kinds:
            hows += tuple(WEAK_SIGNATURES)
        if targets:
            invoice_id = self.rng.choice(targets)
            forge(
                self.processes.serve_url,
                self.journal,
                self.webhook_secret,
                invoice_id,
                self.rng,
                hows,
            )
            self._forged += 1

    def _foreign_one(self) -> None:
        """A correctly signed event that is not ours, naming one of our requests: one
        with no invoice yet when there is one (applied, it would settle the request on
        a stranger's invoice and it would never be billed), else one left unpaid."""
        states = self.states()
        without = [r for r in self._by_id if states.get(r, ("", None))[1] is None]
        unpaid = [
            r
            for r, (_, invoice_id) in states.items()
            if invoice_id and self._by_id[r]["_soak"]["fate"] in ("leave", "decline")
        ]
        targets = sorted(without or unpaid)
        if not targets:
            return
        request_id = self.rng.choice(targets)
        forge_foreign(
            self.processes.serve_url,
            self.journal,
            self.webhook_secret,
            self.rng,
            request_id=request_id,
            our_invoice_id=states.get(request_id, ("", None))[1],
        )
        self._foreign += 1

    def _finish(self) -> None:
        self._note_phase("finish")
        self.sandbox.configure(
            fail_before_write=0.0, fail_after_write=0.0, drop_after_write=0.0, faults=[]
        )
        self.processes.stop_runs()
        self.processes.wait_serve()
        for round_number in range(1, FINISH_ROUNDS + 1):
            states = self.states()
            left = [r for r in self.requests if states.get(r["request_id"], ("",))[0] not in DONE]
            if not left:
                break
            say(f"  finish round {round_number}: {len(left)} requests not sent yet")
            code = self.triggers.batch(left, f"finish-{round_number}", 1)
            if code != 0:
                time.sleep(self.lease_seconds)  # a paused or killed run's lease lapses
        else:
            say(f"  {len(left)} requests still not sent after {FINISH_ROUNDS} rounds")
        for request in self.requests:
            if request["_soak"]["changed_later"]:
                self._resubmit_changed(request)

    def _resubmit_changed(self, request: dict[str, Any]) -> None:
        trigger = self.rng.choice(["cli", "http"])
        other = changed(request)
        fields: dict[str, Any]
        if trigger == "cli":
            code = self.triggers.cli(request, other)
            fields = {"exit_code": code, "refused": code == 3}
        else:
            status = self.triggers.http(request, other)
            fields = {"http_status": status, "refused": status == 409}
        self.journal.note(
            "changed_resubmission", request_id=request["request_id"], trigger=trigger, **fields
        )

    def _payments(self) -> None:
        self._note_phase("payments")
        self._act_on_fates()
        for _ in range(MIN_FORGED - self._forged):
            self._forge_one()
        if "foreign_events" in self.kinds:
            for _ in range(MIN_FORGED - self._foreign):
                self._foreign_one()
        if "weak_signatures" in self.kinds:  # at least one, whatever the dice said
            invoice_id = next((i for _, i in self.states().values() if i), None)
            if invoice_id:
                forge(
                    self.processes.serve_url,
                    self.journal,
                    self.webhook_secret,
                    invoice_id,
                    self.rng,
                    tuple(WEAK_SIGNATURES),
                )
                self._forged += 1

    def _settle(self) -> None:
        """Until the ledger shows every payment and void the payer saw in Stripe."""
        self._note_phase("webhooks")
        expected = self._expected_settlements()
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            states = self.states()
            waiting = [r for r, want in expected.items() if states.get(r, ("",))[0] != want]
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(1)
        if waiting:
            say(f"  {len(waiting)} payments/voids not in the ledger after {SETTLE_SECONDS:.0f} s")

    def _expected_settlements(self) -> dict[str, str]:
        import json

        expected: dict[str, str] = {}
        for line in self.journal.path.read_text().splitlines():
            entry = json.loads(line)
            if entry["kind"] == "pay" and entry["outcome"] == "paid":
                expected[entry["request_id"]] = "paid"
            elif entry["kind"] == "void":
                expected[entry["request_id"]] = "void"
        return expected

    def _reconcile(self) -> None:
        self._note_phase("reconcile")
        proc = self.processes.run(
            "reconcile", "reconcile", "reconcile", "--since", "1d", "--stale-minutes", "0"
        )
        code = proc.process.wait()
        self.journal.note("reconcile", exit_code=code)
        say(f"  reconcile exited {code}")
