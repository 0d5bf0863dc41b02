"""Faults the engine must turn into clear errors: a non-finite loss or gradient stops the run
naming the step and keeps the last good checkpoint; an unwritable output directory or a
full disk is reported before anything is built or trained."""

from __future__ import annotations

import json
from collections import namedtuple

import pytest
import torch
import yaml
from safetensors.torch import load_file

from prefopt.cli import main
from prefopt.data.batching import epoch_batches
from prefopt.engine import Module, TrainConfig, Trainer
from prefopt.errors import TrainingError


class Regression(Module):
    """Least squares on 16 fixed points, batches of 4; optimizer step 3 goes wrong."""

    name = "regression"

    def __init__(self, fault: str | None = None, bad_step: int = 3):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(16, 2, generator=g), torch.randn(16, 1, generator=g)
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(2, 1)
        self.fault, self.bad_step, self.steps_done = fault, bad_step, 0
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def models(self):
        return [self.lin]

    def trainable_parameters(self):
        return list(self.lin.parameters())

    def train_batches(self, epoch):
        return epoch_batches(list(range(16)), 4, 0, epoch,
                             lambda idx: {"x": self.x[idx], "y": self.y[idx], "ids": idx})

    def loss(self, mb):
        loss = ((self.lin(mb["x"]) - mb["y"]) ** 2).mean()
        if self.steps_done + 1 == self.bad_step:
            if self.fault == "loss":
                loss = loss * float("nan")
            elif self.fault == "grad":  # value 0, gradient (∞ · 0) = NaN
                w = self.lin.weight
                loss = loss + torch.sqrt(((w - w.detach()) ** 2).sum())
        return loss, {}

    def after_step(self, step):
        self.steps_done = step
        self.snapshots[step] = {n: p.detach().clone() for n, p in self.lin.named_parameters()}


@pytest.mark.parametrize("fault, message", [
    ("loss", "non-finite loss (nan) at step 3, batch 2, examples ["),
    ("grad", "non-finite gradient norm (nan) at step 3"),
])
def test_non_finite_stops_and_keeps_the_last_good_checkpoint(tmp_path, fault, message):
    module = Regression(fault)
    cfg = TrainConfig(lr=0.1, epochs=1, batch_size=4, micro_batch_size=4, save_every=1,
                      keep_checkpoints=5, progress=False)
    with pytest.raises(TrainingError) as err:
        Trainer(module, cfg, tmp_path).fit()
    assert message in str(err.value) and "last good checkpoint is kept" in str(err.value)
    ckpts = tmp_path / "checkpoints"
    assert (ckpts / "latest").read_text() == "step-2"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step-1", "step-2"]
    saved = load_file(str(ckpts / "step-2" / "trainable.safetensors"))
    assert all(torch.equal(saved[n], module.snapshots[2][n]) for n in saved)
    assert json.loads((ckpts / "step-2" / "trainer.json").read_text())["step"] == 2
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    # the failed step changed nothing: the weights are still those of step 2
    assert all(torch.equal(p, module.snapshots[2][n]) for n, p in module.lin.named_parameters())


def _recipe(tmp_path):
    """A recipe whose model does not exist: an error about it would mean the output check
    came too late."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"algorithm": "sft", "world": None,
                                    "model": {"path": str(tmp_path / "no-model")},
                                    "data": {"train": str(tmp_path / "no-data.jsonl")}}))
    return path


def test_unwritable_output_is_reported_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a directory")
    out = tmp_path / "file" / "run"
    assert main(["run", str(_recipe(tmp_path)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"prefopt: error: output directory {out} is not writable" in err


def test_low_disk_is_reported_before_training(tmp_path, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("prefopt.run.shutil.disk_usage",
                        lambda p: usage(2**40, 2**40 - 50 * 2**20, 50 * 2**20))
    out = tmp_path / "run"
    assert main(["run", str(_recipe(tmp_path)), "--out", str(out)]) == 2
    assert "only 50 MiB free under" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == []  # nothing written, not even config.yaml
