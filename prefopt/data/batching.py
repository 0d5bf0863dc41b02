"""Encoding record lists once, and deterministic shuffled batches per epoch."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefopt.data.records import Demonstration, PreferencePair, UnpairedExample
from prefopt.data.tokenize import Encoded, encode_example, encode_prompt

log = logging.getLogger(__name__)


@dataclass
class EncodeReport:
    """How many records were kept and how many were skipped, and why."""

    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def as_dict(self) -> dict[str, int]:
        return {"kept": self.kept, **{f"skipped/{k}": v for k, v in self.skipped.items()}}

    def warn(self, what: str) -> None:
        if self.skipped:
            log.warning("%s: kept %d, skipped %s", what, self.kept, self.skipped)


def encode_demonstrations(tokenizer, demos: Sequence[Demonstration], max_length: int,
                          report: EncodeReport | None = None) -> list[tuple[str, Encoded]]:
    """(id, Encoded) for each demonstration that fits; the rest are counted as skipped."""
    report = report or EncodeReport()
    out = []
    for d in demos:
        enc = encode_example(tokenizer, d.prompt, d.completion, max_length)
        if enc is None:
            report.skip("too_long")
            continue
        out.append((d.id, enc))
    report.kept = len(out)
    report.warn("demonstrations")
    return out


@dataclass
class EncodedPair:
    id: str
    chosen: Encoded
    rejected: Encoded
    label: float
    margin: float


def encode_pairs(tokenizer, pairs: Sequence[PreferencePair], max_length: int,
                 report: EncodeReport | None = None) -> list[EncodedPair]:
    report = report or EncodeReport()
    out = []
    for p in pairs:
        prompt_ids = encode_prompt(tokenizer, p.prompt)
        c = encode_example(tokenizer, p.prompt, p.chosen, max_length, prompt_ids)
        r = encode_example(tokenizer, p.prompt, p.rejected, max_length, prompt_ids)
        if c is None or r is None:
            report.skip("too_long")
            continue
        out.append(EncodedPair(p.id, c, r, p.label, p.margin))
    report.kept = len(out)
    report.warn("preference pairs")
    return out


def encode_unpaired(tokenizer, rows: Sequence[UnpairedExample], max_length: int,
                    report: EncodeReport | None = None) -> list[tuple[UnpairedExample, Encoded]]:
    report = report or EncodeReport()
    out = []
    for u in rows:
        enc = encode_example(tokenizer, u.prompt, u.completion, max_length)
        if enc is None:
            report.skip("too_long")
            continue
        out.append((u, enc))
    report.kept = len(out)
    report.warn("unpaired examples")
    return out


def epoch_batches(items: Sequence[Any], batch_size: int, seed: int, epoch: int,
                  collate: Callable[[list[Any]], Any], drop_last: bool = False,
                  shard: tuple[int, int] = (0, 1),
                  lengths: Sequence[int] | None = None) -> Iterator[Any]:
    """Shuffle with ``seed + epoch`` and cut into batches; the same order on every rank.

    ``shard=(rank, world)``: each rank collates its slice of every global batch, so the
    global batch (and hence the loss trajectory) is the same for any number of processes.
    A batch with fewer rows than processes (a short last batch) is skipped on every rank:
    the ranks must run the same number of steps.
    ``lengths``: group examples of similar length (sort within windows of 32 batches, then
    shuffle the batches), which cuts padding; the data seen per epoch is unchanged.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(items)))
    rng.shuffle(order)
    if lengths is not None:
        order = _group_by_length(order, lengths, batch_size, rng)
    rank, world = shard
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        if drop_last and len(idx) < batch_size:
            break
        if len(idx) < world:
            continue
        mine = idx[rank::world] if world > 1 else idx
        if mine:
            yield collate([items[j] for j in mine])


def _group_by_length(order: list[int], lengths: Sequence[int], batch_size: int,
                     rng: random.Random) -> list[int]:
    window = 32 * batch_size
    batches = []
    for i in range(0, len(order), window):
        chunk = sorted(order[i:i + window], key=lambda j: lengths[j])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return [j for b in batches for j in b]
