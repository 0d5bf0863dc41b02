"""DeepSpeed ZeRO settings: how accelerate's launch settings and a DeepSpeed config file map to
the config prefopt hands DeepSpeed, and what is refused (prefopt.engine.zero). No deepspeed
import: these run without the package."""

import json
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from prefopt.engine import distributed as pd
from prefopt.engine import zero
from prefopt.errors import ConfigError

ENV = ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
       "ACCELERATE_DEEPSPEED_CONFIG_FILE", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE",
       "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "ACCELERATE_DEEPSPEED_ZERO3_INIT",
       "ACCELERATE_USE_FSDP")
CPU = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU)


@pytest.fixture
def env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_ds_config_sets_what_prefopt_owns():
    cfg = zero.ds_config(3, 0.5, "bf16", {"zero_optimization": {"reduce_bucket_size": 10},
                                          "train_batch_size": "auto"})
    assert cfg == {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
                   "gradient_clipping": 0.5,
                   "zero_optimization": {"reduce_bucket_size": 10, "stage": 3},
                   "bf16": {"enabled": True}, "zero_allow_untested_optimizer": True,
                   "steps_per_print": 2**31 - 1}
    assert zero.ds_config(2, 1.0, "no")["bf16"] == {"enabled": False}


@pytest.mark.parametrize("extra,message", [
    ({"gradient_accumulation_steps": 4}, "gradient_accumulation_steps is set by prefopt"),
    ({"train_micro_batch_size_per_gpu": 2}, "train_micro_batch_size_per_gpu is set by"),
    ({"gradient_clipping": 2.0}, "gradient_clipping is set by prefopt"),
])
def test_ds_config_refuses_keys_prefopt_sets(extra, message):
    with pytest.raises(ConfigError, match=message):
        zero.ds_config(2, 1.0, "no", extra)


@pytest.mark.parametrize("extra,message", [
    ({"optimizer": {"type": "AdamW"}}, "entry 'optimizer' is not supported"),
    ({"bf16": {"enabled": True}}, "entry 'bf16' is not supported"),
    ({"zero_optimization": {"offload_param": {"device": "cpu"}}},
     "entry zero_optimization.offload_param is not supported"),
    ({"zero_optimization": {"stage": 3}}, "stage 3 contradicts the run's ZeRO stage 2"),
])
def test_recipe_entries_prefopt_would_drop_are_refused(extra, message):
    """train.deepspeed gets the config file's checks: nothing in it is silently ignored."""
    with pytest.raises(ConfigError, match=message):
        zero.ds_config(2, 1.0, "no", extra)
    assert zero.ds_config(2, 1.0, "no", {"bf16": {"enabled": "auto"}})["bf16"] == {
        "enabled": False}


def test_fp16_is_refused():
    with pytest.raises(ConfigError, match="fp16 is not supported under DeepSpeed ZeRO"):
        zero.ds_config(2, 1.0, "fp16")


def test_accelerate_launch_variables_select_the_stage(env):
    env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    env.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert pd.check_supported(CPU, "none") == "zero3"
    env.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "1")
    assert pd.check_supported(CPU, "fsdp") == "zero1"  # the launcher wins over the recipe
    env.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0")
    with pytest.raises(ConfigError, match="zero_stage 0: prefopt runs ZeRO stages 1, 2 and 3"):
        pd.check_supported(CPU)


def test_deepspeed_plugin_without_variables_selects_the_stage(env):
    acc = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED,
                          state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=2)))
    assert pd.check_supported(acc) == "zero2"


@pytest.mark.parametrize("name,value,message", [
    ("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "cpu", "offload_optimizer_device: cpu"),
    ("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "nvme", "offload_param_device: nvme"),
    ("ACCELERATE_DEEPSPEED_ZERO3_INIT", "true", "zero3_init_flag: true is not supported"),
])
def test_unsupported_launch_options_are_refused(env, name, value, message):
    env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    env.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    env.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        pd.check_supported(CPU)


def test_config_file_stage_and_zero_section_are_used(env, tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_batch_size": "auto", "bf16": {"enabled": "auto"},
                                "zero_optimization": {"stage": 3, "overlap_comm": False}}))
    env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    env.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(path))
    assert pd.check_supported(CPU) == "zero3"
    extra = zero.extra_config({"zero_optimization": {"stage3_param_persistence_threshold": 0}})
    assert extra["zero_optimization"] == {"stage": 3, "overlap_comm": False,
                                          "stage3_param_persistence_threshold": 0}
    assert zero.ds_config(3, 1.0, "no", extra)["zero_optimization"] == {
        "stage": 3, "overlap_comm": False, "stage3_param_persistence_threshold": 0}


@pytest.mark.parametrize("body,field", [
    ({"optimizer": {"type": "Adam"}}, "'optimizer'"),
    ({"scheduler": {"type": "WarmupLR"}}, "'scheduler'"),
    ({"fp16": {"enabled": True}}, "'fp16'"),
    ({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}},
     "zero_optimization.offload_optimizer"),
])
def test_config_file_fields_prefopt_cannot_honour_are_refused(tmp_path, body, field):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(body))
    with pytest.raises(ConfigError, match=f"{path}: field {field}"):
        zero.read_config_file(str(path))


def test_unreadable_config_file_names_the_file(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=f"{path}: cannot read the DeepSpeed config file"):
        zero.read_config_file(str(path))


def test_zero3_refuses_4bit_weights():
    model = torch.nn.Linear(2, 2)
    zero.check_models(2, [model])
    model.weight.quant_state = object()  # what bitsandbytes' Params4bit carries
    zero.check_models(2, [model])  # ZeRO-2 leaves the frozen 4-bit base alone
    with pytest.raises(ConfigError, match="zero3 cannot partition 4-bit"):
        zero.check_models(3, [model])


def test_bundle_holds_each_model_once_and_is_never_called():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 3)
    bundle = zero.Bundle([a, b, a])
    assert list(bundle.members) == [a, b]
    assert sum(p.numel() for p in bundle.parameters()) == 6 + 9
    with pytest.raises(RuntimeError, match="calls the models inside"):
        bundle(torch.zeros(1, 2))


def test_gathered_is_a_no_op_without_partitioned_parameters():
    model = torch.nn.Linear(2, 2)
    before = model.weight.detach().clone()
    with zero.gathered(model):
        assert torch.equal(model.weight, before)
    assert not zero.any_partitioned([model])
