"""The service's one ASGI app, composed of sub-apps that each own a path prefix.

Sub-apps see the full path (`/webhooks/stripe`, not `/stripe`), so an app built
on its own (like `invoiceflow.webhooks.create_app`) mounts unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from invoiceflow.service.trigger import create_trigger_app
from invoiceflow.settings import Settings
from invoiceflow.webhooks.app import create_app as create_webhook_app


@dataclass(frozen=True)
class Mount:
    prefix: str  # e.g. "/invoices": that path and everything below it
    app: ASGIApp

    def owns(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix.rstrip("/") + "/")


def compose(mounts: Sequence[Mount]) -> ASGIApp:
    """One app dispatching each request to the first mount owning its path."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return  # uvicorn runs with lifespan="off"; nothing else is expected
        for mount in mounts:
            if mount.owns(scope["path"]):
                await mount.app(scope, receive, send)
                return
        await JSONResponse({"errors": ["not found"]}, status_code=404)(scope, receive, send)

    return app


def build_app(settings: Settings) -> ASGIApp:
    return compose(
        [
            Mount("/invoices", create_trigger_app(settings)),
            Mount("/webhooks", create_webhook_app(settings)),
        ]
    )
