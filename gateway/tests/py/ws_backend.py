"""A plain WebSocket server standing in for an instance: echoes every message and, on "push", sends one first.

Prints its port, then serves until killed.
"""
import asyncio
import sys

from websockets.asyncio.server import serve


async def handler(ws):
    async for message in ws:
        if message == "push":
            await ws.send("pushed by server")
        await ws.send("echo:" + message)


async def main():
    async with serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
