"""The target worker's configuration: one frozen value, built from flags and env vars
(specdec/launch/cli.py) and passed down explicitly. The fields it shares with the draft
worker are in specdec/rpc/worker.py."""

from __future__ import annotations

from dataclasses import dataclass

from specdec.rpc.worker import WorkerConfig

DEFAULT_PORT = 50071


@dataclass(frozen=True)
class TargetWorkerConfig(WorkerConfig):
    port: int = DEFAULT_PORT  # 0: any free port
