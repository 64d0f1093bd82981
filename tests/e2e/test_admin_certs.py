"""The admin API's certificate endpoints and lego's httpreq DNS provider endpoints, on a real socket.

The admin server runs in-process on port 0 beside edge's DNS server, sharing one live catalog, so a
value presented over HTTP is checked where a CA would look: a TXT query to edge's DNS (dnspython).
"""

from __future__ import annotations

import base64

import dns.message
import httpx
import pytest
import trio

from edge import config as config_mod
from edge.admin.server import serve as serve_admin
from edge.catalog.store import LiveCatalog, open_store, watch
from edge.dns.server import serve as serve_dns
from tests.dns.support import udp

TOKEN = "test-admin-token-0123456789"
NAME = "_acme-challenge.sandbox.test"
VALUE = "LPsIwTo7o8BoG0-vjCyGQGBWSVIPxI-i_X336eUOQZo"


@pytest.fixture(autouse=True)
def _no_env_token(monkeypatch):
    monkeypatch.delenv("EDGE_ADMIN_TOKEN", raising=False)


@pytest.fixture
async def edge(nursery, tmp_path):
    """Admin API and DNS in this process over one catalog: (admin URL, DNS address, store)."""
    cfg = config_mod.load(
        env={},
        overrides={
            "domains": ["sandbox.test", "other.test"],
            "state_dir": str(tmp_path / "state"),
            "catalog": f"sqlite:///{tmp_path}/catalog.db",
            "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
            "dns": {
                "listen": "127.0.0.1:0",
                "zones": str(tmp_path),
                "synthesize": {"sandbox.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]},
            },
        },
    )
    store = open_store(cfg.catalog_url)
    live = LiveCatalog()
    await nursery.start(watch, store, live, 0.05)
    dns_addr = (await nursery.start(serve_dns, cfg, live))[0]
    bound = await nursery.start(serve_admin, cfg, store, live)
    return f"http://127.0.0.1:{bound[0][1]}", dns_addr, store


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def txt(dns_addr, name: str = NAME) -> list[str]:
    reply = await udp(dns.message.make_query(name, "TXT"), dns_addr)
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


async def served(dns_addr, expected: list[str], name: str = NAME) -> None:
    with trio.fail_after(3):
        while await txt(dns_addr, name) != expected:
            await trio.sleep(0.05)


async def test_present_and_cleanup_serve_and_withdraw_a_txt_value(edge):
    """POST /present makes edge's DNS answer the value within a catalog poll; /cleanup removes it."""
    url, dns_addr, _ = edge
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        res = await c.post("/present", json={"fqdn": NAME + ".", "value": VALUE})
        assert res.status_code == 200, res.text
        assert res.json()["fqdn"] == NAME and res.json()["expires_at"] > 0
        await served(dns_addr, [f'"{VALUE}"'])
        await c.post("/present", json={"fqdn": NAME + ".", "value": "second"})
        await served(dns_addr, [f'"{VALUE}"', '"second"'])
        res = await c.post("/cleanup", json={"fqdn": NAME + ".", "value": VALUE})
        assert res.status_code == 200 and res.json()["removed"] is True
        await served(dns_addr, ['"second"'])
        res = await c.post("/cleanup", json={"fqdn": NAME, "value": VALUE})
        assert res.status_code == 200 and res.json()["removed"] is False


@pytest.mark.parametrize(
    "label, headers, status",
    [
        ("bearer token", {"Authorization": f"Bearer {TOKEN}"}, 200),
        ("basic, the token as password (lego's HTTPREQ_PASSWORD)", basic("lego", TOKEN), 200),
        ("basic, a wrong password", basic("lego", "wrong"), 401),
        ("basic, the token as user name", basic(TOKEN, "x"), 401),
        ("nothing", {}, 401),
    ],
)
async def test_challenge_endpoints_take_the_token_as_bearer_or_basic_password(edge, label, headers, status):
    url, _, store = edge
    async with httpx.AsyncClient(base_url=url, headers=headers) as c:
        res = await c.post("/present", json={"fqdn": NAME, "value": VALUE})
    assert res.status_code == status, res.text
    assert bool(store.challenges()) == (status == 200)


async def test_basic_auth_opens_only_the_challenge_endpoints(edge):
    """The token as a Basic password works for /present and /cleanup, not for the rest of the API."""
    url, _, _ = edge
    async with httpx.AsyncClient(base_url=url, headers=basic("lego", TOKEN)) as c:
        assert (await c.get("/v1/sandboxes")).status_code == 401
        assert (await c.post("/cleanup", json={"fqdn": NAME, "value": VALUE})).status_code == 200


@pytest.mark.parametrize(
    "label, body, field",
    [
        ("a domain this edge does not serve", {"fqdn": "_acme-challenge.evil.test.", "value": VALUE}, "fqdn"),
        ("not a challenge name", {"fqdn": "www.sandbox.test.", "value": VALUE}, "fqdn"),
        ("a value that is not base64url", {"fqdn": NAME, "value": 'a" b'}, "value"),
        ("lego's RAW mode body", {"domain": "sandbox.test", "token": "t", "keyAuth": "k"}, None),
    ],
)
async def test_challenge_outside_the_rules_is_422(edge, label, body, field):
    url, dns_addr, store = edge
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        res = await c.post("/present", json=body)
    assert res.status_code == 422, res.text
    if field:
        assert res.json()["field"] == field
    assert store.challenges() == ()


async def test_certs_without_tls_list_every_domain_with_no_certificate_and_renew_is_409(edge):
    """No certificates and ACME off: GET /v1/certs lists the domains; a renewal is 409 acme_not_configured."""
    url, _, _ = edge
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        doc = (await c.get("/v1/certs")).json()
        assert doc == {
            "acme_directory": None,
            "certificates": [],
            "domains": [
                {"domain": "sandbox.test", "certificate": None, "acme": None},
                {"domain": "other.test", "certificate": None, "acme": None},
            ],
        }
        res = await c.post("/v1/certs/sandbox.test/renew")
        assert res.status_code == 409 and res.json()["code"] == "acme_not_configured"
