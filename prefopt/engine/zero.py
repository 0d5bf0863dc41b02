"""DeepSpeed ZeRO stages 1-3 (``train.sharding: zero1|zero2|zero3``, or accelerate's
``distributed_type: DEEPSPEED``).

ZeRO (Rajbhandari et al. 2020, arXiv:1910.02054) partitions the optimizer state (stage 1),
then the gradients (2), then the parameters themselves (3) over the data-parallel
processes. prefopt hands DeepSpeed one container module (``Bundle``) holding every model
the engine trains or runs each step (``Module.models()`` and ``frozen_models()``, as for
FSDP) together with the engine's own AdamW; DeepSpeed's engine then owns the gradient
reduction, the clipping and the optimizer step. The learning-rate schedule stays
prefopt's: it writes ``lr`` into the same parameter-group dicts the ZeRO optimizer uses.

How prefopt's conventions carry over:

- the loss scaling: the engine back-propagates ``loss · w / W`` (W: the global batch's
  weight) and expects gradients *summed* over processes; DeepSpeed averages them, so
  ``backward`` multiplies by the number of processes (exact in floating point: a power
  of two scales no mantissa);
- accumulation: every micro-batch is one DeepSpeed micro-step; ``micro_step`` marks the
  last one as the accumulation boundary and does what ``DeepSpeedEngine.forward`` does
  first (``clear_backward_seen_flag``), since prefopt calls the models inside the
  container directly, never the container;
- ZeRO-3 sub-module calls need nothing: DeepSpeed's hooks gather each sub-module's
  parameters around its forward and backward, whichever module is called. Each of those is
  a collective, so (as under FSDP) every process must run the same forwards and backwards;
- generation runs inside ``gathered``: every parameter gathered once and pinned (kept
  through any number of forwards), so processes decode for different numbers of steps;
- checkpoints: ``save``/``load`` write and read DeepSpeed's own partitioned format (each
  process its optimizer partition) in the checkpoint directory's ``zero/`` folder; the
  whole trainable weights are written beside it as in every other mode.

Nothing here imports deepspeed unless a run asks for ZeRO.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from prefopt.errors import ConfigError

STAGES = {"zero1": 1, "zero2": 2, "zero3": 3}
OWNED = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
         "gradient_clipping")
"""DeepSpeed keys prefopt sets from the recipe; a config file may leave them "auto"."""
REFUSED = ("optimizer", "scheduler", "fp16", "amp", "bf16")
"""Sections of a DeepSpeed config file prefopt does not take: its own AdamW and schedule,
and precision from train.mixed_precision."""
_PIN = -7_000_001
"""A sub-module id no DeepSpeed module has: while it sits in a parameter's
``ds_active_sub_modules``, ZeRO-3's post-forward hooks do not release the parameter."""
CHECKPOINT_DIR = "zero"


def is_zero(sharding: str) -> bool:
    return sharding in STAGES


def stage_from_env() -> int | None:
    """The ZeRO stage ``accelerate launch`` exports with ``distributed_type: DEEPSPEED``
    (the zero_stage key, or the config file's), None when it was not launched so."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() not in ("1", "true", "yes"):
        return None
    path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if path and path.lower() != "none":
        return int(read_config_file(path).get("zero_optimization", {}).get("stage", 0))
    return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))


def check_env() -> None:
    """accelerate's DeepSpeed options prefopt cannot honour, refused by name."""
    for key, what in (("OFFLOAD_OPTIMIZER_DEVICE", "offload_optimizer_device"),
                      ("OFFLOAD_PARAM_DEVICE", "offload_param_device")):
        value = os.environ.get(f"ACCELERATE_DEEPSPEED_{key}", "none").lower()
        if value not in ("", "none"):
            raise ConfigError(f"accelerate deepspeed_config {what}: {value} is not supported "
                              "(prefopt keeps its own AdamW, which DeepSpeed does not offload); "
                              "set it to none")
    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO3_INIT", "false").lower() == "true":
        raise ConfigError("accelerate deepspeed_config zero3_init_flag: true is not supported: "
                          "prefopt loads the model whole on every process and partitions it "
                          "when DeepSpeed starts; set it to false")


def read_config_file(path: str) -> dict:
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the DeepSpeed config file: {e}") from e
    check_entries(cfg, f"{path}: field")
    return cfg


def check_entries(cfg: dict, where: str) -> None:
    """Refuse DeepSpeed entries prefopt would otherwise drop or contradict: optimizer,
    scheduler and precision sections that are on, and optimizer/parameter offload."""
    for key in REFUSED:
        section = cfg.get(key)
        if section and not (isinstance(section, dict) and section.get("enabled") in
                            (False, "auto")):
            raise ConfigError(f"{where} {key!r} is not supported: prefopt brings its own "
                              "AdamW and schedule and takes precision from "
                              "train.mixed_precision; remove it")
    zero = cfg.get("zero_optimization", {})
    for key in ("offload_optimizer", "offload_param"):
        if zero.get(key) and str(zero[key].get("device", "none")).lower() != "none":
            raise ConfigError(f"{where} zero_optimization.{key} is not supported (prefopt "
                              "keeps its own AdamW); remove it")


def ds_config(stage: int, grad_clip: float, mixed_precision: str,
              extra: dict | None = None) -> dict:
    """The DeepSpeed config: batch bookkeeping DeepSpeed needs but prefopt does itself (one
    micro-step per ``backward``), clipping, precision, and ``zero_optimization`` merged
    from ``extra`` (``train.deepspeed`` or the accelerate config file)."""
    if mixed_precision == "fp16":
        raise ConfigError("train.mixed_precision=fp16 is not supported under DeepSpeed ZeRO "
                          "(its loss scaler skips steps behind the engine's back): use bf16")
    extra = dict(extra or {})
    check_entries(extra, "DeepSpeed config entry")
    given = extra.get("zero_optimization", {}).get("stage", stage)
    if int(given) != stage:
        raise ConfigError(f"DeepSpeed config entry zero_optimization.stage {given} "
                          f"contradicts the run's ZeRO stage {stage} (train.sharding or "
                          "accelerate's zero_stage); remove it")
    for key in OWNED:
        if extra.get(key, "auto") != "auto":
            raise ConfigError(f"DeepSpeed config key {key} is set by prefopt from the recipe "
                              f"(train.*); remove it or set it to auto")
        extra.pop(key, None)
    for key in REFUSED:
        extra.pop(key, None)  # check_entries refused any that were on
    zero = {**extra.pop("zero_optimization", {}), "stage": stage}
    return {**extra, "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
            "gradient_clipping": grad_clip, "zero_optimization": zero,
            "bf16": {"enabled": mixed_precision == "bf16"},
            "zero_allow_untested_optimizer": True, "steps_per_print": 2**31 - 1}


def check_models(stage: int, models: list[nn.Module]) -> None:
    """ZeRO-3 partitions every weight; bitsandbytes' 4-bit weights cannot be partitioned."""
    if stage == 3 and any(getattr(p, "quant_state", None) is not None
                          for m in models for p in m.parameters()):
        raise ConfigError("train.sharding=zero3 cannot partition 4-bit (QLoRA) weights; "
                          "use zero2 (the 4-bit base stays whole on every process) or fsdp")


class Bundle(nn.Module):
    """The models DeepSpeed manages, under one root. Never called itself: prefopt calls
    the models inside directly, as in every other mode."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        unique = list({id(m): m for m in models}.values())
        self.members = nn.ModuleList(unique)

    def forward(self, *args, **kwargs):
        raise RuntimeError("prefopt calls the models inside the DeepSpeed bundle directly")


def initialize(models: list[nn.Module], optimizer: torch.optim.Optimizer, config: dict):
    """``deepspeed.initialize`` over the bundle of ``models`` with prefopt's ``optimizer``;
    returns the DeepSpeed engine. The optimizer object keeps its parameter-group dicts, so
    a scheduler built on it keeps working."""
    import deepspeed

    # DeepSpeed 0.19 calls torch's deprecated all_gather_into_tensor/reduce_scatter_tensor
    # on every gather; torch 2.13 warns on each call (thousands of lines per run).
    warnings.filterwarnings("ignore", category=FutureWarning,
                            message=r"`torch\.distributed\.(all_gather_into_tensor|"
                                    r"reduce_scatter_tensor)` is deprecated")
    engine, *_ = deepspeed.initialize(model=Bundle(models), optimizer=optimizer,
                                      config=config)
    return engine


def micro_step(engine, last: bool) -> None:
    """Before each micro-batch's forward: what ``DeepSpeedEngine.forward`` does first, and
    whether this micro-batch ends the optimizer step (then the gradients are reduced)."""
    engine.optimizer.clear_backward_seen_flag()
    engine.set_gradient_accumulation_boundary(last)


def backward(engine, loss: torch.Tensor, world_size: int) -> None:
    """DeepSpeed averages gradients over processes; prefopt's convention sums them."""
    engine.backward(loss * world_size, scale_wrt_gas=False)


def step(engine) -> float:
    """Clip, update, zero the gradients; returns the global gradient norm before clipping."""
    engine.step()
    norm = engine.get_global_grad_norm()
    return float(norm) if norm is not None else 0.0


def is_partitioned(p) -> bool:
    """A ZeRO-3 parameter (its full value lives only inside a gather)."""
    return hasattr(p, "ds_id")


def local_numel(p) -> int:
    """Elements this process holds: its ZeRO-3 partition, or the whole tensor."""
    return local_tensor(p).numel()


def local_tensor(p) -> torch.Tensor:
    """What this process stores of ``p``: its ZeRO-3 partition, else ``p`` itself (an FSDP
    DTensor's arithmetic is shard-wise already)."""
    return p.ds_tensor if is_partitioned(p) else p


def drop_whole_copy(p) -> None:
    """After an in-place update of ``local_tensor(p)``: ZeRO-3 also keeps some tensors whole
    between forwards (those under ``stage3_param_persistence_threshold`` elements), and
    forwards read that copy, now stale. Free it (no collective): the next forward gathers
    the updated partitions again. A no-op for anything else."""
    if not is_partitioned(p):
        return
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    if p.ds_status == ZeroParamStatus.AVAILABLE:
        if p.ds_active_sub_modules:
            raise RuntimeError("cannot update a ZeRO-3 parameter while a forward or a "
                               "gather uses it")
        p.partition()


@contextmanager
def gathered(*models: nn.Module):
    """Inside, every ZeRO-3 parameter of ``models`` is whole and stays so through any
    number of forwards (one all-gather on entry: every process must enter together).
    Unpartitioned models and nested use are no-ops."""
    params = [p for m in models for p in m.parameters()
              if is_partitioned(p) and _PIN not in p.ds_active_sub_modules]
    params = list({id(p): p for p in params}.values())
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        for p in params:
            p.ds_active_sub_modules.add(_PIN)
        try:
            yield
        finally:
            for p in params:
                p.ds_active_sub_modules.discard(_PIN)


def any_partitioned(models) -> bool:
    return "deepspeed" in sys.modules and any(is_partitioned(p) for m in models
                                              for p in m.parameters())


def save(engine, directory: Path) -> None:
    """DeepSpeed's checkpoint (module, partitioned optimizer state) in ``directory/zero``:
    every process writes its own partition files, so every process must call it."""
    engine.save_checkpoint(str(directory), tag=CHECKPOINT_DIR, save_latest=False)


def load(engine, directory: Path) -> None:
    """Restore the module and this process's optimizer partition written by ``save``; the
    same ZeRO stage and number of processes are needed (DeepSpeed's own format)."""
    from prefopt.errors import TrainingError

    if not (directory / CHECKPOINT_DIR).is_dir():
        raise TrainingError(f"{directory}: not written under DeepSpeed ZeRO (no {CHECKPOINT_DIR}/"
                            " folder); resume it without train.sharding zero*")
    path, _ = engine.load_checkpoint(str(directory), tag=CHECKPOINT_DIR,
                                     load_optimizer_states=True,
                                     load_lr_scheduler_states=False)
    if path is None:
        raise TrainingError(f"{directory / CHECKPOINT_DIR}: DeepSpeed could not load it "
                            "(same ZeRO stage and number of processes needed)")


def extra_config(recipe_extra: dict) -> dict:
    """``train.deepspeed`` over the config file ``accelerate launch`` names, if any."""
    path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    base = read_config_file(path) if path and path.lower() != "none" else {}
    zero = {**base.get("zero_optimization", {}), **recipe_extra.get("zero_optimization", {})}
    return {**base, **recipe_extra, "zero_optimization": zero}
