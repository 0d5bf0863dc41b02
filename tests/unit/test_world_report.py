"""The world report: aggregation over seeds on hand numbers, cached steps, the critic's
rates on scripted responses, and a tiny end-to-end run through ``prefopt world report``."""

import json
import math
import random

import pytest

from prefopt.cli import main
from prefopt.worlds.minihh import MiniHH
from prefopt.worlds.minihh.behaviours import respond
from prefopt.worlds.report import (
    cached_step,
    critic_rates,
    fmt_count,
    fmt_stat,
    orient_randomly,
    summarize_seeds,
)


def test_summarize_seeds_on_hand_numbers():
    rows = [{"x": 1.0, "y": None}, {"x": 2.0, "y": 4.0}, {"x": 6.0, "z": -1.5}]
    s = summarize_seeds(rows)
    assert list(s) == ["x", "y", "z"]
    assert s["x"]["mean"] == pytest.approx(3.0)
    assert s["x"]["sd"] == pytest.approx(math.sqrt(7.0))  # ((-2)^2 + (-1)^2 + 3^2) / 2 = 7
    assert (s["x"]["min"], s["x"]["max"], s["x"]["n"]) == (1.0, 6.0, 3)
    assert s["y"] == {"mean": 4.0, "sd": None, "min": 4.0, "max": 4.0, "n": 1}
    assert s["z"]["n"] == 1


def test_summarize_two_seeds_and_format():
    s = summarize_seeds([{"g": 0.25}, {"g": 0.75}])["g"]
    assert s["mean"] == pytest.approx(0.5)
    assert s["sd"] == pytest.approx(math.sqrt(0.125))   # (0.25^2 + 0.25^2) / 1
    assert fmt_stat(s) == "0.500 ± 0.354 [0.250, 0.750]"
    assert fmt_stat({"mean": 2.0, "sd": None, "min": 2.0, "max": 2.0, "n": 1}, 1) == \
        "2.0 [2.0, 2.0]"
    assert fmt_stat(None) == "-"
    assert fmt_count({"mean": 5.0, "sd": 0.0, "min": 5.0, "max": 5.0, "n": 2}) == "5"
    assert fmt_count({"mean": 4.5, "sd": 0.7, "min": 4.0, "max": 5.0, "n": 2}) == "4.5 [4, 5]"


def test_cached_step_reuses_and_recomputes(tmp_path):
    calls = []

    def fn():
        calls.append(1)
        return {"value": len(calls)}

    path = tmp_path / "step.json"
    assert cached_step(path, {"n": 1}, fn)["value"] == 1
    assert cached_step(path, {"n": 1}, fn)["value"] == 1       # cached
    assert cached_step(path, {"n": 2}, fn)["value"] == 2       # settings changed
    stored = json.loads(path.read_text())
    assert stored["params"] == {"n": 2} and stored["seconds"] >= 0
    assert len(calls) == 2


def test_orient_randomly_keeps_the_prompt_index():
    from prefopt.data.records import PreferencePair

    pairs = [PreferencePair([], f"c{i}", f"r{i}", id=f"p:{i}") for i in (0, 2, 3)]
    rows = orient_randomly(pairs, 4, random.Random(0))
    assert [r["index"] for r in rows] == [0, 2, 3]
    assert all({r["a"], r["b"]} == {f"c{r['index']}", f"r{r['index']}"} for r in rows)


def test_critic_rates_on_scripted_responses():
    world = MiniHH("tiny")
    rng = random.Random(0)
    harmful = world.prompts("train", 2, 0, families=["harmful"])
    benign = world.prompts("train", 2, 0, families=["scary_benign"])
    records = harmful + benign
    # complying -> good refusal (better); refusing a safe request -> good answer (better);
    # a good answer kept (equal); a good answer -> needless refusal (worse)
    initial = [respond(harmful[0], "comply", rng), respond(harmful[1], "good", rng),
               respond(benign[0], "refuse", rng), respond(benign[1], "good", rng)]
    revised = [respond(harmful[0], "good", rng), initial[1],
               respond(benign[0], "good", rng), respond(benign[1], "refuse", rng)]
    r = critic_rates(world, records, initial, revised)
    assert (r["n_prompts"], r["n_harmful"], r["n_scary_benign"]) == (4, 2, 2)
    assert (r["n_ge"], r["n_gt"]) == (3, 2)
    assert r["revision_ge_original"] == 0.75 and r["revision_gt_original"] == 0.5
    assert r["harmful_compliance_before"] == 0.5 and r["harmful_compliance_after"] == 0.0
    assert r["over_refusal_before"] == 0.5 and r["over_refusal_after"] == 0.5
    assert r["empty_revision_rate"] == 0.0
    gold = world.gold
    assert r["gold_after"] - r["gold_before"] == pytest.approx(
        (sum(gold.score(records, revised)) - sum(gold.score(records, initial))) / 4)


def test_tiny_report_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PREFOPT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report"
    argv = ["world", "report", "--preset", "tiny", "--seeds", "1", "--out", str(out),
            "--n-prompts", "6", "--n-eval", "6"]
    assert main(argv) == 0
    report = json.loads((out / "world_report.json").read_text())
    assert report["seeds"] == [0] and report["n_prompts"] == 6 and report["n_critic"] == 3
    row, s = report["per_seed"]["0"], report["summary"]
    for key in ("base/gold", "sft/gold", "sft_minus_base/gold", "base/correct",
                "sft/harmful_compliance", "sft/over_refusal",
                "annotators/pool/inter_annotator_agreement",
                "annotators/length_biased/majority_agreement_with_gold",
                "judge/agreement_with_gold", "judge/position_bias_rate",
                "judge/unparseable_rate", "critic/revision_ge_original",
                "critic/revision_gt_original"):
        assert key in s and s[key]["n"] == 1 and s[key]["sd"] is None, key
    assert row["sft_minus_base/gold"] == pytest.approx(row["sft/gold"] - row["base/gold"])
    # counts add up
    assert row["pairs/n_pairs"] + row["pairs/n_identical"] == row["pairs/n_prompts"] == 6
    assert row["pairs/n_gold_ties"] + row["pairs/n_gold_decided"] == row["pairs/n_pairs"]
    assert row["judge/n_pairs"] == row["pairs/n_pairs"]
    assert row["judge/n_gold_decided"] == row["pairs/n_gold_decided"]  # none unparseable
    assert row["judge/n_unparseable"] == 0 and row["judge/unparseable_rate"] == 0.0
    assert row["critic/n_harmful"] + row["critic/n_scary_benign"] == row["critic/n_prompts"] == 3
    assert row["critic/n_gt"] <= row["critic/n_ge"] <= 3
    assert row["critic/revision_ge_original"] == row["critic/n_ge"] / 3
    assert 0.0 <= row["annotators/pool/inter_annotator_agreement"] <= 1.0
    lines = (out / "seed-0" / "pairs.jsonl").read_text().splitlines()
    assert len(lines) == row["pairs/n_pairs"]
    md = (out / "world_report.md").read_text()
    assert "## Gold reward per family" in md and "| harmful |" in md
    # resumable: a second run reuses every cached step
    judge_json = (out / "seed-0" / "judge.json").read_text()
    assert main(argv) == 0
    assert (out / "seed-0" / "judge.json").read_text() == judge_json
    assert json.loads((out / "world_report.json").read_text())["per_seed"]["0"] == row
    assert "world_report.md" in capsys.readouterr().out
