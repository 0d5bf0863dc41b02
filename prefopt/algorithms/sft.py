"""Supervised fine-tuning: next-token cross-entropy on completion tokens.

L(θ) = − Σ_t m_t log π_θ(y_t | x, y_<t) / Σ_t m_t, with m the completion mask (every token
when ``completion_only`` is off, as in pretraining). The mean is over the tokens of each
micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prefopt.data.batching import encode_demonstrations, epoch_batches
from prefopt.data.collate import collate_sft
from prefopt.data.records import Demonstration
from prefopt.engine.module import Module
from prefopt.policy.logprobs import sequence_logprobs
from prefopt.policy.policy import Policy


@dataclass
class SFTConfig:
    completion_only: bool = True
    """Loss on completion tokens only (off: on every token, as in pretraining)."""
    group_by_length: bool = False
    """Batch examples of similar length together (less padding, same data per epoch)."""


class SFT(Module):
    name = "sft"

    def __init__(self, policy: Policy, train: list[Demonstration], cfg: SFTConfig,
                 max_length: int, batch_size: int, seed: int = 0,
                 eval_data: list[Demonstration] | None = None, shard=(0, 1)):
        self.policy, self.cfg, self.batch_size, self.seed = policy, cfg, batch_size, seed
        self.shard = shard
        tok = policy.tokenizer
        self.train = encode_demonstrations(tok, train, max_length)
        self.eval = encode_demonstrations(tok, eval_data or [], max_length)
        self.pad = tok.pad_token_id

    def _collate(self, rows):
        batch = collate_sft([enc for _, enc in rows], self.pad)
        if not self.cfg.completion_only:
            batch["completion_mask"] = batch["attention_mask"].clone()
        batch["ids"] = [i for i, _ in rows]
        return batch

    def train_batches(self, epoch):
        lengths = [len(e.input_ids) for _, e in self.train] if self.cfg.group_by_length else None
        return epoch_batches(self.train, self.batch_size, self.seed, epoch, self._collate,
                             shard=self.shard, lengths=lengths)

    def loss(self, mb):
        dev = self.policy.device
        ids, attn = mb["input_ids"].to(dev), mb["attention_mask"].to(dev)
        mask = mb["completion_mask"].to(dev)
        token_logps = self.policy.token_logprobs(ids, attn, where=mask[:, 1:])
        n_tokens = mask[:, 1:].sum()
        nll = -sequence_logprobs(token_logps, mask).sum() / n_tokens.clamp(min=1)
        return nll, {"sft/nll": nll.item(), "tokens": float(attn.sum())}

    def loss_weight(self, mb):
        """The loss is a mean over completion tokens: the engine weights by their count."""
        return float(mb["completion_mask"][:, 1:].sum())

    @torch.no_grad()
    def evaluate(self):
        if not self.eval:
            return {}
        total, count = 0.0, 0
        for i in range(0, len(self.eval), self.batch_size):
            mb = self._collate(self.eval[i:i + self.batch_size])
            nll, m = self.loss(mb)
            n = float(mb["completion_mask"][:, 1:].sum())
            total, count = total + nll.item() * n, count + n
        return {"eval/nll": total / max(count, 1)}

    def save(self, out_dir):
        self.policy.save(out_dir)


def build(ctx) -> SFT:
    """SFT from a recipe: the policy per ``model``, demonstrations per ``data``."""
    from prefopt.data.sources import demonstrations
    from prefopt.policy import load_policy

    cfg = ctx.cfg
    policy = load_policy(cfg.model)
    policy.model.to(ctx.accelerator.device)
    train = demonstrations(ctx, "train")
    held_out = demonstrations(ctx, "eval")
    return SFT(policy, train, cfg.params, cfg.data.max_length, cfg.train.batch_size,
               cfg.train.seed, held_out, shard=ctx.shard)
