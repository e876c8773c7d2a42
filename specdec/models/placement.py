"""Which model a worker serves and where its weights go: a preset's model or a folder,
on one device or spread over several.

- `device`: cpu | cuda | cuda:N (| mps): the whole model on one device.
- `device_map`: transformers' `device_map` (auto | balanced | balanced_low_0 |
  sequential, one device such as cpu or cuda:1, or a JSON {"module": device} map):
  the layers are spread over the visible GPUs (and CPU) inside ONE process, each
  forward runs them in turn. The way to serve a target bigger than one GPU here;
  needs `accelerate`.
- `tp_plan`: transformers' tensor parallelism ("auto"): every rank of a `torchrun`
  job holds a slice of every layer. Loading works; serving it needs every rank to
  run each forward in lockstep with rank 0, which the workers do not do yet, so a
  worker refuses WORLD_SIZE > 1 (knowingly incomplete; use device_map meanwhile).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from specdec.models.loading import DType, ModelPair, load_model, load_tokenizer
from specdec.models.presets import Preset, load_preset, qwen_coder_paths

DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
TP_PLANS = ("auto",)


@dataclass(frozen=True)
class Placement:
    device: str = "cpu"  # cpu | cuda | cuda:N: the whole model there (ignored with device_map / tp_plan)
    device_map: str | None = None  # transformers device_map: auto, balanced, a device, or a JSON map
    tp_plan: str | None = None  # transformers tp_plan: auto (under torchrun)

    def __post_init__(self):
        if not DEVICE.match(self.device):
            raise ValueError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.device_map and self.tp_plan:
            raise ValueError("give --device-map or --tp-plan, not both: a model is either spread by layers or sliced")
        if self.device_map:
            self.parsed_device_map()  # fail early on a bad value
        if self.tp_plan and self.tp_plan not in TP_PLANS:
            raise ValueError(f"tp_plan must be one of {', '.join(TP_PLANS)}, got {self.tp_plan!r}")

    def parsed_device_map(self) -> str | dict:
        value = self.device_map
        if value.startswith("{"):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"device_map is not valid JSON ({exc}): give e.g. '{{\"\": \"cuda:0\"}}'") from None
        if value in DEVICE_MAP_STRATEGIES or DEVICE.match(value):
            return value
        raise ValueError(
            f"device_map must be one of {', '.join(DEVICE_MAP_STRATEGIES)}, a device (cpu, cuda:N) or a JSON map; "
            f"got {value!r}"
        )

    def load_kwargs(self) -> dict:
        """The from_pretrained arguments (load_model then leaves the device to them)."""
        if self.device_map:
            return {"device_map": self.parsed_device_map()}
        if self.tp_plan:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            if world > 1:
                raise ValueError(
                    f"--tp-plan under torchrun ({world} ranks) needs every rank to run each forward with rank 0; "
                    "the workers serve from one process only: use --device-map auto to spread the layers over "
                    "this pod's GPUs instead"
                )
            return {"tp_plan": self.tp_plan}
        return {}


def load_worker_model(
    role: str, preset: str, model: str | None = None, seed: int = 0, dtype: DType | str = DType.FLOAT32,
    placement: Placement = Placement(),
) -> ModelPair:
    """The one model a worker serves (the pair's other slot is None): the folder or .gguf
    `model` when given (its tokenizer too), else the preset's."""
    if role not in ("draft", "target"):
        raise ValueError(f"role must be draft or target, got {role!r}")
    kwargs = placement.load_kwargs()
    if model:
        loaded = load_model(model, dtype, placement.device, **kwargs)
        tokenizer = load_tokenizer(model)
    elif not kwargs:
        return load_preset(preset, seed=seed, dtype=dtype, device=placement.device, roles=(role,))
    elif Preset(preset) is Preset.TINY:
        raise ValueError("--device-map / --tp-plan need a model folder (--model or preset qwen-coder); "
                         "the tiny preset is built in memory: use --device")
    else:
        path = qwen_coder_paths()[role]
        loaded, tokenizer = load_model(path, dtype, placement.device, **kwargs), load_tokenizer(path)
    name = model or preset
    return ModelPair(loaded if role == "draft" else None, loaded if role == "target" else None, tokenizer, name)
