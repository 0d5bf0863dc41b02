"""prefopt: preference optimisation for language models.

RLHF (reward model + PPO, RLOO, GRPO, best-of-n), the DPO family and Constitutional AI as
interchangeable modules on one shared policy/data layer and one training engine.
"""

__version__ = "0.1.0"
