"""The model runtime option: `eager` (transformers as is, the default) or `compiled`
(each decoder layer's forward under `torch.compile` with dynamic shapes).

Why not a static KV cache (+ `torch.compile` / CUDA graphs), the usual recipe: a session
here keeps ONE cache per request and reuses it by longest common prefix, cropping it back
after every rejection (`ModelSession.crop`); the batching runner merges several sessions'
caches into one padded cache per forward and splits it back (specdec/runtime/batching.py);
GSD writes tree rows under custom 4D masks and then gathers the kept path's rows
(specdec/gsd/tree_session.py). A StaticCache has one preallocated length per batch slot,
no `crop`, and masks sized to that length; every one of those three paths would have to be
rewritten against it, and a CUDA graph needs fixed shapes where ours change every round
(1 token to decode, k + 1 to verify, a tree of n nodes, 1..max_batch sessions).

What does work with the DynamicCache scheme, and is what `compiled` does: compile each
decoder layer (regional compilation: the layer's norms, projections, rotary embedding,
attention and MLP fused by inductor) with `dynamic=True`, so the token count, cache length
and batch are symbolic and a handful of graphs serve every shape. Two things stop a plain
`layer.compile()` from doing that, both measured here (torch 2.13, transformers 5.25):

- the attention calls `cache.update(k, v, self.layer_idx)`, and dynamo guards on
  `layer_idx`: one graph per layer, past `recompile_limit` (8) at the 9th, after which the
  rest run eager. The compiled layer therefore gets a `_LayerKV`, a fresh object holding
  only ITS layer's keys and values, whose `update` ignores the index; the wrapper writes
  the grown tensors back into the session's DynamicCache.
- a cropped cache is a strided view (`keys[..., :n, :]`), and dynamo guards on strides:
  one recompile per crop length. The wrapper hands the compiled layer contiguous tensors
  (a copy only right after a crop, where the next `cat` copies the cache anyway).

Everything else stays as it was: the masks are built outside the compiled region (so
batching's and GSD's custom masks pass through), and a cache layer that is not a plain
`DynamicLayer` (sliding windows) makes the wrapper call the eager forward. `compiled` is
OFF by default until measured on a GPU (scripts/gpu_check.sh measures both).
"""

from __future__ import annotations

import enum

import torch

COMPILED_ATTR = "_specdec_runtime"  # set on a model once its layers are wrapped
RECOMPILE_LIMIT = 64  # graphs per compiled function: a few shapes (decode, verify, prefill, batch) x dtypes


class Runtime(str, enum.Enum):
    EAGER = "eager"
    COMPILED = "compiled"


RUNTIMES = tuple(r.value for r in Runtime)


def parse_runtime(value: str) -> Runtime:
    try:
        return Runtime(value)
    except ValueError:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {value!r}") from None


class _LayerKV:
    """What a compiled decoder layer sees as its cache: one layer's keys and values."""

    def __init__(self, keys: torch.Tensor | None, values: torch.Tensor | None):
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, layer_idx=None, *args, **kwargs):
        if self.keys is None:
            self.keys, self.values = key_states, value_states
        else:
            self.keys = torch.cat([self.keys, key_states], dim=-2)
            self.values = torch.cat([self.values, value_states], dim=-2)
        return self.keys, self.values


def _cache_layer(cache, index: int):
    """The cache's layer `index`, appended as DynamicCache.update would; None when it is not
    a plain DynamicLayer (then the layer runs eager)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if layers is None:
        return None
    make = getattr(cache, "layer_class_to_replicate", None)
    while len(layers) <= index and make is not None:
        layers.append(make())
    if len(layers) <= index or type(layers[index]) is not DynamicLayer:
        return None
    return layers[index]


def _wrap_layer(layer: torch.nn.Module, index: int, compiled, eager) -> None:
    def forward(hidden_states, *args, cache=None, **kwargs):
        if cache is None:
            return compiled(hidden_states, *args, cache=None, **kwargs)
        own = _cache_layer(cache, index)
        if own is None:
            return eager(hidden_states, *args, cache=cache, **kwargs)
        held = own.is_initialized and own.keys is not None and own.keys.numel() > 0
        kv = _LayerKV(own.keys.contiguous() if held else None, own.values.contiguous() if held else None)
        out = compiled(hidden_states, *args, cache=kv, **kwargs)
        if not own.is_initialized:
            own.lazy_initialization(kv.keys, kv.values)
        own.keys, own.values = kv.keys, kv.values
        return out

    layer.forward = forward  # an instance attribute: `del layer.forward` restores the class's


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a transformers causal LM (model.model.layers)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"runtime compiled needs a decoder with model.layers; {type(model).__name__} has none")
    return list(layers)


def apply_runtime(model: torch.nn.Module, runtime: Runtime | str) -> torch.nn.Module:
    """Put `model` on `runtime` in place (idempotent) and return it. Compilation happens
    lazily, at the first forward of each new shape family (seconds to a minute per model)."""
    runtime = parse_runtime(runtime) if isinstance(runtime, str) else runtime
    current = getattr(model, COMPILED_ATTR, Runtime.EAGER)
    if runtime is current:
        return model
    if runtime is Runtime.EAGER:
        remove_runtime(model)
        return model
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    for index, layer in enumerate(decoder_layers(model)):
        eager = layer.forward
        _wrap_layer(layer, getattr(getattr(layer, "self_attn", None), "layer_idx", index),
                    torch.compile(eager, dynamic=True), eager)
    setattr(model, COMPILED_ATTR, runtime)
    return model


def remove_runtime(model: torch.nn.Module) -> None:
    """Back to eager: the layers' own forwards (compiled code stays cached by torch)."""
    if getattr(model, COMPILED_ATTR, Runtime.EAGER) is Runtime.EAGER:
        return
    for layer in decoder_layers(model):
        if "forward" in layer.__dict__:
            del layer.forward
    setattr(model, COMPILED_ATTR, Runtime.EAGER)


def runtime_of(model: torch.nn.Module) -> str:
    return getattr(model, COMPILED_ATTR, Runtime.EAGER).value


def compile_stats() -> dict:
    """dynamo's counters: graphs compiled and frames captured so far in this process."""
    import torch._dynamo.utils

    stats = torch._dynamo.utils.counters.get("stats", {})
    return {"unique_graphs": int(stats.get("unique_graphs", 0)), "calls_captured": int(stats.get("calls_captured", 0))}
