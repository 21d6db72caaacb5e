"""`python -m stripe_sandbox [--port N] [fault flags]`: serve the sandbox in the foreground.

The same command as `invoiceflow sandbox` (its `pay` and `webhook-secret` too), for a
checkout where only the sandbox is wanted.
"""

from __future__ import annotations

from stripe_sandbox.cli import sandbox_app

if __name__ == "__main__":
    sandbox_app(prog_name="python -m stripe_sandbox")
