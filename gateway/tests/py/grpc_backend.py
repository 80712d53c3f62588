"""An h2c (cleartext HTTP/2) gRPC server standing in for an instance: unary Echo and server-streaming Count.

Uses generic handlers with raw bytes, so no generated code is needed. Prints its port, then serves until killed.
"""
import sys
from concurrent import futures

import grpc


def echo(request, context):
    return b"echo:" + request


def count(request, context):
    n = int(request.decode())
    for i in range(n):
        yield f"item-{i}".encode()


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "backend"
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(
            lambda req, ctx: echo(req, ctx) + b" from " + name.encode()
        ),
        "Count": grpc.unary_stream_rpc_method_handler(count),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Demo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
