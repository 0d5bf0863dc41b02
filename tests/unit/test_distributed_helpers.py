"""The engine's data-parallel pieces: loss weighting (one process) and the collectives (two
gloo processes spawned here, no model)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from accelerate.utils import DistributedType

from prefopt.data.batching import epoch_batches
from prefopt.engine import Module, TrainConfig, Trainer
from prefopt.engine import distributed as pd
from prefopt.errors import ConfigError
from prefopt.losses import whiten

# 4 rows with 1, 2, 3 and 4 valid "tokens": values 1..10 in order.
VALUES = torch.tensor([[1, 0, 0, 0], [2, 3, 0, 0], [4, 5, 6, 0], [7, 8, 9, 10]], dtype=torch.float)
MASK = (VALUES > 0).float()


class TokenMean(Module):
    """loss = Σ m·(v − θ)² / Σ m over a micro-batch's tokens; one scalar parameter θ = 0."""

    def __init__(self):
        self.theta = torch.nn.Parameter(torch.zeros(()))
        self.holder = torch.nn.Module()
        self.holder.theta = self.theta

    def models(self):
        return [self.holder]

    def trainable_parameters(self):
        return [self.theta]

    def train_batches(self, epoch):
        return epoch_batches(list(range(4)), 4, 0, epoch,
                             lambda idx: {"v": VALUES[idx], "m": MASK[idx]})

    def loss(self, mb):
        return ((mb["v"] - self.theta) ** 2 * mb["m"]).sum() / mb["m"].sum(), {}

    def loss_weight(self, mb):
        return float(mb["m"].sum())


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_token_weighted_accumulation_is_the_global_token_mean(tmp_path, micro):
    """Global token mean of (v − 0)² over v = 1..10: Σv²/10 = 385/10 = 38.5, gradient
    −2·Σv/10 = −11, whatever the micro-batch size (the plain mean of micro-batch means
    would give 38.5 only with one micro-batch)."""
    module = TokenMean()
    cfg = TrainConfig(lr=0.1, max_steps=1, batch_size=4, micro_batch_size=micro, grad_clip=0,
                      progress=False)
    Trainer(module, cfg, tmp_path).fit()
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert row["loss"] == pytest.approx(38.5, rel=1e-6)
    assert row["grad_norm"] == pytest.approx(11.0, rel=1e-6)


@pytest.mark.parametrize("kind", ["MEGATRON_LM", "XLA"])
def test_other_engines_are_refused(kind):
    acc = SimpleNamespace(distributed_type=DistributedType[kind])
    with pytest.raises(ConfigError, match=f"distributed_type {kind} is not supported"):
        pd.check_supported(acc)


@pytest.mark.parametrize("kind", ["MULTI_GPU", "MULTI_CPU", "NO"])
@pytest.mark.parametrize("requested", ["none", "fsdp"])
def test_replicated_launches_keep_train_sharding(kind, requested, monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    acc = SimpleNamespace(distributed_type=DistributedType[kind])
    assert pd.check_supported(acc, requested) == requested


def _fsdp_accelerator(version):
    plugin = SimpleNamespace(fsdp_version=version)
    return SimpleNamespace(distributed_type=DistributedType.FSDP,
                           state=SimpleNamespace(fsdp_plugin=plugin))


def test_accelerate_fsdp_maps_to_train_sharding(monkeypatch):
    """distributed_type FSDP (GPUs: accelerate's plugin) or the variables `accelerate
    launch` exports (CPU, where accelerate keeps MULTI_CPU) turn sharding on."""
    for name in ("FSDP_OFFLOAD_PARAMS", "FSDP_ACTIVATION_CHECKPOINTING"):
        monkeypatch.delenv(name, raising=False)
    assert pd.check_supported(_fsdp_accelerator(2), "none") == "fsdp"
    with pytest.raises(ConfigError, match="fsdp_version 1: prefopt shards with FSDP2"):
        pd.check_supported(_fsdp_accelerator(1))
    cpu = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert pd.check_supported(cpu) == "fsdp"
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
    with pytest.raises(ConfigError, match="fsdp_offload_params"):
        pd.check_supported(cpu)
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "false")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    assert not pd.fsdp_reshard_after_forward()


def _worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank,
                            world_size=2)
    try:
        # rows of different width per rank; rank 0 has 1 row of 3, rank 1 has 2 rows of 2
        x = torch.tensor([[1.0, 2.0, 3.0]]) if rank == 0 else torch.tensor([[4.0, 5.0],
                                                                            [6.0, 0.0]])
        m = torch.ones_like(x) if rank == 0 else torch.tensor([[1.0, 1.0], [1.0, 0.0]])
        w = pd.global_whiten(x, m)
        # gradients: p0 has a gradient on rank 0 only, p1 on no rank
        p0, p1 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
        if rank == 0:
            p0.grad = torch.tensor([1.0, 2.0])
        pd.sum_gradients([p0, p1])
        metrics = pd.reduce_metrics({"loss": 1.0 + rank, "train/tokens": 10.0,
                                     f"only{rank}": 5.0}, weight=1.0 + 2 * rank)
        result = {"whiten": w.tolist(), "p0": p0.grad.tolist(), "p1": p1.grad is None,
                  "metrics": metrics, "sum": pd.all_reduce_sum([rank + 1.0], "cpu")}
        (Path(tmp) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_collectives_on_two_gloo_processes(tmp_path):
    """global_whiten equals whiten over all 5 valid entries 1..6 (no 0 padding); gradients
    are summed, a missing one counts as zeros, one missing everywhere stays None; metrics:
    loss weighted by 1 and 3 → (1·1 + 3·2)/4 = 1.75, tokens summed, one-rank keys kept."""
    # fork: the children reuse this process's imports (spawn would re-import for seconds)
    mp.start_processes(_worker, args=(str(tmp_path),), nprocs=2, start_method="fork")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    xs = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0], [6.0, 0.0, 0.0]])
    ms = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    expected = whiten(xs, ms)
    assert torch.allclose(torch.tensor(results[0]["whiten"]), expected[:1], atol=1e-6)
    assert torch.allclose(torch.tensor(results[1]["whiten"]), expected[1:, :2], atol=1e-6)
    for rank in (0, 1):
        r = results[rank]
        assert r["p0"] == [1.0, 2.0] and r["p1"] and r["sum"] == [3.0]
        assert r["metrics"] == {"loss": 1.75, "train/tokens": 20.0, "only0": 5.0,
                                "only1": 5.0}
