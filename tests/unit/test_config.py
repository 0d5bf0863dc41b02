"""Recipe validation: unknown keys, wrong types, duplicates, overrides."""

import pytest

from prefopt.config import apply_overrides, read_yaml
from prefopt.errors import ConfigError
from prefopt.recipe import parse_recipe


def test_defaults_and_overrides():
    data = apply_overrides({"algorithm": "sft"}, ["train.lr=3e-5", "model.mode=lora",
                                                   "sft.completion_only=false"])
    cfg = parse_recipe(data)
    assert cfg.train.lr == 3e-5 and cfg.model.mode == "lora"
    assert cfg.params.completion_only is False
    assert cfg.to_dict()["sft"] == {"completion_only": False, "group_by_length": False}


@pytest.mark.parametrize("data, message", [
    ({"algorithm": "sft", "trian": {}}, "unknown key 'trian'; did you mean 'train'?"),
    ({"algorithm": "stf"}, "unknown algorithm 'stf'; did you mean 'sft'?"),
    ({"algorithm": "sft", "train": {"batch_size": "8"}},
     "train.batch_size: expected int, got str ('8')"),
    ({"algorithm": "sft", "model": {"mode": "int8"}},
     "model.mode: expected one of ['full', 'lora', 'qlora'], got 'int8'"),
    ({"algorithm": "sft", "dpo": {}}, "section 'dpo' given but algorithm is 'sft'"),
    ({"algorithm": "sft", "train": {"epochs": True}}, "train.epochs: expected int, got bool"),
    ({}, "'algorithm' is required"),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=None) as e:
        parse_recipe(data)
    assert message in str(e.value)


def test_duplicate_yaml_key_is_an_error(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("algorithm: sft\ntrain:\n  lr: 1.0\n  lr: 2.0\n")
    with pytest.raises(ConfigError, match="line 4: duplicated key 'lr'"):
        read_yaml(p)


def test_yaml_is_parsed_safely(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("algorithm: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        read_yaml(p)


def test_float_written_as_yaml_string_is_accepted():
    cfg = parse_recipe({"algorithm": "sft", "train": {"lr": "1e-4"}})
    assert cfg.train.lr == 1e-4
