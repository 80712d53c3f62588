"""A gRPC client over TLS: one unary and one server-streaming call through the gateway.

Usage: grpc_client.py ADDR:PORT SERVER_NAME CA_FILE. Prints the answers, one per line.
"""
import sys

import grpc


def main():
    target, name, ca = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    options = [("grpc.ssl_target_name_override", name), ("grpc.default_authority", name)]
    with grpc.secure_channel(target, creds, options=options) as channel:
        unary = channel.unary_unary("/test.Demo/Echo")
        stream = channel.unary_stream("/test.Demo/Count")
        print(unary(b"hello", timeout=10).decode())
        for item in stream(b"5", timeout=10):
            print(item.decode())


if __name__ == "__main__":
    main()
