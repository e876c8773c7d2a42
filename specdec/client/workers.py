"""Asking workers directly: whether a cost-profile run measured the profile.

A worker under a cost profile holds each forward to its budget; a forward whose real
compute took longer overran it (the host, not the profile, set that forward's time).
The workers report both counts in GetInfo; a benchmark (the bench's gRPC rows, a load
test level) compares them before and after. Plain channels: for local stacks on loopback.
"""

from __future__ import annotations

import grpc

from specdec.pb.v1 import common_pb2, draft_worker_pb2_grpc, target_worker_pb2_grpc

STUBS = {"draft": draft_worker_pb2_grpc.DraftWorkerStub, "target": target_worker_pb2_grpc.TargetWorkerStub}


def budget_counts(workers: dict[str, str], timeout: float = 10.0) -> dict[str, tuple[int, int]]:
    """role -> (budgeted forwards, overrun forwards) of the workers at these addresses."""
    out = {}
    for role, address in workers.items():
        with grpc.insecure_channel(address) as channel:
            info = STUBS[role](channel).GetInfo(common_pb2.GetInfoRequest(), timeout=timeout)
        out[role] = (info.budgeted_forwards, info.overrun_forwards)
    return out


def delta(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict:
    """The overruns between two `budget_counts`: per role, and the forwards they are out of."""
    out = {"forwards": 0, "overruns": 0}
    for role, (forwards, overruns) in after.items():
        f0, o0 = before.get(role, (0, 0))
        out[role] = overruns - o0
        out[f"{role}_forwards"] = forwards - f0
        out["forwards"] += forwards - f0
        out["overruns"] += overruns - o0
    return out
