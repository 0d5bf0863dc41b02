"""Every objective as a small pure torch function (no models).

- pair (DPO family): ``PairLogps``, ``PAIR_LOSSES``, ``preference_loss``, ``implicit_rewards``;
- unpaired: ``kto_loss``;
- reward models: ``bradley_terry_loss``, ``expected_calibration_error``;
- RL: masked statistics, KL estimators, token rewards, GAE, PPO losses, KL controllers,
  RLOO/GRPO advantages.

Formulas and sources: docs/algorithms.md and each function's docstring.
"""

from prefopt.losses.anchored import apo_down_loss, apo_zero_loss, nca_loss, sppo_hard_loss
from prefopt.losses.dpo import (
    conservative_dpo_loss,
    discopop_loss,
    dpo_loss,
    exo_pair_loss,
    hinge_loss,
    ipo_loss,
    ln_dpo_loss,
    robust_dpo_loss,
    rpo_loss,
)
from prefopt.losses.kto import kto_loss, kto_reference_point, kto_weights_ok
from prefopt.losses.masked import (
    entropy_from_logits,
    explained_variance,
    masked_mean,
    masked_var,
    whiten,
)
from prefopt.losses.pair import PairLogps, avg_logps, log1mexp, log_ratios
from prefopt.losses.ppo import (
    grpo_advantages,
    ppo_policy_loss,
    ppo_value_loss,
    rloo_advantages,
)
from prefopt.losses.preference import (
    ACCEPTS_SOFT_LABELS,
    HARD_LABEL_ONLY,
    PAIR_LOSSES,
    PER_TOKEN_REWARDS,
    REFERENCE_FREE,
    get_pair_loss,
    implicit_rewards,
    loss_hparams,
    preference_loss,
)
from prefopt.losses.reference_free import cpo_loss, log_odds, orpo_loss, simpo_loss
from prefopt.losses.reward import bradley_terry_loss, expected_calibration_error
from prefopt.losses.rl import (
    AdaptiveKLController,
    FixedKLController,
    eos_penalty,
    gae,
    kl_estimate,
    last_token_index,
    token_rewards,
)

__all__ = [
    "ACCEPTS_SOFT_LABELS", "HARD_LABEL_ONLY", "PAIR_LOSSES", "PER_TOKEN_REWARDS",
    "REFERENCE_FREE", "AdaptiveKLController", "FixedKLController", "PairLogps",
    "apo_down_loss", "apo_zero_loss", "avg_logps", "bradley_terry_loss",
    "conservative_dpo_loss", "cpo_loss", "discopop_loss", "dpo_loss", "entropy_from_logits",
    "eos_penalty", "exo_pair_loss", "expected_calibration_error", "explained_variance", "gae",
    "get_pair_loss", "grpo_advantages", "hinge_loss", "implicit_rewards", "ipo_loss",
    "kl_estimate", "kto_loss", "kto_reference_point", "kto_weights_ok", "last_token_index",
    "ln_dpo_loss", "log1mexp", "log_odds", "log_ratios", "loss_hparams", "masked_mean",
    "masked_var", "nca_loss", "orpo_loss", "ppo_policy_loss", "ppo_value_loss",
    "preference_loss", "rloo_advantages", "robust_dpo_loss", "rpo_loss", "simpo_loss",
    "sppo_hard_loss", "token_rewards", "whiten",
]
