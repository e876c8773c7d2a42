"""What load to send: the scenario, the prompt mix, and the bounds that stop a run.

Scenarios (N = clients):
- steady: N clients in a closed loop from the start (each sends its next request as
  soon as the previous one ends): N requests in flight throughout;
- ramp:   the same closed loop, client i joining at i * ramp_s / N: concurrency
  grows from 1 to N;
- burst:  waves of N requests sent at the same instant; the next wave starts when
  the whole wave has ended.

Bounds: at most `requests` requests in all, none started after `duration_s`, and
whatever is still running at `duration_s + drain_s` is cancelled (counted as
TIMEOUT). Every run stops by itself.
"""

from __future__ import annotations

import enum
import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from specdec.bench import DEFAULT_PROMPTS  # a torch-free module: just the path

# Short prompts (~20-30 characters): a decode-heavy load, where what the workers do per
# output token, speculation included, sets the capacity rather than the prompts' prefill.
SHORT_PROMPTS = Path(__file__).parent / "prompts-short.jsonl"

LOOPBACK_NAMES = {"localhost"}


class Scenario(str, enum.Enum):
    STEADY = "steady"
    RAMP = "ramp"
    BURST = "burst"


@dataclass(frozen=True)
class Prompt:
    kind: str  # code, prose, maths, summaries
    text: str


def load_prompts(path: str | Path = DEFAULT_PROMPTS, kinds: Sequence[str] = ()) -> list[Prompt]:
    """The {"kind", "prompt"} lines of a jsonl file, only `kinds` if given (all if empty)."""
    prompts = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                item = json.loads(line)
                prompts.append(Prompt(str(item["kind"]), str(item["prompt"])))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: each line must be a JSON object with 'kind' and 'prompt' ({exc})") from None
    if kinds:
        present = sorted({p.kind for p in prompts})
        unknown = [k for k in kinds if k not in present]
        if unknown:
            raise ValueError(f"--mix: no prompts of kind {', '.join(unknown)} in {path}; kinds there: {', '.join(present)}")
        prompts = [p for p in prompts if p.kind in kinds]
    if not prompts:
        raise ValueError(f"no prompts in {path}")
    return prompts


def interleave(prompts: Sequence[Prompt]) -> list[Prompt]:
    """Round-robin over kinds (code, prose, code, prose, ...), so any prefix of the
    request sequence is a fair mix."""
    by_kind: dict[str, list[Prompt]] = {}
    for p in prompts:
        by_kind.setdefault(p.kind, []).append(p)
    out = []
    for i in range(max(len(v) for v in by_kind.values())):
        out += [group[i] for group in by_kind.values() if i < len(group)]
    return out


@dataclass(frozen=True)
class LoadPlan:
    """One load level: a scenario at `clients` concurrency, bounded in requests and time."""

    scenario: Scenario = Scenario.STEADY
    clients: int = 1
    requests: int = 16  # requests in all, over every client
    duration_s: float = 60.0  # no request starts after this
    drain_s: float = 30.0  # then in-flight requests get this long before they are cancelled
    ramp_s: float | None = None  # ramp: time until the last client joins; None = duration_s / 2
    stream: bool = True  # Generate (streamed) or Complete (unary)
    params: dict = field(default_factory=dict)  # GenerateRequest fields (max_new_tokens, mode, ...)
    warmup: int = 1  # requests sent (and not recorded) before the level starts

    def __post_init__(self):
        if self.clients < 1:
            raise ValueError(f"--clients must be >= 1, got {self.clients}")
        if self.requests < 1:
            raise ValueError(f"--requests must be >= 1, got {self.requests}")
        if not 0 < self.duration_s <= 24 * 3600:
            raise ValueError(f"--duration must be in (0, 86400] seconds, got {self.duration_s}")
        if self.drain_s < 0:
            raise ValueError(f"--drain must be >= 0 seconds, got {self.drain_s}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")

    def start_offset(self, client: int) -> float:
        """Seconds after the start at which closed-loop client `client` (0-based) begins."""
        if self.scenario is not Scenario.RAMP or self.clients == 1:
            return 0.0
        ramp = self.duration_s / 2 if self.ramp_s is None else self.ramp_s
        return client * ramp / self.clients


def check_loopback(address: str, allow_remote: bool = False) -> str | None:
    """Raise ValueError unless `address` (HOST:PORT) is on loopback; with `allow_remote`,
    return a warning instead. Host names other than localhost are refused without being
    resolved (no DNS traffic)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--address must be HOST:PORT, got {address!r}")
    host = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host.lower() in LOOPBACK_NAMES
    if loopback:
        return None
    message = f"{address} is not a loopback address"
    if not allow_remote:
        raise ValueError(f"{message}: load tests go to 127.0.0.1 only; pass --allow-remote to load a remote server")
    return f"warning: {message}; sending load to it because --allow-remote was given"
