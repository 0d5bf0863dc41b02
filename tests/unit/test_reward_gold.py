"""Reward-model accuracy against annotators and gold: the counting rules."""

import json

from prefopt.data.records import PromptRecord, user
from prefopt.eval.reward_gold import reward_accuracy
from prefopt.feedback.reward_sources import RewardModelSource
from prefopt.policy import ModelConfig
from prefopt.policy.heads import new_scalar_model

RESPONSES = ["hello", "hello world", "the answer is five", "no", "sky blue", "cat dog"]


class FakeWorld:
    """Gold = number of words; prompts p0..p2."""

    class gold:  # noqa: N801
        @staticmethod
        def score(records, responses):
            return [float(len(r.split())) for r in responses]

    @staticmethod
    def prompts(split, n, seed):
        return [PromptRecord(user("hello"), id=f"p{i}") for i in range(n)]


def test_reward_accuracy_counts(tmp_path, tiny_llama):
    model = new_scalar_model(ModelConfig(path=str(tiny_llama)))
    model.save(tmp_path / "rm", model_tokenizer(tiny_llama))
    rows = [  # (chosen, rejected, label)
        ("hello world", "hello", 1.0),        # gold prefers chosen
        ("no", "sky blue", 0.8),              # gold prefers rejected
        ("cat dog", "sky blue", 0.5),         # gold tie, annotator tie: in neither count
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": "hello", "chosen": c, "rejected": r,
                                        "label": lab, "id": f"p{i}:{i}"}) + "\n"
                            for i, (c, r, lab) in enumerate(rows)))
    out = reward_accuracy(tmp_path / "rm", path, FakeWorld, "validation", 3, 0)
    rm = RewardModelSource([str(tmp_path / "rm")])
    recs = FakeWorld.prompts("validation", 3, 0)
    rc = rm.score(recs, [c for c, _, _ in rows]).tolist()
    rr = rm.score(recs, [r for _, r, _ in rows]).tolist()
    assert out["n_annotated"] == 2 and out["n_gold_decided"] == 2
    assert out["accuracy_vs_annotators"] == ((rc[0] > rr[0]) + (rc[1] > rr[1])) / 2
    assert out["accuracy_vs_gold"] == ((rc[0] > rr[0]) + (rc[1] < rr[1])) / 2
    assert out["annotators_vs_gold"] == 0.5  # right on the first pair, wrong on the second


def model_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
