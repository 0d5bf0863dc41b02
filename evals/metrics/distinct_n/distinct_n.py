"""distinct-1 and distinct-2 of a set of responses."""

import datasets
import evaluate

from prefopt.eval.text_metrics import distinct_n

_DESCRIPTION = """
distinct-n = number of unique n-grams / number of n-grams, pooled over all responses,
with whitespace tokens (Li et al. 2016). A falling distinct-n during RL is a sign of
mode collapse. See prefopt.eval.text_metrics.distinct_n.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the responses.
    ns (tuple of int): the n to report, default (1, 2).
Returns:
    distinct_<n> (float) for each n in ns.
Examples:
    >>> metric = load_metric("distinct_n")
    >>> metric.compute(predictions=["a b a", "b c"])
    {'distinct_1': 0.6, 'distinct_2': 1.0}
"""

_CITATION = """
@inproceedings{li2016diversity,
  title={A Diversity-Promoting Objective Function for Neural Conversation Models},
  author={Li, Jiwei and Galley, Michel and Brockett, Chris and Gao, Jianfeng and Dolan, Bill},
  booktitle={NAACL}, year={2016}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DistinctN(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, ns=(1, 2)):
        return {f"distinct_{n}": distinct_n(predictions, n) for n in ns}
