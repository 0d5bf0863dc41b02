"""The engine's configuration: optimisation, schedule, precision, logging, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class TrainConfig:
    lr: float = 1e-4
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.0
    adam_eps: float = 1e-8
    """AdamW epsilon (1e-5 in the PPO N+ recipe of Huang et al. 2024)."""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "linear"
    """Decay after warm-up; linear and cosine reach 0 at the last step. The linear warm-up
    over ``warmup_steps`` applies to every kind, constant included."""
    warmup_steps: int = 0
    epochs: int = 1
    """Passes over the training data (RL: over the prompts)."""
    max_steps: int = 0
    """Stop after this many optimizer steps; 0 = run all epochs."""
    batch_size: int = 8
    """Examples (pairs, prompts) per batch; RL methods roll out this many prompts per step."""
    micro_batch_size: int = 8
    """Rows per forward/backward; gradients accumulate up to ``batch_size``."""
    grad_clip: float = 1.0
    """Clip the global gradient norm (0 = off)."""
    seed: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    sharding: Literal["none", "fsdp", "zero1", "zero2", "zero3"] = "none"
    """none: every process holds a full replica and the engine sums gradients (DDP
    semantics). fsdp: parameters, gradients and AdamW state are sharded over the processes
    with FSDP2 (prefopt.engine.sharding). zero1/zero2/zero3: DeepSpeed ZeRO partitions the
    AdamW state (1), also the gradients (2), also the parameters (3)
    (prefopt.engine.zero). Set by accelerate's ``distributed_type: FSDP`` or ``DEEPSPEED``
    as well; docs/scaling.md. One process ignores it."""
    deepspeed: dict = field(default_factory=dict)
    """Extra DeepSpeed config entries under ZeRO, e.g. ``{zero_optimization:
    {stage3_param_persistence_threshold: 0}}``; prefopt sets batch sizes, accumulation,
    clipping, precision and the optimizer itself."""
    log_every: int = 1
    eval_every: int = 0
    """Run the module's held-out evaluation every N steps (0 = only at the end)."""
    save_every: int = 0
    """Write a resumable checkpoint every N steps (0 = only at the end)."""
    keep_checkpoints: int = 2
    probe_prompts: int = 0
    """Held-out prompts sampled at every evaluation to log eval/gold (world), eval/proxy and
    eval/kl along training (over-optimisation curves); 0 = off."""
    probe_reward: str | None = None
    """Reward source whose score the probe logs as eval/proxy (default: the reward the
    algorithm optimises, when it has one)."""
    report_to: list[str] = field(default_factory=list)
    """accelerate trackers, e.g. [tensorboard] or [wandb]."""
    progress: bool = True
    """Show a progress bar."""
