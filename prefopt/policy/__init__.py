"""The shared policy layer: loading, log-probs, generation, scalar heads, reference."""

from prefopt.policy.generate import Rollout, SamplingConfig
from prefopt.policy.load import ModelConfig
from prefopt.policy.policy import Policy, load_policy

__all__ = ["ModelConfig", "Policy", "Rollout", "SamplingConfig", "load_policy"]
