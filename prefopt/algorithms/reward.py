"""Reward model: a scalar head on a causal-LM backbone, trained with the Bradley–Terry loss.

p(y_w ≻ y_l | x) = σ(r(x, y_w) − r(x, y_l)); loss ℓ = −[p·log σ(Δ) + (1−p)·log σ(−Δ)],
Δ = r_w − r_l − m, with the pair's soft label p (1.0 for a hard label), an optional margin m
(Touvron et al. 2023) and optional centering c·mean((r_w + r_l)²) (Eisenstein et al. 2023).
The loss itself is ``prefopt.losses.bradley_terry_loss``.

One concatenated forward scores both halves of a pair batch: ``collate_pairs`` stacks the
B chosen rows first and the B rejected rows second, (2B, T) -> r (2B,) -> r[:B], r[B:].
The reward is read at the last real token (the EOS closing the response).

After training the scores are normalised (Ziegler et al. 2019; Huang et al. 2024): responses
of the SFT policy to ``n_normalize`` training prompts get mean 0 and (population) std 1,
stored as ScalarConfig.mean/std in ``scalar_config.json`` next to ``scalar_head.safetensors``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import torch

from prefopt.data.batching import encode_pairs, epoch_batches
from prefopt.data.collate import collate_pairs
from prefopt.data.records import Messages, PreferencePair
from prefopt.engine.module import Module
from prefopt.feedback.reward_sources import raw_scores
from prefopt.losses import bradley_terry_loss, expected_calibration_error
from prefopt.policy.generate import SamplingConfig
from prefopt.policy.heads import ScalarModel
from prefopt.policy.load import ModelConfig
from prefopt.policy.logprobs import unwrap_causal_lm

log = logging.getLogger(__name__)


@dataclass
class RewardConfig:
    center_coef: float = 0.0
    """c of the centering term c·mean((r_w + r_l)²) (Eisenstein et al. 2023 use 0.01): keeps
    rewards near 0 without changing their differences. 0 = off."""
    use_margin: bool = False
    """Subtract each pair's ``margin`` inside the loss (Llama 2's graded preferences)."""
    normalize: bool = True
    """After training, shift and scale so SFT-policy responses score mean 0, std 1."""
    n_normalize: int = 64
    """Training prompts sampled (with the train seed) for the normalisation set."""
    normalize_sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How the SFT policy samples the normalisation responses (T = 0.7, as PPO samples)."""
    eval_batch_size: int = 32
    """Pairs per forward in ``evaluate`` and rows per forward when normalising."""
    ece_bins: int = 10
    """Equal-width bins of σ(r_w − r_l) for the expected calibration error."""
    group_by_length: bool = False
    """Batch pairs of similar length together (length = the longer of chosen and rejected):
    less padding, the same pairs per epoch."""


class RewardModule(Module):
    """Trains ``model`` (backbone trainable params + head) on encoded preference pairs."""

    name = "reward"

    def __init__(self, model: ScalarModel, tokenizer, train: list[PreferencePair],
                 cfg: RewardConfig, max_length: int, batch_size: int, seed: int = 0,
                 eval_pairs: list[PreferencePair] | None = None,
                 norm_prompts: list[Messages] | None = None,
                 sft: ModelConfig | None = None, shard=(0, 1)):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.batch_size, self.seed, self.shard = batch_size, seed, shard
        self.train = encode_pairs(tokenizer, train, max_length)
        self.eval = encode_pairs(tokenizer, eval_pairs or [], max_length)
        self.norm_prompts = norm_prompts or []
        self.sft = sft
        self.normalized = False
        if isinstance(model, ScalarModel):
            freeze_unused_lm_head(model)

    def models(self):
        return [self.model]

    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]  # backbone + head

    def _collate(self, rows):
        return collate_pairs([r.chosen for r in rows], [r.rejected for r in rows],
                             self.tokenizer.pad_token_id, [r.label for r in rows],
                             [r.margin for r in rows])

    def train_batches(self, epoch):
        lengths = ([max(len(p.chosen.input_ids), len(p.rejected.input_ids)) for p in self.train]
                   if self.cfg.group_by_length else None)
        return epoch_batches(self.train, self.batch_size, self.seed, epoch, self._collate,
                             shard=self.shard, lengths=lengths)

    def rewards(self, mb) -> tuple[torch.Tensor, torch.Tensor]:
        """(r_chosen (B,), r_rejected (B,)) from one concatenated (2B, T) forward."""
        dev = next(self.model.parameters()).device
        r = self.model(mb["input_ids"].to(dev), mb["attention_mask"].to(dev))  # (2B,)
        n = mb["label"].shape[0]
        return r[:n], r[n:]

    def loss(self, mb):
        r_w, r_l = self.rewards(mb)
        dev = r_w.device
        margin = mb["margin"].to(dev) if self.cfg.use_margin else None
        loss, m = bradley_terry_loss(r_w, r_l, mb["label"].to(dev), margin, self.cfg.center_coef)
        return loss, {"reward/accuracy": m["accuracy"], "reward/margin": m["margin"],
                      "reward/chosen": r_w.mean().item(), "reward/rejected": r_l.mean().item(),
                      "tokens": float(mb["attention_mask"].sum())}

    @torch.no_grad()
    def evaluate(self):
        """Held-out BT loss, pairwise accuracy (label > ½; ties left out), ECE of
        σ(r_w − r_l) against 1[label > ½], mean margin r_w − r_l. Raw (unnormalised) rewards:
        the probabilities the BT model was trained to give."""
        if not self.eval:
            return {}
        rw, rl, label, margin = [], [], [], []
        for i in range(0, len(self.eval), self.cfg.eval_batch_size):
            mb = self._collate(self.eval[i:i + self.cfg.eval_batch_size])
            r_w, r_l = self.rewards(mb)
            rw.append(r_w.float().cpu())
            rl.append(r_l.float().cpu())
            label.append(mb["label"])
            margin.append(mb["margin"])
        rw, rl, label, margin = (torch.cat(x) for x in (rw, rl, label, margin))
        loss, m = bradley_terry_loss(rw, rl, label, margin if self.cfg.use_margin else None,
                                     self.cfg.center_coef)
        ece = expected_calibration_error(torch.sigmoid(rw - rl), (label > 0.5).float(),
                                         self.cfg.ece_bins)
        return {"eval/loss": loss.item(), "eval/accuracy": m["accuracy"],
                "eval/ece": ece, "eval/margin": m["margin"]}

    # ---- normalisation and saving ------------------------------------------------------
    def normalize(self, policy=None) -> tuple[float, float]:
        """Set mean/std so the SFT policy's responses to ``norm_prompts`` score mean 0, std 1.

        ``policy`` defaults to the SFT model (``sft``) loaded in full mode. Runs once.
        """
        if self.normalized or not self.norm_prompts:
            return self.model.cfg.mean, self.model.cfg.std
        if policy is None:
            from prefopt.policy import load_policy

            policy = load_policy(self.sft)
            policy.model.to(next(self.model.parameters()).device)
        texts = policy.generate(self.norm_prompts, self.cfg.normalize_sampling,
                                self.cfg.eval_batch_size).texts
        was_training = self.model.training
        self.model.eval()
        raw = raw_scores(self.model, self.tokenizer, self.norm_prompts, texts,
                         self.cfg.eval_batch_size)
        self.model.train(was_training)
        mean, std = normalization_stats(raw)
        self.model.cfg.mean, self.model.cfg.std = mean, std
        self.normalized = True
        log.info("reward normalisation on %d SFT responses: mean %.4f, std %.4f",
                 len(texts), mean, std)
        return mean, std

    def save(self, out_dir):
        if self.cfg.normalize:
            self.normalize()
        self.model.save(out_dir, self.tokenizer)


def freeze_unused_lm_head(model: ScalarModel) -> None:
    """The scalar model never calls the LM head: keep it out of the optimizer and the
    checkpoints (unless it is tied to the input embeddings, which the backbone does use)."""
    causal = unwrap_causal_lm(model.backbone)
    head, emb = causal.get_output_embeddings(), causal.get_input_embeddings()
    if head is not None and head.weight is not emb.weight:
        head.requires_grad_(False)


def normalization_stats(raw: torch.Tensor, eps: float = 1e-6) -> tuple[float, float]:
    """(mean, std) with (raw − mean)/std of mean 0 and population std 1. raw (N,).

    std = sqrt((1/N) Σ (r − mean)²), floored at ``eps`` so a constant model does not divide
    by zero.
    """
    raw = raw.double()
    return raw.mean().item(), max(raw.std(unbiased=False).item() if raw.numel() else 1.0, eps)


def sample_prompts(prompts: list[Messages], n: int, seed: int) -> list[Messages]:
    """Up to n distinct prompts (by content), a seeded sample in their original order."""
    seen, unique = set(), []
    for p in prompts:
        key = repr(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    if len(unique) <= n:
        return unique
    keep = sorted(random.Random(seed).sample(range(len(unique)), n))
    return [unique[i] for i in keep]


def build(ctx) -> RewardModule:
    """Reward model from a recipe: backbone per ``model`` (full | lora | qlora) with a new
    head; pairs per ``data`` (world pairs sampled from the SFT policy at ``model.path``)."""
    from accelerate.utils import set_seed

    from prefopt.data import sources
    from prefopt.policy import load_policy
    from prefopt.policy.heads import new_scalar_model
    from prefopt.policy.load import load_tokenizer

    cfg, params = ctx.cfg, ctx.cfg.params
    sft = ModelConfig(path=cfg.model.path, mode="full", dtype=cfg.model.dtype,
                      trust_remote_code=cfg.model.trust_remote_code)
    needs_policy = any((s or "").startswith("world:") for s in (cfg.data.train, cfg.data.eval))
    policy = load_policy(sft) if needs_policy else None
    train = sources.pairs(ctx, "train", policy)
    held_out = sources.pairs(ctx, "eval", policy)
    del policy  # reloaded for normalisation after training; not held while training
    norm_prompts = []
    if params.normalize:
        world_train = cfg.data.train.startswith("world:")
        pool = ([r.prompt for r in sources.prompts(ctx, "train")] if world_train
                else [p.prompt for p in train])
        norm_prompts = sample_prompts(pool, params.n_normalize, cfg.train.seed)
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    set_seed(cfg.train.seed)  # the new head's initialisation is part of the run's seed
    model = new_scalar_model(cfg.model, tokenizer)
    model.to(ctx.accelerator.device)
    return RewardModule(model, tokenizer, train, params, cfg.data.max_length,
                        cfg.train.batch_size, cfg.train.seed, held_out, norm_prompts, sft,
                        shard=ctx.shard)
