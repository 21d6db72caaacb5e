"""`python -m invoiceflow.webhooks [--host H] [--port P]`: the receiver alone, until `serve`."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from invoiceflow.settings import SettingsError, load_settings
from invoiceflow.webhooks.app import create_app


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m invoiceflow.webhooks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    args = parser.parse_args()
    try:
        app = create_app(load_settings())
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
