"""specdec: lossless speculative decoding, embedded or distributed.

The shared core (this package) is pure torch: sampling, lossless acceptance,
draft-length policies, KV-cache sessions, model loading, the orchestration loop.
It never imports gRPC; services live in draft_worker/, target_worker/, coordinator/.
`Engine` is imported lazily so `specdec.client` stays torch-free.
"""

__version__ = "0.1.0"
__all__ = ["Engine", "__version__"]


def __getattr__(name):
    if name == "Engine":
        from specdec.engine import Engine

        return Engine
    raise AttributeError(f"module 'specdec' has no attribute {name!r}")
