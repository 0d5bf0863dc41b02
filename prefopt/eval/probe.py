"""A held-out probe run during training: gold reward, proxy score and KL of the policy.

Every ``eval_every`` steps the probe samples the policy on fixed validation prompts and
reports ``eval/gold`` (the world's gold reward), ``eval/proxy`` (a reward model's score,
e.g. the one PPO optimises) and ``eval/kl`` = mean over samples of Σ_t log π(y_t) − log
π_ref(y_t) (the k1 estimate of KL(π‖π_ref), both at the sampling temperature). The curves
give the over-optimisation plots of Gao et al. 2022: proxy and gold against √KL. The
probe runs under ``torch.random.fork_rng`` so training draws the same random numbers with
or without it (resumed runs stay identical).
"""

from __future__ import annotations

import torch

from prefopt.data.records import PromptRecord
from prefopt.policy.generate import SamplingConfig
from prefopt.policy.logprobs import token_logprobs


class Probe:
    def __init__(self, policy, records: list[PromptRecord], world=None, proxy=None,
                 sampling: SamplingConfig | None = None, seed: int = 0):
        self.policy, self.records, self.world, self.proxy = policy, records, world, proxy
        self.sampling = sampling or SamplingConfig(max_new_tokens=48, temperature=0.7)
        self.seed = seed

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            roll = self.policy.generate([r.prompt for r in self.records], self.sampling)
        out = {"eval/kl": self._kl(roll), "eval/length": float(roll.response_mask.sum(1)
                                                                .float().mean())}
        if self.world is not None:
            gold = self.world.gold.score(self.records, roll.texts)
            out["eval/gold"] = float(sum(gold) / len(gold))
        if self.proxy is not None:
            out["eval/proxy"] = float(self.proxy.score(self.records, roll.texts).mean())
        return out

    def _kl(self, roll) -> float:
        ids, attn = roll.sequences()
        dev = self.policy.device
        ids, attn = ids.to(dev), attn.to(dev)
        mask = roll.completion_mask()[:, 1:].to(dev).float()
        t = self.sampling.temperature
        where = mask.bool()
        logp = token_logprobs(self.policy.model, ids, attn, t, where=where)
        ref = self.policy.reference_token_logprobs(ids, attn, t, where=where)
        return float(((logp - ref) * mask).sum(1).mean())


def attach_probe(ctx, module) -> None:
    """Give ``module`` a probe when the recipe asks for one and the module has a policy."""
    train = ctx.cfg.train
    policy = getattr(module, "policy", None)
    if train.probe_prompts <= 0 or policy is None:
        return
    from prefopt.data.sources import prompts_for_probe

    proxy = None
    if train.probe_reward:
        from prefopt.feedback.reward_sources import load_reward_source

        proxy = load_reward_source(train.probe_reward, ctx.world)
    elif getattr(module, "source", None) is not None and hasattr(module.source, "score"):
        proxy = module.source
    records = prompts_for_probe(ctx, train.probe_prompts)
    sampling = getattr(getattr(module, "cfg", None), "sampling", None)
    module.probe = Probe(policy, records, ctx.world, proxy,
                         sampling if isinstance(sampling, SamplingConfig) else None,
                         seed=train.seed)
