"""What the soak did, for the verifier: `journal.jsonl`, one JSON object a line.

Each entry has `t` (unix time) and `kind` (kill, stop, restart, forged_webhook,
changed_resubmission, duplicate_submission, pay, void, reconcile, phase) plus
that kind's fields. Entries carry ids, pids and statuses only: never a key, a
secret or a token (the secrets audit scans this file).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()  # the monkey, the payer and the driver all write

    def note(self, kind: str, **fields: Any) -> None:
        entry = {"t": round(time.time(), 3), "kind": kind, **fields}
        with self._lock, self.path.open("a") as out:
            out.write(json.dumps(entry) + "\n")
            self.counts[kind] += 1
