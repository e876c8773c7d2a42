"""gRPC health check over mutual TLS, for kubelet exec probes.

Kubelet's native gRPC probe speaks plaintext only, so with tls.enabled the chart runs
this script instead: it asks grpc.health.v1.Health/Check on localhost and exits 0 when
the answer is SERVING, 1 otherwise (not serving, unreachable, timeout, bad certificate).
Standard library + grpcio + grpcio-health-checking only (both are in the image).
"""

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="gRPC port on localhost")
    parser.add_argument("--service", default="", help='health service name; "" = the whole server')
    parser.add_argument("--server-name", default="", help="name the server certificate must carry")
    parser.add_argument("--tls-dir", default="/etc/specdec/tls", help="folder with ca.crt, tls.crt, tls.key")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (below the probe's timeoutSeconds)")
    args = parser.parse_args()

    def read(name: str) -> bytes:
        with open(os.path.join(args.tls_dir, name), "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(read("ca.crt"), read("tls.key"), read("tls.crt"))
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    with grpc.secure_channel(f"localhost:{args.port}", creds, options) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"health check failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
