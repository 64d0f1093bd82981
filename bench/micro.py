"""Micro-benchmarks of the pure stages a request crosses, in memory, no sockets.

    python bench/micro.py [--number 20000] [--repeat 7] [--json FILE] [--edge-src DIR]

One captured browser-like request (9 header fields) goes through the stages of each lane
(edge/http/README.md): the fast lane every plain exchange takes, and the h11 lane the rest take.

  fast: parse     edge.http.h1.parse_request (plain-head reader, a strict subset of h11)
  fast: write     edge.http.h1.request_bytes (the upstream head's bytes)
  fast: response  edge.http.h1.parse_response on a typical backend answer
  fast: answer    rewrite_response + h1.response_bytes (the client's response head)
  h11: parse      h11 server side: receive_data + next_event (Request) + next_event (EndOfMessage). A
                  new h11.Connection per iteration, so its construction (~1/3 of the figure) is included
  h11: check      edge.http.request.check_request (smuggling checks on the parsed head)
  h11: serialize  h11 client side: send(Request) + send(EndOfMessage), with _parsed=True as h11lane.py
  h11: response   edge.http.headers.rewrite_response on the backend answer's fields (h11 reads and
                  writes the response head on top of this; not timed here)
  both: route     edge.http.route.split_target + Router.route (Host -> port, sandbox)
  both: rewrite   connection_tokens + is_upgrade + rewrite_request (the upstream header list)

Each stage is timed with timeit: `--number` calls per repeat, `--repeat` repeats, median of the
repeats, reported in ns per request. A stage whose code changed shape is reported as unavailable
rather than stopping the run.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import timeit
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import h11  # noqa: E402

RAW = (
    b"GET /api/v1/items?page=2&sort=desc HTTP/1.1\r\n"
    b"Host: 3000-a1b2c3d4e5.sandbox.localhost:8080\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: application/json, text/plain, */*\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: http://3000-a1b2c3d4e5.sandbox.localhost:8080/items\r\n"
    b"Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n"
    b"Connection: keep-alive\r\n"
    b"Sec-Fetch-Mode: cors\r\n"
    b"\r\n"
)
RESPONSE_HEADERS = [
    (b"server", b"uvicorn"),
    (b"date", b"Thu, 26 Nov 2026 12:00:00 GMT"),
    (b"content-type", b"application/json"),
    (b"content-length", b"512"),
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"keep-alive", b"timeout=5"),
]
RESPONSE_RAW = b"HTTP/1.1 200 OK\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in RESPONSE_HEADERS) + b"\r\n"


def parse():
    h = h11.Connection(h11.SERVER)
    h.receive_data(RAW)
    request = h.next_event()
    h.next_event()
    return request


def _bind(fn, values: dict):
    """fn with its arguments taken by parameter name from `values`, so a signature that gains or
    reorders parameters (edge's hot path is being tuned) still gets what it asks for."""
    params = inspect.signature(fn).parameters
    missing = [n for n, p in params.items() if n not in values and p.default is inspect.Parameter.empty]
    if missing:
        raise TypeError(f"{fn.__name__}: no value for {', '.join(missing)}")
    return partial(fn, **{n: values[n] for n in params if n in values})


def stages() -> dict:
    """name -> zero-argument callable; each runs one stage on the output of the stages before it."""
    # Imported here, so that bench/run.py --edge-src can put another checkout first on sys.path.
    from edge.config import HttpConfig
    from edge.http import headers as hdr
    from edge.http.request import check_request
    from edge.http.route import Router, split_target

    request = parse()
    router = Router(("sandbox.localhost",))
    host = next(v for n, v in request.headers if n == b"host")
    http = HttpConfig()
    values = {
        "request": request,
        "headers": list(request.headers),
        "max_head_bytes": http.max_head_bytes,
        "max_head_fields": http.max_head_fields,
        "host": host,
        "upstream_host": host,
        "client_ip": b"127.0.0.1",
        "scheme": b"http",
        "upgrade": None,
        "forwarded_port": b"8080",
        "via": b"1.1 edge-1a2b3c4d",
        "new_request_id": lambda: b"0a1b2c3d4e5f-1",
    }
    check = _bind(check_request, values)

    def route():
        _, target = split_target(request.target)
        return router.route(host), target

    (port, _sandbox), target = route()
    values["tokens"] = hdr.connection_tokens(values["headers"])
    rewrite_request = _bind(hdr.rewrite_request, values)

    def rewrite():
        tokens = hdr.connection_tokens(values["headers"])
        if tokens:
            hdr.is_upgrade(values["headers"], tokens)
        return rewrite_request()

    out_headers = rewrite()
    if isinstance(out_headers, tuple) and not isinstance(out_headers, list) and hasattr(out_headers, "headers"):
        out_headers = out_headers.headers  # rewrite_request returns (headers, user_agent, request_id) now

    def serialize():
        # _parsed=True, as edge/http/conn.py does: the fields came out of h11's parser, so h11 need
        # not validate them again.
        up = h11.Connection(h11.CLIENT)
        head = h11.Request(method=request.method, target=target, headers=out_headers, _parsed=True)
        return up.send(head) + up.send(h11.EndOfMessage())

    def response():
        return hdr.rewrite_response(RESPONSE_HEADERS, 200)

    lanes = {
        "both: route": route,
        "both: rewrite": rewrite,
        "h11: parse": parse,
        "h11: check": check,
        "h11: serialize": serialize,
        "h11: response": response,
    }
    try:
        from edge.http import h1
    except ImportError:  # a checkout from before the fast lane
        return lanes
    end = RAW.find(b"\r\n\r\n")
    response_end = RESPONSE_RAW.find(b"\r\n\r\n")
    head = h1.parse_request(RAW, end, http.max_head_bytes, http.max_head_fields)
    answer_head = h1.parse_response(RESPONSE_RAW, response_end, False)

    def answer():
        fields = hdr.rewrite_response(answer_head.headers, answer_head.status, answer_head.tokens)
        return h1.response_bytes(answer_head.start, fields)

    lanes.update(
        {
            "fast: parse": lambda: h1.parse_request(
                RAW, RAW.find(b"\r\n\r\n"), http.max_head_bytes, http.max_head_fields
            ),
            "fast: write": lambda: h1.request_bytes(head.method, target, out_headers),
            "fast: response": lambda: h1.parse_response(RESPONSE_RAW, RESPONSE_RAW.find(b"\r\n\r\n"), False),
            "fast: answer": answer,
        }
    )
    return lanes


def measure(number: int, repeat: int) -> dict:
    """ns per request for each stage (median of repeats), plus their sum."""
    out: dict = {
        "setup": {
            "number": number,
            "repeat": repeat,
            "request_bytes": len(RAW),
            "h11": h11.__version__,
            "python": sys.version.split()[0],
        },
        "ns": {},
        "unavailable": {},
    }
    try:
        fns = stages()
    except Exception as exc:  # the stages' signatures moved on; say so instead of failing the suite
        out["unavailable"]["all"] = repr(exc)
        return out
    for name, fn in fns.items():
        try:
            fn()
            times = timeit.Timer(fn).repeat(repeat=repeat, number=number)
        except Exception as exc:
            out["unavailable"][name] = repr(exc)
            continue
        times.sort()
        out["ns"][name] = times[len(times) // 2] / number * 1e9
    ns = out["ns"]
    shared = sum(v for k, v in ns.items() if k.startswith("both: "))
    for lane in ("fast", "h11"):
        parts = [v for k, v in ns.items() if k.startswith(lane + ": ")]
        if parts:
            ns[f"{lane} lane total"] = shared + sum(parts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=20000, help="calls per repeat")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--edge-src", type=Path, help="time the stages of another checkout")
    args = ap.parse_args()
    if args.edge_src:
        sys.path.insert(0, str(args.edge_src.resolve()))
    result = measure(args.number, args.repeat)
    for name, ns in result["ns"].items():
        print(f"{name:16} {ns:9,.0f} ns/request")
    for name, why in result["unavailable"].items():
        print(f"{name:10} unavailable: {why}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
