"""Where invoiceflow keeps its default ledger: one stable place per user.

Not the working directory: cron started from another directory, a shell in
another project or a redeployed container would each find an empty ledger
there and, with it, lose every recorded intent. (Stripe stays the source of
truth either way — every step looks Stripe up before a first write — but a
ledger that moves with `cd` is a cache that is always cold.)
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """$XDG_DATA_HOME/invoiceflow, else ~/.local/share/invoiceflow."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "invoiceflow"


def default_database_path() -> Path:
    return data_dir() / "invoiceflow.db"


def default_database_url() -> str:
    return f"sqlite:///{default_database_path()}"
