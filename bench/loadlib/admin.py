"""The edge's admin API, as the generator uses it: register, look up and remove sandboxes.

`PUT /v1/sandboxes/{id}` with `{"address", "public"}` answers the record, and for a private sandbox
its `traffic_access_token` (shown this once); `DELETE` answers 204 (404 if already gone);
`GET` answers the record. One connection per call (`connection: close`): registration is not what is
measured, and a fresh connection cannot be caught by the admin server's idle timeout.
"""

from __future__ import annotations

import json
import math

import trio

from bench.loadlib import wire
from bench.loadlib.conn import Conn, LoadError
from bench.loadlib.options import Sandbox, Target


class AdminError(Exception):
    pass


class Admin:
    def __init__(self, target: Target, token: str, ssl_ctx=None) -> None:
        self.target = target
        self.token = token
        self.ssl_ctx = ssl_ctx

    async def call(self, method: str, path: str, doc: dict | None = None, timeout: float = 10.0) -> tuple[int, dict]:
        body = json.dumps(doc).encode() if doc is not None else b""
        headers = [("authorization", f"Bearer {self.token}"), ("connection", "close")]
        if doc is not None:
            headers.append(("content-type", "application/json"))
        host = f"{self.target.host}{self.target.suffix}"
        head = wire.request_head(method, path, host, headers, len(body) if doc is not None else None)
        deadline = trio.current_time() + timeout
        with trio.move_on_at(deadline):
            conn = await Conn.open(self.target, deadline, self.ssl_ctx, self.target.host)
            try:
                await conn.send(head + body)
                answer, _, raw = await conn.response(method, keep=1 << 20)
            finally:
                conn.close()
            return answer.status, _json(raw)
        raise AdminError(f"{method} {path}: no answer within {timeout:g} s")

    async def put(self, sandbox_id: str, address: str, public: bool = True) -> dict:
        status, doc = await self.call("PUT", f"/v1/sandboxes/{sandbox_id}", {"address": address, "public": public})
        if status != 200:
            raise AdminError(f"PUT {sandbox_id}: {status} {doc.get('message', doc)}")
        return doc

    async def delete(self, sandbox_id: str) -> bool:
        """True when it was removed, False when it was not there."""
        status, doc = await self.call("DELETE", f"/v1/sandboxes/{sandbox_id}")
        if status not in (204, 404):
            raise AdminError(f"DELETE {sandbox_id}: {status} {doc.get('message', doc)}")
        return status == 204

    async def get(self, sandbox_id: str) -> dict | None:
        status, doc = await self.call("GET", f"/v1/sandboxes/{sandbox_id}")
        if status == 404:
            return None
        if status != 200:
            raise AdminError(f"GET {sandbox_id}: {status} {doc.get('message', doc)}")
        return doc


def _json(raw: bytes) -> dict:
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        return {"message": raw[:200].decode("latin-1")}
    return doc if isinstance(doc, dict) else {"body": doc}


async def register(
    admin: Admin,
    prefix: str,
    count: int,
    addresses: list[str],
    port: int,
    private: float,
    concurrency: int = 16,
    on_progress=None,
) -> list[Sandbox]:
    """Register `count` sandboxes `<prefix>-<i>` on `addresses` in turn; the first `private` share of them
    private (their tokens kept). Raises AdminError on the first refusal (those already made are returned
    through the exception's `.made` for removal)."""
    made: list[Sandbox | None] = [None] * count
    n_private = math.floor(count * private + 0.5)
    queue = iter(range(count))
    failure: list[BaseException] = []

    async def one_by_one() -> None:
        for i in queue:
            if failure:
                return
            sid, address = f"{prefix}-{i}", addresses[i % len(addresses)]
            try:
                doc = await admin.put(sid, address, public=i >= n_private)
            except (AdminError, LoadError) as exc:
                failure.append(exc)
                return
            made[i] = Sandbox(sid, port, doc.get("traffic_access_token"), address)
            if on_progress is not None:
                on_progress(sum(m is not None for m in made))

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(one_by_one)
    done = [m for m in made if m is not None]
    if failure:
        err = AdminError(f"registering sandboxes: {failure[0]}")
        err.made = done  # type: ignore[attr-defined]
        raise err
    return done


async def remove(admin: Admin, ids: list[str], concurrency: int = 16) -> list[str]:
    """Remove every ID; returns the ones that could not be removed."""
    queue = iter(ids)
    left: list[str] = []

    async def one_by_one() -> None:
        for sid in queue:
            try:
                await admin.delete(sid)
            except (AdminError, LoadError):
                left.append(sid)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(one_by_one)
    return left
