"""Mean gold reward of a policy's responses with a bootstrap CI."""

import datasets
import evaluate

from prefopt.eval.stats import bootstrap_ci

_DESCRIPTION = """
Mean gold reward = (1/n) Σ_i R_gold(x_i, y_i) over the evaluation prompts, the score that
over-optimisation studies track against KL (Gao et al. 2022). The 95% interval is a
percentile bootstrap over prompts (prefopt.eval.stats.bootstrap_ci).
"""

_KWARGS_DESCRIPTION = """
Args:
    scores (list of float): gold reward of each response.
    n_boot (int): bootstrap replicates, default 1000.
    alpha (float): 1 − confidence level, default 0.05.
    seed (int): bootstrap seed, default 0.
Returns:
    mean (float), ci_low (float), ci_high (float), n (int).
Examples:
    >>> metric = load_metric("gold_reward")
    >>> metric.compute(scores=[1.0, 2.0, 3.0])["mean"]
    2.0
"""

_CITATION = """
@article{gao2022scaling,
  title={Scaling Laws for Reward Model Overoptimization},
  author={Gao, Leo and Schulman, John and Hilton, Jacob},
  journal={arXiv preprint arXiv:2210.10760}, year={2022}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GoldReward(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"scores": datasets.Value("float64")}),
            format="numpy",
        )

    def _compute(self, scores, n_boot=1000, alpha=0.05, seed=0):
        point, lo, hi = bootstrap_ci(scores, n_boot=n_boot, alpha=alpha, seed=seed)
        return {"mean": point, "ci_low": lo, "ci_high": hi, "n": len(scores)}
