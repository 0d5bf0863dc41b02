"""The World protocol: what an embedded testbed provides to recipes and the eval harness."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from prefopt.data.records import Demonstration, Messages, PromptRecord


@runtime_checkable
class RewardSource(Protocol):
    """Scores responses to prompts (the reward-source contract; one float per pair)."""

    def score(self, prompts: Sequence[PromptRecord], responses: Sequence[str]) -> Sequence[float]:
        ...


@runtime_checkable
class World(Protocol):
    """An embedded world: prompts with splits and families, demonstrations, a gold reward,
    simulated annotators, a constitution, a tokenizer and a pretraining corpus."""

    name: str
    families: tuple[str, ...]
    constitution_path: Path

    @property
    def gold(self) -> RewardSource:
        """The gold reward (reward source and preference oracle)."""
        ...

    def prompts(self, split: str, n: int, seed: int) -> list[PromptRecord]:
        """n prompts of a split (train, validation or test), deterministic for the seed."""
        ...

    def demonstrations(self, split: str, n: int, seed: int) -> list[Demonstration]:
        """n supervised demonstrations on prompts of a split."""
        ...

    def annotator_pool(self, length_biased: bool = False) -> Any:
        """The simulated annotators that label comparisons."""
        ...

    def build_tokenizer(self, out_dir: str | Path) -> Any:
        """Build and save the world's tokenizer (a transformers tokenizer) to out_dir."""
        ...

    def corpus(self, n: int, seed: int) -> list[Messages]:
        """n pretraining conversations for the world's raw base model."""
        ...

    def classify(self, record: PromptRecord, response: str) -> dict[str, bool]:
        """Per-response labels used by evaluation (correct, refusal, ...)."""
        ...
