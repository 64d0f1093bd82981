"""The `edge` command line. Every failure is one line on stderr and a non-zero exit, never a traceback.

edge serve [--config FILE] [--domain D]... [--http ADDR:PORT] [--dns ADDR:PORT] [--admin ADDR:PORT]
           [--catalog URL] [--zones DIR] [--log-format json|text] [--no-access-log]
edge dns   [the same flags]                       DNS server alone
edge zone check FILE...                           validate zone files
edge sandbox add ID --address IP [--mask-request-host T] [--private] [--max-connections N] [--json]
edge sandbox update ID [--address IP] [--mask-request-host T | --no-mask] [--private | --public]
                       [--max-connections N | --no-max-connections] [--json]   only the fields named
edge sandbox list [--json] | show ID [--json] | rm ID
edge sandbox token ID --rotate [--json]           new traffic access token of a private sandbox, shown once
    (add, update, rm and token return once the running edge serves the change, 2 s at most, and
     warn when no edge answers or it serves another catalog: [--admin ADDR:PORT] [--no-wait])
edge host ID PORT [--url]                         the public host (or URL) for a port (E2B's getHost)
edge status [--config FILE] [--admin ADDR:PORT] [--json]   a running edge's summary, from its admin API
edge cert list [--config FILE] [--json]           certificates on disk: domains, names, expiry, source
edge cert renew DOMAIN [--config FILE] [--admin ADDR:PORT] [--no-wait] [--json]   an ACME order now
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from edge import config as config_mod
from edge.catalog.model import (
    Sandbox,
    validate_address,
    validate_id,
    validate_mask,
    validate_max_connections,
    validate_port,
)
from edge.egress.cli import add_network_parser, add_policy_flags, add_rules_parser, policy_changes, rules_text
from edge.errors import EdgeError, SandboxExists, SandboxIsPublic, SandboxNotFound, ValidationError

UPDATE_USAGE = (
    "edge sandbox update ID [--address IP] [--mask-request-host T | --no-mask] [--private | --public]"
    " [--max-connections N]"
)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)  # a flag is spelled whole, never guessed from a prefix
        super().__init__(*args, **kwargs)
        self._given: list[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)  # for error(): what this parser saw
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        missing = message.partition("arguments are required: ")[2].split(", ") if "required: " in message else []
        stray = self._stray_option()
        if stray is not None and any(name and not name.startswith("-") for name in missing):
            # `edge sandbox add -demo`: argparse takes -demo for an unknown flag, then misses the ID.
            message = f"{stray!r} is not an option of `{self.prog}`"
            if "id" in missing or "port" in missing:
                message += " (a sandbox ID cannot start with '-')"
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _stray_option(self) -> str | None:
        """The first argument spelled like an option that this parser does not know."""
        for arg in self._given:
            if arg == "--":
                return None
            name = arg.split("=", 1)[0]
            if arg.startswith("-") and arg != "-" and name not in self._option_string_actions:
                return arg
        return None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file (env EDGE_CONFIG)")
    p.add_argument(
        "--catalog", metavar="URL", help="catalog URL, e.g. sqlite:///var/lib/edge/catalog.db (env EDGE_CATALOG)"
    )
    p.add_argument("--domain", action="append", metavar="D", help="domain served; repeat for several")


def _server_flags(p: argparse.ArgumentParser, with_workers: bool = False) -> None:
    _common(p)
    p.add_argument("--http", metavar="ADDR:PORT", help="HTTP listener(s), comma-separated (default 127.0.0.1:8080)")
    p.add_argument(
        "--https", metavar="ADDR:PORT", help="HTTPS listener (default: none; certificates: [https] certs or [acme])"
    )
    p.add_argument("--dns", metavar="ADDR:PORT", help="DNS listener, UDP and TCP (default 127.0.0.1:5353)")
    p.add_argument("--admin", metavar="ADDR:PORT", help="admin API listener (default 127.0.0.1:8081)")
    p.add_argument(
        "--egress", metavar="ADDR:PORT", help="egress router for sandboxes' outbound TCP (default: none; edge/egress)"
    )
    p.add_argument("--zones", metavar="DIR", help="folder of <domain>.zone files (default: the shipped zones/)")
    p.add_argument("--log-format", choices=("json", "text"), help="log line format (default json)")
    p.add_argument("--no-access-log", action="store_true", help="no line per request")
    p.add_argument(
        "--access-log",
        metavar="PATH",
        help="access lines to this file (append; reopened on SIGUSR1); - is stdout (default)",
    )
    if with_workers:
        p.add_argument("--workers", type=_whole, metavar="N", help="HTTP worker processes sharing the port (default 1)")


def _whole(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edge", description="A self-hosted edge for sandbox platforms.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _server_flags(sub.add_parser("serve", help="serve HTTP, DNS and admin"), with_workers=True)
    _server_flags(sub.add_parser("dns", help="serve DNS alone"))

    zone = sub.add_parser("zone", help="zone files").add_subparsers(
        dest="zone_command", required=True, parser_class=_Parser
    )
    check = zone.add_parser("check", help="validate zone files; exit 1 on errors")
    check.add_argument("files", nargs="+", metavar="FILE")

    sandbox = sub.add_parser("sandbox", help="manage the catalog").add_subparsers(
        dest="sandbox_command", required=True, parser_class=_Parser
    )
    add = sandbox.add_parser("add", help="register a new sandbox (an ID already there is an error: see update)")
    add.add_argument("id")
    add.add_argument("--address", required=True, metavar="IP", help="where the sandbox's ports are reachable")
    add.add_argument("--mask-request-host", metavar="TEMPLATE", help="Host sent upstream, e.g. 'localhost:${PORT}'")
    add.add_argument("--private", action="store_true", help="require a traffic access token (printed once)")
    add.add_argument("--max-connections", type=_whole, metavar="N", help="concurrent requests and tunnels at most")
    add_policy_flags(add)
    add.add_argument("--json", action="store_true")
    _common(add)
    update = sandbox.add_parser("update", help="change only the fields named; the others keep their values")
    update.add_argument("id")
    update.add_argument("--address", metavar="IP", help="where the sandbox's ports are reachable")
    mask = update.add_mutually_exclusive_group()
    mask.add_argument("--mask-request-host", metavar="TEMPLATE", help="Host sent upstream, e.g. 'localhost:${PORT}'")
    mask.add_argument("--no-mask", action="store_true", help="send the client's Host upstream again")
    privacy = update.add_mutually_exclusive_group()
    privacy.add_argument(
        "--private",
        dest="public",
        action="store_const",
        const=False,
        help="require a traffic access token (a new one is printed once)",
    )
    privacy.add_argument(
        "--public", dest="public", action="store_const", const=True, help="no token needed; the token is forgotten"
    )
    limit = update.add_mutually_exclusive_group()
    limit.add_argument("--max-connections", type=_whole, metavar="N", help="concurrent requests and tunnels at most")
    limit.add_argument("--no-max-connections", action="store_true", help="remove the limit")
    update.add_argument("--json", action="store_true")
    _common(update)
    token = sandbox.add_parser("token", help="rotate a private sandbox's traffic access token")
    token.add_argument("id")
    token.add_argument(
        "--rotate", action="store_true", required=True, help="make a new token; the old one stops working"
    )
    token.add_argument("--json", action="store_true")
    _common(token)
    ls = sandbox.add_parser("list", help="list sandboxes")
    ls.add_argument("--json", action="store_true")
    _common(ls)
    show = sandbox.add_parser("show", help="show one sandbox")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    _common(show)
    rm = sandbox.add_parser("rm", help="remove a sandbox")
    rm.add_argument("id")
    _common(rm)
    network = add_network_parser(sandbox)  # edge sandbox network ID [--allow-out X]... (edge/egress)
    _common(network)
    for write in (add, update, token, rm, network):
        write.add_argument(
            "--admin",
            metavar="ADDR:PORT",
            help="the running edge's admin API, asked whether it serves the change"
            " (default: admin.listen, 127.0.0.1:8081)",
        )
        write.add_argument(
            "--no-wait", action="store_true", help="return once the catalog is written, without asking the running edge"
        )

    host = sub.add_parser("host", help="print the public host for a sandbox port")
    host.add_argument("id")
    host.add_argument("port")
    _common(host)
    host.add_argument("--http", metavar="ADDR:PORT", help="the HTTP listener, for its port")
    host.add_argument("--url", action="store_true", help="print the whole URL, with the public scheme")

    for name, text in (
        ("reload", "read the config, zones and certificates again: a new generation of workers (SIGHUP)"),
        ("upgrade", "run the program now on disk: a new generation, the supervisor re-executed (SIGUSR2)"),
    ):
        deploy = sub.add_parser(name, help=text)
        deploy.add_argument("--config", metavar="FILE", help="TOML config file (env EDGE_CONFIG)")
        deploy.add_argument("--admin", metavar="ADDR:PORT", help="the admin API (default: admin.listen)")
        deploy.add_argument(
            "--timeout", type=float, default=90.0, metavar="S", help="how long to wait for the outcome (default 90)"
        )

    status = sub.add_parser("status", help="summary of a running edge (listeners, sandboxes, connections)")
    status.add_argument("--config", metavar="FILE", help="TOML config file (env EDGE_CONFIG)")
    status.add_argument("--admin", metavar="ADDR:PORT", help="the admin API (default: admin.listen, 127.0.0.1:8081)")
    status.add_argument("--json", action="store_true", help="print the status document as JSON")

    cert = sub.add_parser("cert", help="TLS certificates (edge/tls/README.md)").add_subparsers(
        dest="cert_command", required=True, parser_class=_Parser
    )
    cert_list = cert.add_parser("list", help="the certificates edge serves, read from disk: domains, names, expiry")
    cert_list.add_argument("--json", action="store_true")
    cert_list.add_argument("--config", metavar="FILE", help="TOML config file (env EDGE_CONFIG)")
    cert_list.add_argument("--domain", action="append", metavar="D", help="domain served; repeat for several")
    renew = cert.add_parser("renew", help="have the running edge order a new certificate for DOMAIN now (ACME)")
    renew.add_argument("domain")
    renew.add_argument("--config", metavar="FILE", help="TOML config file (env EDGE_CONFIG)")
    renew.add_argument("--admin", metavar="ADDR:PORT", help="the admin API (default: admin.listen, 127.0.0.1:8081)")
    renew.add_argument("--no-wait", action="store_true", help="return once the order is asked for, not when it ends")
    renew.add_argument(
        "--timeout", type=_whole, default=300, metavar="S", help="seconds to wait for the order to end (default 300)"
    )
    renew.add_argument("--json", action="store_true", help="print the domain's state as JSON")

    egress = sub.add_parser("egress", help="the egress router (edge/egress/README.md)").add_subparsers(
        dest="egress_command", required=True, parser_class=_Parser
    )
    add_rules_parser(egress)
    return parser


def _load_config(args: argparse.Namespace):
    overrides: dict = {}
    if getattr(args, "domain", None):
        overrides["domains"] = args.domain
    if getattr(args, "catalog", None):
        overrides["catalog"] = args.catalog
    for flag, section in (
        ("http", "http"),
        ("https", "https"),
        ("dns", "dns"),
        ("admin", "admin"),
        ("egress", "egress"),
    ):
        if getattr(args, flag, None):
            overrides.setdefault(section, {})["listen"] = getattr(args, flag)
    if getattr(args, "zones", None):
        overrides.setdefault("dns", {})["zones"] = args.zones
    if getattr(args, "log_format", None):
        overrides["log_format"] = args.log_format
    if getattr(args, "no_access_log", False):
        overrides["access_log"] = False
    if getattr(args, "access_log", None):
        overrides["access_log_file"] = args.access_log
    if getattr(args, "workers", None) is not None:  # 0 too: the config says why it is refused
        overrides["workers"] = args.workers
    return config_mod.load(args.config, overrides=overrides)


def _print_sandbox(s: Sandbox, as_json: bool, token: str | None = None) -> None:
    if as_json:
        doc = s.to_json()
        if token:
            doc["traffic_access_token"] = token
        print(json.dumps(doc))
        return
    mask = f"  mask_request_host={s.mask_request_host}" if s.mask_request_host else ""
    limit = f"  max_connections={s.max_connections}" if s.max_connections else ""
    internet = "" if s.internet_access else "  internet=no"
    allow = f"  allow_out={','.join(s.allow_out)}" if s.allow_out else ""
    deny = f"  deny_out={','.join(s.deny_out)}" if s.deny_out else ""
    print(f"{s.id}  address={s.address}  public={'yes' if s.public else 'no'}{mask}{limit}{internet}{allow}{deny}")
    if token:
        print(f"traffic_access_token={token}  (shown once: store it now)")


def _limit(value: int | None) -> int | None:
    if value == 0:  # 0 reads as "no connections" to some and "no limit" to others: neither, say which flag
        raise ValidationError(
            "max_connections", "0 is not a limit (for none, leave the flag out, or `update --no-max-connections`)"
        )
    return validate_max_connections(value)


def _changes(args: argparse.Namespace) -> dict:
    """The fields `update` names, validated: None removes a mask or a limit."""
    changes: dict = {}
    if args.address is not None:
        changes["address"] = validate_address(args.address)
    if args.no_mask:
        changes["mask_request_host"] = None
    elif args.mask_request_host is not None:
        changes["mask_request_host"] = validate_mask(args.mask_request_host)
    if args.public is not None:
        changes["public"] = args.public
    if args.no_max_connections:
        changes["max_connections"] = None
    elif args.max_connections is not None:
        changes["max_connections"] = _limit(args.max_connections)
    if not changes:
        raise EdgeError(
            "update: nothing to change; name at least one of --address, --mask-request-host,"
            " --no-mask, --private, --public, --max-connections, --no-max-connections"
        )
    return changes


def _sandbox(args: argparse.Namespace) -> int:
    from edge.catalog import ops
    from edge.catalog.store import open_catalog

    cfg = _load_config(args)
    cmd = args.sandbox_command
    sandbox_id = validate_id(args.id) if cmd != "list" else ""
    # Validate everything before touching the catalog.
    policy: dict = {}
    if cmd == "add":
        validate_address(args.address)
        validate_mask(args.mask_request_host)
        _limit(args.max_connections)
        policy = policy_changes(args, require=False)
    changes = _changes(args) if cmd == "update" else policy_changes(args) if cmd == "network" else {}
    store = open_catalog(cfg)
    written = None  # the catalog version a write made
    try:
        if cmd == "add":
            record, token = ops.add_sandbox(
                store,
                sandbox_id,
                address=args.address,
                public=not args.private,
                mask_request_host=args.mask_request_host,
                max_connections=args.max_connections,
                **policy,
            )
            _print_sandbox(record, args.json, token)
        elif cmd in ("update", "network"):
            record, token = ops.update_sandbox(store, sandbox_id, changes)
            _print_sandbox(record, args.json, token)
        elif cmd == "token":
            record, token = ops.rotate_token(store, sandbox_id)
            _print_sandbox(record, args.json, token)
        elif cmd == "list":
            items = store.list()
            if args.json:
                print(json.dumps([s.to_json() for s in items]))
            for s in [] if args.json else items:
                _print_sandbox(s, False)
        elif cmd == "show":
            found = store.get(sandbox_id)
            if found is None:
                raise EdgeError(f"no sandbox {sandbox_id!r} in the catalog")
            _print_sandbox(found, args.json)
        elif cmd == "rm":
            if not store.delete(sandbox_id):
                raise EdgeError(f"no sandbox {sandbox_id!r} in the catalog")
        if cmd in ("add", "update", "token", "rm", "network"):
            written = store.version()
    finally:
        store.close()
    if written is not None and not args.no_wait:
        warning = _await_served(cfg, written)
        if warning:
            print(f"edge: warning: {warning}", file=sys.stderr)
    return 0


#: Seconds `edge sandbox add/update/rm/token` waits for the running edge to serve what it wrote.
SERVE_WAIT = 2.0


def _await_served(cfg, version: int) -> str | None:
    """Wait until the edge on the admin API serves catalog `version` of our catalog; None then, else
    what is wrong, for a warning (the write itself is done: it is never an error)."""
    import os
    import time

    from edge.catalog.store import catalog_location

    ours = catalog_location(cfg.catalog_url)
    deadline = time.monotonic() + SERVE_WAIT
    while True:
        try:
            doc = _admin_call(cfg, "GET", "/v1/status", timeout=max(0.2, deadline - time.monotonic()))
        except EdgeError as exc:
            return (
                f"the change is in catalog {ours}, but no running edge confirmed it: {exc.message}"
                " (it may use another state folder, config or admin address: --admin ADDR:PORT,"
                " or --no-wait not to ask)"
            )
        where = _admin_address(cfg)
        catalog = doc.get("catalog")
        if not isinstance(catalog, dict):
            return f"the edge at {where} does not say which catalog it serves (an older edge?)"
        theirs = catalog.get("path") or catalog.get("url", "?")
        same = theirs == ours or (os.path.exists(theirs) and os.path.exists(ours) and os.path.samefile(theirs, ours))
        if not same:
            return (
                f"the change is in catalog {ours}, but the edge at {where} serves catalog {theirs}: it will"
                " not see it; use the edge's catalog (its config with --config or EDGE_CONFIG, its"
                " EDGE_STATE_DIR, or --catalog)"
            )
        served = catalog.get("version", 0)
        if served >= version:
            return None
        if time.monotonic() >= deadline:
            return (
                f"the edge at {where} still serves catalog version {served} after {SERVE_WAIT:g} s, not yet"
                f" {version} with this change; it will within its catalog_poll"
            )
        time.sleep(0.02)


def _host(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    port = validate_port(args.port)
    sandbox = Sandbox(id=validate_id(args.id), address="0.0.0.0")
    # The public scheme and port: behind a load balancer or a port mapping they are not the listener's.
    host = sandbox.public_host(port, cfg.domains[0], cfg.public_port, cfg.public_scheme)
    print(f"{cfg.public_scheme}://{host}/" if args.url else host)
    return 0


def _status(args: argparse.Namespace) -> int:
    from edge.admin import status

    doc = _admin_call(_load_config(args), "GET", "/v1/status")
    print(json.dumps(doc) if args.json else status.format_text(doc))
    return 0


def _deploy(args: argparse.Namespace) -> int:
    """`edge reload` / `edge upgrade`: the signal to the supervisor the admin API names, then its
    account of the outcome (edge/supervisor.py), read back until it covers this request."""
    cfg = _load_config(args)
    before = _admin_call(cfg, "GET", "/v1/status").get("supervisor")
    if not before:
        raise EdgeError("the edge answering has no supervisor (an `edge serve` from before reloads existed?)")
    pid = before["pid"]
    asked = time.time()
    try:
        os.kill(pid, signal.SIGHUP if args.command == "reload" else signal.SIGUSR2)
    except ProcessLookupError:
        raise EdgeError(f"the supervisor (pid {pid}) is not running on this machine") from None
    except PermissionError:
        raise EdgeError(f"not allowed to signal the supervisor (pid {pid}); run as its user, or root") from None
    deadline = time.monotonic() + args.timeout
    while True:
        time.sleep(0.2)
        try:
            sup = _admin_call(cfg, "GET", "/v1/status", timeout=5).get("supervisor") or {}
        except EdgeError:
            sup = {}  # between generations, or the admin worker busy: ask again
        last = sup.get("last_deploy") or {}
        if last.get("kind") == args.command and last.get("at", 0) >= asked:
            break
        if time.monotonic() > deadline:
            raise EdgeError(f"no outcome of the {args.command} after {args.timeout:.0f} s; see the edge's log")
    if not last.get("ok"):
        raise EdgeError(f"{args.command} {'refused' if args.command == 'reload' else 'failed'}: {last.get('error')}")
    note = f" ({last['error']})" if last.get("error") else ""
    print(f"{args.command}: generation {last.get('generation')} serving (supervisor pid {pid}){note}")
    return 0


def _admin_address(cfg) -> str:
    listen = cfg.admin.listen
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.host, listen.host)  # a wildcard: ask locally
    return f"[{host}]:{listen.port}" if ":" in host else f"{host}:{listen.port}"


def _admin_call(cfg, method: str, path: str, timeout: float = 10) -> dict:
    """Ask the running edge's admin API (token found as the server finds it); its JSON answer."""
    import urllib.error
    import urllib.request

    from edge.admin import auth

    try:
        token, no_token = auth.resolve_token(cfg).value, None  # config, env or the file the server wrote
    except EdgeError as exc:
        token, no_token = "", exc  # said only if the server answers: "not running" comes first
    where = _admin_address(cfg)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://{where}{path}", headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            doc = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 401 and no_token is not None:
            raise no_token from None
        try:
            message = json.load(exc).get("message", "")
        except ValueError:
            message = ""
        raise EdgeError(f"admin API at {where} answered {exc.code}{': ' + message if message else ''}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EdgeError(f"no edge answering at {where} ({reason}); is `edge serve` running?") from None
    except ValueError:
        raise EdgeError(f"admin API at {where} did not answer with JSON") from None
    return doc


def _cert(args: argparse.Namespace) -> int:
    import time

    from edge.admin.status import format_certificates

    cfg = _load_config(args)
    if args.cert_command == "list":
        from edge.tls.certs import CertStore
        from edge.tls.renewal import report

        doc = report(cfg.domains, cfg.acme.directory, CertStore(cfg).info(), {}, time.time())
        if args.json:
            print(json.dumps(doc))
            return 0
        for line in format_certificates(doc["domains"])[1:]:
            print(line.strip())
        for other in (c for c in doc["certificates"] if c["domain"] is None):
            print(f"(no domain)  {', '.join(other['names'])}  {other['source']}, {other['cert']}")
        return 0
    # renew: the running edge's ACME task does the work (it serves the challenge from its own DNS)
    answer = _admin_call(cfg, "POST", f"/v1/certs/{args.domain}/renew")
    domain, asked = answer["domain"], answer["requested_at"]
    if args.no_wait:
        print(json.dumps(answer) if args.json else f"renewal of {domain} asked for; `edge cert list` shows the result")
        return 0
    deadline = time.monotonic() + args.timeout
    while True:
        row = next(r for r in _admin_call(cfg, "GET", "/v1/certs")["domains"] if r["domain"] == domain)
        acme = row.get("acme") or {}
        if not acme.get("renewing") and (acme.get("last_attempt") or 0) >= asked:
            break
        if time.monotonic() > deadline:
            raise EdgeError(f"renewal of {domain} still running after {args.timeout} s; see `edge status`")
        time.sleep(0.5)
    failed = acme.get("last_error") and (acme.get("last_success") or 0) < asked
    if args.json:
        print(json.dumps(row))
    elif not failed:
        print(format_certificates([row])[1].strip())
    if failed:
        raise EdgeError(f"renewal of {domain} failed: {acme['last_error']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            cfg = _load_config(args)
            worker = os.environ.pop("EDGE_WORKER", None)
            if worker is not None:  # started by a supervisor: one worker of its generation
                from edge import supervisor  # noqa: F401 - an upgrade's new workers are its test: the
                from edge.sockets import Sockets  # supervisor re-executes only into a program that imports
                from edge.workers import WorkerSpec, run_worker

                return run_worker(cfg, WorkerSpec.from_env(worker), Sockets.adopt(os.environ.pop("EDGE_SOCKETS", "")))
            from edge.supervisor import supervise

            served = list(argv) if argv is not None else sys.argv[1:]
            return supervise(cfg, lambda: _load_config(build_parser().parse_args(served)), served)
        if args.command in ("reload", "upgrade"):
            return _deploy(args)
        if args.command == "dns":
            from edge.app import run

            return run(_load_config(args))
        if args.command == "zone":
            from edge.dns.zonefile import check_files

            return check_files(args.files)
        if args.command == "sandbox":
            return _sandbox(args)
        if args.command == "host":
            return _host(args)
        if args.command == "status":
            return _status(args)
        if args.command == "cert":
            return _cert(args)
        if args.command == "egress":  # `egress rules`: the nftables ruleset, printed
            print(rules_text(args, config_mod.load(args.config).egress), end="")
            return 0
    except SandboxNotFound as exc:
        print(f"edge: error: no sandbox {exc.sandbox_id!r} in the catalog", file=sys.stderr)
        return 1
    except SandboxExists as exc:
        print(
            f"edge: error: sandbox {exc.sandbox_id!r} exists already and `add` never changes a sandbox;"
            f" to change only the fields you name: {UPDATE_USAGE} (--no-max-connections removes a limit)",
            file=sys.stderr,
        )
        return 1
    except SandboxIsPublic as exc:
        print(
            f"edge: error: sandbox {exc.sandbox_id!r} is public: it has no token to rotate; make it private"
            f" (its new token is printed once) with: edge sandbox update {exc.sandbox_id} --private",
            file=sys.stderr,
        )
        return 1
    except EdgeError as exc:
        print(f"edge: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
