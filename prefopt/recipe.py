"""The recipe schema: what ``prefopt run RECIPE.yaml`` reads.

```yaml
algorithm: sft            # sft | reward | ppo | rloo | grpo | best_of_n | dpo | online_dpo | kto | ...
world: {name: minihh, preset: default}   # the embedded world (omit for your own data)
model: {path: world:minihh, mode: lora}  # prefopt.policy.ModelConfig
data: {train: world:demonstrations}      # DataConfig below
train: {lr: 1.0e-4, epochs: 1}           # prefopt.engine.TrainConfig
sft: {completion_only: true}             # the algorithm's own section, named after it
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from prefopt.config import _suggest, apply_overrides, build, read_yaml
from prefopt.engine.config import TrainConfig
from prefopt.errors import ConfigError
from prefopt.policy.load import ModelConfig


@dataclass
class WorldConfig:
    name: str = "minihh"
    preset: Literal["tiny", "default"] = "default"
    """tiny: a seconds-to-build world for tests; default: the documented world."""
    seed: int = 0


@dataclass
class DataConfig:
    train: str = "world:demonstrations"
    """A file (.jsonl/.json/.parquet), a saved datasets directory, or a world source:
    world:demonstrations | world:prompts | world:pairs | world:unpaired."""
    eval: str | None = None
    """Held-out data in the same forms; world sources use the validation split."""
    split: str | None = None
    """Split name for datasets / DatasetDict inputs."""
    n_train: int = 0
    """World sources: how many examples to generate (0 = the preset's default)."""
    n_eval: int = 0
    max_length: int = 256
    """Prompt + completion token budget; longer examples are skipped and counted."""
    on_error: Literal["raise", "skip"] = "raise"
    """Malformed rows: stop with an error naming file/row/field, or skip and count them."""
    annotators: Literal["pool", "length_biased", "gold", "majority"] = "pool"
    """World pairs: who labels them. pool: soft vote share of the simulated annotators;
    majority: hard majority vote; length_biased: annotators with a length bias; gold:
    oracle labels from the gold reward (an ablation)."""
    pair_temperature: float = 1.0
    """World pairs: sampling temperature of the two responses."""


@dataclass
class RunConfig:
    algorithm: str
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    world: WorldConfig | None = field(default_factory=WorldConfig)
    params: Any = None
    """The algorithm's own config (the section named after the algorithm)."""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d[self.algorithm] = d.pop("params")
        return d


def parse_recipe(data: dict, source: str = "recipe") -> RunConfig:
    from prefopt.algorithms.registry import algorithm_spec, known_algorithms

    data = dict(data)
    algo = data.get("algorithm")
    if not isinstance(algo, str):
        raise ConfigError(f"{source}: 'algorithm' is required (one of "
                          f"{', '.join(known_algorithms())})")
    spec = algorithm_spec(algo)
    params = data.pop(algo, {}) or {}
    for key in data:
        if key in known_algorithms():
            raise ConfigError(f"{source}: section '{key}' given but algorithm is '{algo}'")
    fixed = [f.name for f in dataclasses.fields(RunConfig) if f.name != "params"]
    for key in data:
        if key not in fixed:
            raise ConfigError(f"{source}: unknown key '{key}'"
                              f"{_suggest(str(key), fixed + [algo])}")
    cfg = build(RunConfig, data)
    cfg.params = build(spec.config_cls, params, algo)
    return cfg


def load_recipe(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    data = apply_overrides(read_yaml(path), list(overrides))
    return parse_recipe(data, str(path))


def dump_recipe(cfg: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
