"""Reward sources: ``score(records, responses) -> Tensor (B,)``.

Behind the one contract: trained reward models (one, or an ensemble against
over-optimisation, Coste et al. 2023) and a world's gold reward. ``load_reward_source``
builds one from a recipe string: ``gold``, a reward-model directory, or comma-separated
directories (an ensemble).

Text path: the prompt is rendered with the chat template (generation prompt on), the
response follows, then EOS; rows are right-padded and the reward is read at the last real
(EOS) token. Token path (``score_tokens``): the same sequences straight from a ``Rollout``'s
tensors (left-padded prompt, right-padded response) when the reward model shares the
policy's tokenizer; it skips decoding and re-tokenizing and gives the same scores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from prefopt.data.collate import collate_sft
from prefopt.data.records import Messages, PromptRecord
from prefopt.data.tokenize import encode_example
from prefopt.errors import ConfigError, DataError
from prefopt.policy.heads import CONFIG_FILE, ScalarModel, load_scalar_model

Ensemble = Literal["mean", "min", "mean_minus_std"]
NO_LIMIT = 1 << 30  # scoring never drops a sequence for length


def ensemble_reduce(scores: torch.Tensor, how: Ensemble = "mean", k: float = 1.0) -> torch.Tensor:
    """Combine the scores of M reward models, (M, B) -> (B,) (Coste et al. 2023).

    mean: (1/M) Σ_m r_m; min (worst-case optimisation): min_m r_m;
    mean_minus_std (uncertainty-weighted): mean − k·std, with the population std
    sqrt((1/M) Σ_m (r_m − mean)²) so that one member gives its own score. (Coste et al.
    penalise the variance; the std keeps k in reward units.)
    """
    if how == "mean":
        return scores.mean(0)
    if how == "min":
        return scores.min(0).values
    if how == "mean_minus_std":
        return scores.mean(0) - k * scores.std(0, unbiased=False)
    raise ConfigError(f"ensemble: expected mean, min or mean_minus_std, got {how!r}")


@torch.no_grad()
def raw_scores(model: ScalarModel, tokenizer, prompts: Sequence[Messages],
               responses: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """Un-normalised r(x, y) of each (prompt, response), text path. -> (B,) float32, CPU."""
    if len(prompts) != len(responses):
        raise DataError(f"{len(prompts)} prompts but {len(responses)} responses")
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        enc = [encode_example(tokenizer, p, r, NO_LIMIT)
               for p, r in zip(prompts[i:i + batch_size], responses[i:i + batch_size])]
        batch = collate_sft(enc, tokenizer.pad_token_id)  # right-padded (b, T)
        out.append(model(batch["input_ids"].to(device),
                         batch["attention_mask"].to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


class RewardModelSource:
    """One or more saved reward models (``ScalarModel.save`` directories), normalised scores.

    With several members the per-member scores (M, B) are reduced by ``ensemble``.
    """

    def __init__(self, paths: Sequence[str | Path], ensemble: Ensemble = "mean", k: float = 1.0,
                 batch_size: int = 32, device: str | torch.device | None = None,
                 dtype: str = "float32"):
        if not paths:
            raise ConfigError("reward: no reward-model directory given")
        for p in paths:
            check_reward_dir(p)
        ensemble_reduce(torch.zeros(1, 1), ensemble, k)  # validate the name early
        self.paths, self.ensemble, self.k, self.batch_size = list(paths), ensemble, k, batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.models = [load_scalar_model(p, mode=saved_mode(p), dtype=dtype).to(self.device)
                       .eval() for p in paths]
        from prefopt.policy.load import load_tokenizer

        self.tokenizers = [load_tokenizer(str(p)) for p in paths]

    def member_scores(self, records: Sequence[PromptRecord],
                      responses: Sequence[str]) -> torch.Tensor:
        """Normalised scores (raw − mean)/std of every member, (M, B)."""
        prompts = [r.prompt for r in records]
        return torch.stack([
            (raw_scores(m, tok, prompts, responses, self.batch_size) - m.cfg.mean) / m.cfg.std
            for m, tok in zip(self.models, self.tokenizers)])

    def score(self, records: Sequence[PromptRecord], responses: Sequence[str]) -> torch.Tensor:
        """(B,) normalised, ensemble-reduced scores."""
        return ensemble_reduce(self.member_scores(records, responses), self.ensemble, self.k)

    @torch.no_grad()
    def score_tokens(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                     response_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """(B,) scores of a Rollout's tensors: prompt (B, P) left-padded, response (B, R)
        right-padded with its mask covering the tokens up to and including EOS.

        Only valid when every member shares the policy's tokenizer (``shares_tokenizer``).
        The sequence [pads | prompt | response | pads] has position ids that skip the left
        padding and the reward is read at the last real token, so it scores as the text path.
        """
        ids = torch.cat([prompt_ids, response_ids], 1).to(self.device)  # (B, P+R)
        mask = torch.cat([prompt_mask, response_mask], 1).to(self.device)
        member = [(m(ids, mask).float().cpu() - m.cfg.mean) / m.cfg.std for m in self.models]
        return ensemble_reduce(torch.stack(member), self.ensemble, self.k)

    def score_rollout(self, rollout) -> torch.Tensor:
        """(B,) scores of a ``prefopt.policy.Rollout`` (token path)."""
        return self.score_tokens(rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids,
                                 rollout.response_mask)

    def shares_tokenizer(self, tokenizer) -> bool:
        """True when ``score_tokens`` may take token ids made by ``tokenizer``."""
        vocab = tokenizer.get_vocab()
        return all(t.get_vocab() == vocab and t.eos_token_id == tokenizer.eos_token_id
                   and t.chat_template == tokenizer.chat_template for t in self.tokenizers)


class GoldSource:
    """A world's gold reward as a reward source: ``world.gold.score`` as a (B,) tensor."""

    def __init__(self, world):
        if world is None:
            raise ConfigError("reward 'gold' needs a world; set world.name in the recipe")
        self.world = world

    def score(self, records: Sequence[PromptRecord], responses: Sequence[str]) -> torch.Tensor:
        return torch.tensor(list(self.world.gold.score(records, responses)), dtype=torch.float32)


def check_reward_dir(path: str | Path) -> None:
    """Fail early, naming the path, when it is not a saved reward model."""
    p = Path(path)
    if not (p / CONFIG_FILE).is_file():
        raise ConfigError(f"reward model '{path}': no {CONFIG_FILE} there; expected the "
                          "final/ directory of an 'algorithm: reward' run, or 'gold'")


def saved_mode(path: str | Path) -> str:
    """The mode a reward model was trained in: a QLoRA adapter reloads on the same 4-bit
    base it was trained and normalised on, not on full-precision weights."""
    return json.loads((Path(path) / CONFIG_FILE).read_text()).get("mode", "full")


def reward_paths(spec: str) -> list[str]:
    """The directories of a reward spec (empty for ``gold``)."""
    spec = spec.strip()
    return [] if spec == "gold" else [p.strip() for p in spec.split(",") if p.strip()]


def load_reward_source(spec: str, world=None, ensemble: Ensemble = "mean", k: float = 1.0,
                       batch_size: int = 32, device=None):
    """``gold`` -> GoldSource(world); ``DIR`` -> RewardModelSource([DIR]);
    ``DIR1,DIR2,...`` -> an ensemble reduced by ``ensemble`` (mean | min | mean_minus_std)."""
    if spec.strip() == "gold":
        return GoldSource(world)
    return RewardModelSource(reward_paths(spec), ensemble, k, batch_size, device)
