"""Length-controlled win rate (LC-AlpacaEval style) with a bootstrap CI."""

import datasets
import evaluate
import numpy as np

from prefopt.eval.stats import bootstrap_ci, length_controlled_win_rate, win_rate

_DESCRIPTION = """
Length-controlled win rate (Dubois et al. 2024): fit P(policy ≻ reference) = σ(a + b·z) with
z = tanh(Δ / sd(Δ)), Δ = policy length − reference length, by logistic regression on the
(soft) preferences, and report σ(a), the predicted win rate at zero length difference.
The 95% interval is a percentile bootstrap over prompts that refits the regression on
each replicate. See prefopt.eval.stats.length_controlled_win_rate.
"""

_KWARGS_DESCRIPTION = """
Args:
    preferences (list of float): P(policy ≻ reference) per prompt, in [0, 1].
    policy_lengths (list of float): length of the policy's response (tokens or words).
    reference_lengths (list of float): length of the reference response, same unit.
    n_boot (int): bootstrap replicates, default 1000.
    alpha (float): 1 − confidence level, default 0.05.
    seed (int): bootstrap seed, default 0.
Returns:
    lc_win_rate (float), ci_low (float), ci_high (float), win_rate (float, raw), n (int).
Examples:
    >>> metric = load_metric("lc_win_rate")
    >>> metric.compute(preferences=[1, 0, 0.5, 1], policy_lengths=[3, 3, 3, 3],
    ...                reference_lengths=[3, 3, 3, 3])["lc_win_rate"]
    0.625
"""

_CITATION = """
@article{dubois2024length,
  title={Length-Controlled AlpacaEval: A Simple Way to Debias Automatic Evaluators},
  author={Dubois, Yann and Galambosi, Bal{\\'a}zs and Liang, Percy and Hashimoto, Tatsunori B},
  journal={arXiv preprint arXiv:2404.04475}, year={2024}}
"""


def _lc(rows):
    return length_controlled_win_rate(rows[:, 0], rows[:, 1], rows[:, 2])


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LcWinRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "preferences": datasets.Value("float64"),
                "policy_lengths": datasets.Value("float64"),
                "reference_lengths": datasets.Value("float64"),
            }),
            format="numpy",
        )

    def _compute(self, preferences, policy_lengths, reference_lengths, n_boot=1000,
                 alpha=0.05, seed=0):
        rows = np.stack([preferences, policy_lengths, reference_lengths], axis=1)  # (n, 3)
        point, lo, hi = bootstrap_ci(rows, n_boot=n_boot, alpha=alpha, seed=seed, statistic=_lc)
        return {"lc_win_rate": point, "ci_low": lo, "ci_high": hi,
                "win_rate": win_rate(preferences), "n": len(preferences)}
