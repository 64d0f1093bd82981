"""Zones on a live server: synthesized zones, refusal at start, reload on change, on SIGHUP, and on a file gone."""

from __future__ import annotations

import os
import signal

import dns.message
import dns.rdatatype
import pytest
import trio

from edge.errors import ConfigError, ZoneError
from tests.dns.support import ZONE, start_dns, udp, write_zone

Q = "sandbox.localhost"
NEW_ZONE = ZONE.replace("*       IN A    127.0.0.1", "*       IN A    10.0.0.9")


async def address(addr, name=f"3000-demo.{Q}") -> str:
    reply = await udp(dns.message.make_query(name, "A"), addr)
    return reply.answer[0][0].to_text() if reply.answer else reply.rcode()


async def wait_for_address(addr, expected: str, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while await address(addr) != expected:
            await trio.sleep(0.05)


async def test_domain_without_zone_file_gets_the_synthesized_zone_the_config_names(nursery, tmp_path, caplog):
    """A public domain with no file is served from the zone [dns.synthesize] names, at its addresses."""
    caplog.set_level("INFO", "edge.dns")
    write_zone(tmp_path)
    addr = await start_dns(
        nursery,
        tmp_path,
        domains=["sandbox.localhost", "other.test"],
        http={"listen": "10.1.2.3:8080"},
        synthesize={"other.test": ["192.0.2.10"]},
    )
    assert await address(addr, "3000-abc.other.test") == "192.0.2.10"
    assert await address(addr) == "127.0.0.1"
    reply = await udp(dns.message.make_query("other.test", "SOA"), addr)
    assert reply.answer and reply.answer[0].rdtype == dns.rdatatype.SOA
    assert "other.test: no file" in caplog.text and "synthesized" in caplog.text


async def test_public_domain_without_zone_file_refuses_the_start(nursery, tmp_path):
    """A public domain with no file and no [dns.synthesize] entry stops the start: no loopback answers."""
    write_zone(tmp_path)
    with pytest.raises(ConfigError, match=f"domain other.test: no zone file {tmp_path / 'other.test.zone'}"):
        await start_dns(nursery, tmp_path, domains=["sandbox.localhost", "other.test"])


async def test_localhost_domain_without_zone_file_answers_loopback(nursery, tmp_path):
    """A domain under localhost needs no file: `*` is loopback, even when HTTP listens on a public address."""
    addr = await start_dns(nursery, tmp_path, http={"listen": "192.0.2.1:80"})
    assert await address(addr) == "127.0.0.1"
    reply = await udp(dns.message.make_query(f"3000-demo.{Q}", "AAAA"), addr)
    assert reply.answer[0][0].to_text() == "::1"


async def test_bad_zone_file_refuses_the_start(nursery, tmp_path):
    """A zone file with an error stops the start with file, line and reason."""
    write_zone(tmp_path, text=ZONE + "oops IN A 999.1.1.1\n")
    with pytest.raises(ZoneError) as info:
        await start_dns(nursery, tmp_path)
    assert info.value.file.endswith("sandbox.localhost.zone")
    assert info.value.line == len(ZONE.splitlines()) + 1


async def test_changed_zone_file_is_reloaded(nursery, tmp_path):
    """Editing the zone file changes the answers within about a poll interval."""
    write_zone(tmp_path)
    addr = await start_dns(nursery, tmp_path, zones_poll=0.1)
    assert await address(addr) == "127.0.0.1"
    write_zone(tmp_path, text=NEW_ZONE)
    await wait_for_address(addr, "10.0.0.9")


async def test_bad_edit_keeps_the_previous_zone_and_logs(nursery, tmp_path, caplog):
    """A reload that finds an error keeps serving the previous zone and logs FILE:LINE: reason."""
    write_zone(tmp_path)
    addr = await start_dns(nursery, tmp_path, zones_poll=0.1)
    write_zone(tmp_path, text=NEW_ZONE + "oops IN A nope\n")
    with trio.fail_after(5):
        while "not reloaded" not in caplog.text:
            await trio.sleep(0.05)
    assert "sandbox.localhost.zone:" in caplog.text
    assert await address(addr) == "127.0.0.1"
    write_zone(tmp_path, text=NEW_ZONE)  # fixed: the next reload takes it
    await wait_for_address(addr, "10.0.0.9")


async def test_sighup_reloads_the_zones(nursery, tmp_path):
    """SIGHUP reloads at once (the folder poller set an hour apart here)."""
    write_zone(tmp_path)
    addr = await start_dns(nursery, tmp_path, zones_poll=3600.0)
    write_zone(tmp_path, text=NEW_ZONE)
    await trio.sleep(0.05)
    assert await address(addr) == "127.0.0.1"
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_for_address(addr, "10.0.0.9", timeout=3)


async def test_new_zone_file_replaces_the_synthesized_zone(nursery, tmp_path):
    """A zone file appearing for a synthesized domain is picked up by the folder poller."""
    addr = await start_dns(nursery, tmp_path, zones_poll=0.1)
    assert await address(addr) == "127.0.0.1"
    write_zone(tmp_path, text=NEW_ZONE)
    await wait_for_address(addr, "10.0.0.9")


PUBLIC = "sandbox.example.test"
PUBLIC_ZONE = ZONE.replace(Q, PUBLIC).replace("*       IN A    127.0.0.1", "*       IN A    192.0.2.7")


async def public_address(addr) -> str:
    return await address(addr, f"3000-demo.{PUBLIC}")


def gone_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "is gone" in r.getMessage()]


async def test_removed_zone_file_keeps_the_previous_answers_and_warns_once(nursery, tmp_path, caplog):
    """A zone file moved away while edge runs (a deploy that deletes and writes it again) keeps the zone
    served: the answers do not change, one warning is logged over many polls, and a new file is served."""
    caplog.set_level("INFO", "edge.dns")
    write_zone(tmp_path)
    path = write_zone(tmp_path, PUBLIC, PUBLIC_ZONE)
    addr = await start_dns(nursery, tmp_path, domains=[Q, PUBLIC], zones_poll=0.05)
    assert await public_address(addr) == "192.0.2.7"
    path.rename(tmp_path / "moved-away")
    with trio.fail_after(5):
        while not gone_warnings(caplog):
            await trio.sleep(0.05)
    write_zone(tmp_path, text=NEW_ZONE)  # another zone's reload reads the folder again
    await wait_for_address(addr, "10.0.0.9")
    await trio.sleep(0.3)  # six polls more
    assert await public_address(addr) == "192.0.2.7"
    reply = await udp(dns.message.make_query(f"3000-demo.{PUBLIC}", "AAAA"), addr)
    assert reply.answer[0][0].to_text() == "::1"
    [warning] = gone_warnings(caplog)
    assert warning.startswith(f"zone {PUBLIC} not reloaded, keeping the previous one (serial 1): {path}:0: ")
    write_zone(tmp_path, PUBLIC, PUBLIC_ZONE.replace("192.0.2.7", "192.0.2.8"))
    with trio.fail_after(5):
        while await public_address(addr) != "192.0.2.8":
            await trio.sleep(0.05)
    assert f"zone {PUBLIC}: {path} loads again" in caplog.text


async def test_removed_localhost_zone_file_is_not_replaced_by_a_synthesized_zone(nursery, tmp_path, caplog):
    """Under localhost too, a file that disappears keeps its zone: no switch to the synthesized one."""
    write_zone(tmp_path, text=NEW_ZONE)
    addr = await start_dns(nursery, tmp_path, zones_poll=0.05)
    assert await address(addr) == "10.0.0.9"
    (tmp_path / f"{Q}.zone").unlink()
    with trio.fail_after(5):
        while not gone_warnings(caplog):
            await trio.sleep(0.05)
    await trio.sleep(0.2)
    assert await address(addr) == "10.0.0.9"
