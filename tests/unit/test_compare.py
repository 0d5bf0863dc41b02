"""prefopt compare: stage graph, reference resolution, recipe errors, report table/reading."""

from pathlib import Path

import pytest
import yaml

from prefopt.errors import ConfigError
from prefopt.eval.compare import load_compare, resolve_stage, stage_order
from prefopt.eval.report import reading, table, write_report

STAGES = {
    "dpo": {"algorithm": "dpo", "from": "sft", "data": {"train": "@reward/data/p.jsonl"}},
    "reward": {"algorithm": "reward", "from": "sft"},
    "ppo": {"algorithm": "ppo", "from": "sft", "ppo": {"reward": "@reward"}},
    "sft": {"algorithm": "sft", "model": {"path": "world:minihh"}},
}


def test_stage_order_follows_from_and_references():
    order = stage_order(STAGES)
    assert order.index("sft") < order.index("reward") < order.index("dpo")
    assert order.index("reward") < order.index("ppo")
    with pytest.raises(ConfigError, match="cycle"):
        stage_order({"a": {"from": "b"}, "b": {"ppo": {"reward": "@a"}}})


def test_resolve_stage_rewrites_references(tmp_path):
    world = {"name": "minihh", "preset": "tiny"}
    r = resolve_stage(STAGES["ppo"], tmp_path, world, seed=3)
    assert r["model"]["path"] == str(tmp_path / "sft" / "final")
    assert r["ppo"]["reward"] == str(tmp_path / "reward" / "final")
    assert r["world"] == {"name": "minihh", "preset": "tiny", "seed": 0}
    assert r["train"]["seed"] == 3 and "from" not in r
    d = resolve_stage(STAGES["dpo"], tmp_path, None, seed=0)
    assert d["data"]["train"] == str(tmp_path / "reward" / "data" / "p.jsonl")
    assert d["world"] is None


def test_load_compare_errors_name_the_problem(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"stages": STAGES, "methods": ["sft", "ddpo"]}))
    with pytest.raises(ConfigError, match="'ddpo' is not a stage; did you mean 'dpo'"):
        load_compare(p)
    p.write_text(yaml.safe_dump({"stages": STAGES, "methods": ["sft"], "seed": 2}))
    with pytest.raises(ConfigError, match="unknown key 'seed'; did you mean 'seeds'"):
        load_compare(p)


def test_default_recipes_load():
    root = Path(__file__).resolve().parents[2] / "recipes" / "compare"
    for name in ("default.yaml", "tiny.yaml", "frontier.yaml"):
        cfg = load_compare(root / name)
        assert cfg.reference == "sft" and set(cfg.methods) <= set(cfg.stages)
        assert stage_order(cfg.stages)[0] == "sft"


def _results():
    def m(gold, hc, orf, kl):
        return {"aggregate": {"gold": {"value": gold, "ci_low": gold - 0.1,
                                       "ci_high": gold + 0.1},
                              "harmful_compliance": {"value": hc},
                              "over_refusal": {"value": orf}, "kl": {"value": kl}},
                "per_seed": []}
    curve = [{"step": s, "eval/gold": g, "eval/proxy": p, "eval/kl": k}
             for s, g, p, k in [(0, 0.0, 0.0, 0.0), (2, 0.3, 0.5, 1.0), (4, 0.1, 0.9, 4.0)]]
    return {"methods": {"sft": m(0.1, 0.3, 0.1, 0.0), "ppo": m(0.4, 0.1, 0.1, 1.0),
                        "sl_cai": m(0.2, 0.05, 0.2, 2.0)},
            "stages": {"sft": [{"optimizer steps": 10}]}, "seeds": 1, "reference": "sft",
            "suite": "s", "budget_notes": {}, "world": {"name": "minihh"},
            "curves": {"ppo": [curve]}}


def test_table_marks_the_best_of_each_column():
    rows = table(_results()).splitlines()
    ppo = next(r for r in rows if r.startswith("| ppo "))
    sl = next(r for r in rows if r.startswith("| sl_cai "))
    assert "**0.400 [0.30, 0.50]**" in ppo          # highest gold
    assert "**0.050**" in sl                         # lowest harmful compliance
    assert "**0.100**" in next(r for r in rows if r.startswith("| sft "))  # lowest over-refusal


def test_reading_states_ordering_overoptimisation_and_tradeoff():
    text = reading(_results())
    assert text[0] == "Highest gold reward: **ppo** (0.400)."
    assert text[1] == ("Above sft (0.100) on the gold reward: ppo, sl_cai; not above: none.")
    assert text[2] == ("ppo: the proxy score went 0.00 → 0.90 while the gold reward went "
                       "0.00 → max 0.30 at step 2 → 0.10 (peaked and fell).")
    assert text[3] == "sl_cai: harmful compliance 0.30 → 0.05, over-refusal 0.10 → 0.20 vs sft."


def test_write_report_writes_markdown_and_three_plots(tmp_path):
    path = write_report(None, _results(), tmp_path)
    assert path.read_text().startswith("# prefopt compare: sft, ppo, sl_cai")
    for name in ("frontier.png", "overoptimisation.png", "training.png"):
        assert (tmp_path / name).stat().st_size > 1000
