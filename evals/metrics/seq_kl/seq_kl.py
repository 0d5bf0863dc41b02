"""Sequence-level Monte Carlo KL(π ‖ π_ref) with a bootstrap CI."""

import datasets
import evaluate

from prefopt.eval.stats import bootstrap_ci
from prefopt.eval.text_metrics import sequence_kl_estimate

_DESCRIPTION = """
KL(π ‖ π_ref) ≈ (1/N) Σ_i [log π(y_i|x_i) − log π_ref(y_i|x_i)] over responses y_i ~ π
(the unbiased k1 estimator; a small sample can give a negative value). Log-probs are
sums over completion tokens. The 95% interval is a percentile bootstrap over samples.
See prefopt.eval.text_metrics.sequence_kl_estimate.
"""

_KWARGS_DESCRIPTION = """
Args:
    policy_logps (list of float): log π(y_i|x_i) of each sampled response.
    reference_logps (list of float): log π_ref(y_i|x_i) of the same responses.
    n_boot (int): bootstrap replicates, default 1000.
    alpha (float): 1 − confidence level, default 0.05.
    seed (int): bootstrap seed, default 0.
Returns:
    kl (float, nats), ci_low (float), ci_high (float), n (int).
Examples:
    >>> metric = load_metric("seq_kl")
    >>> metric.compute(policy_logps=[-1.0, -2.0], reference_logps=[-2.0, -2.5])["kl"]
    0.75
"""

_CITATION = """
@misc{schulman2020klapprox,
  title={Approximating KL Divergence}, author={Schulman, John},
  howpublished={http://joschu.net/blog/kl-approx.html}, year={2020}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SeqKl(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "policy_logps": datasets.Value("float64"),
                "reference_logps": datasets.Value("float64"),
            }),
            format="numpy",
        )

    def _compute(self, policy_logps, reference_logps, n_boot=1000, alpha=0.05, seed=0):
        _, k1 = sequence_kl_estimate(policy_logps, reference_logps)
        point, lo, hi = bootstrap_ci(k1, n_boot=n_boot, alpha=alpha, seed=seed)
        return {"kl": point, "ci_low": lo, "ci_high": hi, "n": len(k1)}
