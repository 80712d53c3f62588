"""Opens N TLS connections through a proxy, completes each handshake, and keeps them idle.

Usage: idle_conns.py HOST PORT SERVER_NAME CA_FILE N. Prints "ready <opened>" when done, then holds the
connections until its standard input closes.
"""
import asyncio
import ssl
import sys


async def main():
    host, port, name, ca, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    gate = asyncio.Semaphore(100)
    conns = []
    failures = 0

    async def one():
        nonlocal failures
        async with gate:
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=ctx, server_hostname=name), 30
                )
                conns.append((r, w))
            except Exception as e:  # counted and reported, the benchmark decides what it means
                failures += 1
                if failures <= 3:
                    print(f"connection failed: {e!r}", file=sys.stderr, flush=True)

    await asyncio.gather(*(one() for _ in range(n)))
    print(f"ready {len(conns)}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
