"""Asking a service whether it serves: the standard grpc.health.v1 check, as a client."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from specdec.rpc.security import ChannelTLS, open_channel


def is_serving(address: str, timeout: float = 1.0, tls: ChannelTLS | None = None) -> bool:
    """Whether the standard health check at `address` answers SERVING (`tls`: None for plaintext)."""
    with open_channel(address, tls) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING
