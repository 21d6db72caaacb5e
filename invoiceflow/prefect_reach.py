"""Is Prefect's API there? Asked once, in a second or so, before a command
starts a flow run or serves deployments, instead of after Prefect's client has
retried for a while and failed with a traceback.

Unreachable is a temporary failure (exit 5): the server may be starting, or be
back in a minute. Only the connection counts: any HTTP answer means a server is
there, and its own errors (auth, versions) are Prefect's to report.
"""

from __future__ import annotations

from urllib.parse import urlsplit

# Long enough for a busy local server to accept a connection; a refused one fails at once.
TIMEOUT_SECONDS = 5.0


class PrefectUnreachable(RuntimeError):
    """Prefect's API did not accept a connection. The message names it and the fix."""


def shown(url: str) -> str:
    """`url` without credentials, for a message."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def require_reachable(api_url: str | None) -> None:
    """Raise `PrefectUnreachable` unless something answers HTTP at `api_url`.

    None: no PREFECT_API_URL, so Prefect starts a temporary server of its own.
    """
    import httpx

    if not api_url:
        return
    try:
        httpx.get(f"{api_url.rstrip('/')}/health", timeout=TIMEOUT_SECONDS)
    except httpx.TransportError as exc:
        raise PrefectUnreachable(one_line(api_url, exc)) from None


def one_line(api_url: str | None, exc: BaseException) -> str:
    """What `is_prefect_unreachable(exc)` means, naming the address and the setting."""
    import httpx

    if isinstance(exc, PrefectUnreachable):
        return str(exc)
    reason = "timed out" if isinstance(exc, httpx.TimeoutException) else "no connection"
    return (
        f"Prefect API unreachable at {shown(api_url or '')} ({reason}); start it "
        "('prefect server start') or fix PREFECT_API_URL, then run this again"
    )


def is_prefect_unreachable(exc: BaseException) -> bool:
    """Ours, or Prefect's client giving up on its API mid-run (connection-level only)."""
    import httpx

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, PrefectUnreachable | httpx.TransportError):
            return True
        if isinstance(seen, RuntimeError) and str(seen).startswith("Failed to reach API at"):
            return True
        seen = seen.__cause__
    return False
