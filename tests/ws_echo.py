"""A WebSocket echo server (the `websockets` library, not ours) for tunnel tests.

Run: python -m tests.ws_echo HOST. Prints the port, then echoes every message; the path `/close`
closes from the server side after the first message. Each upgrade request's headers are echoed back
as a first text message when the path is `/headers`.
"""

import asyncio
import json
import sys

from websockets.asyncio.server import serve


async def handler(ws):
    path = ws.request.path
    if path == "/headers":
        await ws.send(json.dumps([[k.lower(), v] for k, v in ws.request.headers.raw_items()]))
    async for message in ws:
        await ws.send(message)
        if path == "/close":
            await ws.close(code=4000, reason="server closes")
            return


async def main(host: str) -> None:
    async with serve(handler, host, 0, max_size=64 << 20) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
