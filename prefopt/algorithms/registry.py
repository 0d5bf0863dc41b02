"""Algorithm registry: name -> (config dataclass, builder). Imported lazily by name."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from prefopt.config import _suggest
from prefopt.errors import ConfigError

# name -> "module:Config:build"
_REGISTRY = {
    "sft": "prefopt.algorithms.sft:SFTConfig:build",
    "reward": "prefopt.algorithms.reward:RewardConfig:build",
    "best_of_n": "prefopt.algorithms.best_of_n:BestOfNConfig:build",
    "ppo": "prefopt.algorithms.ppo:PPOConfig:build",
    "rloo": "prefopt.algorithms.pg:RLOOConfig:build_rloo",
    "grpo": "prefopt.algorithms.pg:GRPOConfig:build_grpo",
    "dpo": "prefopt.algorithms.dpo:DPOConfig:build",
    "kto": "prefopt.algorithms.kto:KTOConfig:build",
    "online_dpo": "prefopt.algorithms.online_dpo:OnlineDPOConfig:build",
    "sl_cai": "prefopt.algorithms.cai.sl_cai:SLCAIConfig:build",
    "rl_cai": "prefopt.algorithms.cai.rl_cai:RLCAIConfig:build",
}


@dataclass
class AlgorithmSpec:
    name: str
    config_cls: type
    build: object


def register(name: str, target: str) -> None:
    _REGISTRY[name] = target


def known_algorithms() -> list[str]:
    return sorted(_REGISTRY)


def algorithm_spec(name: str) -> AlgorithmSpec:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown algorithm '{name}'{_suggest(name, known_algorithms())}")
    module, cfg, fn = _REGISTRY[name].split(":")
    mod = importlib.import_module(module)
    return AlgorithmSpec(name, getattr(mod, cfg), getattr(mod, fn))
