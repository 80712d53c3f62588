#!/usr/bin/env python3
"""Opens a WebSocket to the test server's echo (`/ws`), sends each MESSAGE (text) plus one binary frame, checks
every echo and prints the server's name (response header x-served-by). Exits non-zero on any mismatch.

  ws_echo.py URL [MESSAGE...] [--insecure] [--server-name NAME]

URL is ws://host:port/ws or wss://host:port/ws; --server-name sets the TLS SNI (for SNI routing when URL uses an
address); --insecure skips certificate checks (the test server's own certificate is self-signed).
"""
import argparse
import asyncio
import ssl
import sys

import websockets


async def run(a) -> int:
    kwargs = {}
    if a.url.startswith("wss://"):
        ctx = ssl.create_default_context(cafile=a.ca) if a.ca else ssl.create_default_context()
        if a.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        kwargs["ssl"] = ctx
        if a.server_name:
            kwargs["server_hostname"] = a.server_name
    if a.host_header:
        kwargs["additional_headers"] = {"Host": a.host_header}
    async with websockets.connect(a.url, open_timeout=a.timeout, close_timeout=a.timeout, **kwargs) as ws:
        served_by = ws.response.headers.get("x-served-by", "")
        messages = a.messages or ["hello"]
        for m in messages:
            await ws.send(m)
            got = await asyncio.wait_for(ws.recv(), a.timeout)
            if got != m:
                print(f"echo mismatch: sent {m!r}, got {got!r}", file=sys.stderr)
                return 3
        blob = bytes(range(256)) * 300
        await ws.send(blob)
        got = await asyncio.wait_for(ws.recv(), a.timeout)
        if got != blob:
            print("binary echo mismatch", file=sys.stderr)
            return 3
        print(served_by)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("messages", nargs="*")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--ca")
    p.add_argument("--server-name")
    p.add_argument("--host-header")
    p.add_argument("--timeout", type=float, default=10.0)
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
