"""End-to-end SFT through ``prefopt run`` on tiny random models of four architectures."""

import json

import pytest
import torch
import yaml

from prefopt.cli import main

DEMOS = [
    {"prompt": "what is two plus three?", "completion": "five"},
    {"prompt": "what colour is the sky?", "completion": "blue"},
    {"prompt": "reverse cat dog", "completion": "dog cat"},
    {"prompt": "hello", "completion": "hello world"},
] * 4


def _recipe(tmp_path, model_dir, mode):
    data = tmp_path / "demos.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DEMOS))
    recipe = {
        "algorithm": "sft",
        "world": None,
        "model": {"path": str(model_dir), "mode": mode, "lora_r": 4},
        "data": {"train": str(data), "eval": str(data), "max_length": 64},
        "train": {"lr": 5e-3, "epochs": 3, "batch_size": 8, "micro_batch_size": 4,
                  "progress": False},
        "sft": {"completion_only": True},
    }
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _reload(final, mode):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    if mode == "full":
        return AutoModelForCausalLM.from_pretrained(final)
    return AutoPeftModelForCausalLM.from_pretrained(final)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("mode", ["full", "lora", "qlora"])
def test_sft_run_directory_and_reload(tmp_path, tiny_models, arch, mode):
    recipe = _recipe(tmp_path, tiny_models[arch], mode)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "final"):
        assert (out / name).exists(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    summary = json.loads((out / "summary.json").read_text())
    # 3 epochs of 16 demos at lr 5e-3 must lower the held-out NLL below the first steps'
    assert summary["eval/nll"] < rows[0]["sft/nll"] - 0.5
    model = _reload(out / "final", mode)
    assert isinstance(model, torch.nn.Module)
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["mode"] == mode


def test_unknown_key_names_closest(tmp_path, tiny_llama, capsys):
    recipe = _recipe(tmp_path, tiny_llama, "full")
    assert main(["run", str(recipe), "train.lrr=0.1", "--out", str(tmp_path / "x")]) == 2
    assert "unknown key 'train.lrr'; did you mean 'lr'?" in capsys.readouterr().err


def test_wrong_type_names_key_and_type(tmp_path, tiny_llama, capsys):
    recipe = _recipe(tmp_path, tiny_llama, "full")
    assert main(["run", str(recipe), "train.epochs=many", "--out", str(tmp_path / "x")]) == 2
    assert "train.epochs: expected int, got str ('many')" in capsys.readouterr().err
