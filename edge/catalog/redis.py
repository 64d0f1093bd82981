"""The shared catalog: one Redis database that every edge of a fleet, its CLI and its admin API use.

Layout (one Redis database; nothing else in it is touched):

    edge:catalog:sandboxes   HASH   sandbox id -> the record as JSON (token hash included)
    edge:catalog:challenges  HASH   "<fqdn> <value>" -> expires_at (ACME DNS-01 TXT values)
    edge:catalog:version     STRING the catalog's version, moved by every write
    edge:catalog:changes     STREAM one entry per write: v (version), op (put|del|chal), id, rec (JSON)
    edge:catalog:done:<n>    STRING a write's result for 60 s, so a retried write is not done twice
    edge:node:<id>, edge:nodes       fleet liveness (edge/catalog/fleet.py)

Theory of operation
-------------------
Every write is one Lua script, which Redis runs atomically (a transaction, like MULTI/EXEC, that can
also compare): it changes the record, moves the version and appends the change to the stream (XADD
with an approximate MAXLEN, so the stream stays bounded). Edges never poll: edge/catalog/follow.py
reads the stream with XREAD BLOCK and applies each entry to its snapshot, so a write reaches every
edge in about a round trip.

`modify(id, change)` (add, update, rotate a token) is optimistic: read the record, let `change`
build the new one, then a compare-and-set script writes it only if the record is still exactly what
was read; if another writer got in between, read again and retry. Two concurrent updates of
different fields therefore both land, as with SQLite's BEGIN IMMEDIATE, without holding a lock
across a round trip. `delete` is one script (compare-and-delete: it removes the record only if it is
there, and says so), never a read followed by a delete.

The version starts, on a Redis that has none, at the server's clock in microseconds, and goes up by
one per write: versions stay increasing across a Redis restarted empty (the CLI and the admin API
compare versions to know an edge serves a write), and consecutive within one Redis life, so a
follower that sees a jump knows it missed entries (the stream was trimmed past it) and reads
everything again.

The client: redis-py, synchronous, in worker threads
-----------------------------------------------------
redis-py's synchronous client runs in trio worker threads (`trio.to_thread.run_sync(...,
abandon_on_cancel=True)` for the blocking XREAD). It is one pure-Python package, no further
dependencies, and works with any trio edge supports; coredis would run on trio natively (through
anyio) but needs trio >= 0.32 and six more packages, and nothing on the hot path talks to Redis, so
a thread hop per catalog operation costs nothing that matters. The store's methods are therefore
plain blocking calls, like the SQLite store's, and the same code (edge.catalog.ops) drives both.

Timeouts and retries are explicit, not redis-py's defaults (whose retries hide a dead server for
seconds): a connect gives up after CONNECT_TIMEOUT, a command after COMMAND_TIMEOUT, and a command
that failed on a broken connection is retried RETRIES times with a short backoff (RETRY_BACKOFF_BASE
doubling up to RETRY_BACKOFF_CAP): a Redis that restarts or fails over is ridden through in well
under a second; one that is down is reported in about a second (CatalogError: the admin API's 503,
the CLI's one line). Writes are idempotent under these retries: each carries a random nonce, and the
script returns the stored result when it sees the nonce again. The URL's own query parameters
(`?socket_timeout=5`) override these for that catalog.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any
from urllib.parse import urlsplit

from edge.catalog.model import Challenge, Sandbox, Snapshot
from edge.errors import CatalogError, ConfigError

log = logging.getLogger("edge.catalog")

#: Seconds to open a connection to Redis.
CONNECT_TIMEOUT = 1.0
#: Seconds one command may take (XREAD BLOCK adds its own block time to this).
COMMAND_TIMEOUT = 2.0
#: Retries of a command that failed on a broken connection or a timeout, and their backoff (seconds).
RETRIES = 2
RETRY_BACKOFF_BASE = 0.05
RETRY_BACKOFF_CAP = 0.25
#: Stream entries kept (approximately: MAXLEN ~): a follower more than this many writes behind reads
#: everything again instead.
STREAM_MAXLEN = 10000
#: Compare-and-set attempts of one modify() before it gives up (only under heavy contention on one record).
MODIFY_ATTEMPTS = 50

SANDBOXES = "edge:catalog:sandboxes"
CHALLENGES = "edge:catalog:challenges"
VERSION = "edge:catalog:version"
STREAM = "edge:catalog:changes"
DONE = "edge:catalog:done:"

# Shared by the scripts: move the version (starting at the server's clock in microseconds on a Redis
# that has none, so versions keep increasing across a restart that lost the data), then log the change.
_BUMP = """
local function bump(op, id, rec)
  local v = redis.call('INCR', KEYS[2])
  if v == 1 then
    local t = redis.call('TIME')
    v = tonumber(t[1]) * 1000000 + tonumber(t[2])
    redis.call('SET', KEYS[2], string.format('%d', v))
  end
  local vs = string.format('%d', v)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'v', vs, 'op', op, 'id', id, 'rec', rec)
  redis.call('SET', KEYS[4], vs, 'EX', 60)
  return vs
end
local done = redis.call('GET', KEYS[4])
if done then return done end
"""

# KEYS: sandboxes, version, stream, done. ARGV: maxlen, id, expected ('' = absent), record JSON.
# Returns the new version, or nil when the record is no longer what the caller read (retry).
_CAS = (
    _BUMP
    + """
local cur = redis.call('HGET', KEYS[1], ARGV[2]) or ''
if cur ~= ARGV[3] then return false end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
return bump('put', ARGV[2], ARGV[4])
"""
)

# KEYS: sandboxes, version, stream, done. ARGV: maxlen, id. Returns the new version, or '0' if absent.
_DELETE = (
    _BUMP
    + """
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then
  redis.call('SET', KEYS[4], '0', 'EX', 60)
  return '0'
end
return bump('del', ARGV[2], '')
"""
)

# KEYS: challenges, version, stream, done. ARGV: maxlen, field, expires_at, now.
# Adds (or renews) one value and drops the expired ones.
_ADD_CHALLENGE = (
    _BUMP
    + """
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= tonumber(ARGV[4]) then redis.call('HDEL', KEYS[1], all[i]) end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return bump('chal', ARGV[2], '')
"""
)

# KEYS: challenges, version, stream, done. ARGV: maxlen, field. '0' when it was not there.
_REMOVE_CHALLENGE = (
    _BUMP
    + """
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then
  redis.call('SET', KEYS[4], '0', 'EX', 60)
  return '0'
end
return bump('chal', ARGV[2], '')
"""
)


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://"))


def redis_location(url: str) -> str:
    """`redis://host:port/db` (rediss for TLS), without the password: which server and database a URL
    names, for two processes to compare (the CLI with the running edge) and for logs."""
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigError(f"catalog: {_shown(url)} is not a Redis URL ({exc})") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(f"catalog: {_shown(url)} is not a Redis URL (redis://[:PASSWORD@]HOST:PORT/DB)")
    db = parts.path.lstrip("/") or "0"
    if not db.isdigit():
        raise ConfigError(f"catalog: {_shown(url)}: the database {db!r} is not a number")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}/{int(db)}"


def _shown(url: str) -> str:
    """The URL with its password masked, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the Redis URL"
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    return url


def record_json(sandbox: Sandbox) -> str:
    return json.dumps(asdict(sandbox), separators=(",", ":"), sort_keys=True)


def record_from_json(text: str) -> Sandbox | None:
    """A stored record; None (and a warning) for one that cannot be read: it is skipped, not fatal."""
    try:
        doc = json.loads(text)
        doc["allow_out"] = tuple(v for v in doc.get("allow_out", ()) if isinstance(v, str))
        doc["deny_out"] = tuple(v for v in doc.get("deny_out", ()) if isinstance(v, str))
        return Sandbox(**doc)
    except (TypeError, ValueError, KeyError) as exc:
        log.warning("catalog: a stored record cannot be read, skipped: %r (%s)", text[:200], exc)
        return None


def challenges_from(raw: dict[str, str], now: float) -> tuple[Challenge, ...]:
    out = []
    for field, expires in raw.items():
        fqdn, _, value = field.partition(" ")
        try:
            at = float(expires)
        except ValueError:
            continue
        if value and at > now:
            out.append(Challenge(fqdn, value, at))
    return tuple(sorted(out))


class RedisStore:
    """The Store protocol (edge.catalog.store) on Redis, plus what the follower and the fleet need."""

    #: Its changes come as a stream (edge/catalog/follow.py), not by polling a version.
    streams = True

    def __init__(self, url: str, *, snapshot_file: Any = None) -> None:
        try:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry
        except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
            raise ConfigError("catalog: a redis:// catalog needs the redis package (pip install redis)") from None
        self.url = url
        self.location = redis_location(url)
        #: Where the follower keeps the last snapshot, to serve from when Redis is away at start.
        self.snapshot_file = snapshot_file
        self._errors = redis.exceptions
        options: dict[str, Any] = {
            "socket_timeout": COMMAND_TIMEOUT,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "retry": Retry(ExponentialBackoff(cap=RETRY_BACKOFF_CAP, base=RETRY_BACKOFF_BASE), RETRIES),
            "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
            "health_check_interval": 0,
            "decode_responses": True,
            "client_name": "edge",
        }
        query = urlsplit(url).query
        for key in ("socket_timeout", "socket_connect_timeout"):
            if key + "=" in query:
                del options[key]  # the URL's own value wins
        try:
            self.client = redis.Redis.from_url(url, **options)
        except ValueError as exc:
            raise ConfigError(f"catalog: {_shown(url)}: {exc}") from None
        self._cas = self.client.register_script(_CAS)
        self._delete = self.client.register_script(_DELETE)
        self._add_challenge = self.client.register_script(_ADD_CHALLENGE)
        self._remove_challenge = self.client.register_script(_REMOVE_CHALLENGE)

    # --- errors ----------------------------------------------------------------------------------------

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one Redis operation; its failure becomes one CatalogError naming the server, not the password."""
        try:
            return fn()
        except self._errors.AuthenticationError as exc:
            raise CatalogError(f"catalog {self.location}: Redis refused the password: {exc}") from None
        except (self._errors.ConnectionError, self._errors.TimeoutError) as exc:
            raise CatalogError(
                f"catalog {self.location}: Redis is unreachable ({what}: {_reason(exc)}); the edges keep"
                " serving their last snapshot, but nothing can be written until it is back"
            ) from None
        except self._errors.RedisError as exc:
            raise CatalogError(f"catalog {self.location}: Redis error ({what}): {exc}") from None

    def _script(self, script: Any, keys: list[str], *args: object) -> str | None:
        nonce = DONE + uuid.uuid4().hex
        result = self.call("write", lambda: script(keys=[*keys, nonce], args=[STREAM_MAXLEN, *args]))
        return None if result is None else str(result)

    # --- the Store protocol ----------------------------------------------------------------------------

    def put(self, sandbox: Sandbox) -> Sandbox:
        stored = self.modify(sandbox.id, lambda old: sandbox)
        assert stored is not None
        return stored

    def modify(self, sandbox_id: str, change: Callable[[Sandbox | None], Sandbox | None]) -> Sandbox | None:
        """Read the record, write what `change` makes of it if nobody wrote it meanwhile, else again.

        `change` may run more than once (once per attempt); what it raises propagates, nothing written."""
        for attempt in range(MODIFY_ATTEMPTS):
            raw = self.call("read", lambda: self.client.hget(SANDBOXES, sandbox_id))
            old = record_from_json(raw) if raw else None
            new = change(old)
            if new is None:
                return old
            now = time.time()
            new = replace(new, created_at=old.created_at if old else now, updated_at=now)
            keys = [SANDBOXES, VERSION, STREAM]
            if self._script(self._cas, keys, new.id, raw or "", record_json(new)) is not None:
                return new
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # another writer won: read again
        raise CatalogError(f"catalog {self.location}: sandbox {sandbox_id!r} changed by others on every try")

    def get(self, sandbox_id: str) -> Sandbox | None:
        raw = self.call("read", lambda: self.client.hget(SANDBOXES, sandbox_id))
        return record_from_json(raw) if raw else None

    def delete(self, sandbox_id: str) -> bool:
        return self._script(self._delete, [SANDBOXES, VERSION, STREAM], sandbox_id) not in (None, "0")

    def list(self) -> list[Sandbox]:
        raw = self.call("read", lambda: self.client.hgetall(SANDBOXES))
        records = (record_from_json(text) for text in raw.values())
        return sorted((r for r in records if r is not None), key=lambda r: r.id)

    def version(self) -> int:
        return int(self.call("read", lambda: self.client.get(VERSION)) or 0)

    def read_all(self) -> tuple[str, int, dict[str, Sandbox], tuple[Challenge, ...]]:
        """(stream tip id, version, records, challenges), all read in one MULTI/EXEC: the tip is the
        last change the records include, so a follower reading from it misses nothing and applies
        nothing twice."""

        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=True)
            pipe.xrevrange(STREAM, count=1)
            pipe.get(VERSION)
            pipe.hgetall(SANDBOXES)
            pipe.hgetall(CHALLENGES)
            return pipe.execute()

        tip, version, raw, held = self.call("read", read)
        records = {}
        for text in raw.values():
            record = record_from_json(text)
            if record is not None:
                records[record.id] = record
        return (tip[0][0] if tip else "0-0"), int(version or 0), records, challenges_from(held, time.time())

    def snapshot(self) -> Snapshot:
        _, version, records, held = self.read_all()
        return Snapshot(records.values(), version, held)

    def add_challenge(self, challenge: Challenge) -> None:
        field = f"{challenge.fqdn} {challenge.value}"
        self._script(self._add_challenge, [CHALLENGES, VERSION, STREAM], field, repr(challenge.expires_at), time.time())

    def remove_challenge(self, fqdn: str, value: str) -> bool:
        removed = self._script(self._remove_challenge, [CHALLENGES, VERSION, STREAM], f"{fqdn} {value}")
        return removed not in (None, "0")

    def challenges(self) -> tuple[Challenge, ...]:
        return challenges_from(self.call("read", lambda: self.client.hgetall(CHALLENGES)), time.time())

    def close(self) -> None:
        self.client.close()

    # --- for the follower (edge/catalog/follow.py) -----------------------------------------------------

    def run_id(self) -> str:
        """The Redis server's run_id: a new one means a restart, after which the stream may be another."""
        return str(self.call("info", lambda: self.client.info("server"))["run_id"])

    def changes(self, after: str, block: float, reader: Any) -> Any:
        """Stream entries after `after`, waiting up to `block` seconds for the first; [] when none came.
        `reader` is the follower's own client (a blocked read holds its connection)."""
        reply = self.call("xread", lambda: reader.xread({STREAM: after}, count=1000, block=int(block * 1000)))
        return list(reply[0][1]) if reply else []

    def reader(self, block: float) -> Any:
        """A client for blocking reads: its socket timeout covers the block time, and it never retries
        a read by itself (the follower decides what a failure means)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis.from_url(
            self.url,
            socket_timeout=block + COMMAND_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            client_name="edge-follower",
        )


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
