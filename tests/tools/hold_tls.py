#!/usr/bin/env python3
"""Holds TLS connections through the gateway open until one is refused, for the lab tests.

    hold_tls.py ADDRESS PORT SERVER_NAME CA_FILE MAX

Opens up to MAX connections to ADDRESS:PORT with SNI SERVER_NAME (certificate checked against CA_FILE), one after
the other, each making one keep-alive HTTP request whose answer must arrive, and keeps them all open. Stops at the
first connection that fails and prints one JSON line {"held": N, "error": "..."} (error null when all MAX
opened), then keeps the connections open until a line (or end of file) arrives on standard input.
"""
import json
import socket
import ssl
import sys


def main() -> int:
    addr, port, name, ca, most = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    ctx = ssl.create_default_context(cafile=ca)
    held = []
    error = None
    for _ in range(most):
        try:
            raw = socket.create_connection((addr, port), timeout=10)
            s = ctx.wrap_socket(raw, server_hostname=name)
            s.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
            answer = s.recv(65536)
            if not answer.startswith(b"HTTP/1.1 200"):
                raise OSError(f"unexpected answer {answer[:40]!r}")
            held.append(s)
        except (OSError, ssl.SSLError) as e:
            error = str(e)
            break
    print(json.dumps({"held": len(held), "error": error}), flush=True)
    sys.stdin.readline()
    for s in held:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
