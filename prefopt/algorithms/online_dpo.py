"""Online (iterative) DPO: sample pairs from the current policy, label them, train on them.

Each round (one batch of B prompts) ``rollout`` samples two responses per prompt from
π_θ, asks a preference source for p = P(a ≻ b) (``online_dpo.labeler``), orients every pair
so that chosen = the preferred response with the soft label max(p, 1 − p), and computes
the reference log-probs once. ``updates`` then takes ``update_epochs`` passes over the
round's pairs in ``minibatches`` optimizer steps each, with the DPO-family loss of
``prefopt.algorithms.dpo`` (the same ``dpo_loss_and_metrics``). Rounds = epochs × prompt
batches. Pairs are built from the sampled token ids themselves (no decode/re-encode), so
the log-probs are those of exactly what was sampled; a response cut at ``max_new_tokens``
is kept as sampled (no EOS). In the spirit of Guo et al. 2024 ("Direct language model
alignment from online AI feedback") and Xiong et al. 2024 (iterative DPO); docs/dpo.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prefopt.algorithms.dpo import DPOConfig, dpo_loss_and_metrics, estimate_kl
from prefopt.data.batching import epoch_batches
from prefopt.data.collate import collate_pairs
from prefopt.data.records import PromptRecord
from prefopt.data.tokenize import Encoded
from prefopt.engine.module import Module, split_batch
from prefopt.errors import ConfigError
from prefopt.policy.generate import Rollout, SamplingConfig
from prefopt.policy.logprobs import sequence_logprobs
from prefopt.policy.policy import Policy


@dataclass
class OnlineDPOConfig(DPOConfig):
    """The DPO fields (loss, beta, per-loss hyper-parameters, hard_labels, TR-DPO sync,
    eval_*) plus sampling and labelling. ``reference`` must stay ``live``."""

    labeler: str = "annotators"
    """Who labels the sampled pairs: reward:<dir>[,<dir>...] (a reward model, σ(r_a − r_b)),
    annotators[:soft|majority] (the world's simulated pool, sampled votes),
    annotators_length_biased[:soft|majority], gold (the world's gold reward, hard: an
    oracle ablation) or judge[:backend] (the CAI AI judge; backend world | policy | a model
    directory | an http(s) URL)."""
    update_epochs: int = 1
    """Passes over each round's pairs."""
    minibatches: int = 1
    """Optimizer steps per pass (the round's pairs are shuffled and cut into this many)."""
    max_new_tokens: int = 48
    """Response length cap of the sampled pairs."""
    temperature: float = 0.7
    """Sampling temperature of both responses (1 = on-policy; lower = less diverse pairs)."""
    top_p: float = 1.0
    generation_batch_size: int = 32
    """Prompts per generate call."""

    def validate(self, mode: str) -> None:
        super().validate(mode)
        if self.reference != "live":
            raise ConfigError("online_dpo: reference must be live (the pairs are new each "
                              "round; their reference log-probs are computed in the rollout)")
        if self.update_epochs < 1 or self.minibatches < 1:
            raise ConfigError("online_dpo: update_epochs and minibatches must be >= 1")


def rollout_encodings(ro: Rollout) -> list[Encoded]:
    """One Encoded per sampled row: the prompt's real tokens, then the response tokens up to
    and including EOS (completion mask on the response)."""
    out = []
    for p_ids, p_mask, r_ids, r_mask in zip(ro.prompt_ids, ro.prompt_mask, ro.response_ids,
                                            ro.response_mask):
        prompt, response = p_ids[p_mask.bool()].tolist(), r_ids[r_mask.bool()].tolist()
        out.append(Encoded(prompt + response, [0] * len(prompt) + [1] * len(response)))
    return out


def orient_pairs(a: list, b: list, p: torch.Tensor, hard: bool):
    """(chosen, rejected, labels, kept indices): chosen is a where p ≥ ½ (label p), else b
    (label 1 − p). ``hard``: label 1 and ties (p = ½) dropped. NaN (no label, e.g. an
    unparseable judge answer) is dropped."""
    chosen, rejected, labels, kept = [], [], [], []
    for i, p_i in enumerate(p.tolist()):
        if math.isnan(p_i) or (hard and p_i == 0.5):
            continue
        a_wins = p_i >= 0.5
        chosen.append(a[i] if a_wins else b[i])
        rejected.append(b[i] if a_wins else a[i])
        labels.append(1.0 if hard else max(p_i, 1.0 - p_i))
        kept.append(i)
    return chosen, rejected, labels, kept


def select_pairs(batch: dict, idx: list[int]) -> dict:
    """Rows ``idx`` of a pair batch: (2n, ...) tensors keep chosen and rejected halves."""
    n = batch["label"].shape[0]
    both = idx + [i + n for i in idx]
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v[both] if v.shape[0] == 2 * n else v[idx]
        else:
            out[k] = [v[i] for i in idx]
    return out


def label_stats(records, a, b, p: torch.Tensor, gold) -> dict[str, float]:
    """Mean gold reward of the samples and the share of non-tied pairs whose label picks the
    gold winner (pairs the gold ties, or with p = ½, are left out)."""
    g_a = torch.as_tensor(gold.score(records, a), dtype=torch.float32)
    g_b = torch.as_tensor(gold.score(records, b), dtype=torch.float32)
    decided = (g_a != g_b) & (p != 0.5) & ~p.isnan()
    agree = ((p > 0.5) == (g_a > g_b))[decided].float()
    return {"online/gold_reward": torch.cat([g_a, g_b]).mean().item(),
            "online/gold_agreement": agree.mean().item() if decided.any() else float("nan")}


class OnlineDPO(Module):
    name = "online_dpo"
    shardable = False
    shardable_reason = ("each process keeps the pairs its labeler decided, so processes run "
                        "different numbers of reference forwards and micro-batches, and "
                        "every FSDP forward is a collective; use train.sharding: none")

    def __init__(self, policy: Policy, prompts: list[PromptRecord], source,
                 cfg: OnlineDPOConfig, batch_size: int, seed: int = 0,
                 eval_prompts: list[PromptRecord] | None = None, shard=(0, 1), gold=None):
        cfg.validate(policy.cfg.mode)
        if not prompts:
            raise ConfigError("online_dpo: no training prompts")
        self.policy, self.source, self.cfg, self.gold = policy, source, cfg, gold
        self.prompts, self.batch_size, self.seed, self.shard = prompts, batch_size, seed, shard
        self.eval_prompts = (eval_prompts or [])[:cfg.eval_kl_prompts]
        self.sampling = SamplingConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_p)
        self.updates_per_batch = cfg.update_epochs * cfg.minibatches
        self._metrics: dict[str, float] = {}
        if not cfg.reference_free:
            policy.freeze_reference()

    def train_batches(self, epoch):
        return epoch_batches(self.prompts, self.batch_size, self.seed, epoch, list,
                             shard=self.shard)

    def rollout(self, records: list[PromptRecord]) -> dict | None:
        """Sample 2 responses per prompt, label, orient, and attach reference log-probs."""
        n = len(records)
        prompts = [r.prompt for r in records]
        ro = self.policy.generate(prompts + prompts, self.sampling, self.cfg.generation_batch_size)
        a, b = ro.texts[:n], ro.texts[n:]
        p = torch.as_tensor(self.source.prefer(records, a, b), dtype=torch.float32).cpu()  # (B,)
        enc = rollout_encodings(ro)
        chosen, rejected, labels, kept = orient_pairs(enc[:n], enc[n:], p, self.cfg.hard_labels)
        self._metrics = self._round_metrics(records, a, b, p, ro, len(kept))
        if not kept:
            return None
        batch = collate_pairs(chosen, rejected, self.policy.tokenizer.pad_token_id, labels)
        batch["index"] = torch.tensor(kept, dtype=torch.long)  # positions in the round
        if not self.cfg.reference_free:
            batch["ref_chosen"], batch["ref_rejected"] = self._reference(batch)
        return batch

    @torch.no_grad()
    def _reference(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """log π_ref of the chosen and rejected rows, (n,) each, in chunks of pairs."""
        chosen, rejected = [], []
        for mb in split_batch(batch, self.cfg.ref_batch_size):
            dev = self.policy.device
            ids, attn = mb["input_ids"].to(dev), mb["attention_mask"].to(dev)
            mask = mb["completion_mask"].to(dev)
            t = self.policy.reference_token_logprobs(ids, attn, where=mask[:, 1:])
            s = sequence_logprobs(t, mask).float().cpu()  # (2b,)
            half = s.shape[0] // 2
            chosen.append(s[:half])
            rejected.append(s[half:])
        return torch.cat(chosen), torch.cat(rejected)

    def _round_metrics(self, records, a, b, p, ro: Rollout, n_pairs: int) -> dict[str, float]:
        m = {"online/label_confidence": (2 * p - 1).abs().nanmean().item(),
             "online/label_ties": (p == 0.5).float().mean().item(),
             "online/unlabelled": p.isnan().float().mean().item(),
             "online/identical": sum(x == y for x, y in zip(a, b)) / max(len(a), 1),
             "online/response_len": ro.response_mask.sum(-1).float().mean().item(),
             "online/no_eos": (~ro.has_eos).float().mean().item(),
             "online/pairs": float(n_pairs)}
        if self.gold is not None:
            m.update(label_stats(records, a, b, p, self.gold))
        if hasattr(self.source, "metrics"):
            m.update(self.source.metrics())
        return m

    def rollout_metrics(self) -> dict[str, float]:
        return self._metrics

    def updates(self, experience, micro_batch_size):
        """``update_epochs`` × ``minibatches`` optimizer steps over the round's pairs, always
        that many (a step may be empty: no labelled pair this round, or fewer pairs than
        minibatches) so that every process runs the same steps."""
        n = 0 if experience is None else experience["label"].shape[0]
        for _ in range(self.cfg.update_epochs):
            # global RNG: seeded and checkpointed
            order = torch.randperm(n) if n else torch.zeros(0, dtype=torch.long)
            for part in torch.tensor_split(order, self.cfg.minibatches):
                idx = part.tolist()
                yield list(split_batch(select_pairs(experience, idx), micro_batch_size)) \
                    if idx else []

    def loss(self, mb):
        return dpo_loss_and_metrics(self.policy, mb, self.cfg)

    def after_step(self, step: int) -> None:
        every = self.cfg.ref_sync_every
        if every and step % every == 0:
            self.policy.sync_reference(self.cfg.ref_sync_alpha)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """KL(π_θ ‖ π_ref) and response length on samples (T = 1) for held-out prompts, and
        their mean gold reward when the world has one."""
        if not self.eval_prompts:
            return {}
        prompts = [r.prompt for r in self.eval_prompts]
        if self.policy.uses_adapters or not self.cfg.reference_free:
            out, texts = estimate_kl(self.policy, prompts, self.cfg.eval_max_new_tokens,
                                     self.seed)
        else:  # full-mode reference-free: no π_ref in memory, so no KL
            out, texts = {}, self.policy.generate(prompts, SamplingConfig(
                self.cfg.eval_max_new_tokens, temperature=1.0)).texts
        if self.gold is not None:
            out["eval/gold_reward"] = float(torch.as_tensor(
                self.gold.score(self.eval_prompts, texts), dtype=torch.float32).mean())
        return out

    def save(self, out_dir):
        self.policy.save(out_dir)


def build(ctx) -> OnlineDPO:
    """Online DPO from a recipe: prompts per ``data`` (world:prompts or a prompt file), the
    labeler per ``online_dpo.labeler``; the world's gold reward, when there is a world,
    only feeds the label-agreement and reward metrics."""
    from prefopt.data.sources import prompts
    from prefopt.feedback.preference_sources import load_preference_source
    from prefopt.policy import load_policy

    cfg = ctx.cfg
    cfg.params.validate(cfg.model.mode)
    source = load_preference_source(cfg.params.labeler, ctx)
    policy = load_policy(cfg.model)
    policy.model.to(ctx.accelerator.device)
    gold = ctx.world.gold if ctx.world is not None else None
    return OnlineDPO(policy, prompts(ctx, "train"), source, cfg.params, cfg.train.batch_size,
                     cfg.train.seed, prompts(ctx, "eval"), shard=ctx.shard, gold=gold)
