"""CPU per process, counted until the Prefect server is idle again.

A flow returning is not the end of its cost: the Prefect server goes on
recording task-run states and artifacts from its event backlog for seconds to
minutes afterwards (issue 23). A figure that stops counting when the flow
returns leaves that work out, and makes Prefect look cheaper and faster than
it is. So a `Meter`:

- reads user + system CPU from /proc (utime + stime, plus cutime + cstime of
  children a process reaped) for named groups of processes: ours, the
  Prefect server and its descendants, the sandbox, PostgreSQL backends;
- measures each group's idle rate first (`Meter.baseline`), while nothing runs;
- after a run, keeps reading until the server's CPU rate is back within a
  small margin of its idle rate for a few consecutive seconds (bounded, with
  a progress line every few seconds), and subtracts each group's idle rate
  over the whole span counted.

Reading /proc costs this process CPU too; the meter times its own readings
(`time.thread_time`) and takes them out of "ours".

    meter = Meter({"ours": own_process, "Prefect server": lambda: tree(server_pid)})
    meter.baseline()
    start = meter.read()
    ... the run ...
    returned = meter.read()
    usage = meter.until_idle(start, returned)   # CPU seconds per group, idle rate subtracted
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK")
SERVER = "Prefect server"
OURS = "ours"


# How long the meter waits for the server: generous for figures, a few seconds in a
# smoke (`quick()`), which proves the code runs and measures nothing. A busy CI
# machine may never look idle, and five phases of 300 s each ate the heavy tier.
_quick = False


def quick() -> None:
    """Smoke mode: wait at most a few seconds for the server at each phase."""
    global _quick
    _quick = True


def say(text: str) -> None:
    print(text, flush=True)


def loadavg() -> str:
    """The first three fields of /proc/loadavg: the 1, 5 and 15 minute load averages."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def process_cpu(pid: int, *, reaped_children: bool = True) -> float:
    """CPU seconds of one process from /proc/<pid>/stat (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")": state is fields[0], so utime/stime/cutime/cstime are 11-14.
    used = int(fields[11]) + int(fields[12])
    if reaped_children:
        used += int(fields[13]) + int(fields[14])
    return used / TICK


def own_process() -> float:
    """This process alone (all its threads), without the children it started."""
    return process_cpu(os.getpid(), reaped_children=False)


def _children(pid: int) -> Iterator[int]:
    with contextlib.suppress(OSError):
        for thread in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{thread}/children") as f:
                yield from map(int, f.read().split())


def tree(pid: int | None) -> float:
    """CPU seconds of a process and its living descendants (and what they reaped)."""
    if pid is None:
        return 0.0
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += process_cpu(current)
        todo += _children(current)
    return total


class Backends:
    """CPU of the PostgreSQL backends serving one database, across their lives.

    Backends come and go with connections; each one seen is remembered with
    its last reading, so one that ended still counts up to when it was last
    read (the meter reads every second while it waits, and at each end).
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.seen: dict[int, float] = {}

    def __call__(self) -> float:
        if not self.database:
            return 0.0
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    title = f.read().decode(errors="replace")
            except OSError:
                continue
            if title.startswith("postgres:") and f" {self.database} " in title:
                cpu = process_cpu(int(entry))
                if cpu:
                    self.seen[int(entry)] = cpu
        return sum(self.seen.values())


def postgres_database(url: str) -> str:
    """The database name of a PostgreSQL URL ('' for SQLite: its work is its caller's)."""
    if not url:
        return ""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.database or "" if parsed.get_backend_name() == "postgresql" else ""


@dataclass(frozen=True)
class Reading:
    at: float  # time.monotonic()
    cpu: dict[str, float]
    load: str


@dataclass
class Usage:
    """What a run cost, counted until the server was idle, idle rates subtracted."""

    cpu: dict[str, float]  # CPU seconds per group
    returned_after: float  # seconds from start to the run returning
    idle_after: float  # seconds from start to the server's quiet window (its work done)
    idle: bool  # False: the bound ran out first (counted up to the bound)
    load_start: str
    load_end: str
    at_return: dict[str, float] = field(default_factory=dict)  # what counting at return gives

    @property
    def total(self) -> float:
        return sum(self.cpu.values())

    def ms_per(self, group: str, count: int) -> float:
        return self.cpu.get(group, 0.0) / count * 1000


class Meter:
    def __init__(self, groups: dict[str, Callable[[], float]], server: str = SERVER) -> None:
        self.groups = groups
        self.server = server
        self.idle_rate = dict.fromkeys(groups, 0.0)
        self._own_overhead = 0.0  # CPU seconds this meter's readings cost this process

    def read(self) -> Reading:
        spent = time.thread_time()
        values = {name: read() for name, read in self.groups.items()}
        self._own_overhead += time.thread_time() - spent
        if OURS in values:
            values[OURS] -= self._own_overhead
        return Reading(time.monotonic(), values, loadavg())

    def baseline(
        self, seconds: float | None = None, settle_bound: float | None = None
    ) -> dict[str, float]:
        """Each group's CPU rate (CPU-s per s) while nothing runs, once the server has settled
        (two consecutive 2 s windows within 0.02 of each other, at most `settle_bound` s)."""
        if _quick:
            seconds, settle_bound = 1.0, 4.0
        seconds = 10.0 if seconds is None else seconds
        deadline = time.monotonic() + (60.0 if settle_bound is None else settle_bound)
        previous, last = None, self.read()
        while time.monotonic() < deadline:
            time.sleep(2.0)
            now = self.read()
            rate = _rate(last, now, self.server)
            if previous is not None and abs(rate - previous) <= 0.02:
                break
            previous, last = rate, now
        start = self.read()
        time.sleep(seconds)
        end = self.read()
        span = end.at - start.at
        self.idle_rate = {n: max(0.0, (end.cpu[n] - start.cpu[n]) / span) for n in self.groups}
        say(
            "idle CPU rates (CPU-s per s): "
            + ", ".join(f"{n} {r:.3f}" for n, r in self.idle_rate.items())
            + f"; load {end.load}"
        )
        return self.idle_rate

    def settle(self, **wait: float) -> None:
        """Wait until the server is idle (a previous run's backlog done) before a run starts."""
        self._wait_quiet(self.read(), "before the run", **wait)

    def until_idle(self, start: Reading, returned: Reading, **wait: float) -> Usage:
        """Keep reading until the server is idle after a run; what the run cost until then."""
        end, idle, quiet_since = self._wait_quiet(returned, "after the run", **wait)
        return Usage(
            cpu=self._spent(start, end),
            returned_after=returned.at - start.at,
            idle_after=quiet_since.at - start.at,
            idle=idle,
            load_start=start.load,
            load_end=end.load,
            at_return=self._spent(start, returned),
        )

    def _wait_quiet(
        self,
        first: Reading,
        when: str,
        *,
        margin: float = 0.05,
        quiet_seconds: float = 3,
        bound: float | None = None,
        progress_every: float = 5.0,
    ) -> tuple[Reading, bool, Reading]:
        """Read every second until the server's rate over the last `quiet_seconds` is within
        `margin` CPU-s/s of its idle rate: (the last reading, whether it got there before
        `bound` seconds, the reading the quiet window began with: when the work ended)."""
        bound = 5.0 if _quick else (300.0 if bound is None else bound)
        limit = self.idle_rate[self.server] + margin
        quiet = int(quiet_seconds)
        window = [first]
        next_line = first.at + progress_every
        while True:
            if len(window) > quiet and _rate(window[-quiet - 1], window[-1], self.server) <= limit:
                return window[-1], True, window[-quiet - 1]
            if window[-1].at - first.at >= bound:
                say(f"… the Prefect server not idle {bound:.0f} s {when}: counted so far")
                return window[-1], False, window[-1]
            time.sleep(1.0)
            window.append(self.read())
            if window[-1].at >= next_line:
                say(
                    f"… waiting for the Prefect server to go idle: "
                    f"{window[-1].at - first.at:.0f} s {when}, "
                    f"{_rate(window[-2], window[-1], self.server):.2f} CPU-s/s "
                    f"(idle {self.idle_rate[self.server]:.2f}); load {window[-1].load}"
                )
                next_line += progress_every

    def _spent(self, start: Reading, end: Reading) -> dict[str, float]:
        span = end.at - start.at
        return {
            name: end.cpu[name] - start.cpu[name] - self.idle_rate[name] * span
            for name in self.groups
        }


def _rate(earlier: Reading, later: Reading, group: str) -> float:
    span = later.at - earlier.at
    return (later.cpu[group] - earlier.cpu[group]) / span if span > 0 else 0.0


def standard_meter(
    server_pid: int | None,
    sandbox_pid: int | None,
    *,
    server_database_url: str = "",
    ledger_url: str = "",
) -> Meter:
    """Ours, the Prefect server (with its PostgreSQL backends when it has a database
    there), the sandbox, and the ledger's PostgreSQL backends (none on SQLite)."""
    server_backends = Backends(postgres_database(server_database_url))
    return Meter(
        {
            OURS: own_process,
            SERVER: lambda: tree(server_pid) + server_backends(),
            "sandbox": lambda: tree(sandbox_pid),
            "PostgreSQL": Backends(postgres_database(ledger_url)),
        }
    )


def machine_idle() -> tuple[int, int]:
    """(idle + iowait, all) CPU time of the whole machine so far, in ticks (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])
