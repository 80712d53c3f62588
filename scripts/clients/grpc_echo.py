#!/usr/bin/env python3
"""Calls the test server's gRPC service (raw bytes, identity serializers) and prints one reply per line.

  grpc_echo.py TARGET unary MESSAGE           # prints the reply: "<server name> MESSAGE"
  grpc_echo.py TARGET stream N [MS]           # prints N replies: "<server name> <i>"

TARGET is host:port. Plain h2c by default; with --tls the channel uses TLS, trusting --ca (PEM) or, without it,
the system roots; --authority overrides the :authority and the TLS server name (for SNI routing).
Exits non-zero with the gRPC status on failure.
"""
import argparse
import sys

import grpc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target")
    p.add_argument("method", choices=["unary", "stream"])
    p.add_argument("args", nargs="+")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca", help="PEM file of trusted roots for --tls")
    p.add_argument("--authority", help="server name for :authority and TLS SNI")
    p.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args()

    options = []
    if a.authority:
        options.append(("grpc.default_authority", a.authority))
        if a.tls:
            options.append(("grpc.ssl_target_name_override", a.authority))
    if a.tls:
        roots = open(a.ca, "rb").read() if a.ca else None
        channel = grpc.secure_channel(a.target, grpc.ssl_channel_credentials(roots), options=options)
    else:
        channel = grpc.insecure_channel(a.target, options=options)
    ident = lambda b: b  # noqa: E731 - raw bytes in and out
    try:
        if a.method == "unary":
            call = channel.unary_unary("/testserver.Echo/Unary", request_serializer=ident, response_deserializer=ident)
            print(call(a.args[0].encode(), timeout=a.timeout).decode())
        else:
            call = channel.unary_stream(
                "/testserver.Echo/ServerStream", request_serializer=ident, response_deserializer=ident
            )
            for reply in call(" ".join(a.args).encode(), timeout=a.timeout):
                print(reply.decode(), flush=True)
    except grpc.RpcError as e:
        print(f"grpc error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
