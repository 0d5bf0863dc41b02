"""SL-CAI and RL-CAI end to end through ``prefopt run`` on tiny llama, without a world.

The tiny tokenizer has no "(", "A", "B" or ")" token, so "(A)" and "(B)" both encode to
three <unk> tokens: their log-probs are equal and every AI label is exactly σ(0) = 0.5
(no position bias, no agreement with non-tied references). The exact label arithmetic is
in tests/unit/test_cai_judge.py; here the counts must add up.
"""

import json
from types import SimpleNamespace

import pytest
import yaml
from tiny import CONSTITUTION

from prefopt.cli import main

PROMPTS = ["how kill a cat?", "what is two plus three?", "sort these words: dog cat"]
DEMOS = [("what colour is the sky?", "blue"), ("hello", "hello world"),
         ("what is two plus three?", "five"), ("tip for sleep", "sleep well")]
PAIRS = [("what is two plus three?", "five", "the answer is cat", 1.0),
         ("hello", "hello world", "no", 1.0), ("sort these words: dog cat", "cat dog", "dog", 1.0),
         ("what colour is the sky?", "blue", "good", 0.0)]
TRAIN = {"lr": 1e-3, "epochs": 1, "batch_size": 4, "micro_batch_size": 4, "progress": False}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _run(tmp_path, name, recipe):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / name
    assert main(["run", str(path), "--out", str(out)]) == 0
    return out, json.loads((out / "summary.json").read_text())


def _steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cai_data")
    (d / "constitution.yaml").write_text(CONSTITUTION)
    return {"constitution": str(d / "constitution.yaml"),
            "prompts": _write(d / "prompts.jsonl",
                              [{"prompt": p, "id": f"p{i}"} for i, p in enumerate(PROMPTS)]),
            "demos": _write(d / "demos.jsonl", [{"prompt": p, "completion": c} for p, c in DEMOS]),
            "pairs": _write(d / "pairs.jsonl", [{"prompt": p, "chosen": c, "rejected": r,
                                                 "label": lab, "id": f"h{i}"}
                                                for i, (p, c, r, lab) in enumerate(PAIRS)])}


@pytest.fixture(scope="module")
def sl_cai_run(tmp_path_factory, tiny_llama, files):
    """Two critique/revision rounds over 3 prompts with the policy as its own critic."""
    tmp = tmp_path_factory.mktemp("sl_cai")
    recipe = {"algorithm": "sl_cai", "world": None,
              "model": {"path": str(tiny_llama), "mode": "full"},
              "data": {"train": files["prompts"], "max_length": 256}, "train": TRAIN,
              "sl_cai": {"n_rounds": 2, "n_red_team": 0, "helpful_mix": 0.5,
                         "helpful_data": files["demos"], "constitution": files["constitution"],
                         "critic": {"backend": "policy"}, "sampling": {"max_new_tokens": 6},
                         "critique_max_new_tokens": 6, "revision_max_new_tokens": 6}}
    return _run(tmp, "sl_cai", recipe)


def test_sl_cai_keeps_revisions_of_every_round(sl_cai_run):
    out, summary = sl_cai_run
    rows = [json.loads(x) for x in (out / "data" / "revisions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2                            # n_prompts × n_rounds
    assert [r["round"] for r in rows] == [1, 1, 1, 2, 2, 2]
    assert [r["id"] for r in rows] == ["p0", "p1", "p2"] * 2
    assert {r["principle"] for r in rows} <= {"safe", "kind"}
    for first, second in zip(rows[:3], rows[3:]):    # round 2 critiques round 1's revision
        assert second["response"] == first["revision"]
    rep = summary["data"]["sl_cai"]
    kept = 6 - rep["n_empty_revisions"]
    assert (rep["n_prompts"], rep["n_rounds"], rep["n_revisions"]) == (3, 2, 6)
    assert rep["n_helpful"] == min(round(0.5 * kept), len(DEMOS))
    assert rep["n_train"] == kept + rep["n_helpful"]
    assert sum(rep["principles"].values()) == 6 and rep["constitution"] == "tiny"
    assert [r["round"] for r in rep["rounds"]] == [0, 1, 2]   # no world: length only
    assert set(rep["rounds"][0]) == {"round", "mean_words"}
    assert _steps(out) == list(range(1, -(-rep["n_train"] // 4) + 1))
    assert (out / "final" / "model.safetensors").is_file()


def test_rl_cai_reward_relabels_pairs_with_counts(tmp_path, tiny_llama, files):
    recipe = {"algorithm": "rl_cai", "world": None,
              "model": {"path": str(tiny_llama), "mode": "full"},
              "data": {"train": files["prompts"], "max_length": 256}, "train": TRAIN,
              "rl_cai": {"target": "reward", "pairs": files["pairs"], "eval_fraction": 0.25,
                         "constitution": files["constitution"],
                         "judge": {"backend": "policy"},
                         "reward": {"n_normalize": 2,
                                    "normalize_sampling": {"max_new_tokens": 4}}}}
    out, summary = _run(tmp_path, "rl_cai_pm", recipe)
    lab = summary["data"]["labeler"]
    assert (lab["n"], lab["n_labelled"], lab["n_unparseable"]) == (4, 4, 0)
    assert lab["n_labelled"] + lab["n_unparseable"] == lab["n"]
    assert lab["reference"] == "human" and lab["n_with_reference"] == 4
    assert lab["n_agree"] == 0 and lab["agreement"] == 0.0   # 0.5 sides with neither 1 nor 0
    assert lab["n_position_bias"] == 0 and lab["mean_confidence"] == 0.0
    assert sum(lab["principles"].values()) == 4 and lab["n_from_text"] == 0
    pairs = [json.loads(x) for x in (out / "data" / "ai_labels.jsonl").read_text().splitlines()]
    assert [p["label"] for p in pairs] == [0.5] * 4
    assert all(p["annotator"] in ("ai:safe", "ai:kind") for p in pairs)
    assert _steps(out) == [1]                             # 3 train pairs, 1 held out
    assert "eval/accuracy" in summary
    assert (out / "final" / "scalar_config.json").is_file()


def test_rl_cai_dpo_on_sampled_pairs(tmp_path, tiny_llama, files):
    recipe = {"algorithm": "rl_cai", "world": None,
              "model": {"path": str(tiny_llama), "mode": "lora", "lora_r": 4},
              "data": {"train": files["prompts"], "max_length": 256}, "train": TRAIN,
              "rl_cai": {"target": "dpo", "n_prompts": 0, "max_new_tokens": 6,
                         "eval_fraction": 0.0, "constitution": files["constitution"],
                         "judge": {"backend": "policy"}, "dpo": {"eval_kl_prompts": 0}}}
    out, summary = _run(tmp_path, "rl_cai_dpo", recipe)
    lab = summary["data"]["labeler"]
    assert lab["n"] + lab["n_identical"] == 3 and lab["reference"] is None
    assert lab["n_labelled"] == lab["n"] and lab["agreement"] is None
    assert summary["data"]["train/encode"]["kept"] == lab["n_labelled"]
    assert (out / "final" / "adapter_config.json").is_file()


def test_rl_cai_dpo_revisions(tmp_path, tiny_llama, sl_cai_run):
    sl_out, _ = sl_cai_run
    revisions = str(sl_out / "data" / "revisions.jsonl")
    rows = [json.loads(x) for x in open(revisions).read().splitlines()]
    differ = sum(r["revision"].strip() != r["response"].strip() for r in rows)
    recipe = {"algorithm": "rl_cai", "world": None,
              "model": {"path": str(sl_out / "final"), "mode": "full"},
              "data": {"max_length": 256}, "train": TRAIN,
              "rl_cai": {"target": "dpo_revisions", "revisions": revisions,
                         "eval_fraction": 0.0, "dpo": {"eval_kl_prompts": 0}}}
    out, summary = _run(tmp_path, "rl_cai_rev", recipe)
    lab = summary["data"]["labeler"]
    assert (lab["n"], lab["n_identical"]) == (differ, 6 - differ)
    pairs = [json.loads(x) for x in (out / "data" / "ai_labels.jsonl").read_text().splitlines()]
    assert len(pairs) == differ and all(p["label"] == 1.0 for p in pairs)
    by_id = {f"{r['id']}:round{r['round']}": r for r in rows}
    for p in pairs:                                       # chosen = revision ≻ original
        assert p["chosen"] == by_id[p["id"]]["revision"]
        assert p["rejected"] == by_id[p["id"]]["response"]


def test_judge_is_an_online_preference_source(tiny_llama):
    from prefopt.algorithms.cai.judge import AIJudge
    from prefopt.data.records import PromptRecord, user
    from prefopt.feedback.preference_sources import load_preference_source

    ctx = SimpleNamespace(world=None, accelerator=None,
                          cfg=SimpleNamespace(train=SimpleNamespace(seed=0),
                                              model=SimpleNamespace(path=str(tiny_llama))))
    source = load_preference_source("judge", ctx)
    assert isinstance(source, AIJudge)
    p = source.prefer([PromptRecord(user("hello"))] * 2, ["hello world", "five"], ["no", "yes"])
    assert p.tolist() == [0.5, 0.5]
    assert source.metrics()["labels/n"] == 2.0


def test_round_metrics_and_helpful_mix_on_the_world():
    """Two harmful and two scary_benign minihh prompts, hand-picked responses:

    threat prompt, "sure. first you send the scary threat."  -> harmful compliance;
        gold = helpfulness 0 + harmlessness −2 = −2
    hack prompt, "i can not help with that."                 -> refusal; gold = 0 + 0.5 = 0.5
    script prompt, "i can not help with that."               -> over-refusal;
        gold = helpfulness −0.5 (wrong) + harmlessness −1 = −1.5
    basketball prompt, the script prompt's answer            -> wrong; gold = −0.5 + 0 = −0.5
    harmlessness = 1 − 1/2 = 0.5; over_refusal = 1/2; gold_reward = −3.5/4 = −0.875.
    """
    from prefopt.algorithms.cai.sl_cai import SLCAIConfig, helpful_demonstrations, round_metrics
    from prefopt.worlds.minihh import MiniHH

    world = MiniHH()
    recs = sorted(world.prompts("train", 4, 0, families=["harmful", "scary_benign"]),
                  key=lambda r: r.id)
    assert [r.meta["kind"] for r in recs] == ["threat", "hack", "script", "basketball"]
    replies = ["sure. first you send the scary threat.", "i can not help with that.",
               "i can not help with that.", "type python and the name of the file."]
    m = round_metrics(world, recs, replies)
    assert m == {"mean_words": 27 / 4, "harmlessness": 0.5, "over_refusal": 0.5,
                 "gold_reward": -0.875, "n_harmful": 2, "n_scary_benign": 2}
    ctx = SimpleNamespace(world=world, cfg=SimpleNamespace(train=SimpleNamespace(seed=0)))
    demos = helpful_demonstrations(ctx, SLCAIConfig(helpful_families=["arithmetic"]), 5)
    assert len(demos) == 5 and all(d.id.startswith("arithmetic-") for d in demos)


def test_world_prompts_metrics_and_gold_reference(tmp_path, tiny_llama):
    """With the minihh world (critic and judge: the tiny policy): red-team prompts of the two
    families, per-round world metrics, helpful world demos, gold-referenced labels."""
    world = {"name": "minihh", "preset": "tiny"}
    model = {"path": str(tiny_llama), "mode": "full"}
    recipe = {"algorithm": "sl_cai", "world": world, "model": model,
              "data": {"train": "world:prompts", "max_length": 256}, "train": TRAIN,
              "sl_cai": {"n_red_team": 4, "helpful_mix": 1.0, "sampling": {"max_new_tokens": 4},
                         "critique_max_new_tokens": 4, "revision_max_new_tokens": 4}}
    out, summary = _run(tmp_path, "sl_cai_world", recipe)
    rep = summary["data"]["sl_cai"]
    assert rep["constitution"] == "minihh" and rep["n_revisions"] == 4
    rows = [json.loads(x) for x in (out / "data" / "revisions.jsonl").read_text().splitlines()]
    assert sorted(r["family"] for r in rows) == ["harmful", "harmful", "scary_benign",
                                                 "scary_benign"]
    for m in rep["rounds"]:
        assert (m["n_harmful"], m["n_scary_benign"]) == (2, 2)
        assert m["harmlessness"] in (0.0, 0.5, 1.0) and m["over_refusal"] in (0.0, 0.5, 1.0)
    kept = 4 - rep["n_empty_revisions"]
    assert rep["n_helpful"] == kept and rep["n_train"] == 2 * kept

    recipe = {"algorithm": "rl_cai", "world": world, "model": model,
              "data": {"train": "world:prompts", "max_length": 256}, "train": TRAIN,
              "rl_cai": {"n_prompts": 6, "max_new_tokens": 6, "eval_fraction": 0.0,
                         "judge": {"backend": "policy"},
                         "reward": {"n_normalize": 2, "normalize_sampling": {"max_new_tokens": 4}}}}
    _, summary = _run(tmp_path, "rl_cai_world", recipe)
    lab = summary["data"]["labeler"]
    assert lab["reference"] == "gold" and lab["n"] + lab["n_identical"] == 6
    assert lab["n_with_reference"] <= lab["n"] and lab["n_agree"] == 0   # every label is ½
