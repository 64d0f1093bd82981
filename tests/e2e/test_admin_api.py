"""The admin API on a real socket: CRUD, tokens, auth, validation, metrics, status, and a fuzzer.

Most tests start the admin server in-process on port 0 (`serve(config, store, live)` in the test's
nursery) and talk to it with httpx; the ones about the command line run `edge serve` and `edge` as
processes, the way people do.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import sys
from dataclasses import dataclass

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from edge import config as config_mod
from edge.admin.server import serve
from edge.catalog.store import LiveCatalog, Store, open_store, watch
from edge.errors import ConfigError
from tests.backends import Backend
from tests.conftest import curl
from tests.proc import EdgeProcess, edge_cli, edge_env, listening

TOKEN = "test-admin-token-0123456789"


@dataclass
class Admin:
    url: str
    store: Store
    config: config_mod.Config

    def client(self, token: str | None = TOKEN) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)


@pytest.fixture(autouse=True)
def _no_env_token(monkeypatch):
    monkeypatch.delenv("EDGE_ADMIN_TOKEN", raising=False)


@pytest.fixture
def make_admin(nursery, tmp_path):
    """Start an admin server in-process: `await make_admin(token=..., listen=...)`."""

    async def start(token: str = TOKEN, listen: str = "127.0.0.1:0", within: trio.Nursery | None = None) -> Admin:
        cfg = config_mod.load(
            env={},
            overrides={
                "state_dir": str(tmp_path / "state"),
                "catalog": f"sqlite:///{tmp_path}/catalog.db",
                "admin": {"listen": listen, "token": token},
            },
        )
        store = open_store(cfg.catalog_url)
        live = LiveCatalog()
        where = within or nursery
        await where.start(watch, store, live, 0.05)
        bound = await where.start(serve, cfg, store, live)
        return Admin(f"http://127.0.0.1:{bound[0][1]}", store, cfg)

    return start


@pytest.fixture
async def admin(make_admin):
    return await make_admin()


# --- the catalog through the API ---------------------------------------------------------------------


async def test_crud_round_trip(admin):
    """PUT creates, GET and list show it, PUT again updates in place, DELETE removes it (then 404)."""
    async with admin.client() as c:
        r = await c.put("/v1/sandboxes/demo", json={"address": "127.0.0.2", "mask_request_host": "localhost:${PORT}"})
        assert r.status_code == 200, r.text
        created = r.json()
        assert {k: created[k] for k in ("id", "address", "public", "mask_request_host", "max_connections")} == {
            "id": "demo",
            "address": "127.0.0.2",
            "public": True,
            "mask_request_host": "localhost:${PORT}",
            "max_connections": None,
        }
        assert "traffic_access_token" not in created  # public: no token
        assert (await c.get("/v1/sandboxes/demo")).json() == created
        assert [s["id"] for s in (await c.get("/v1/sandboxes")).json()] == ["demo"]

        r = await c.put("/v1/sandboxes/demo", json={"address": "::1", "max_connections": 8})
        updated = r.json()
        assert (updated["address"], updated["max_connections"], updated["mask_request_host"]) == ("::1", 8, None)
        assert updated["created_at"] == created["created_at"] and updated["updated_at"] >= created["updated_at"]

        r = await c.delete("/v1/sandboxes/demo")
        assert r.status_code == 204 and r.content == b""
        for r in (await c.get("/v1/sandboxes/demo"), await c.delete("/v1/sandboxes/demo")):
            assert r.status_code == 404
            assert r.json() == {"code": "not_found", "message": "no sandbox 'demo' in the catalog"}
        assert (await c.get("/v1/sandboxes")).json() == []


async def test_private_sandbox_token_is_shown_once_and_never_listed(admin):
    """Creating a private sandbox returns its token once; GET and list never show it or its hash."""
    async with admin.client() as c:
        r = await c.put("/v1/sandboxes/secret", json={"address": "127.0.0.2", "public": False})
        token = r.json()["traffic_access_token"]
        assert len(token) >= 22  # at least 128 bits in url-safe base64
        stored = admin.store.get("secret").token_hash
        assert stored == hashlib.sha256(token.encode()).hexdigest()
        # Updating a sandbox that is private already keeps its token and does not show it again.
        again = (await c.put("/v1/sandboxes/secret", json={"address": "127.0.0.3", "public": False})).json()
        assert "traffic_access_token" not in again and admin.store.get("secret").token_hash == stored
        for body in ((await c.get("/v1/sandboxes/secret")).text, (await c.get("/v1/sandboxes")).text):
            assert token not in body and stored not in body and "token" not in body


async def test_rotation_returns_a_new_token_and_changes_the_stored_hash(admin):
    """POST .../token answers with a new token; the stored hash becomes the new token's."""
    async with admin.client() as c:
        first = (await c.put("/v1/sandboxes/rot", json={"address": "127.0.0.2", "public": False})).json()
        r = await c.post("/v1/sandboxes/rot/token")
        assert r.status_code == 200
        new = r.json()["traffic_access_token"]
        assert new != first["traffic_access_token"]
        assert admin.store.get("rot").token_hash == hashlib.sha256(new.encode()).hexdigest()
        r = await c.post("/v1/sandboxes/nobody/token")
        assert r.status_code == 404 and r.json()["code"] == "not_found"


async def test_rotation_of_a_public_sandbox_is_a_409_and_it_stays_public(admin):
    """POST .../token never makes a public sandbox private: 409 sandbox_public, naming the PATCH to use."""
    async with admin.client() as c:
        await c.put("/v1/sandboxes/pub", json={"address": "127.0.0.2", "max_connections": 3})
        r = await c.post("/v1/sandboxes/pub/token")
        assert r.status_code == 409, r.text
        doc = r.json()
        assert doc["code"] == "sandbox_public" and "traffic_access_token" not in doc
        assert 'PATCH /v1/sandboxes/pub {"public": false}' in doc["message"]
    stored = admin.store.get("pub")
    assert (stored.public, stored.token_hash, stored.max_connections) == (True, None, 3)


# --- PATCH: change only the fields named (JSON merge patch) -------------------------------------------

GUARDED = {"address": "127.0.0.2", "public": False, "max_connections": 5, "mask_request_host": "localhost:${PORT}"}

PATCHES = [
    # label, merge patch, the fields that change (every other field keeps its value)
    ("address only", {"address": "127.0.0.3"}, {"address": "127.0.0.3"}),
    ("limit only", {"max_connections": 9}, {"max_connections": 9}),
    ("null removes the limit", {"max_connections": None}, {"max_connections": None}),
    ("null removes the mask", {"mask_request_host": None}, {"mask_request_host": None}),
    ("mask changed", {"mask_request_host": "app:${PORT}"}, {"mask_request_host": "app:${PORT}"}),
    ("private again: nothing changes", {"public": False}, {}),
    ("empty patch: nothing changes", {}, {}),
    ("several at once", {"address": "::1", "max_connections": None}, {"address": "::1", "max_connections": None}),
    (
        "outbound policy, in normal form",
        {"internet_access": False, "allow_out": ["*.Example.com.", "198.51.100.7/32"], "deny_out": ["192.0.2.0/24"]},
        {"internet_access": False, "allow_out": ["*.example.com", "198.51.100.7"], "deny_out": ["192.0.2.0/24"]},
    ),
    ("null empties a list", {"allow_out": None}, {}),
]


@pytest.mark.parametrize("label, patch, changed", PATCHES, ids=[p[0] for p in PATCHES])
async def test_patch_changes_only_the_fields_it_names(admin, label, patch, changed):
    """PATCH keeps every field it does not name, the token included; it shows no token."""
    async with admin.client() as c:
        before = (await c.put("/v1/sandboxes/secret2", json=GUARDED)).json()
        stored_hash = admin.store.get("secret2").token_hash
        r = await c.patch("/v1/sandboxes/secret2", json=patch)
    assert r.status_code == 200, (label, r.text)
    after = r.json()
    assert "traffic_access_token" not in after, label
    del before["traffic_access_token"], before["updated_at"], after["updated_at"]
    assert after == {**before, **changed}, label
    assert admin.store.get("secret2").token_hash == stored_hash, label


@pytest.mark.parametrize(
    "label, content_type",
    [
        ("RFC 7396's media type", "application/merge-patch+json"),
        ("plain JSON", "application/json"),
        ("merge patch with a charset", "application/merge-patch+json; charset=utf-8"),
    ],
)
async def test_patch_accepts_merge_patch_and_plain_json(admin, label, content_type):
    """The same merge patch is applied whether sent as application/merge-patch+json or application/json."""
    async with admin.client() as c:
        await c.put("/v1/sandboxes/demo", json={"address": "127.0.0.2", "max_connections": 5})
        r = await c.patch(
            "/v1/sandboxes/demo", content=b'{"max_connections": null}', headers={"content-type": content_type}
        )
    assert r.status_code == 200, (label, r.text)
    assert r.json()["max_connections"] is None and admin.store.get("demo").max_connections is None, label


@pytest.mark.parametrize(
    "label, method, content_type, accept_patch",
    [
        ("PATCH as text", "PATCH", "text/plain", "application/merge-patch+json, application/json"),
        (
            "PATCH as a JSON patch (RFC 6902)",
            "PATCH",
            "application/json-patch+json",
            "application/merge-patch+json, application/json",
        ),
        ("PUT as a form (curl -d without -H)", "PUT", "application/x-www-form-urlencoded", None),
        ("PUT as a merge patch", "PUT", "application/merge-patch+json", None),
        ("PATCH with no content type", "PATCH", None, "application/merge-patch+json, application/json"),
    ],
)
async def test_a_body_of_another_media_type_is_a_415_and_changes_nothing(
    admin, label, method, content_type, accept_patch
):
    """A JSON body declared as another type is 415 unsupported_media_type; a PATCH's names Accept-Patch."""
    async with admin.client() as c:
        await c.put("/v1/sandboxes/demo", json={"address": "127.0.0.2", "max_connections": 5})
        before = admin.store.get("demo")
        r = await c.request(
            method,
            "/v1/sandboxes/demo",
            content=b'{"address": "127.0.0.3"}',
            headers={"content-type": content_type} if content_type else {},
        )
    assert r.status_code == 415, (label, r.text)
    assert r.json()["code"] == "unsupported_media_type" and (content_type or "Content-Type") in r.json()["message"]
    assert r.headers.get("accept-patch") == accept_patch, label
    assert admin.store.get("demo") == before, label


async def test_patch_private_answers_a_new_token_once_and_public_forgets_it(admin):
    """{"public": false} on a public sandbox answers its token once; {"public": true} drops the hash."""
    async with admin.client() as c:
        await c.put("/v1/sandboxes/flip", json={"address": "127.0.0.2", "max_connections": 3})
        made = (await c.patch("/v1/sandboxes/flip", json={"public": False})).json()
        token = made["traffic_access_token"]
        assert made["public"] is False and made["max_connections"] == 3
        assert admin.store.get("flip").token_hash == hashlib.sha256(token.encode()).hexdigest()
        public = (await c.patch("/v1/sandboxes/flip", json={"public": True})).json()
    assert (public["public"], public["max_connections"]) == (True, 3) and "traffic_access_token" not in public
    assert admin.store.get("flip").token_hash is None


PATCH_ERRORS = [
    # label, merge patch, field
    ("address removed", {"address": None}, "address"),
    ("public removed", {"public": None}, "public"),
    ("address at the metadata service", {"address": "169.254.169.254"}, "address"),
    ("address unspecified", {"address": "0.0.0.0"}, "address"),
    ("limit zero", {"max_connections": 0}, "max_connections"),
    ("public a string", {"public": "false"}, "public"),
    ("unknown field", {"token_hash": "0" * 64}, "token_hash"),
    ("body an array", [{"address": "127.0.0.3"}], "body"),
    ("allow_out entry not a name", {"allow_out": ["not a name"]}, "allow_out"),
    ("deny_out not a list", {"deny_out": "192.0.2.0/24"}, "deny_out"),
    ("internet_access removed", {"internet_access": None}, "internet_access"),
]


@pytest.mark.parametrize("label, patch, field", PATCH_ERRORS, ids=[p[0] for p in PATCH_ERRORS])
async def test_bad_patches_are_422_and_change_nothing(admin, label, patch, field):
    """An invalid patch names its field; the sandbox keeps every value."""
    async with admin.client() as c:
        await c.put("/v1/sandboxes/secret2", json=GUARDED)
        before = admin.store.get("secret2")
        r = await c.patch("/v1/sandboxes/secret2", json=patch)
    assert r.status_code == 422, (label, r.text)
    assert r.json()["code"] == "invalid" and r.json()["field"] == field, (label, r.json())
    assert admin.store.get("secret2") == before, label


async def test_patch_of_an_absent_sandbox_is_a_404_and_creates_nothing(admin):
    """PATCH never creates a sandbox."""
    async with admin.client() as c:
        r = await c.patch("/v1/sandboxes/ghost", json={"address": "127.0.0.2"})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert admin.store.get("ghost") is None


async def test_put_is_full_replacement(admin):
    """PUT with only an address makes a private, limited, masked sandbox public with no limit nor mask."""
    async with admin.client() as c:
        await c.put("/v1/sandboxes/secret2", json=GUARDED)
        doc = (await c.put("/v1/sandboxes/secret2", json={"address": "127.0.0.3"})).json()
    assert (doc["public"], doc["max_connections"], doc["mask_request_host"]) == (True, None, None)
    assert admin.store.get("secret2").token_hash is None


# --- auth -----------------------------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/v1/sandboxes"),
    ("GET", "/v1/sandboxes/demo"),
    ("PUT", "/v1/sandboxes/demo"),
    ("PATCH", "/v1/sandboxes/demo"),
    ("DELETE", "/v1/sandboxes/demo"),
    ("POST", "/v1/sandboxes/demo/token"),
    ("GET", "/v1/status"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
]


@pytest.mark.parametrize(
    "label, token, message",
    [
        ("no token", None, "missing bearer token"),
        ("wrong token", "not-the-token", "invalid bearer token"),
        ("a prefix of the token", TOKEN[:-1], "invalid bearer token"),
    ],
)
async def test_every_endpoint_but_healthz_needs_the_token(admin, label, token, message):
    """Without the right bearer token every endpoint answers 401 JSON with WWW-Authenticate: Bearer."""
    async with admin.client(token) as c:
        for method, path in ENDPOINTS:
            r = await c.request(method, path, json={"address": "127.0.0.2"} if method in ("PUT", "PATCH") else None)
            assert r.status_code == 401, (label, method, path)
            assert r.json() == {"code": "unauthorized", "message": message}, (label, path)
            assert r.headers["www-authenticate"].startswith("Bearer"), (label, path)
    assert admin.store.list() == []  # the refused PUT wrote nothing


async def test_other_auth_schemes_are_refused(admin):
    """Basic auth, or the token without the Bearer scheme, is not accepted."""
    async with httpx.AsyncClient(base_url=admin.url) as c:
        for value in (f"Basic {TOKEN}", TOKEN, f"Token {TOKEN}"):
            assert (await c.get("/v1/sandboxes", headers={"Authorization": value})).status_code == 401, value


async def test_healthz_needs_no_token(admin):
    """/healthz answers 200 to anyone."""
    async with admin.client(None) as c:
        r = await c.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


# --- validation -----------------------------------------------------------------------------------------

VALIDATION = [
    # label, path id, body, field
    ("id with upper case", "Demo", {"address": "127.0.0.2"}, "id"),
    ("id with a dot", "a.b", {"address": "127.0.0.2"}, "id"),
    ("id ending in a dash", "demo-", {"address": "127.0.0.2"}, "id"),
    ("id too long", "a" * 64, {"address": "127.0.0.2"}, "id"),
    ("address missing", "demo", {}, "address"),
    ("address a host name", "demo", {"address": "localhost"}, "address"),
    ("address with a port", "demo", {"address": "127.0.0.2:80"}, "address"),
    ("address a number", "demo", {"address": 2130706433}, "address"),
    ("address unspecified", "demo", {"address": "0.0.0.0"}, "address"),
    ("address IPv6 unspecified", "demo", {"address": "::"}, "address"),
    ("address the metadata service", "demo", {"address": "169.254.169.254"}, "address"),
    ("address IPv4-mapped metadata", "demo", {"address": "::ffff:169.254.169.254"}, "address"),
    ("address IPv4-mapped unspecified", "demo", {"address": "::ffff:0.0.0.0"}, "address"),
    ("address with a zone ID", "demo", {"address": "fe80::1%eth0"}, "address"),
    ("address IPv6 link-local", "demo", {"address": "fe80::1"}, "address"),
    ("address broadcast", "demo", {"address": "255.255.255.255"}, "address"),
    ("address multicast", "demo", {"address": "224.0.0.1"}, "address"),
    ("public a string", "demo", {"address": "127.0.0.2", "public": "false"}, "public"),
    ("public null", "demo", {"address": "127.0.0.2", "public": None}, "public"),
    ("mask with a path", "demo", {"address": "127.0.0.2", "mask_request_host": "a/b"}, "mask_request_host"),
    (
        "mask with control chars",
        "demo",
        {"address": "127.0.0.2", "mask_request_host": "a\r\nX: y"},
        "mask_request_host",
    ),
    ("mask a number", "demo", {"address": "127.0.0.2", "mask_request_host": 80}, "mask_request_host"),
    ("max_connections zero", "demo", {"address": "127.0.0.2", "max_connections": 0}, "max_connections"),
    ("max_connections negative", "demo", {"address": "127.0.0.2", "max_connections": -1}, "max_connections"),
    (
        "max_connections over a million",
        "demo",
        {"address": "127.0.0.2", "max_connections": 10**6 + 1},
        "max_connections",
    ),
    ("max_connections a string", "demo", {"address": "127.0.0.2", "max_connections": "10"}, "max_connections"),
    ("max_connections a fraction", "demo", {"address": "127.0.0.2", "max_connections": 1.5}, "max_connections"),
    ("unknown field", "demo", {"address": "127.0.0.2", "traffic_access_token": "mine"}, "traffic_access_token"),
    ("a typo of a field", "demo", {"address": "127.0.0.2", "mask_request_hots": "x"}, "mask_request_hots"),
    ("body an array", "demo", [{"address": "127.0.0.2"}], "body"),
    ("body a string", "demo", "127.0.0.2", "body"),
]


@pytest.mark.parametrize("label, sandbox_id, body, field", VALIDATION, ids=[v[0] for v in VALIDATION])
async def test_validation_errors_name_the_field_and_the_reason(admin, label, sandbox_id, body, field):
    """Each invalid request is a 422 whose JSON names the field and why; nothing is written."""
    async with admin.client() as c:
        r = await c.put(f"/v1/sandboxes/{sandbox_id}", json=body)
    assert r.status_code == 422, (label, r.text)
    doc = r.json()
    assert doc["code"] == "invalid" and doc["field"] == field, (label, doc)
    assert doc["reason"] and doc["reason"] in doc["message"], (label, doc)
    assert {"field": field, "reason": doc["reason"]} in doc["errors"], (label, doc)
    assert admin.store.list() == []


async def test_validation_reasons_are_the_catalogs_own(admin):
    """The API gives the same reasons as the CLI: the catalog's validators."""
    async with admin.client() as c:
        r = await c.put("/v1/sandboxes/demo", json={"address": "localhost", "extra": 1})
    doc = r.json()
    assert doc["errors"] == [
        {"field": "address", "reason": "'localhost' is not an IP address"},
        {"field": "extra", "reason": "unknown field"},
    ]


@pytest.mark.parametrize(
    "label, content",
    [
        ("cut short", b'{"address": "127.0.0.2"'),
        ("single quotes", b"{'address': '127.0.0.2'}"),
        ("trailing comma", b'{"address": "127.0.0.2",}'),
        ("not utf-8", b'{"address": "\xff"}'),
    ],
)
async def test_malformed_json_is_a_400(admin, label, content):
    """A body that is not JSON at all is 400 malformed_json, not a validation error."""
    async with admin.client() as c:
        r = await c.put("/v1/sandboxes/demo", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, (label, r.text)
    assert r.json()["code"] == "malformed_json", label


async def test_body_past_the_limit_is_a_413_and_nothing_is_written(admin):
    """A 100 KiB body (declared, or chunked with no length) is refused 413 before any route reads it."""
    big = json.dumps({"address": "127.0.0.2", "mask_request_host": "x" * 100_000}).encode()

    async def chunked():
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    async with admin.client() as c:
        r = await c.put("/v1/sandboxes/demo", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["code"] == "body_too_large"
    async with admin.client() as c:
        r = await c.put("/v1/sandboxes/demo", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["code"] == "body_too_large"
        assert "transfer-encoding" in r.request.headers
    async with admin.client() as c:
        assert (await c.get("/v1/sandboxes/demo")).status_code == 404
        r = await c.put("/v1/sandboxes/demo", json={"address": "127.0.0.2"})
        assert r.status_code == 200


async def test_a_large_body_without_the_token_is_a_401(admin):
    """The token is checked before the body: no token, 401, whatever the body's size."""
    async with admin.client(token=None) as c:
        r = await c.put("/v1/sandboxes/demo", content=b"x" * 200_000)
    assert r.status_code == 401


async def test_unknown_paths_and_methods_answer_json(admin):
    """404 and 405 are JSON too; 405 lists every method the resource allows."""
    async with admin.client() as c:
        r = await c.get("/v2/nothing")
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        r = await c.post("/v1/sandboxes/demo")
        assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
        assert set(r.headers["allow"].split(", ")) == {"GET", "PUT", "PATCH", "DELETE"}


async def test_an_unreadable_catalog_is_a_503(admin):
    """A catalog error (here: a closed store) is answered 503 catalog_unavailable, not 500."""
    admin.store.close()
    async with admin.client() as c:
        for r in (await c.get("/v1/sandboxes"), await c.put("/v1/sandboxes/demo", json={"address": "127.0.0.2"})):
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "catalog_unavailable"


# --- the token file and the listen address ---------------------------------------------------------------


async def test_token_file_is_generated_with_mode_0600_and_reused_on_restart(make_admin, tmp_path):
    """With no configured token, the first start writes <state_dir>/admin-token (0600); a restart uses it."""
    path = tmp_path / "state" / "admin-token"
    async with trio.open_nursery() as first_run:
        admin = await make_admin(token="", within=first_run)
        token = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        async with admin.client(token) as c:
            assert (await c.get("/v1/sandboxes")).status_code == 200
        first_run.cancel_scope.cancel()  # stop the first server
    with pytest.raises(httpx.ConnectError):
        async with admin.client(token) as c:
            await c.get("/healthz")
    second = await make_admin(token="")
    assert path.read_text().strip() == token
    async with second.client(token) as c:
        assert (await c.get("/v1/sandboxes")).status_code == 200


async def test_refuses_a_non_loopback_address_without_a_configured_token(make_admin, tmp_path, monkeypatch):
    """On 0.0.0.0 the server does not start with only a generated token; with EDGE_ADMIN_TOKEN it does."""
    with pytest.raises(ConfigError, match="0.0.0.0:0 is not a loopback address"):
        await make_admin(token="", listen="0.0.0.0:0")
    assert not (tmp_path / "state" / "admin-token").exists()
    monkeypatch.setenv("EDGE_ADMIN_TOKEN", "from-the-env")
    admin = await make_admin(token="", listen="0.0.0.0:0")
    async with admin.client("from-the-env") as c:
        assert (await c.get("/v1/sandboxes")).status_code == 200


def test_edge_serve_refuses_a_public_admin_address_in_one_line(tmp_path):
    """`edge serve --admin 0.0.0.0:PORT` without a token exits 1 with one line, before binding anything."""
    env = edge_env(tmp_path)
    res = edge_cli(["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--admin", "0.0.0.0:0"], env)
    assert res.returncode == 1
    assert not [line for line in res.stdout.splitlines() if listening(line)]  # nothing bound (log lines may come)
    assert res.stderr.strip().splitlines() == [
        "edge: error: admin.listen: 0.0.0.0:0 is not a loopback address; set admin.token in the config"
        " file or EDGE_ADMIN_TOKEN before exposing the admin API"
    ]


# --- CLI and API share one catalog ---------------------------------------------------------------------


async def test_cli_and_api_write_the_same_catalog(make_admin, tmp_path):
    """What the CLI writes the API reads, and the other way round, with the same rules."""
    admin = await make_admin()
    env = edge_env(tmp_path, EDGE_CATALOG=admin.config.catalog_url)
    res = await trio.to_thread.run_sync(
        edge_cli, ["sandbox", "add", "from-cli", "--address", "127.0.0.2", "--private", "--json"], env
    )
    cli_token = json.loads(res.stdout)["traffic_access_token"]
    async with admin.client() as c:
        doc = (await c.get("/v1/sandboxes/from-cli")).json()
        assert (doc["address"], doc["public"]) == ("127.0.0.2", False) and "traffic_access_token" not in doc
        await c.put("/v1/sandboxes/from-api", json={"address": "::1", "mask_request_host": "localhost:${PORT}"})
    shown = json.loads((await trio.to_thread.run_sync(edge_cli, ["sandbox", "show", "from-api", "--json"], env)).stdout)
    assert (shown["address"], shown["mask_request_host"]) == ("::1", "localhost:${PORT}")
    # A rotation through the API retires the token the CLI printed.
    async with admin.client() as c:
        await c.post("/v1/sandboxes/from-cli/token")
    assert admin.store.get("from-cli").token_hash != hashlib.sha256(cli_token.encode()).hexdigest()
    await trio.to_thread.run_sync(edge_cli, ["sandbox", "rm", "from-cli"], env)
    async with admin.client() as c:
        assert (await c.get("/v1/sandboxes/from-cli")).status_code == 404


# --- metrics, status, OpenAPI --------------------------------------------------------------------------


async def test_metrics_are_prometheus_text_that_parses_back(admin):
    """/metrics has Prometheus's content type and parses with prometheus-client's own parser."""
    async with admin.client() as c:
        r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in (
        "edge_http_requests",
        "edge_http_active_connections",
        "edge_http_active_tunnels",
        "edge_http_body_bytes",
        "edge_upstream_connect_failures",
        "edge_http_request_duration_seconds",
        "edge_dns_queries",
    ):
        assert name in families, name
    classes = {s.labels["class"] for s in families["edge_http_requests"].samples if s.name.endswith("_total")}
    assert {"2xx", "4xx", "5xx"} <= classes


async def test_status_reports_listeners_sandboxes_and_counters(admin):
    """/v1/status has the admin listener, the catalog's counts, and the connection counters."""
    async with admin.client() as c:
        await c.put("/v1/sandboxes/one", json={"address": "127.0.0.2"})
        await c.put("/v1/sandboxes/two", json={"address": "127.0.0.2", "public": False})
        with trio.fail_after(5):  # the live snapshot follows the store within a poll
            while (doc := (await c.get("/v1/status")).json())["sandboxes"]["total"] != 2:
                await trio.sleep(0.05)
    assert doc["sandboxes"]["private"] == 1
    assert doc["listeners"] == [{"kind": "admin", "address": admin.url.removeprefix("http://")}]
    assert isinstance(doc["active_connections"], int) and isinstance(doc["active_tunnels"], int)
    assert isinstance(doc["busiest"], list)


async def test_openapi_document_describes_every_endpoint(admin):
    """/openapi.json lists each endpoint with its method, the bearer scheme, and the error body."""
    async with admin.client() as c:
        doc = (await c.get("/openapi.json")).json()
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ops == {
        ("PUT", "/v1/sandboxes/{id}"),
        ("PATCH", "/v1/sandboxes/{id}"),
        ("GET", "/v1/sandboxes/{id}"),
        ("DELETE", "/v1/sandboxes/{id}"),
        ("GET", "/v1/sandboxes"),
        ("POST", "/v1/sandboxes/{id}/token"),
        ("GET", "/v1/status"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/v1/certs"),
        ("POST", "/v1/certs/{domain}/renew"),
        ("POST", "/present"),
        ("POST", "/cleanup"),
    }
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    put = doc["paths"]["/v1/sandboxes/{id}"]["put"]
    assert {"200", "400", "401", "422", "503"} <= set(put["responses"])
    assert doc["components"]["schemas"]["SandboxIn"]["additionalProperties"] is False
    patch = doc["paths"]["/v1/sandboxes/{id}"]["patch"]
    assert set(patch["requestBody"]["content"]) == {"application/json", "application/merge-patch+json"}
    assert {"200", "401", "404", "422", "503"} <= set(patch["responses"])
    patch_schema = doc["components"]["schemas"]["SandboxPatch"]
    assert patch_schema["additionalProperties"] is False and "required" not in patch_schema
    assert {"type": "null"} in patch_schema["properties"]["max_connections"]["anyOf"]
    assert "409" in doc["paths"]["/v1/sandboxes/{id}/token"]["post"]["responses"]
    assert "security" not in doc["paths"]["/healthz"]["get"]


async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(admin, tmp_path):
    """schemathesis fuzzes every operation from /openapi.json: no 5xx, every answer as documented."""
    cli = shutil.which("schemathesis", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert cli, "schemathesis is in the test extra"
    checks = ",".join(
        [
            "not_a_server_error",
            "status_code_conformance",
            "content_type_conformance",
            "response_headers_conformance",
            "response_schema_conformance",
            "negative_data_rejection",
            "unsupported_method",
            "allow_header_conformance",
            "ignored_auth",
            "use_after_free",
            "ensure_resource_availability",
        ]
    )
    res = await trio.run_process(
        [
            cli,
            "run",
            f"{admin.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            checks,
            "--max-examples",
            "25",
            "--max-time",
            "45",
            "--seed",
            "4",
            "--request-timeout",
            "10",
            "--suppress-health-check",
            "too_slow",
        ],
        cwd=tmp_path,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    out = res.stdout.decode() + res.stderr.decode()
    assert res.returncode == 0, out[-6000:]
    assert "No issues found" in out, out[-3000:]


# --- edge status against a running edge ----------------------------------------------------------------


async def test_edge_status_prints_a_summary_from_a_running_edge(tmp_path, nursery):
    """`edge status` finds the token by itself and prints listeners, sandboxes, connections, tunnels, busiest."""
    env = edge_env(tmp_path)
    backend = await Backend("b").start(nursery, "127.0.0.2")
    await trio.to_thread.run_sync(edge_cli, ["sandbox", "add", "alpha", "--address", "127.0.0.2"], env)
    await trio.to_thread.run_sync(edge_cli, ["sandbox", "add", "beta", "--address", "127.0.0.3", "--private"], env)
    proc = await trio.to_thread.run_sync(
        lambda: EdgeProcess(["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--admin", "127.0.0.1:0"], env)
    )
    try:
        admin = proc.listening["admin"]
        for _ in range(3):
            await curl(f"http://{backend.port}-alpha.sandbox.localhost:{proc.port()}/echo")
        res = await trio.to_thread.run_sync(edge_cli, ["status", "--admin", admin], env)
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        assert lines[0].startswith("edge is up for ")
        for kind in ("http", "dns", "admin"):
            assert f"  {kind:6} {proc.listening[kind]}" in lines, (kind, res.stdout)
        assert "sandboxes:   2 (1 private), catalog version 2" in lines
        assert "connections: 0 open" in lines and "tunnels:     0 open" in lines
        assert lines[-2:] == ["busiest sandboxes:", "  alpha  3 requests"], res.stdout
        assert any(line.startswith("requests:    3  (2xx=3") for line in lines), res.stdout
        doc = json.loads((await trio.to_thread.run_sync(edge_cli, ["status", "--admin", admin, "--json"], env)).stdout)
        assert doc["sandboxes"]["total"] == 2
        # The token the server generated is what the CLI used; a wrong one from the env is refused.
        wrong = await trio.to_thread.run_sync(edge_cli, ["status", "--admin", admin], dict(env, EDGE_ADMIN_TOKEN="x"))
        assert wrong.returncode == 1
        assert wrong.stderr.strip() == f"edge: error: admin API at {admin} answered 401: invalid bearer token"
    finally:
        proc.stop()


def test_edge_status_without_a_running_edge_is_one_line_and_exit_1(tmp_path):
    """With nothing listening, `edge status` says so in one line and exits 1."""
    env = edge_env(tmp_path)
    res = edge_cli(["status", "--admin", "127.0.0.1:9"], env)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge: error: no edge answering at 127.0.0.1:9")
    assert "is `edge serve` running?" in lines[0]
