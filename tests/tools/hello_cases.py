#!/usr/bin/env python3
"""ClientHello edge cases against the gateway's client listener, from a real TLS library's ClientHello.

Usage: hello_cases.py GATEWAY_IP PORT ECHO_NAME BAD_NAMES_JSON

The ClientHello comes from Python's ssl module (OpenSSL) for the given server name; cases alter only how it is
framed and sent, or add unknown extensions (which servers must ignore). ECHO_NAME is a passthrough route (`s`) to
an instance's raw TCP echo port, so a routed ClientHello comes back byte for byte.

Prints one JSON object per line: {"case", "sent", "answer" (hex), "elapsed" (s), "closed"}.
  - one_byte: the ClientHello one byte per TCP segment (TCP_NODELAY, a pause between writes);
  - padded: 10 KB of unknown extension, split over 1000-byte records and sent in 700-byte writes;
  - too_large: 80 KB of unknown extensions (over the gateway's ClientHello cap);
  - silent: a connection that sends nothing (closed at the ClientHello deadline);
  - not_tls: an HTTP request instead of a ClientHello;
  - bad:<name>: the ClientHello for each name of BAD_NAMES_JSON ("" means no SNI at all).
All cases run at once, so the whole run takes about the gateway's ClientHello deadline.
"""

import json
import socket
import ssl
import sys
import threading
import time


def client_hello(server_name):
    """The handshake message (without record framing) OpenSSL sends first for `server_name` (None: no SNI)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    wire = outgoing.read()
    message = b""
    while wire:
        if wire[0] != 0x16:
            raise ValueError("OpenSSL's first flight is not a handshake record")
        length = int.from_bytes(wire[3:5], "big")
        message += wire[5 : 5 + length]
        wire = wire[5 + length :]
    return message


def with_extensions(message, extensions):
    """`message` with (type, data) extensions appended before the last one (TLS 1.3 wants pre_shared_key last)."""
    body = message[4:]
    p = 2 + 32
    p += 1 + body[p]
    p += 2 + int.from_bytes(body[p : p + 2], "big")
    p += 1 + body[p]
    ext_len = int.from_bytes(body[p : p + 2], "big")
    exts = body[p + 2 : p + 2 + ext_len]
    added = b"".join(t.to_bytes(2, "big") + len(d).to_bytes(2, "big") + d for t, d in extensions)
    exts = added + exts
    if len(exts) > 0xFFFF:
        # Longer than one extension block may be: the message is still well framed as a handshake message of
        # that length, which is what a size cap has to catch.
        new_body = body[:p] + (len(exts) & 0xFFFF).to_bytes(2, "big") + exts
    else:
        new_body = body[:p] + len(exts).to_bytes(2, "big") + exts
    return bytes([message[0]]) + len(new_body).to_bytes(3, "big") + new_body


def records(message, size):
    out = b""
    for i in range(0, len(message), size):
        part = message[i : i + size]
        out += b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
    return out


def run_case(addr, name, chunks, pause, expect_len, results):
    started = time.monotonic()
    answer, closed = b"", False
    try:
        s = socket.create_connection(addr, timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for c in chunks:
            s.sendall(c)
            if pause:
                time.sleep(pause)
        s.settimeout(15)
        while True:
            data = s.recv(65536)
            if not data:
                closed = True
                break
            answer += data
            if expect_len and len(answer) >= expect_len:
                break
        s.close()
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    except socket.timeout:
        pass
    results.append(
        {
            "case": name,
            "sent": sum(len(c) for c in chunks),
            "sent_hex": b"".join(chunks).hex() if expect_len else "",
            "answer": answer.hex(),
            "elapsed": time.monotonic() - started,
            "closed": closed,
        }
    )


def main():
    ip, port, echo_name, bad_names = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    addr = (ip, port)
    hello = client_hello(echo_name)
    one_byte = records(hello, 16384)
    padded = records(with_extensions(hello, [(0xFE01, b"\x00" * 10240)]), 1000)
    padded_writes = [padded[i : i + 700] for i in range(0, len(padded), 700)]
    huge = records(with_extensions(hello, [(0xFE01, b"\x00" * 40000), (0xFE02, b"\x00" * 40000)]), 16384)
    cases = [
        ("one_byte", [bytes([b]) for b in one_byte], 0.0002, len(one_byte)),
        ("padded", padded_writes, 0.001, len(padded)),
        ("too_large", [huge], 0, 0),
        ("silent", [], 0, 0),
        ("not_tls", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], 0, 0),
    ]
    for n in bad_names:
        cases.append(("bad:" + n, [records(client_hello(n or None), 16384)], 0, 0))
    results = []
    threads = [
        threading.Thread(target=run_case, args=(addr, name, chunks, pause, expect, results))
        for name, chunks, pause, expect in cases
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
