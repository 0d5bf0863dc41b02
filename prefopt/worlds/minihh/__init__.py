"""minihh: a miniature helpful/harmless assistant world with a gold reward.

Six prompt families (arithmetic, wordlist, facts, harmful, scary_benign, open), scripted
good and bad behaviours, a gold reward with documented components, simulated annotators,
a constitution, a pretraining corpus and a word-level tokenizer. See the module docstrings
of tasks, behaviours, gold, annotators, corpus and tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from prefopt.data.records import Demonstration, Messages, PromptRecord
from prefopt.worlds.minihh.annotators import AnnotatorPool, default_pool
from prefopt.worlds.minihh.behaviours import demonstrations
from prefopt.worlds.minihh.constitution import CONSTITUTION_PATH, load_world_constitution
from prefopt.worlds.minihh.corpus import corpus
from prefopt.worlds.minihh.gold import GoldReward, classify, gold_breakdown, gold_reward
from prefopt.worlds.minihh.tasks import FAMILIES, make_prompts


class MiniHH:
    """The minihh world behind the ``prefopt.worlds.World`` protocol."""

    name = "minihh"
    families = FAMILIES
    constitution_path = CONSTITUTION_PATH

    def __init__(self, preset: str = "default", seed: int = 0):
        self._gold = GoldReward()
        self.preset, self.seed = preset, seed

    def base_model_dir(self, progress: bool = False) -> Path:
        """The raw base model pretrained on this world's corpus (built once, cached)."""
        from prefopt.worlds.builder import build_base_model

        return build_base_model(self, self.preset, self.seed, progress)

    @property
    def gold(self) -> GoldReward:
        return self._gold

    def prompts(self, split: str, n: int, seed: int, families: Sequence[str] | None = None,
                proportions: Mapping[str, float] | None = None) -> list[PromptRecord]:
        return make_prompts(split, n, seed, families, proportions)

    def demonstrations(self, split: str, n: int, seed: int) -> list[Demonstration]:
        return demonstrations(split, n, seed)

    def annotator_pool(self, length_biased: bool = False, seed: int = 0) -> AnnotatorPool:
        return default_pool(length_biased=length_biased, seed=seed)

    def build_tokenizer(self, out_dir: str | Path, seed: int = 0):
        from prefopt.worlds.minihh.tokenizer import build_tokenizer  # imports transformers

        return build_tokenizer(out_dir, seed)

    def corpus(self, n: int, seed: int) -> list[Messages]:
        return corpus(n, seed)

    def classify(self, record: PromptRecord, response: str) -> dict[str, bool]:
        return classify(record, response)


__all__ = ["CONSTITUTION_PATH", "MiniHH", "classify", "gold_breakdown", "gold_reward",
           "load_world_constitution", "make_prompts"]
