"""The draft worker's configuration: one frozen value, built from flags and env vars
(specdec/launch/cli.py) and passed down explicitly. The fields it shares with the target
worker are in specdec/rpc/worker.py."""

from __future__ import annotations

from dataclasses import dataclass

from specdec.rpc.worker import WorkerConfig
from specdec.runtime.drafting import DEFAULT_PROPOSAL_TOP_N

DEFAULT_PORT = 50061


@dataclass(frozen=True)
class DraftWorkerConfig(WorkerConfig):
    port: int = DEFAULT_PORT  # 0: any free port
    proposal_top_n: int = DEFAULT_PROPOSAL_TOP_N  # N of the sparse proposal q sent per token
    acceptance_head: str | None = None  # folder of a SpecDec++ head (specdec.specdecpp.head); policy specdecpp needs one

    def __post_init__(self):
        super().__post_init__()
        if self.proposal_top_n < 1:
            raise ValueError(f"proposal_top_n must be >= 1, got {self.proposal_top_n}")
