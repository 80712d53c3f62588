"""A WebSocket client over TLS through the gateway.

Usage: ws_client.py HOST PORT SERVER_NAME CA_FILE IDLE_SECS PING_INTERVAL_SECS (0 disables pings).
Exchanges messages, stays idle for IDLE_SECS (sending pings if enabled), then exchanges again.
Prints "ok" on success, or "closed: <reason>" when the connection did not survive the idle period.
"""
import asyncio
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def main():
    host, port, name, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    idle, ping = float(sys.argv[5]), float(sys.argv[6])
    ctx = ssl.create_default_context(cafile=ca)
    async with connect(
        f"wss://{name}:{port}/",
        ssl=ctx,
        host=host,
        port=port,
        server_hostname=name,
        ping_interval=ping or None,
        ping_timeout=10,
    ) as ws:
        await ws.send("hello")
        assert await ws.recv() == "echo:hello"
        await ws.send("push")
        assert await ws.recv() == "pushed by server"
        assert await ws.recv() == "echo:push"
        await asyncio.sleep(idle)
        try:
            await ws.send("after idle")
            reply = await asyncio.wait_for(ws.recv(), 5)
        except (ConnectionClosed, asyncio.TimeoutError) as e:
            print(f"closed: {e!r}", flush=True)
            return
        assert reply == "echo:after idle", reply
        print("ok", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
