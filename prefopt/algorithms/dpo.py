"""The DPO family (Rafailov et al. 2023 and successors) on offline preference pairs.

One concatenated forward scores a pair batch (rows 0..B-1 chosen, B..2B-1 rejected): the
summed completion log-probs log π_θ(y|x) and the completion lengths |y| make a
``PairLogps``; the loss named by ``dpo.loss`` comes from ``prefopt.losses.preference_loss``
with the pair labels p = P(y_w ≻ y_l) as soft labels. The reference π_ref is, by
``dpo.reference``: live (adapters disabled under LoRA/QLoRA, a frozen copy in full mode) or
precomputed once and cached on disk (``prefopt.algorithms.reference_cache``). Reference-free
losses (SimPO, CPO, ORPO) never touch π_ref. Formulas, defaults and metrics: docs/dpo.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from prefopt.algorithms import reference_cache
from prefopt.data.batching import EncodedPair, EncodeReport, encode_pairs, epoch_batches
from prefopt.data.collate import collate_pairs
from prefopt.data.records import Messages, PreferencePair
from prefopt.engine.module import Module
from prefopt.errors import ConfigError
from prefopt.losses import (
    HARD_LABEL_ONLY,
    PER_TOKEN_REWARDS,
    REFERENCE_FREE,
    PairLogps,
    get_pair_loss,
    implicit_rewards,
    preference_loss,
)
from prefopt.policy.generate import SamplingConfig
from prefopt.policy.logprobs import sequence_logprobs
from prefopt.policy.policy import Policy

LOSS_FIELDS: dict[str, dict[str, str]] = {
    "conservative_dpo": {"label_smoothing": "label_smoothing"},
    "robust_dpo": {"eps": "label_smoothing"},
    "exo_pair": {"eps": "exo_eps"},
    "rpo": {"alpha": "rpo_alpha"},
    "cpo": {"alpha": "cpo_alpha"},
    "simpo": {"gamma": "simpo_gamma"},
    "orpo": {"lam": "orpo_lambda"},
    "discopop": {"tau": "discopop_tau"},
}
"""loss name → {hyper-parameter of the loss function: DPOConfig field that sets it}."""


@dataclass
class DPOConfig:
    loss: str = "dpo"
    """A name from prefopt.losses.PAIR_LOSSES: dpo, conservative_dpo, robust_dpo, ipo, hinge,
    ln_dpo, rpo, nca, apo_zero, apo_down, sppo_hard, discopop, exo_pair, simpo, cpo, orpo."""
    beta: float = 0.1
    """β: the KL-penalty strength (DPO 0.1; IPO's τ; SimPO uses ~2). Larger keeps π_θ
    closer to π_ref; smaller lets the margins grow faster."""
    label_smoothing: float = 0.1
    """ε, the assumed label-flip rate of conservative_dpo and robust_dpo (robust: < 0.5)."""
    rpo_alpha: float = 1.0
    """RPO: weight α of the per-token NLL of the chosen completion."""
    cpo_alpha: float = 1.0
    """CPO: weight α of the per-token NLL of the chosen completion."""
    simpo_gamma: float = 0.5
    """SimPO: target reward margin γ (paper: 0.5–1.5)."""
    orpo_lambda: float = 0.1
    """ORPO: weight λ of the odds-ratio term."""
    discopop_tau: float = 0.05
    """DiscoPOP: temperature τ of the logistic/exponential blend."""
    exo_eps: float = 1e-3
    """EXO-pair: ε that keeps the reverse KL to the label distribution finite."""
    hard_labels: bool = False
    """Round labels: pairs with label < 0.5 are swapped, ties (0.5) dropped, the rest get
    label 1. Needed for the losses with no soft form (apo_zero, apo_down, sppo_hard,
    discopop); otherwise soft labels carry the annotators' uncertainty into the loss."""
    reference: Literal["live", "precomputed"] = "live"
    """live: π_ref runs every step (adapters off, or a frozen copy in full mode).
    precomputed: one pass before training, cached on disk; in full mode no copy is kept."""
    ref_cache_dir: str | None = None
    """Where precomputed reference log-probs are cached (default RUN_DIR/reference_cache).
    Point several runs at one directory to share the pass; entries are keyed by content."""
    ref_batch_size: int = 16
    """Pairs per batch of the precompute pass."""
    ref_sync_every: int = 0
    """TR-DPO (Gorbatovski et al. 2024): every τ optimizer steps set
    π_ref ← α·π_θ + (1 − α)·π_ref. 0 = off. Full mode with a live reference only."""
    ref_sync_alpha: float = 0.6
    """TR-DPO α (1 = hard replacement)."""
    eval_kl_prompts: int = 16
    """Held-out prompts sampled (T = 1) for the KL(π_θ ‖ π_ref) estimate; 0 = skip."""
    eval_max_new_tokens: int = 32
    """Response length cap of those samples."""
    group_by_length: bool = False
    """Batch pairs of similar length together (length = the longer of chosen and rejected):
    less padding, the same pairs per epoch."""

    def hparams(self) -> dict[str, float]:
        """Keyword arguments of the configured loss, e.g. {"alpha": rpo_alpha} for rpo."""
        get_pair_loss(self.loss)  # ConfigError naming the closest loss
        return {k: getattr(self, f) for k, f in LOSS_FIELDS.get(self.loss, {}).items()}

    @property
    def reference_free(self) -> bool:
        return self.loss in REFERENCE_FREE

    def validate(self, mode: str) -> None:
        """Reject combinations that cannot work, before any model work."""
        self.hparams()
        if self.ref_sync_every:
            if mode != "full":
                raise ConfigError("dpo.ref_sync_every (TR-DPO) needs model.mode=full: under "
                                  "LoRA/QLoRA the reference is the frozen base")
            if self.reference != "live" or self.reference_free:
                raise ConfigError("dpo.ref_sync_every needs dpo.reference=live and a loss "
                                  "that uses the reference")
        if self.loss in HARD_LABEL_ONLY and not self.hard_labels:
            raise ConfigError(f"dpo.loss={self.loss} has no soft-label form; set "
                              "dpo.hard_labels=true")


def harden(pairs: list[PreferencePair]) -> list[PreferencePair]:
    """Hard labels: swap pairs whose label < 0.5, drop ties, set label 1."""
    out = []
    for p in pairs:
        if p.label == 0.5:
            continue
        if p.label < 0.5:
            p = replace(p, chosen=p.rejected, rejected=p.chosen)
        out.append(replace(p, label=1.0))
    return out


# ---- the pair forward ----------------------------------------------------------------
def pair_logps(policy: Policy, mb: dict, cfg: DPOConfig) -> PairLogps:
    """PairLogps of a (2B, T) pair batch: one concatenated forward of the policy, the
    reference from ``mb["ref_chosen"/"ref_rejected"]`` (precomputed) or a live pass, none for
    reference-free losses."""
    dev = policy.device
    ids, attn = mb["input_ids"].to(dev), mb["attention_mask"].to(dev)
    mask = mb["completion_mask"].to(dev)
    n = ids.shape[0] // 2
    logps, _ = policy.sequence_logprobs({"input_ids": ids, "attention_mask": attn,
                                         "completion_mask": mask})  # (2B,)
    lengths = mask[:, 1:].sum(-1)  # (2B,) completion tokens |y|
    ref_w = ref_l = None
    if not cfg.reference_free:
        if "ref_chosen" in mb:
            ref_w, ref_l = mb["ref_chosen"].to(logps), mb["ref_rejected"].to(logps)
        else:
            t = policy.reference_token_logprobs(ids, attn, where=mask[:, 1:])
            ref = sequence_logprobs(t, mask).detach()
            ref_w, ref_l = ref[:n], ref[n:]
    return PairLogps(logps[:n], logps[n:], lengths[:n], lengths[n:], ref_w, ref_l)


def dpo_loss_and_metrics(policy: Policy, mb: dict, cfg: DPOConfig):
    """(mean loss, metrics) of one pair micro-batch; shared by DPO and online DPO."""
    p = pair_logps(policy, mb, cfg)
    label = mb["label"].to(p.chosen)
    loss, metrics = preference_loss(cfg.loss, p, cfg.beta, label, **cfg.hparams())
    metrics["tokens"] = float(mb["attention_mask"].sum())
    return loss, metrics


def preference_credit(r_w: torch.Tensor, r_l: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Per-pair accuracy of the implicit reward against the label: 1 when r_w − r_l has the
    sign of label − ½, ½ on a reward tie, 0 otherwise; NaN where label = ½. (B,)."""
    agree = torch.sign(r_w - r_l) * torch.sign(label - 0.5)  # +1, 0 (tie) or −1
    credit = (agree + 1) / 2
    return torch.where(label == 0.5, torch.full_like(credit, float("nan")), credit)


def held_out_metrics(p: PairLogps, label: torch.Tensor, cfg: DPOConfig) -> dict[str, float]:
    """eval/loss, the loss's diagnostics as eval/..., and eval/preference_accuracy."""
    loss, metrics = preference_loss(cfg.loss, p, cfg.beta, label, **cfg.hparams())
    r_w, r_l = implicit_rewards(p, cfg.beta, average=cfg.loss in PER_TOKEN_REWARDS)
    return {"eval/loss": loss.item(), **{f"eval/{k}": v for k, v in metrics.items()},
            "eval/preference_accuracy": preference_credit(r_w, r_l, label).nanmean().item()}


def cat_pair_logps(parts: list[PairLogps]) -> PairLogps:
    def cat(name):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)
    return PairLogps(*(cat(f) for f in ("chosen", "rejected", "chosen_len", "rejected_len",
                                         "ref_chosen", "ref_rejected")))


@torch.no_grad()
def estimate_kl(policy: Policy, prompts: list[Messages], max_new_tokens: int,
                seed: int = 0) -> tuple[dict[str, float], list[str]]:
    """KL(π_θ ‖ π_ref) ≈ mean over sampled y ~ π_θ(·|x) (T = 1) of
    Σ_t [log π_θ(y_t|…) − log π_ref(y_t|…)] over response tokens (the k1 estimator).
    Returns the metrics and the sampled texts (seeded: the same draws every evaluation)."""
    devices = [policy.device.index or 0] if policy.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        ro = policy.generate(prompts, SamplingConfig(max_new_tokens, temperature=1.0))
    ids, attn = (t.to(policy.device) for t in ro.sequences())  # (N, P+R)
    mask = ro.completion_mask().to(policy.device)
    where = mask[:, 1:]
    logp = sequence_logprobs(policy.token_logprobs(ids, attn, where=where), mask)  # (N,)
    ref = sequence_logprobs(policy.reference_token_logprobs(ids, attn, where=where),
                            mask)  # (N,)
    return {"eval/kl": (logp - ref).mean().item(),
            "eval/response_len": ro.response_mask.sum(-1).float().mean().item()}, ro.texts


class DPO(Module):
    name = "dpo"

    def __init__(self, policy: Policy, train: list[PreferencePair], cfg: DPOConfig,
                 max_length: int, batch_size: int, seed: int = 0,
                 eval_data: list[PreferencePair] | None = None, shard=(0, 1),
                 cache_dir: str | Path | None = None, reports: dict | None = None):
        cfg.validate(policy.cfg.mode)
        self.policy, self.cfg, self.batch_size, self.seed, self.shard = (
            policy, cfg, batch_size, seed, shard)
        if cfg.hard_labels:
            train, eval_data = harden(train), harden(eval_data or [])
        rep_train, rep_eval = EncodeReport(), EncodeReport()
        self.train = encode_pairs(policy.tokenizer, train, max_length, rep_train)
        self.eval = encode_pairs(policy.tokenizer, eval_data or [], max_length, rep_eval)
        if reports is not None:
            reports.update({"train/encode": rep_train.as_dict(),
                            "eval/encode": rep_eval.as_dict()})
        if not self.train:
            raise ConfigError("dpo: no training pairs left after encoding (all too long?)")
        self.kl_prompts = list({str(p.prompt): p.prompt for p in eval_data or []}.values())
        self.kl_prompts = self.kl_prompts[:cfg.eval_kl_prompts]
        self.ref = {"train": None, "eval": None}  # precomputed (chosen, rejected) per split
        if cfg.reference == "precomputed" and not cfg.reference_free:
            for split, rows in (("train", self.train), ("eval", self.eval)):
                self.ref[split] = reference_cache.load_or_compute(
                    policy, rows, Path(cache_dir or "reference_cache"), max_length,
                    cfg.ref_batch_size) if rows else None
        elif not cfg.reference_free:
            policy.freeze_reference()

    def _collate(self, rows: list[EncodedPair], index: list[int], split: str) -> dict:
        batch = collate_pairs([r.chosen for r in rows], [r.rejected for r in rows],
                              self.policy.tokenizer.pad_token_id,
                              [r.label for r in rows], [r.margin for r in rows])
        # Row positions as a tensor: split_batch slices (B,) tensors, not lists, in pair batches.
        batch["index"] = torch.tensor(index, dtype=torch.long)
        if self.ref[split] is not None:
            chosen, rejected = self.ref[split]
            batch["ref_chosen"], batch["ref_rejected"] = chosen[index], rejected[index]
        return batch

    def train_batches(self, epoch):
        lengths = ([max(len(p.chosen.input_ids), len(p.rejected.input_ids)) for p in self.train]
                   if self.cfg.group_by_length else None)
        return epoch_batches(list(range(len(self.train))), self.batch_size, self.seed, epoch,
                             lambda idx: self._collate([self.train[i] for i in idx], idx,
                                                       "train"),
                             shard=self.shard, lengths=lengths)

    def loss(self, mb):
        return dpo_loss_and_metrics(self.policy, mb, self.cfg)

    def after_step(self, step: int) -> None:
        every = self.cfg.ref_sync_every
        if every and step % every == 0:
            self.policy.sync_reference(self.cfg.ref_sync_alpha)

    def _kl_available(self) -> bool:
        """The KL estimate needs π_ref in memory: free under LoRA/QLoRA; in full mode only
        when a live reference copy exists anyway."""
        if self.policy.uses_adapters:
            return True
        return self.cfg.reference == "live" and not self.cfg.reference_free

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.eval:
            parts = []
            for i in range(0, len(self.eval), self.batch_size):
                idx = list(range(i, min(i + self.batch_size, len(self.eval))))
                mb = self._collate([self.eval[j] for j in idx], idx, "eval")
                parts.append((pair_logps(self.policy, mb, self.cfg), mb["label"]))
            p = cat_pair_logps([q for q, _ in parts])
            out = held_out_metrics(p, torch.cat([lab for _, lab in parts]).to(p.chosen), self.cfg)
        if self.kl_prompts and self._kl_available():
            out.update(estimate_kl(self.policy, self.kl_prompts, self.cfg.eval_max_new_tokens,
                                   self.seed)[0])
        return out

    def save(self, out_dir):
        self.policy.save(out_dir)


def build(ctx) -> DPO:
    """DPO from a recipe: the policy per ``model``, pairs per ``data`` (world pairs are
    sampled from the starting policy and labelled per ``data.annotators``)."""
    from prefopt.data.sources import pairs
    from prefopt.policy import load_policy

    cfg = ctx.cfg
    cfg.params.validate(cfg.model.mode)
    policy = load_policy(cfg.model)
    policy.model.to(ctx.accelerator.device)
    train, held_out = pairs(ctx, "train", policy), pairs(ctx, "eval", policy)
    cache = cfg.params.ref_cache_dir or ctx.out / "reference_cache"
    return DPO(policy, train, cfg.params, cfg.data.max_length, cfg.train.batch_size,
               cfg.train.seed, held_out, shard=ctx.shard, cache_dir=cache, reports=ctx.reports)
