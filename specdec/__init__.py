"""specdec: lossless speculative decoding, embedded or distributed.

One folder per layer, imports pointing down (README "Layout"): core/ (maths, shared
types), models/, runtime/, gsd/, specdecpp/, backend/, loop/ (the request loop and the
embedded `Engine`), rpc/ and pb/ (the gRPC edge), client/ (the SDK), launch/ (what
starts the services in draft_worker/, target_worker/, coordinator/), bench/.
`Engine` is imported lazily so `specdec.client` stays torch-free.
"""

__version__ = "0.1.0"
__all__ = ["Engine", "__version__"]


def __getattr__(name):
    if name == "Engine":
        from specdec.loop.engine import Engine

        return Engine
    raise AttributeError(f"module 'specdec' has no attribute {name!r}")
