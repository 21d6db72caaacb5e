"""The chaos monkey: SIGKILLs pipeline processes at random moments, SIGSTOPs some
past their lease, and scripts Stripe stalls and 429 bursts, from the soak's seed.
With issue 19's kinds switched on it also arms the triggers' timed kills (serve at
a run's start, the workers with a shard Pending) and takes the limiter's Redis
down for a while; each of these at least once, and at most MAX_PER_KIND times.

It acts every few seconds until told to stop and at least `min_kills` kills are
done (with nothing else to kill, serve and the workers remain). A supervisor loop
restarts what it killed; paused processes resume on their own thread.
"""

from __future__ import annotations

import random
import threading
import time

from bench.soak.journal import Journal
from bench.soak.limiter_store import LimiterStore
from bench.soak.processes import Processes
from bench.soak.triggers import Triggers
from bench.stack import Sandbox

# The writes our pipeline makes and the harness's payments do not: a scripted stall
# must hit the pipeline, whose client times out, not the soak's own calls.
PIPELINE_WRITES = r"^/v1/invoices(/[^/]+/(add_lines|finalize|send))?$"
# The process-level kinds of issue 19 the monkey acts on, and how often at most.
TIMED_KILLS = ("serve_kill_at_start", "worker_kill_pending")
MAX_PER_KIND = 3
# A share of the monkey's acts, once those kinds are on.
NEW_KIND_SHARE = 0.15
# The limiter's Redis stays down this long (seconds), drawn at random.
REDIS_DOWN_SECONDS = (5.0, 20.0)


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
        kinds: frozenset[str] = frozenset(),
        triggers: Triggers | None = None,
        limiter_store: LimiterStore | None = None,
    ) -> None:
        self.processes = processes
        self.triggers = triggers
        self.limiter_store = limiter_store
        self.kinds = sorted(
            kind
            for kind in kinds
            if (kind in TIMED_KILLS and triggers is not None)
            or (kind == "redis_down" and limiter_store is not None)
        )
        self.acted: dict[str, int] = dict.fromkeys(self.kinds, 0)
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
        for kind in self.kinds:  # each kind at least once: its first moment is early
            self._new_kind(kind)
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
                open_kinds = [k for k in self.kinds if self.acted[k] < MAX_PER_KIND]
                if open_kinds and self.rng.random() < NEW_KIND_SHARE:
                    self._new_kind(self.rng.choice(open_kinds))
                    continue
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

    def _new_kind(self, kind: str) -> None:
        self.acted[kind] += 1
        if kind in TIMED_KILLS and self.triggers is not None:
            self.triggers.arm(kind)
        elif kind == "redis_down" and self.limiter_store is not None:
            # The first outage a little later: with some runs under way.
            delay = self.rng.uniform(5, 30) if self.acted[kind] == 1 else 0.0
            seconds = self.rng.uniform(*REDIS_DOWN_SECONDS)
            outage = threading.Thread(
                target=self._outage, args=(self.limiter_store, delay, seconds), daemon=True
            )
            outage.start()
            self._pausers.append(outage)

    @staticmethod
    def _outage(store: LimiterStore, delay: float, seconds: float) -> None:
        time.sleep(delay)
        store.outage(seconds)

    def _script_fault(self) -> None:
        when = self.rng.choice(["stall_before_write", "stall_after_write", "status_429"])
        times = 3 if when == "status_429" else 1
        fault = {"when": when, "path": PIPELINE_WRITES, "method": "POST", "times": times}
        self.sandbox.configure(faults=[fault])
        self.stalls += when.startswith("stall")
