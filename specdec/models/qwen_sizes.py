"""Random-initialised Qwen2-architecture models of real sizes, for measuring a device where
the real weights cannot be brought (scripts/gpu_check.sh).

The shapes are those of Qwen2.5-0.5B / 7B / 32B (their config.json files): what a forward
costs depends on them, not on the weights' values. Random weights make the outputs
meaningless as text but not as a check: speculative decoding must still reproduce the
target alone token for token. `quick=True` gives shrunken stand-ins (the tiny pair's layer
shape, fewer layers, a small vocabulary) so the same code runs on a CPU in seconds.

The model is built directly on its device and in its dtype (a 32B model in float32 on the
host first would need 130 GB), initialised by transformers' own `_init_weights` (normal,
std 0.02) from `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

QWEN_VOCAB = 151936


@dataclass(frozen=True)
class QwenSize:
    name: str  # "0.5b", "7b", "32b"
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    tie_word_embeddings: bool
    vocab_size: int = QWEN_VOCAB

    def config(self):
        from transformers import Qwen2Config

        return Qwen2Config(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads, tie_word_embeddings=self.tie_word_embeddings,
            max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, eos_token_id=151643,
            bos_token_id=151643, pad_token_id=None,
        )

    def parameters(self) -> int:
        """Weights in the model (embeddings counted once when tied)."""
        h, kv = self.hidden_size, self.hidden_size // self.num_attention_heads * self.num_key_value_heads
        attention = h * h * 2 + h * kv * 2 + h + kv * 2  # q, o; k, v; q/k/v biases
        layer = attention + 3 * h * self.intermediate_size + 2 * h
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * layer + embeddings + h


# Qwen2.5-0.5B, -7B and -32B (config.json of each): the shapes a real deployment serves
REAL_SIZES = {
    "0.5b": QwenSize("0.5b", 896, 24, 14, 2, 4864, True),
    "7b": QwenSize("7b", 3584, 28, 28, 4, 18944, False),
    "32b": QwenSize("32b", 5120, 64, 40, 8, 27648, False),
}
# Stand-ins for a CPU smoke run: the tiny pair's layer (so a compiled runtime reuses its
# kernels), depth a fraction of the real one, a small vocabulary (seconds, not minutes)
QUICK_VOCAB = 8192
QUICK_SIZES = {
    "0.5b": QwenSize("0.5b", 64, 3, 4, 2, 128, True, QUICK_VOCAB),
    "7b": QwenSize("7b", 64, 4, 4, 2, 128, False, QUICK_VOCAB),
    "32b": QwenSize("32b", 64, 8, 4, 2, 128, False, QUICK_VOCAB),
}


def qwen_size(name: str, quick: bool = False) -> QwenSize:
    sizes = QUICK_SIZES if quick else REAL_SIZES
    if name not in sizes:
        raise ValueError(f"size must be one of {', '.join(sizes)}, got {name!r}")
    return sizes[name]


def random_qwen2(size: QwenSize, device: str = "cpu", dtype: torch.dtype = torch.bfloat16, seed: int = 0):
    """A Qwen2ForCausalLM of `size`'s shape with random weights, built on `device` in `dtype`, eval mode."""
    from transformers import Qwen2ForCausalLM

    with torch.random.fork_rng(devices=[torch.device(device)] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(seed)
        with torch.device(device):
            model = Qwen2ForCausalLM._from_config(size.config(), dtype=dtype)
    model.config.name_or_path = model.name_or_path = f"random-qwen2.5-{size.name}"
    return model.requires_grad_(False).eval()
