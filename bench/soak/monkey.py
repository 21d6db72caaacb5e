"""The chaos monkey: SIGKILLs pipeline processes at random moments, SIGSTOPs some
past their lease, and scripts Stripe stalls and 429 bursts, from the soak's seed.

It acts every few seconds until told to stop and at least `min_kills` kills are
done (with nothing else to kill, serve and the workers remain). A supervisor loop
restarts what it killed; paused processes resume on their own thread.
"""

from __future__ import annotations

import random
import threading
import time

from bench.soak.journal import Journal
from bench.soak.processes import Processes
from bench.stack import Sandbox

# The writes our pipeline makes and the harness's payments do not: a scripted stall
# must hit the pipeline, whose client times out, not the soak's own calls.
PIPELINE_WRITES = r"^/v1/invoices(/[^/]+/(add_lines|finalize|send))?$"


class Monkey:
    def __init__(
        self,
        processes: Processes,
        sandbox: Sandbox,
        journal: Journal,
        rng: random.Random,
        *,
        min_kills: int,
        pause_seconds: float,
        pace_seconds: float,
    ) -> None:
        self.processes = processes
        self.sandbox = sandbox
        self.journal = journal
        self.rng = rng
        self.min_kills = min_kills
        self.pause_seconds = pause_seconds
        self.pace_seconds = pace_seconds
        self.kills = 0
        self.stops = 0
        self.stalls = 0
        self._done = threading.Event()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-monkey", daemon=True)
        self._pausers: list[threading.Thread] = []

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        """Stop once the minimum of kills is reached; returns when it has stopped."""
        self._done.set()
        while not self._finished.wait(1):
            pass
        for pauser in self._pausers:
            pauser.join()
        self.processes.keep_up()

    @property
    def quota_met(self) -> bool:
        return self.kills >= self.min_kills

    def _loop(self) -> None:
        try:
            while not (self._done.is_set() and self.quota_met):
                # Once the quota is met, less often: the work must also get done.
                pace = self.pace_seconds * (3 if self.quota_met else 1)
                time.sleep(self.rng.uniform(0.3, 1.7) * pace)
                self.processes.keep_up()
                roll = self.rng.random()
                if roll < 0.70:
                    self._kill()
                elif roll < 0.85:
                    self._pause()
                else:
                    self._script_fault()
        finally:
            self._finished.set()

    def _kill(self) -> None:
        # Short runs first when there are any: they are the ones mid-write.
        runs = self.processes.victims(long_lived=False)
        services = self.processes.victims(long_lived=True)
        pool = runs if runs and self.rng.random() < 0.6 else services
        if not pool:
            return
        victim = self.rng.choice(sorted(pool, key=lambda p: p.process.pid))
        self.processes.kill(victim)
        self.kills += 1

    def _pause(self) -> None:
        runs = self.processes.victims(long_lived=False)
        if not runs:
            return
        victim = self.rng.choice(sorted(runs, key=lambda p: p.process.pid))
        pauser = threading.Thread(
            target=self.processes.pause, args=(victim, self.pause_seconds), daemon=True
        )
        pauser.start()
        self._pausers.append(pauser)
        self.stops += 1

    def _script_fault(self) -> None:
        when = self.rng.choice(["stall_before_write", "stall_after_write", "status_429"])
        times = 3 if when == "status_429" else 1
        fault = {"when": when, "path": PIPELINE_WRITES, "method": "POST", "times": times}
        self.sandbox.configure(faults=[fault])
        self.stalls += when.startswith("stall")
