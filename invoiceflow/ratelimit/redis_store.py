"""The TATs in Redis, for sharers that have Redis but not one PostgreSQL.

One Lua script does the whole step atomically on the server, with Redis's
`TIME` as the clock every client shares. The key expires a minute after its
TAT: an idle limit leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

import redis

from invoiceflow.ratelimit.gcra import Budget, RateLimitStoreDown

# KEYS[1]: the limit. ARGV: interval, allowance, push-back seconds (-1: reserve).
# Returns the wait as a string: Lua numbers would be truncated to integers.
_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval = tonumber(ARGV[1])
local allowance = tonumber(ARGV[2])
local push = tonumber(ARGV[3])
local wait = 0
if push >= 0 then
    tat = math.max(tat, now + push + allowance)
else
    tat = math.max(tat, now) + interval
    wait = math.max(0, tat - allowance - now)
end
redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', math.ceil((tat - now + 60) * 1000))
return string.format('%.6f', wait)
"""


class RedisStore:
    def __init__(self, url: str) -> None:
        self._client: Any = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
        # register_script runs EVALSHA, reloading the script if Redis lost it.
        self._script: Any = self._client.register_script(_SCRIPT)

    def _run(self, budget: Budget, push: float) -> float:
        key = f"invoiceflow:stripe_rate_limit:{budget.name}"
        try:
            result = self._script(keys=[key], args=[budget.interval, budget.allowance, push])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Down, restarting, still loading its data, or refusing our credentials:
            # no slot, so no call. (Redis's messages name the host, never the password.)
            raise RateLimitStoreDown("Redis", exc) from exc
        return float(result)

    def reserve(self, budget: Budget) -> float:
        return self._run(budget, -1.0)

    def push_back(self, budget: Budget, seconds: float) -> None:
        self._run(budget, max(0.0, seconds))

    def close(self) -> None:
        self._client.close()
