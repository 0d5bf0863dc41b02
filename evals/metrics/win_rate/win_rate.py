"""Win rate of a policy against a reference, ties counted as half, with a bootstrap CI."""

import datasets
import evaluate

from prefopt.eval.stats import bootstrap_ci, win_rate

_DESCRIPTION = """
Win rate = (1/n) Σ_i p_i, where p_i = P(policy ≻ reference) on prompt i: a judge's
soft preference in [0, 1], or a hard outcome 1 (win), 0 (loss), 0.5 (tie). The 95%
interval is a percentile bootstrap over prompts (prefopt.eval.stats.bootstrap_ci).
"""

_KWARGS_DESCRIPTION = """
Args:
    preferences (list of float): P(policy ≻ reference) per prompt, in [0, 1].
    n_boot (int): bootstrap replicates, default 1000.
    alpha (float): 1 − confidence level, default 0.05.
    seed (int): bootstrap seed, default 0.
Returns:
    win_rate (float), ci_low (float), ci_high (float), n (int).
Examples:
    >>> metric = load_metric("win_rate")
    >>> metric.compute(preferences=[1, 0, 0.5, 1])["win_rate"]
    0.625
"""

_CITATION = """
@article{dubois2023alpacafarm,
  title={AlpacaFarm: A Simulation Framework for Methods that Learn from Human Feedback},
  author={Dubois, Yann and Li, Xuechen and Taori, Rohan and others},
  journal={arXiv preprint arXiv:2305.14387}, year={2023}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class WinRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"preferences": datasets.Value("float64")}),
            format="numpy",
        )

    def _compute(self, preferences, n_boot=1000, alpha=0.05, seed=0):
        point, lo, hi = bootstrap_ci(preferences, n_boot=n_boot, alpha=alpha, seed=seed,
                                     statistic=win_rate)
        return {"win_rate": point, "ci_low": lo, "ci_high": hi, "n": len(preferences)}
