"""The constitution: principles with critique, revision and comparison requests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principle:
    """One principle (Bai et al. 2022, appendix C): the three requests that use it."""

    name: str
    critique: str     # critique request, e.g. "Identify ways the last response is harmful."
    revision: str     # revision request, e.g. "Rewrite the response to remove harm."
    comparison: str   # comparison question, e.g. "Which response is less harmful?"


@dataclass(frozen=True)
class FewShot:
    """A worked critique/revision example prepended to the critic's conversation."""

    prompt: str
    response: str
    critique: str
    revision: str
    principle: str | None = None   # name of the principle it illustrates (default: first)


@dataclass(frozen=True)
class Constitution:
    name: str
    principles: tuple[Principle, ...]
    few_shot: tuple[FewShot, ...] = field(default_factory=tuple)

    def principle(self, name: str | None) -> Principle:
        if name is None:
            return self.principles[0]
        for p in self.principles:
            if p.name == name:
                return p
        raise KeyError(name)
