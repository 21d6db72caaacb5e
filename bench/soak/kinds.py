"""The fault kinds of issue 19, each of which a soak can leave out (`--without KIND,...`).

The older faults (kills, pauses, Stripe's failures, forged signatures, abused webhook
delivery) are always on; these came later, and each one is switched on by default.
"""

from __future__ import annotations

KINDS: dict[str, str] = {
    "foreign_events": "correctly signed events of another account (`account` set), of the"
    " other mode (`livemode` flipped) or of an invoice Stripe does not show under our key:"
    " kept as ignored, never applied",
    "weak_signatures": "events signed with a weak secret (`whsec_`, empty, short): refused"
    " with 400; and serve given a weak secret in its list must refuse to start",
    "serve_kill_at_start": "serve SIGKILLed while its runner starts an HTTP-triggered run;"
    " the documented duplicate POST must get the request billed",
    "worker_kill_pending": "every worker SIGKILLed while a billing-shard run is PENDING; the"
    " billing run must end by itself",
    "redis_down": "the rate limiter's Redis down for a while; the requests it held up are"
    " billed once it is back (and no Stripe write goes out without a slot)",
}


def parse_without(text: str | None) -> frozenset[str]:
    """The kinds left on after `--without a,b`; an unknown name is refused in one line."""
    left_out = {name.strip() for name in (text or "").split(",") if name.strip()}
    unknown = sorted(left_out - set(KINDS))
    if unknown:
        raise ValueError(
            f"--without: unknown fault kind {', '.join(unknown)}; the kinds are " + ", ".join(KINDS)
        )
    return frozenset(KINDS) - left_out
