"""Rate limits: GCRA, counted in Redis across workers and instances, or per worker without it.

The generic cell rate algorithm keeps one number per key, the theoretical
arrival time (TAT) of the next request: a request may pass while the TAT is
at most `burst` intervals ahead of now, and each one that passes moves it
one interval (per / requests) on. A key fresh or idle lets 1 + burst through
at once, then one per interval. In Redis the whole step is one Lua script,
run atomically by the server on its own clock: one round trip per request,
and every worker and instance shares the count. Redis unreachable or slow
(REDIS_TIMEOUT): the request passes, the failure is counted in
lb_rate_limit_redis_errors_total and logged at most once a minute per worker.
"""

import functools
import logging
import math
import os
import threading
import time

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import observe

logger = logging.getLogger(__name__)

KEY_PREFIX = "lb:rate:"

# KEYS[1]: the limit's key; ARGV: the interval and the burst tolerance, in
# microseconds. Returns {1, 0} when the request passes, else {0, microseconds
# until one would}.
GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, tat - tolerance - now}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next_tat),
           'PX', math.ceil((next_tat - now) / 1000) + 1)
return {1, 0}
"""

# After a failure, Redis is left alone this long: requests pass at once
# rather than each waiting for a timeout.
REDIS_RETRY_AFTER = 1.0
# At most one log line about Redis failing per worker in this many seconds.
REDIS_LOG_INTERVAL = 60.0
# Seconds of rounding a sum of float intervals may carry.
FLOAT_SLACK = 1e-9
# Keys a worker counts by itself (without Redis) before it forgets idle ones.
MAX_LOCAL_KEYS = 100_000


def take(key, limit):
    """Spend one request of a rate limit's budget under key.

    Return None when the request may pass, else the seconds until one would.
    """
    interval = limit.interval
    tolerance = interval * limit.burst
    if not settings.REDIS_URL:
        return LOCAL.take(key, interval, tolerance, time.monotonic())
    return REDIS.take(key, interval, tolerance)


class LocalCounter:
    """This worker's own GCRA counts, for when there is no Redis."""

    def __init__(self):
        self.tats = {}
        self.lock = threading.Lock()

    def take(self, key, interval, tolerance, now):
        with self.lock:
            tat = max(self.tats.get(key, now), now)
            if tat - now > tolerance + FLOAT_SLACK:
                return tat - tolerance - now
            self.tats[key] = tat + interval
            if len(self.tats) > MAX_LOCAL_KEYS:
                self.tats = {key: tat for key, tat in self.tats.items() if tat > now}
            return None


class RedisCounter:
    """The GCRA step in Redis: one script call per request.

    The script is registered with redis-py (register_script) and run by its
    SHA on connections this worker keeps idle itself. Through the client's
    own call, pool and retry machinery, the same round trip costs the
    balancer about four times the CPU, which would make a rate-limited rule
    a fifth dearer than a plain one.
    """

    def __init__(self):
        self.down_until = 0.0
        self.logged_at = -math.inf
        self.idle = []  # connections to Redis not in use, this process's own
        self.pid = os.getpid()

    def take(self, key, interval, tolerance):
        if time.monotonic() < self.down_until:
            observe.RATE_LIMIT_REDIS_ERRORS.inc()
            return None
        try:
            allowed, wait = self.run_script(
                KEY_PREFIX + key, max(1, round(interval * 1e6)), round(tolerance * 1e6)
            )
        except redis.RedisError as error:
            self.failed(error)
            return None
        return None if allowed else max(wait, 1) / 1e6

    def run_script(self, key, *args):
        """Run the GCRA script for a key (EVALSHA; EVAL when Redis no longer has it).

        A kept connection that fails (Redis restarted while it sat idle) is
        dropped with every other kept one, and the script runs once more on a
        new connection.
        """
        script = gcra_script()
        kept = self.kept_connection()
        if kept is not None:
            try:
                return self.run_on(kept, script, key, args)
            except redis.ConnectionError:
                self.idle.clear()  # Redis went away since they were used: all are stale
        connection = script.registered_client.connection_pool.make_connection()
        return self.run_on(connection, script, key, args)

    def run_on(self, connection, script, key, args):
        try:
            try:
                connection.send_command("EVALSHA", script.sha, 1, key, *args, check_health=False)
                result = connection.read_response()
            except redis.exceptions.NoScriptError:  # Redis restarted or flushed its scripts
                connection.send_command("EVAL", GCRA_SCRIPT, 1, key, *args, check_health=False)
                result = connection.read_response()
        except BaseException:
            connection.disconnect()  # never reused half read
            raise
        self.idle.append(connection)
        return result

    def kept_connection(self):
        """Return a connection this worker kept from an earlier call, or None."""
        if self.pid != os.getpid():  # forked: the parent's connections are not this worker's
            self.idle, self.pid = [], os.getpid()
        return self.idle.pop() if self.idle else None

    def failed(self, error):
        observe.RATE_LIMIT_REDIS_ERRORS.inc()
        now = time.monotonic()
        self.down_until = now + REDIS_RETRY_AFTER
        if now - self.logged_at >= REDIS_LOG_INTERVAL:
            self.logged_at = now
            logger.warning(
                "Rate limits: Redis at %s failed (%s: %s); requests pass uncounted "
                "while it does (logged at most once a minute, counted in "
                "lb_rate_limit_redis_errors_total)",
                redis_location(),
                type(error).__name__,
                error,
            )


@functools.cache
def gcra_script():
    """Return the GCRA script registered with this process's Redis client."""
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.REDIS_TIMEOUT,
        socket_connect_timeout=settings.REDIS_TIMEOUT,
        # A request waits for one try at most: no retries, no backoff.
        retry=Retry(NoBackoff(), 0),
    )
    return client.register_script(GCRA_SCRIPT)


def redis_location():
    """Return REDIS_URL without its password, for logs."""
    url = settings.REDIS_URL
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


LOCAL = LocalCounter()
REDIS = RedisCounter()
