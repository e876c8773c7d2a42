"""Which model a worker serves and where (specdec/models/placement.py): --model PATH,
--device, --device-map, --tp-plan. No GPU here: the device-map path is exercised with
device_map="cpu" (transformers + accelerate place the model as they would on GPUs),
and greedy equality holds through the three services started from saved folders."""

from __future__ import annotations

import pytest
import torch

from specdec.client import Client
from specdec.launch.stack import Service, free_ports
from specdec.models.placement import Placement, load_worker_model
from specdec.models.tiny import tiny_pair
from tests.helpers.reference import reference


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """The tiny pair (seed 0) saved as Hugging Face folders: draft/, target/ and a
    tokenizer-only folder (AutoTokenizer on a folder with a qwen2 config.json would
    pick Qwen2Tokenizer over the tiny character-level tokenizer)."""
    root = tmp_path_factory.mktemp("tiny-hf")
    draft, target, tokenizer = tiny_pair(0)
    for name, model in (("draft", draft), ("target", target)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    tokenizer.save_pretrained(root / "tokenizer")
    return root


def test_placement_checks_its_values(monkeypatch):
    assert Placement().load_kwargs() == {}
    assert Placement(device_map="auto").load_kwargs() == {"device_map": "auto"}
    assert Placement(device_map='{"": "cuda:1"}').load_kwargs() == {"device_map": {"": "cuda:1"}}
    for bad, match in [
        (dict(device="gpu"), "device must be cpu, cuda or cuda:N"),
        (dict(device_map="everywhere"), "device_map must be one of auto"),
        (dict(device_map="{nope"), "device_map is not valid JSON"),
        (dict(device_map="auto", tp_plan="auto"), "not both"),
        (dict(tp_plan="rows"), "tp_plan must be one of auto"),
    ]:
        with pytest.raises(ValueError, match=match):
            Placement(**bad)
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="use --device-map auto"):
        Placement(tp_plan="auto").load_kwargs()


def test_a_saved_folder_loads_with_a_device_map(saved_tiny):
    pair = load_worker_model("target", "tiny", str(saved_tiny / "target"), placement=Placement(device_map="cpu"))
    assert pair.draft is None and pair.tokenizer.eos_token_id == 1
    _, target, tokenizer = tiny_pair(0)
    ids = torch.tensor([tokenizer("def add(a, b):")["input_ids"]])
    with torch.inference_mode():
        assert torch.equal(pair.target(ids).logits, target(ids).logits)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here (runs wherever CUDA is available)")
def test_device_map_auto_spreads_over_the_gpus_and_keeps_greedy_output(saved_tiny):
    """On a GPU machine: --device-map auto places the target on the GPUs, and its greedy
    continuation is the CPU model's."""
    from specdec import Engine

    pair = load_worker_model("target", "tiny", str(saved_tiny / "target"), placement=Placement(device_map="auto"))
    assert {p.device.type for p in pair.target.parameters()} == {"cuda"}
    draft, target, tokenizer = tiny_pair(0)
    on_gpu = Engine(None, pair.target, tokenizer).generate("def add(a, b):", max_new_tokens=24, mode="autoregressive")
    on_cpu = Engine(None, target, tokenizer).generate("def add(a, b):", max_new_tokens=24, mode="autoregressive")
    assert on_gpu.token_ids == on_cpu.token_ids


def test_presets_still_load_and_refuse_a_device_map():
    pair = load_worker_model("draft", "tiny", placement=Placement(device="cpu"))
    assert pair.target is None and pair.draft is not None
    with pytest.raises(ValueError, match="the tiny preset is built in memory"):
        load_worker_model("target", "tiny", placement=Placement(device_map="auto"))


# a whole stack of its own: `make test-full` (the folder loading itself is tested above)
@pytest.mark.full
def test_greedy_equality_through_the_stack_from_model_folders(saved_tiny, tiny_engine, tmp_path):
    """`serve draft --model`, `serve target --model --device-map cpu`, coordinator
    `--tokenizer`: the target's greedy output, exactly."""
    draft_port, target_port, coordinator_port = free_ports(3)
    common = ["--threads", "1", "--device", "cpu"]
    draft = Service("draft", "draft_worker", draft_port, [*common, "--model", str(saved_tiny / "draft")], tmp_path)
    target = Service(
        "target", "target_worker", target_port,
        [*common, "--model", str(saved_tiny / "target"), "--device-map", "cpu"], tmp_path,
    )
    coordinator = Service(
        "coordinator", "coordinator", coordinator_port,
        ["--tokenizer", str(saved_tiny / "tokenizer"), "--draft", draft.address, "--target", target.address],
        tmp_path,
    )
    services = (draft, target, coordinator)
    try:
        for service in services:
            service.start()
        for service in services:
            service.wait_serving(90.0)
        with Client(coordinator.address, timeout=60) as client:
            assert str(saved_tiny / "target") in client.info().target_model
            for prompt, mode in (("def add(a, b):", "sequential"), ("the cat sat", "pearl")):
                result = client.complete(prompt, max_new_tokens=40, ignore_eos=True, mode=mode)
                assert list(result.token_ids) == reference(tiny_engine, prompt, 40)
    finally:
        for service in services:
            service.terminate()
        for service in services:
            service.stop()
