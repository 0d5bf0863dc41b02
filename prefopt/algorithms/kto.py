"""KTO (Ethayarajh et al. 2024, "KTO: model alignment as prospect theoretic optimization").

Unpaired data: each completion is desirable or undesirable. With ρ = log π_θ(y|x) −
log π_ref(y|x) (summed over completion tokens) the per-example loss is
w_D·(1 − σ(β(ρ − z0))) for desirable y and w_U·(1 − σ(β(z0 − ρ))) for undesirable y
(``prefopt.losses.kto_loss``). The reference point z0 = max(0, mean_j ρ(x_j, y'_j)) is
estimated on *mismatched* pairs: row i's prompt with row (i − 1 mod B)'s completion, a
rotation of the batch's completions by one (the paper's §4 and TRL's KL dataset). The
mismatched y' are then the very completions the batch scores, each under another prompt,
so their log-ratio estimates KL(π_θ ‖ π_ref) without sampling. z0 is detached and its
forward passes run without gradients. A batch of one has no mismatched pair: z0 = 0 there.
The reference is live (adapters disabled under LoRA/QLoRA, a frozen copy in full mode).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from prefopt.data.batching import EncodeReport, encode_unpaired, epoch_batches
from prefopt.data.collate import collate_sft
from prefopt.data.records import UnpairedExample
from prefopt.data.tokenize import Encoded
from prefopt.engine.module import Module
from prefopt.errors import ConfigError
from prefopt.losses import kto_loss, kto_weights_ok
from prefopt.policy.logprobs import sequence_logprobs
from prefopt.policy.policy import Policy

log = logging.getLogger(__name__)


@dataclass
class KTOConfig:
    beta: float = 0.1
    """β of the value function σ(β(ρ − z0)); larger keeps π_θ closer to π_ref."""
    w_desirable: float = 1.0
    """w_D, the weight of desirable examples."""
    w_undesirable: float = 1.0
    """w_U, the weight of undesirable examples. Keep w_D·n_D / (w_U·n_U) in [1, 4/3]
    (Ethayarajh et al. 2024, §4.2); a warning names the ratio otherwise."""


def split_encoded(enc: Encoded) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of one encoded example (the mask starts at the reply)."""
    n_prompt = enc.completion_mask.index(1) if 1 in enc.completion_mask else len(enc.input_ids)
    return enc.input_ids[:n_prompt], enc.input_ids[n_prompt:]


def mismatched(rows: list[Encoded], max_length: int) -> list[Encoded]:
    """Row i: prompt of i with completion of i − 1 (mod B); completions cut to fit."""
    parts = [split_encoded(e) for e in rows]
    out = []
    for i, (prompt, _) in enumerate(parts):
        completion = parts[i - 1][1][:max(max_length - len(prompt), 1)]
        out.append(Encoded(prompt + completion, [0] * len(prompt) + [1] * len(completion)))
    return out


def weight_ratio_warning(n_d: int, n_u: int, w_d: float, w_u: float) -> str | None:
    """The warning text when w_D·n_D / (w_U·n_U) is outside [1, 4/3], else None."""
    if kto_weights_ok(n_d, n_u, w_d, w_u):
        return None
    ratio = (w_d * n_d) / (w_u * n_u) if w_u * n_u > 0 else float("inf")
    return (f"kto: w_D·n_D / (w_U·n_U) = {w_d}·{n_d} / ({w_u}·{n_u}) = {ratio:.3g} is "
            "outside [1, 4/3] (Ethayarajh et al. 2024, §4.2); adjust kto.w_desirable or "
            "kto.w_undesirable")


class KTO(Module):
    name = "kto"

    def __init__(self, policy: Policy, train: list[UnpairedExample], cfg: KTOConfig,
                 max_length: int, batch_size: int, seed: int = 0,
                 eval_data: list[UnpairedExample] | None = None, shard=(0, 1),
                 reports: dict | None = None):
        self.policy, self.cfg, self.max_length = policy, cfg, max_length
        self.batch_size, self.seed, self.shard = batch_size, seed, shard
        rep = EncodeReport()
        self.train = encode_unpaired(policy.tokenizer, train, max_length, rep)
        self.eval = encode_unpaired(policy.tokenizer, eval_data or [], max_length)
        if reports is not None:
            reports["train/encode"] = rep.as_dict()
        if not self.train:
            raise ConfigError("kto: no training examples left after encoding")
        n_d = sum(u.label for u, _ in self.train)
        warning = weight_ratio_warning(n_d, len(self.train) - n_d, cfg.w_desirable,
                                       cfg.w_undesirable)
        if warning:
            log.warning(warning)
        policy.freeze_reference()

    def collate(self, rows: list[tuple[UnpairedExample, Encoded]]) -> dict:
        """(B, T) rows, ``desirable`` (B,), and (B, T') mismatched rows ``kl_*``."""
        encs = [e for _, e in rows]
        batch = collate_sft(encs, self.policy.tokenizer.pad_token_id)
        batch["desirable"] = torch.tensor([u.label for u, _ in rows], dtype=torch.bool)
        if len(rows) > 1:
            kl = collate_sft(mismatched(encs, self.max_length), self.policy.tokenizer.pad_token_id)
            batch.update({f"kl_{k}": v for k, v in kl.items()})
        batch["ids"] = [u.id for u, _ in rows]
        return batch

    def train_batches(self, epoch):
        return epoch_batches(self.train, self.batch_size, self.seed, epoch, self.collate,
                             shard=self.shard)

    def _logps(self, mb: dict, prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """(log π_θ, log π_ref) of the rows under ``prefix`` (B,) each; π_ref without grad."""
        dev = self.policy.device
        ids, attn = mb[f"{prefix}input_ids"].to(dev), mb[f"{prefix}attention_mask"].to(dev)
        mask = mb[f"{prefix}completion_mask"].to(dev)
        where = mask[:, 1:]
        logps = sequence_logprobs(self.policy.token_logprobs(ids, attn, where=where), mask)
        ref = sequence_logprobs(self.policy.reference_token_logprobs(ids, attn, where=where),
                                mask)
        return logps, ref.detach()

    def forward(self, mb: dict):
        """(per-example losses (B,), z0, ρ (B,) detached, log π_θ (B,) detached)."""
        logps, ref = self._logps(mb)
        kl_logps = kl_ref = None
        if "kl_input_ids" in mb:
            with torch.no_grad():  # z0 is detached: no graph for the mismatched rows
                kl_logps, kl_ref = self._logps(mb, "kl_")
        desirable = mb["desirable"].to(logps.device)
        losses, z0 = kto_loss(logps, ref, desirable, kl_logps, kl_ref, self.cfg.beta,
                              self.cfg.w_desirable, self.cfg.w_undesirable)
        return losses, z0, (logps - ref).detach(), logps.detach()

    def loss(self, mb):
        losses, z0, rho, logps = self.forward(mb)
        d = mb["desirable"].to(rho.device)
        metrics = {"kto/z0": z0.item(), "kto/desirable_frac": d.float().mean().item(),
                   "tokens": float(mb["attention_mask"].sum())}
        beta = self.cfg.beta
        if d.any():
            metrics["rewards/chosen"] = (beta * rho[d]).mean().item()
            metrics["logps/chosen"] = logps[d].mean().item()
        if (~d).any():
            metrics["rewards/rejected"] = (beta * rho[~d]).mean().item()
            metrics["logps/rejected"] = logps[~d].mean().item()
        if d.any() and (~d).any():
            metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
        return losses.mean(), metrics

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """eval/loss; eval/z0 (mean over batches); eval/rewards/desirable and /undesirable
        (mean β·ρ); eval/accuracy: share of rows with ρ > z0 exactly when desirable."""
        if not self.eval:
            return {}
        losses, rhos, hits, z0s, des = [], [], [], [], []
        for i in range(0, len(self.eval), self.batch_size):
            mb = self.collate(self.eval[i:i + self.batch_size])
            loss_i, z0, rho, _ = self.forward(mb)
            d = mb["desirable"].to(rho.device)
            losses.append(loss_i)
            rhos.append(rho)
            des.append(d)
            hits.append(((rho > z0) == d).float())
            z0s.append(z0.item())
        rho, d = torch.cat(rhos), torch.cat(des)
        out = {"eval/loss": torch.cat(losses).mean().item(),
               "eval/accuracy": torch.cat(hits).mean().item(),
               "eval/z0": sum(z0s) / len(z0s)}
        if d.any():
            out["eval/rewards/desirable"] = (self.cfg.beta * rho[d]).mean().item()
        if (~d).any():
            out["eval/rewards/undesirable"] = (self.cfg.beta * rho[~d]).mean().item()
        return out

    def save(self, out_dir):
        self.policy.save(out_dir)


def build(ctx) -> KTO:
    """KTO from a recipe: unpaired rows per ``data`` (pair files and world pairs are split
    into a desirable chosen and an undesirable rejected example)."""
    from prefopt.data.sources import unpaired
    from prefopt.policy import load_policy

    cfg = ctx.cfg
    policy = load_policy(cfg.model)
    policy.model.to(ctx.accelerator.device)
    train, held_out = unpaired(ctx, "train", policy), unpaired(ctx, "eval", policy)
    return KTO(policy, train, cfg.params, cfg.data.max_length, cfg.train.batch_size,
               cfg.train.seed, held_out, shard=ctx.shard, reports=ctx.reports)
