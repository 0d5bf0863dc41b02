"""Held-out accuracy of a reward model against its annotators and against the gold.

The pairs a world run samples (``prefopt.feedback.pairs``) carry ids ``PROMPT_ID:ROW``; the
prompt records (with the metadata the gold needs) are regenerated from the world with the
same split, size and seed, so no metadata has to live in the pairs file. Accuracy against
the annotators counts pairs whose label is not 0.5 (the file orients every pair so that
``chosen`` is the annotators' choice); accuracy against the gold counts pairs the gold does
not tie.
"""

from __future__ import annotations

from pathlib import Path

from prefopt.data.loaders import load_preferences


def reward_accuracy(reward_dir: str | Path, pairs_path: str | Path, world, split: str,
                    n: int, seed: int) -> dict[str, float]:
    from prefopt.feedback.reward_sources import RewardModelSource

    pairs = load_preferences(pairs_path)
    records = {r.id: r for r in world.prompts(split, n, seed)}
    recs = [records[p.id.rsplit(":", 1)[0]] for p in pairs]
    rm = RewardModelSource([str(reward_dir)])
    r_c = rm.score(recs, [p.chosen for p in pairs])
    r_r = rm.score(recs, [p.rejected for p in pairs])
    g_c = world.gold.score(recs, [p.chosen for p in pairs])
    g_r = world.gold.score(recs, [p.rejected for p in pairs])
    ann = [(rc > rr) for rc, rr, p in zip(r_c.tolist(), r_r.tolist(), pairs) if p.label != 0.5]
    gold = [(rc > rr) == (gc > gr)
            for rc, rr, gc, gr in zip(r_c.tolist(), r_r.tolist(), g_c, g_r) if gc != gr]
    ann_gold = [(p.label > 0.5) == (gc > gr)
                for p, gc, gr in zip(pairs, g_c, g_r) if gc != gr and p.label != 0.5]
    return {"accuracy_vs_annotators": sum(ann) / max(len(ann), 1), "n_annotated": len(ann),
            "accuracy_vs_gold": sum(gold) / max(len(gold), 1), "n_gold_decided": len(gold),
            "annotators_vs_gold": sum(ann_gold) / max(len(ann_gold), 1)}
