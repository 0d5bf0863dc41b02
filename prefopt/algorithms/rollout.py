"""Shared rollout machinery of the RL modules (PPO, RLOO, GRPO): generate, score, log-probs.

``make_experience`` turns a batch of prompts into an ``Experience``:

1. generate k responses per prompt with the policy (KV cache, left-padded prompts, EOS stop);
2. score them with the reward source (``score_tokens`` on the rollout's tensors when the
   source shares the policy's tokenizer, else ``score(records, texts)``);
3. compute log π_old and log π_ref of every sampled token with logits/T, T the sampling
   temperature (Huang et al. 2024, "N+ implementation details": without it the training
   distribution is not the sampling one, KL rises faster and results drop); the reference
   is the same model with adapters disabled (LoRA/QLoRA) or a frozen copy (full);
4. the per-token KL estimate k_t = KL-estimator(log π_old, log π_ref) on response tokens and
   the EOS penalty on the scores of responses that never stopped (Huang et al. 2024).

Token layout. ``input_ids`` (B, T) is [left-padded prompt | right-padded response], T = P+R.
Log-probs are next-token log-probs at positions t = 0..T-2, (B, T-1): position t scores token
t+1. ``response_mask`` (B, T-1) is 1 where token t+1 is a response token (EOS included), i.e.
``Rollout.completion_mask()[:, 1:]``; every per-token tensor of an Experience uses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Protocol

import torch
from torch import Tensor

from prefopt.data.batching import epoch_batches
from prefopt.data.records import PromptRecord
from prefopt.losses import eos_penalty, kl_estimate
from prefopt.policy.generate import Rollout, SamplingConfig
from prefopt.policy.policy import Policy


class RewardSource(Protocol):
    def score(self, records: Sequence[PromptRecord], responses: Sequence[str]) -> Tensor: ...


@dataclass
class Experience:
    """One rollout's tensors; B = prompts × k rows, consecutive k rows share a prompt."""

    input_ids: Tensor  # (B, T) prompt (left-padded) then response (right-padded)
    attention_mask: Tensor  # (B, T)
    response_mask: Tensor  # (B, T-1) 1 where log-prob position t scores a response token
    old_logps: Tensor  # (B, T-1) log π_old(x_{t+1} | x_≤t) from logits/T, detached
    ref_logps: Tensor  # (B, T-1) log π_ref(x_{t+1} | x_≤t) from logits/T
    kl: Tensor  # (B, T-1) per-token KL estimate on response tokens, 0 elsewhere
    raw_scores: Tensor  # (B,) the reward source's scores
    scores: Tensor  # (B,) scores after the EOS penalty: what the algorithm optimises
    has_eos: Tensor  # (B,) bool: the response stopped by itself
    texts: list[str]
    records: list[PromptRecord]
    extras: dict[str, Tensor] = field(default_factory=dict)
    """Per-row tensors an algorithm adds (values, advantages, returns), first dim B."""

    @property
    def rows(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: Tensor) -> Experience:
        """The rows ``idx`` (a 1-D index tensor) of every field."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                out[f.name] = v[idx.to(v.device)]
            elif isinstance(v, dict):
                out[f.name] = {k: t[idx.to(t.device)] for k, t in v.items()}
            else:
                out[f.name] = [v[i] for i in idx.tolist()]
        return Experience(**out)


def repeat_records(records: Sequence[PromptRecord], k: int) -> list[PromptRecord]:
    """Each record k times in a row: [x1, x1, ..., x2, x2, ...] (groups for RLOO/GRPO)."""
    return [r for r in records for _ in range(k)]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextmanager
def timed(timings: dict[str, float], key: str):
    """Add the wall time of the block to ``timings[key]`` (CUDA synchronised)."""
    _sync()
    t0 = time.perf_counter()
    yield
    _sync()
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


def batched(fn: Callable[..., Tensor], ids: Tensor, mask: Tensor, size: int,
            *more: Tensor) -> Tensor:
    """``fn(ids, mask, *more)`` over row chunks of ``size`` (0 = all rows at once),
    concatenated along dim 0."""
    size = size if size > 0 else ids.shape[0]
    return torch.cat([fn(*(t[i:i + size] for t in (ids, mask, *more)))
                      for i in range(0, len(ids), size)])


def score_rollout(source, records: list[PromptRecord], rollout: Rollout, tokenizer) -> Tensor:
    """(B,) float scores; the token path when the source can read the policy's token ids."""
    fast = getattr(source, "score_tokens", None)
    shares = getattr(source, "shares_tokenizer", None)
    if fast is not None and shares is not None and shares(tokenizer):
        scores = fast(rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids,
                      rollout.response_mask)
    else:
        scores = source.score(records, rollout.texts)
    return torch.as_tensor(scores, dtype=torch.float32).reshape(-1)


@torch.no_grad()
def make_experience(policy: Policy, records: Sequence[PromptRecord], source: RewardSource,
                    sampling: SamplingConfig, k: int = 1, kl_estimator: str = "k1",
                    missing_eos_penalty: float | None = -1.0, eos_penalty_mode: str = "replace",
                    forward_batch_size: int = 8, generation_batch_size: int = 64,
                    ) -> tuple[Experience, dict[str, float]]:
    """Generate k responses per record, score them, and compute log π_old, log π_ref and KL.

    Returns the experience (tensors on the policy's device) and the timings
    ``time/generate``, ``time/score`` and ``time/logprobs`` in seconds.
    """
    records = repeat_records(records, k)  # B = len(records) · k
    timings: dict[str, float] = {}
    with timed(timings, "time/generate"):
        rollout = policy.generate([r.prompt for r in records], sampling, generation_batch_size)
    with timed(timings, "time/score"):
        raw = score_rollout(source, records, rollout, policy.tokenizer)
    dev, temp = policy.device, sampling.temperature
    ids, attn = (t.to(dev) for t in rollout.sequences())  # (B, T)
    mask = rollout.completion_mask()[:, 1:].to(dev)  # (B, T-1)
    with timed(timings, "time/logprobs"):  # response positions only; 0 elsewhere
        old_logps = batched(lambda i, m, w: policy.token_logprobs(i, m, temp, where=w), ids,
                            attn, forward_batch_size, mask)  # (B, T-1)
        ref_logps = batched(lambda i, m, w: policy.reference_token_logprobs(i, m, temp, where=w),
                            ids, attn, forward_batch_size, mask)  # (B, T-1)
    kl = kl_estimate(old_logps, ref_logps, kl_estimator) * mask  # (B, T-1)
    has_eos = rollout.has_eos.to(dev)
    raw = raw.to(dev)
    scores = raw if missing_eos_penalty is None else eos_penalty(
        raw, has_eos, missing_eos_penalty, eos_penalty_mode)
    exp = Experience(ids, attn, mask, old_logps, ref_logps, kl, raw, scores, has_eos,
                     rollout.texts, records)
    return exp, timings


def experience_metrics(exp: Experience, beta: float) -> dict[str, float]:
    """Rollout metrics shared by PPO, RLOO and GRPO (formulas in docs/ppo.md)."""
    mask = exp.response_mask.to(exp.old_logps.dtype)
    seq_kl = exp.kl.sum(1)  # (B,) Σ_t k_t
    non_score = -beta * seq_kl  # (B,)
    return {
        "objective/scores": exp.scores.mean().item(),
        "objective/raw_scores": exp.raw_scores.mean().item(),
        "objective/kl": seq_kl.mean().item(),
        "objective/non_score_reward": non_score.mean().item(),
        "objective/rlhf_reward": (exp.scores + non_score).mean().item(),
        "objective/entropy": (-(exp.old_logps * mask).sum(1)).mean().item(),
        "response/length": mask.sum(1).mean().item(),
        "response/no_eos_frac": (~exp.has_eos.bool()).float().mean().item(),
    }


def minibatch_updates(exp: Experience, epochs: int, n_minibatches: int, micro_batch_size: int,
                      generator: torch.Generator) -> Iterator[list[Experience]]:
    """``epochs`` passes, each a fresh shuffle cut into ``n_minibatches`` minibatches (one
    optimizer step each), each minibatch split into micro-batches of ``micro_batch_size``."""
    for _ in range(epochs):
        perm = torch.randperm(exp.rows, generator=generator)
        for mb_idx in torch.tensor_split(perm, n_minibatches):
            size = micro_batch_size if micro_batch_size > 0 else len(mb_idx)
            yield [exp.select(mb_idx[j:j + size]) for j in range(0, len(mb_idx), size)]


def prompt_batches(prompts: list[PromptRecord], batch_size: int, seed: int, epoch: int,
                   shard: tuple[int, int] = (0, 1)) -> Iterator[list[PromptRecord]]:
    """Shuffled batches of ``batch_size`` prompts per epoch (each a list of records)."""
    return epoch_batches(prompts, batch_size, seed, epoch, list, shard=shard)
