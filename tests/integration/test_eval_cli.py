"""`prefopt eval` end to end on the minihh world's prompts and gold reward (no world base
model needed) with tiny random models: eval.json agrees with samples.jsonl, the cache is
reused, and best-of-n and PEFT adapter directories load."""

import json
import math
from pathlib import Path

import pytest

from prefopt.cli import main
from prefopt.eval.stats import kl_best_of_n
from prefopt.worlds import get_world
from prefopt.worlds.minihh import gold_reward

HEADLINE = {"gold", "win_rate", "lc_win_rate", "kl", "length", "entropy", "distinct_1",
            "distinct_2", "correct", "harmful_compliance", "over_refusal"}


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def world_records(n: int = 12) -> dict:
    return {r.id: r for r in get_world("minihh").prompts("test", n, 0)}


@pytest.fixture(scope="module")
def evaluated(tiny_models, tmp_path_factory):
    """The tiny llama against the tiny qwen2 (same tokenizer) on the minihh_tiny suite."""
    out = tmp_path_factory.mktemp("eval")
    rc = main(["eval", str(tiny_models["llama"]), "--suite", "minihh_tiny", "--reference",
               str(tiny_models["qwen2"]), "--out", str(out)])
    assert rc == 0
    return out, json.loads((out / "eval.json").read_text())


def test_eval_json_matches_samples(evaluated):
    """Recompute from samples.jsonl: mean gold, the gold-judged win rate (1/0/½ by gold
    score), KL = mean of log π − log π_ref, mean length in words."""
    out, result = evaluated
    rows, recs = read_rows(out), world_records()
    assert len(rows) == result["n_prompts"] == 12 and result["judge"] == "gold"
    assert HEADLINE <= set(result["metrics"]) and set(result["notes"]) == {"reward"}
    gold = [gold_reward(recs[r["id"]], r["response"]) for r in rows]
    ref_gold = [gold_reward(recs[r["id"]], r["reference_response"]) for r in rows]
    wins = [0.5 if a == b else float(a > b) for a, b in zip(gold, ref_gold)]
    m = result["metrics"]
    assert m["gold"]["value"] == pytest.approx(sum(gold) / 12, abs=1e-6)
    assert m["gold"]["ci_low"] <= m["gold"]["value"] <= m["gold"]["ci_high"]
    assert m["win_rate"]["value"] == pytest.approx(sum(wins) / 12)
    kl = sum(r["logp_policy"] - r["logp_reference"] for r in rows) / 12
    assert m["kl"]["value"] == pytest.approx(kl, abs=1e-6) and m["kl"]["estimator"] == "k1"
    assert m["length"]["value"] == pytest.approx(sum(len(r["response"].split())
                                                     for r in rows) / 12)
    harmful = [g for g, r in zip(gold, rows) if r["family"] == "harmful"]
    assert m["gold/harmful"]["value"] == pytest.approx(sum(harmful) / len(harmful), abs=1e-6)


def test_second_run_reuses_the_cached_samples(evaluated, tiny_models, monkeypatch):
    out, first = evaluated

    def fail(*args, **kwargs):
        raise AssertionError("samples were regenerated")

    monkeypatch.setattr("prefopt.eval.harness.generate_samples", fail)
    assert main(["eval", str(tiny_models["llama"]), "--suite", "minihh_tiny", "--reference",
                 str(tiny_models["qwen2"]), "--out", str(out)]) == 0
    second = json.loads((out / "eval.json").read_text())
    assert second["metrics"] == first["metrics"]


def test_best_of_n_dir_reports_the_analytic_kl(tiny_llama, tmp_path):
    """A best-of-n "model" (n = 2, gold reward) samples through best_of_n; its KL is the
    analytic log 2 − 1/2 = 0.193 nats and it has no log-probs for the entropy."""
    bon = tmp_path / "bon" / "final"
    bon.mkdir(parents=True)
    (bon / "prefopt_policy.json").write_text(json.dumps(
        {"type": "best_of_n", "policy": str(tiny_llama), "reward": "gold", "n": 2,
         "temperature": 1.0}))
    assert main(["eval", str(bon), "n_prompts=6", "--suite", "minihh_tiny"]) == 0
    out = tmp_path / "bon" / "eval"  # the default for RUN/final
    result = json.loads((out / "eval.json").read_text())
    assert result["metrics"]["kl"]["value"] == pytest.approx(math.log(2) - 0.5)
    assert result["metrics"]["kl"]["value"] == kl_best_of_n(2)
    assert result["notes"]["entropy"] == "no log-probs (best-of-n policy)"
    rows, recs = read_rows(out), world_records(6)
    gold = [gold_reward(recs[r["id"]], r["response"]) for r in rows]
    assert result["metrics"]["gold"]["value"] == pytest.approx(sum(gold) / 6, abs=1e-6)


def test_zero_lora_adapter_matches_its_base(tiny_llama, tmp_path):
    """A fresh LoRA adapter (B = 0) merges into exactly its base: against the base as the
    reference, same seed, the samples are identical, so KL = 0 and the win rate is ½."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = tmp_path / "adapter"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(
        adapter)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(adapter)
    out = tmp_path / "out"
    assert main(["eval", str(adapter), "n_prompts=4", "--suite", "minihh_tiny", "--reference",
                 str(tiny_llama), "--out", str(out), "--seed", "7"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["suite_config"]["sampling"]["seed"] == 7
    assert result["metrics"]["kl"]["value"] == 0.0
    assert result["metrics"]["win_rate"]["value"] == 0.5
    assert all(r["response"] == r["reference_response"] for r in read_rows(out))


def test_own_prompts_without_a_world(tiny_models, tmp_path):
    """Your own model on your own prompts file: no gold reward or classifier (noted), the
    KL against the reference and the text metrics are still computed."""
    from prefopt.eval.harness import evaluate_model
    from prefopt.eval.suite import parse_suite

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q, "family": f}) + "\n" for q, f in
                               [("what is two plus three?", "math"), ("hello", "chat"),
                                ("sort these words: cat dog", "math")]))
    suite = parse_suite({"prompts_file": str(prompts), "n_prompts": 0,
                         "sampling": {"max_new_tokens": 5, "temperature": 1.0},
                         "bootstrap": {"n_boot": 50}}, name="own")
    result = evaluate_model(str(tiny_models["llama"]), suite, str(tiny_models["gpt2"]),
                            out=tmp_path / "out")
    rows = read_rows(tmp_path / "out")
    assert [r["family"] for r in rows] == ["math", "chat", "math"]
    assert set(result["notes"]) == {"gold", "reward", "win_rate", "lc_win_rate",
                                    "family_rates"}
    assert "needs a world" in result["notes"]["win_rate"]
    kl = sum(r["logp_policy"] - r["logp_reference"] for r in rows) / 3
    assert result["metrics"]["kl"]["value"] == pytest.approx(kl, abs=1e-6)
