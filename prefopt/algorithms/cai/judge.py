"""The AI labeler of RL-CAI: a ChatBackend asked which of two responses a principle prefers.

For each comparison (x, y) of one prompt (Bai et al. 2022, sec. 4.1; Lee et al. 2023):

1. one principle is sampled at random from the constitution (Bai et al.: one principle per
   comparison, an ensemble over the constitution across comparisons);
2. the multiple-choice prompt ``comparison_messages`` is built in both orders, (x, y) and
   (y, x), and the judge's log-probs of the replies "(A)" and "(B)" give, per order,
   p = exp(ℓ_A) / (exp(ℓ_A) + exp(ℓ_B)) = P(first shown wins);
3. where the backend gives no log-probs (None), the judge's reply is generated and parsed
   (``parse_answer``): "(A)" -> 1, "(B)" -> 0, anything else is *unparseable*: the pair
   gets label None and is dropped from training, and counted;
4. P(x ≻ y) = (p_xy + (1 − p_yx)) / 2 (``swap_average``); a pair whose two orders prefer
   the same position counts towards the position-bias rate (``position_bias``).

Chain of thought (Bai et al. 2022, sec. 4.1): the judge first writes its reasoning (the
prompt ends with ``COT_CUE``), then, in a follow-up turn "The answer is:", its (A)/(B)
log-probs are read (or the reasoning's own "The answer is: (X)" parsed); the over-confident
per-order probabilities are clamped to [0.4, 0.6] before averaging.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prefopt.algorithms.cai.backends import ChatBackend, LocalHFBackend
from prefopt.algorithms.cai.constitution import Constitution, Principle
from prefopt.algorithms.cai.labels import (
    LabelStats,
    clamp_label,
    parse_answer,
    soft_label_from_logprobs,
)
from prefopt.algorithms.cai.prompts import ANSWER_A, ANSWER_B, ANSWER_CUE, comparison_messages
from prefopt.data.records import Messages, PromptRecord
from prefopt.errors import ConfigError

CHOICES = (ANSWER_A, ANSWER_B)


@dataclass
class BackendConfig:
    """Which model answers the critic's or the judge's questions."""

    backend: str = "policy"
    """policy: the model at ``model.path`` (the SFT / SL-CAI model); world: the world's base
    model (``world.base_model_dir()``); a local model directory; or an http(s):// URL of an
    OpenAI-compatible server (then ``http_model`` and ``api_key_env`` apply)."""
    http_model: str = ""
    """Model name sent to the HTTP server."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the server's API key (never logged)."""
    timeout: float = 30.0
    """Seconds per HTTP request before it is retried."""
    max_retries: int = 3
    """HTTP retries with exponential backoff (timeouts, 429, 5xx)."""
    max_concurrency: int = 4
    """HTTP requests in flight at once."""
    batch_size: int = 8
    """Local backends: conversations per forward / generate call."""


@dataclass
class JudgeConfig(BackendConfig):
    """The backend fields plus how the labeler asks and reads its answer."""

    chain_of_thought: bool = False
    """Reason first, then answer; labels are clamped to ``clamp`` (Bai et al. 2022)."""
    clamp: list[float] = field(default_factory=lambda: [0.4, 0.6])
    """[lo, hi] of the chain-of-thought clamp (the paper: 40-60 worked best, 20-80 less)."""
    max_new_tokens: int = 64
    """Reply length cap: chain-of-thought reasoning, and answers generated when the backend
    gives no log-probs."""
    temperature: float = 0.0
    """Sampling temperature of the generated reasoning / answers (0 = greedy)."""


@dataclass
class Judgement:
    """The labels of one ``AIJudge.judge`` call, aligned with its inputs."""

    labels: list[float | None]   # P(a ≻ b); None: unparseable
    p_ab: list[float | None]     # P(first wins) with (a, b) shown
    p_ba: list[float | None]     # P(first wins) with (b, a) shown
    principles: list[str]        # the principle each comparison used
    stats: LabelStats
    n_from_text: int = 0         # orders labelled by parsing text (no log-probs)


def hard_label(answer: str | None) -> float | None:
    """'A' -> 1.0, 'B' -> 0.0, None (unparseable) -> None."""
    return None if answer is None else float(answer == "A")


def soft_label(logprobs: Sequence[float]) -> float | None:
    """P(A) from [ℓ_A, ℓ_B] (``soft_label_from_logprobs``); None when both are −inf."""
    a, b = logprobs
    if math.isinf(a) and math.isinf(b) and a < 0 and b < 0:
        return None
    return soft_label_from_logprobs(a, b)


class AIJudge:
    """Soft AI preference labels, P(a ≻ b), from a :class:`ChatBackend` and a constitution."""

    def __init__(self, backend: ChatBackend, constitution: Constitution,
                 chain_of_thought: bool = False, clamp: Sequence[float] = (0.4, 0.6),
                 seed: int = 0, max_new_tokens: int = 64, temperature: float = 0.0):
        if not constitution.principles:
            raise ConfigError("AIJudge: the constitution has no principles")
        clamp_label(0.5, *clamp)  # validates the bounds
        self.backend, self.constitution = backend, constitution
        self.chain_of_thought, self.clamp = chain_of_thought, tuple(clamp)
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.rng = random.Random(seed)
        self.last_stats = LabelStats()

    def sample_principles(self, n: int) -> list[Principle]:
        """One principle per comparison, uniformly at random (Bai et al. 2022, sec. 4.1)."""
        return [self.rng.choice(self.constitution.principles) for _ in range(n)]

    def _direct(self, convs: list[Messages]) -> tuple[list[float | None], int]:
        """P(first wins) per conversation from (A)/(B) log-probs; parsed text where None."""
        lps = self.backend.choice_logprobs(convs, CHOICES)
        labels = [None if lp is None else soft_label(lp) for lp in lps]
        missing = [i for i, lp in enumerate(lps) if lp is None]
        if missing:
            texts = self.backend.generate([convs[i] for i in missing], self.max_new_tokens,
                                          self.temperature)
            for i, text in zip(missing, texts):
                labels[i] = hard_label(parse_answer(text))
        return labels, len(missing)

    def _cot(self, convs: list[Messages]) -> tuple[list[float | None], int]:
        """Reasoning first, then the (A)/(B) log-probs after "The answer is:" (or the
        reasoning's own parsed answer where there are none), clamped to ``clamp``."""
        reasoning = self.backend.generate(convs, self.max_new_tokens, self.temperature)
        follow = [[*c, {"role": "assistant", "content": r},
                   {"role": "user", "content": ANSWER_CUE}] for c, r in zip(convs, reasoning)]
        lps = self.backend.choice_logprobs(follow, CHOICES)
        labels: list[float | None] = []
        for lp, text in zip(lps, reasoning):
            p = soft_label(lp) if lp is not None else hard_label(parse_answer(text))
            labels.append(None if p is None else clamp_label(p, *self.clamp))
        return labels, sum(lp is None for lp in lps)

    def judge(self, records: Sequence[PromptRecord], a: Sequence[str], b: Sequence[str],
              reference: Sequence[float | None] | None = None) -> Judgement:
        """Label each (records[i], a[i], b[i]); ``reference`` (e.g. gold or human labels,
        None to skip a pair) feeds the agreement count of the returned stats."""
        if not len(records) == len(a) == len(b):
            raise ValueError(f"judge: {len(records)} records, {len(a)} a, {len(b)} b")
        principles = self.sample_principles(len(records))
        cot = self.chain_of_thought
        convs_ab = [comparison_messages(r.prompt, x, y, p, cot)
                    for r, x, y, p in zip(records, a, b, principles)]
        convs_ba = [comparison_messages(r.prompt, y, x, p, cot)
                    for r, x, y, p in zip(records, a, b, principles)]
        label_fn = self._cot if cot else self._direct
        both, n_text = label_fn(convs_ab + convs_ba)   # one backend call for the 2N prompts
        p_ab, p_ba = both[:len(records)], both[len(records):]
        stats = LabelStats()
        refs = list(reference) if reference is not None else [None] * len(records)
        labels = [stats.add_swapped(x, y, reference=ref) for x, y, ref in zip(p_ab, p_ba, refs)]
        self.last_stats = stats
        return Judgement(labels, p_ab, p_ba, [p.name for p in principles], stats, n_text)

    def prefer(self, records: Sequence[PromptRecord], a: Sequence[str],
               b: Sequence[str]) -> torch.Tensor:
        """The preference-source contract: P(a_i ≻ b_i), (B,) float32; NaN where the
        judge's answer was unparseable (callers drop those pairs)."""
        labels = self.judge(records, a, b).labels
        return torch.tensor([math.nan if x is None else x for x in labels], dtype=torch.float32)

    def metrics(self) -> dict[str, float]:
        """LabelStats of the last call (``labels/...``), numbers only."""
        return {k: float(v) for k, v in self.last_stats.as_dict().items() if v is not None}


# ---- construction from recipe settings ----------------------------------------------------
def load_local_backend(path: str | Path, batch_size: int = 8,
                       device: str | torch.device | None = None) -> LocalHFBackend:
    """A frozen local model (a directory, a PEFT adapter dir or world:NAME) as a backend."""
    from prefopt.policy import ModelConfig, load_policy

    if not str(path).startswith("world:") and not Path(path).is_dir():
        raise ConfigError(f"judge/critic backend '{path}': not a model directory (use policy, "
                          "world, a local model directory or an http(s):// URL)")
    policy = load_policy(ModelConfig(path=str(path), mode="full"))
    policy.model.requires_grad_(False).eval()
    if device is not None:
        policy.model.to(device)
    return LocalHFBackend(policy.model, policy.tokenizer, batch_size)


def backend_from_spec(cfg: BackendConfig, *, policy=None, model_path: str | None = None,
                      world=None, device: str | torch.device | None = None) -> ChatBackend:
    """The backend ``cfg.backend`` names: "policy" (``policy``, a loaded
    ``prefopt.policy.Policy``, or else the model at ``model_path``), "world" (the world's
    base model, built on first use), an http(s):// URL, or a local model directory."""
    spec = cfg.backend.strip()
    if spec.startswith(("http://", "https://")):
        from prefopt.algorithms.cai.http_backend import OpenAIChatBackend

        if not cfg.http_model:
            raise ConfigError(f"backend '{spec}': set http_model to the server's model name")
        return OpenAIChatBackend(spec, cfg.http_model, cfg.api_key_env, cfg.timeout,
                                 cfg.max_retries, max_concurrency=cfg.max_concurrency)
    if spec == "policy":
        if policy is not None:
            return LocalHFBackend(policy.model, policy.tokenizer, cfg.batch_size)
        if model_path is None:
            raise ConfigError("backend 'policy' needs the policy or model.path")
        return load_local_backend(model_path, cfg.batch_size, device)
    if spec == "world":
        if world is None:
            raise ConfigError("backend 'world' needs a world; set world.name in the recipe "
                              "or name a model directory")
        return load_local_backend(world.base_model_dir(), cfg.batch_size, device)
    return load_local_backend(spec, cfg.batch_size, device)


def constitution_for(path: str | None, world=None) -> Constitution:
    """The constitution at ``path``; else the world's; else prefopt's default."""
    from prefopt.algorithms.cai.parse import load_constitution, load_default_constitution

    if path:
        return load_constitution(path)
    if world is not None:
        return load_constitution(world.constitution_path)
    return load_default_constitution()


def judge_from_config(cfg: JudgeConfig, constitution: Constitution, seed: int = 0,
                      **backend_kwargs) -> AIJudge:
    """An :class:`AIJudge` per ``cfg``; ``backend_kwargs`` go to :func:`backend_from_spec`."""
    if len(cfg.clamp) != 2:
        raise ConfigError(f"judge.clamp: expected [lo, hi], got {cfg.clamp}")
    backend = backend_from_spec(cfg, **backend_kwargs)
    return AIJudge(backend, constitution, cfg.chain_of_thought, cfg.clamp, seed,
                   cfg.max_new_tokens, cfg.temperature)


def build_judge_preference(ctx, arg: str) -> AIJudge:
    """The ``judge[:backend]`` labeler of ``prefopt.feedback.preference_sources``: the
    judge on ``arg`` (default: the world's base model with a world, else model.path as a
    frozen copy), with the world's constitution (or the default one)."""
    cfg = JudgeConfig(backend=arg or ("world" if ctx.world is not None else "policy"))
    device = ctx.accelerator.device if ctx.accelerator is not None else None
    return judge_from_config(cfg, constitution_for(None, ctx.world), ctx.cfg.train.seed,
                             model_path=ctx.cfg.model.path, world=ctx.world, device=device)
