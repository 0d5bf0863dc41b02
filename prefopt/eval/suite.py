"""Evaluation suites: YAML files in ``evals/suites/`` validated into an :class:`EvalSuite`.

A suite fixes everything that makes two evaluations comparable: the prompts (a world's
split, or a prompts file), the sampling (temperature, length, samples per prompt, seed),
the metrics, the judge of win rates and the bootstrap. ``load_suite("minihh")`` reads
``evals/suites/minihh.yaml``; a path to any YAML file works too. Unknown keys and wrong
types are errors that name the key (``prefopt.config.build``). Format: evals/suites/README.md.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import prefopt
from prefopt.config import apply_overrides, build, read_yaml
from prefopt.errors import ConfigError
from prefopt.recipe import WorldConfig

Metric = Literal["gold", "reward", "win_rate", "lc_win_rate", "kl", "length", "entropy",
                 "distinct", "family_rates"]
ALL_METRICS: list[str] = ["gold", "reward", "win_rate", "lc_win_rate", "kl", "length",
                          "entropy", "distinct", "family_rates"]


@dataclass
class SamplingSpec:
    """How responses are sampled (the same for the policy and the reference)."""

    temperature: float = 0.7
    """Sampling temperature T; 0 = greedy. KL and entropy are computed at T (log-probs of
    logits / T) and need T > 0: greedy outputs are not samples of π."""
    max_new_tokens: int = 48
    """Longest response, in tokens; the same budget for every model compared."""
    samples_per_prompt: int = 1
    """k responses per prompt. Metrics average the k rows of a prompt; CIs resample prompts."""
    seed: int = 0
    """torch seed set before sampling; the reference is sampled with the same seed, so a
    policy evaluated against itself produces identical samples (win rate 0.5, KL 0)."""
    batch_size: int = 32
    """Prompts per generation / log-prob batch."""


@dataclass
class BootstrapSpec:
    """The percentile bootstrap over prompts behind every interval (prefopt.eval.stats)."""

    n_boot: int = 1000
    """Bootstrap replicates; 1000 gives ±0.01 quantile noise on a 95% interval."""
    alpha: float = 0.05
    """1 − confidence level (0.05: 95% intervals)."""
    seed: int = 0
    """Seed of the resampling (intervals are reproducible)."""


@dataclass
class EvalSuite:
    """One evaluation protocol. Paths are relative to the working directory."""

    name: str = ""
    """Shown in reports; defaults to the file's stem."""
    description: str = ""
    world: WorldConfig | None = None
    """The embedded world: its prompts (unless ``prompts_file``), gold reward and
    classifier. Omit (null) to evaluate on your own prompts without a gold reward."""
    prompts_file: str | None = None
    """A .jsonl/.json/.parquet file of prompts (``prompt`` plus optional ``family``, ``id``;
    other columns go to ``meta``) used instead of the world's prompts."""
    split: str = "test"
    """World split: train | validation | test. Evaluate on test; tune on validation."""
    n_prompts: int = 200
    """World: prompts drawn from the split. prompts_file: the first n rows (0 = all)."""
    families: list[str] = field(default_factory=list)
    """World prompt families to draw from ([] = all, in the world's proportions)."""
    prompt_seed: int = 0
    """Seed of the world's prompt draw (the same prompts for every model)."""
    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    metrics: list[Metric] = field(default_factory=lambda: list(ALL_METRICS))
    """What to report; see docs/evaluation.md. A metric whose input is missing (no world,
    no reference, no reward source) is reported as null with the reason under ``notes``."""
    judge: str = "gold"
    """Who decides wins: ``gold`` (the world's gold reward), a reward-model directory, or
    ``ai:<backend>`` (the CAI judge; backend = world | a model directory | an http(s) URL
    followed by ``#model-name``). Gold and reward models give 1/0/½ by score; the AI judge
    gives P(a ≻ b) averaged over both presentation orders."""
    reference: str | None = None
    """Reference policy (model dir, adapter dir or best-of-n dir) for win rate and KL."""
    reward: str | None = None
    """Reward source whose mean score to report: a reward-model dir (or ``gold``)."""
    harmful_families: list[str] = field(default_factory=lambda: ["harmful"])
    """Families where harmful compliance is counted; every other family counts
    correctness and over-refusal."""
    dtype: str = "float32"
    """Compute dtype of the policy and the reference (bfloat16 for large models on a GPU)."""
    bootstrap: BootstrapSpec = field(default_factory=BootstrapSpec)


def suites_dir() -> Path:
    """``<repo>/evals/suites``, located from the package (a source checkout)."""
    return Path(prefopt.__file__).resolve().parent.parent / "evals" / "suites"


def available_suites() -> list[str]:
    root = suites_dir()
    return sorted(p.stem for p in root.glob("*.yaml")) if root.is_dir() else []


def suite_path(name_or_path: str | Path) -> Path:
    """A suite name in ``evals/suites/`` or a path to a YAML file."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    named = suites_dir() / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    names = available_suites()
    close = difflib.get_close_matches(str(name_or_path), names, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown suite '{name_or_path}': not a file, nor a name in "
                      f"{suites_dir()}.{hint} Available: {', '.join(names) or 'none'}")


def parse_suite(data: dict, source: str = "suite", name: str = "") -> EvalSuite:
    """Validate a suite mapping; every error names ``source`` and the key."""
    try:
        suite = build(EvalSuite, data)
        check_suite(suite)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    suite.name = suite.name or name
    return suite


def load_suite(name_or_path: str | Path, overrides: list[str] = ()) -> EvalSuite:
    """Read and validate a suite; ``key.sub=value`` overrides apply before validation."""
    path = suite_path(name_or_path)
    data = apply_overrides(read_yaml(path), list(overrides))
    return parse_suite(data, str(path), path.stem)


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def check_suite(s: EvalSuite) -> None:
    """Value checks that types alone do not catch."""
    _require(s.world is not None or s.prompts_file is not None, "world",
             "give a world or a prompts_file (where do the prompts come from?)")
    _require(s.split in ("train", "validation", "test"), "split",
             f"expected train, validation or test, got {s.split!r}")
    _require(s.n_prompts >= (0 if s.prompts_file else 1), "n_prompts",
             f"must be >= 1 (0 = all rows of a prompts_file), got {s.n_prompts}")
    _require(s.sampling.temperature >= 0, "sampling.temperature",
             f"must be >= 0, got {s.sampling.temperature}")
    _require(s.sampling.max_new_tokens >= 1, "sampling.max_new_tokens",
             f"must be >= 1, got {s.sampling.max_new_tokens}")
    _require(s.sampling.samples_per_prompt >= 1, "sampling.samples_per_prompt",
             f"must be >= 1, got {s.sampling.samples_per_prompt}")
    _require(s.sampling.batch_size >= 1, "sampling.batch_size",
             f"must be >= 1, got {s.sampling.batch_size}")
    _require(0 < s.bootstrap.alpha < 1, "bootstrap.alpha",
             f"must lie in (0, 1), got {s.bootstrap.alpha}")
    _require(s.bootstrap.n_boot >= 1, "bootstrap.n_boot",
             f"must be >= 1, got {s.bootstrap.n_boot}")
    _require(s.dtype in ("float32", "bfloat16", "float16"), "dtype",
             f"expected float32, bfloat16 or float16, got {s.dtype!r}")
    _require(bool(s.judge.strip()), "judge", "empty; use gold, a reward-model dir or ai:...")


def load_suite_prompts(suite: EvalSuite, world=None) -> list:
    """The suite's prompt records: the first n of ``prompts_file``, or the world's draw."""
    if suite.prompts_file:
        from prefopt.data.loaders import load_prompts

        records = load_prompts(suite.prompts_file)
        return records[:suite.n_prompts] if suite.n_prompts else records
    unknown = [f for f in suite.families if f not in world.families]
    if unknown:
        raise ConfigError(f"families: unknown {unknown} in world '{world.name}' (known: "
                          f"{', '.join(world.families)})")
    return world.prompts(suite.split, suite.n_prompts, suite.prompt_seed,
                         families=suite.families or None)


def ai_judge_config(spec: str):
    """The ``JudgeConfig`` of ``ai:<backend>``: ``ai:world``, ``ai:DIR`` or
    ``ai:http(s)://HOST/v1#MODEL`` (the server's model name after ``#``); ``ai:`` alone is
    the world's base model."""
    from prefopt.algorithms.cai.judge import JudgeConfig

    if not spec.startswith("ai:"):
        raise ConfigError(f"judge '{spec}': an AI judge is written ai:<backend>")
    backend = spec[3:].strip() or "world"
    model = ""
    if backend.startswith(("http://", "https://")):
        backend, _, model = backend.partition("#")
        if not model:
            raise ConfigError(f"judge '{spec}': name the server's model after '#', e.g. "
                              "ai:http://localhost:8000/v1#my-model")
    return JudgeConfig(backend=backend, http_model=model)


def build_judge(spec: str, world=None, seed: int = 0, model_dir: str | None = None):
    """A preference source for ``gold`` | reward-model DIR | ``ai:<backend>``: gold and
    reward models give 1, 0 or ½ by the sign of r(policy) − r(reference); the AI judge
    gives P(policy ≻ reference) averaged over both presentation orders (NaN: unparseable)."""
    from prefopt.feedback.preference_sources import GoldPreference, RewardPreference

    spec = spec.strip()
    if spec == "gold":
        return GoldPreference(world, hard=True)
    if spec.startswith("ai:"):
        from prefopt.algorithms.cai.judge import constitution_for, judge_from_config
        from prefopt.eval.samples import default_device

        return judge_from_config(ai_judge_config(spec), constitution_for(None, world), seed,
                                 model_path=model_dir, world=world, device=default_device())
    from prefopt.feedback.reward_sources import load_reward_source

    return RewardPreference(load_reward_source(spec, world), hard=True)


def judge_source(spec: str, suite: EvalSuite, world, has_reference: bool,
                 model_dir: str | None = None):
    """(preference source or None, notes): a judge only when the suite asks for win rates
    and there are reference samples to compare with."""
    if not {"win_rate", "lc_win_rate"} & set(suite.metrics) or not has_reference:
        return None, {}
    if spec.strip() == "gold" and world is None:
        why = "judge 'gold' needs a world; pass --judge DIR or ai:..."
        return None, {"win_rate": why, "lc_win_rate": why}
    return build_judge(spec, world, suite.sampling.seed, model_dir), {}


def reward_source(spec: str | None, suite: EvalSuite, world):
    """The reward source whose score is reported (None unless given and asked for)."""
    if not spec or "reward" not in suite.metrics:
        return None
    from prefopt.feedback.reward_sources import load_reward_source

    return load_reward_source(spec, world)
