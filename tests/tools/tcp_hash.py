#!/usr/bin/env python3
"""TCP transfer with SHA-256 at both ends, for the lab tests.

    tcp_hash.py recv PORT [TIMEOUT_S]          accept one connection, read to EOF, print {"bytes", "sha256"}
    tcp_hash.py send HOST PORT BYTES [SEED]    send BYTES pseudo-random bytes, print {"bytes", "sha256"}

The receiver prints {"listening": PORT} once it accepts connections.
"""
import hashlib
import json
import random
import socket
import sys
import time

CHUNK = 1 << 20


def recv(port, timeout):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(1)
    srv.settimeout(timeout)
    print(json.dumps({"listening": port}), flush=True)
    conn, _ = srv.accept()
    conn.settimeout(timeout)
    digest = hashlib.sha256()
    total = 0
    while True:
        data = conn.recv(CHUNK)
        if not data:
            break
        digest.update(data)
        total += len(data)
    print(json.dumps({"bytes": total, "sha256": digest.hexdigest()}), flush=True)


def send(host, port, count, seed):
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    rng = random.Random(seed)
    digest = hashlib.sha256()
    sent = 0
    while sent < count:
        data = rng.randbytes(min(CHUNK, count - sent))
        digest.update(data)
        conn.sendall(data)
        sent += len(data)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)
    conn.close()
    print(json.dumps({"bytes": sent, "sha256": digest.hexdigest()}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "recv":
        recv(int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 60)
    elif sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 1)
    else:
        sys.exit(__doc__)
