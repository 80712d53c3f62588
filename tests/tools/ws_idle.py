#!/usr/bin/env python3
"""A WebSocket session with a long quiet spell, against the test server's echo (`/ws`), for the lab tests.

    ws_idle.py URL SERVER_NAME CA_FILE IDLE_SECS PING_SECS

Exchanges a text and a binary message (each echoed back), stays quiet for IDLE_SECS while the client sends a
WebSocket ping every PING_SECS (0: no pings), then exchanges again. URL is wss://ADDRESS:PORT/ws; SERVER_NAME is
the TLS server name (SNI, checked against the certificate, which CA_FILE must issue).
Prints one line: "ok SERVED_BY" when the session survived, or "closed: REASON" when it did not.
"""
import asyncio
import ssl
import sys

import websockets
from websockets.exceptions import ConnectionClosed


async def exchange(ws, text):
    await ws.send(text)
    got = await asyncio.wait_for(ws.recv(), 10)
    if got != text:
        raise AssertionError(f"echo mismatch: sent {text!r}, got {got!r}")
    blob = bytes(range(256)) * 64
    await ws.send(blob)
    got = await asyncio.wait_for(ws.recv(), 10)
    if got != blob:
        raise AssertionError("binary echo mismatch")


async def main() -> int:
    url, name, ca = sys.argv[1], sys.argv[2], sys.argv[3]
    idle, ping = float(sys.argv[4]), float(sys.argv[5])
    ctx = ssl.create_default_context(cafile=ca)
    async with websockets.connect(
        url,
        ssl=ctx,
        server_hostname=name,
        ping_interval=ping or None,
        ping_timeout=10,
        open_timeout=10,
        close_timeout=2,
    ) as ws:
        served_by = ws.response.headers.get("x-served-by", "")
        await exchange(ws, "before the quiet spell")
        await asyncio.sleep(idle)
        try:
            await exchange(ws, "after the quiet spell")
        except (ConnectionClosed, asyncio.TimeoutError) as e:
            print(f"closed: {e!r}", flush=True)
            return 0
        print(f"ok {served_by}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
