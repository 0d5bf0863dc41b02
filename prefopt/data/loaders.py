"""Loaders: read rows from files or datasets and turn them into typed records.

Sources: a ``.jsonl`` (or ``.ndjson``) file, one JSON object a line (blank lines skipped,
row = line number); a ``.json`` file holding a list of objects or ``{"data": [...]}``
(row = position, 1-based); a ``.parquet`` file; a ``datasets.Dataset`` or ``DatasetDict``
object (named ``<dataset>`` in errors); or a directory written by ``save_to_disk``.

``split`` picks a split of a ``DatasetDict`` (optional when it has exactly one). Giving a
split for a source without splits is an error, unless it equals ``Dataset.split``.

Every malformed row raises a ``DataError`` naming the source, the row and the field. With
``on_error="skip"`` such rows are skipped, counted by reason in ``LoadStats.skipped`` and
summarised in a logged warning; a source with no valid row at all is still an error.
Errors about the whole source (missing file, unsupported type, unreadable ``.json`` or
parquet, no rows) are always raised. Row formats are described in ``prefopt.data.formats``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prefopt.data.formats import (
    RowContext,
    RowError,
    demonstration_from_row,
    json_type,
    preference_from_row,
    prompt_from_row,
    short,
    unpaired_from_row,
)
from prefopt.data.records import Demonstration, PreferencePair, PromptRecord, UnpairedExample
from prefopt.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DATASET_LABEL = "<dataset>"
_BOM = b"\xef\xbb\xbf"
R = TypeVar("R")
Rows = Iterator[tuple[int, "dict | RowError"]]


@dataclass
class LoadStats:
    """What a load did: rows read, records kept, rows skipped by reason.

    Passing the same object to several loads adds their counts up.
    """

    read: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    """The first error message seen for each skip reason."""

    def skip(self, error: RowError) -> None:
        """Count a skipped row under its reason."""
        self.skipped[error.reason] = self.skipped.get(error.reason, 0) + 1
        self.examples.setdefault(error.reason, str(error))

    def report(self) -> str:
        """One summary line, then one line per skip reason with its first error."""
        lines = [f"read {self.read} rows, kept {self.kept}, "
                 f"skipped {sum(self.skipped.values())}"]
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  {reason}: {count} (first: {self.examples.get(reason, '?')})")
        return "\n".join(lines)


@dataclass
class _Source:
    """An opened source: ``label`` names it in errors, ``name`` prefixes default ids."""

    label: str
    name: str
    rows: Rows


# ---------------------------------------------------------------- JSON


class _Duplicated(dict):
    """A JSON object in which ``key`` appeared more than once (the last value kept)."""

    key: str = ""


def _object_hook(pairs: list[tuple[str, Any]]) -> dict:
    """``json`` object hook that marks objects with duplicate keys instead of merging."""
    obj: dict = {}
    duplicate = None
    for key, value in pairs:
        if key in obj and duplicate is None:
            duplicate = key
        obj[key] = value
    if duplicate is None:
        return obj
    marked = _Duplicated(obj)
    marked.key = duplicate
    return marked


def _duplicate_key(value: Any) -> str | None:
    """The first duplicated key anywhere inside a parsed JSON value, or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Duplicated):
            return item.key
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _as_row(value: Any, ctx: RowContext) -> dict | RowError:
    """A parsed JSON value as a row, or the error saying why it is not one."""
    key = _duplicate_key(value)
    if key is not None:
        return ctx.error("duplicate_key", short(key, 40)[1:-1], "duplicate key in JSON object")
    if not isinstance(value, dict):
        return ctx.error("not_object", None, f"expected a JSON object, got {json_type(value)}")
    return value


def _parse_line(raw: bytes, ctx: RowContext) -> dict | RowError:
    """One ``.jsonl`` line as a row, or the error (bad UTF-8, bad JSON, ...)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return ctx.error("invalid_utf8", None, f"line {ctx.row} is not valid UTF-8 "
                         f"(byte {e.start}: {e.reason})")
    try:
        value = json.loads(text, object_pairs_hook=_object_hook)
    except json.JSONDecodeError as e:
        return ctx.error("bad_json", None, f"invalid JSON: {e.msg} at column {e.colno}")
    except (ValueError, RecursionError) as e:
        return ctx.error("bad_json", None, f"invalid JSON: {short(str(e), 100)}")
    return _as_row(value, ctx)


def _jsonl_rows(path: Path, label: str) -> Rows:
    """Rows of a ``.jsonl`` file, numbered by line; blank lines are skipped."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1:
                raw = raw.removeprefix(_BOM)
            if raw.strip(b" \t\r\n"):
                yield lineno, _parse_line(raw.rstrip(b"\r\n"), RowContext(label, lineno))


def _json_rows(path: Path, label: str) -> Rows:
    """Rows of a ``.json`` file holding a list of objects or ``{"data": [...]}``."""
    data = path.read_bytes().removeprefix(_BOM)
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_object_hook)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"line {line} is not valid UTF-8 ({e.reason})", source=label) from None
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}",
                        source=label) from None
    except (ValueError, RecursionError) as e:
        raise DataError(f"invalid JSON: {short(str(e), 100)}", source=label) from None
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        if isinstance(value, _Duplicated):
            raise DataError(f"duplicate key {short(value.key)} at the top level", source=label)
        value = value["data"]
    if not isinstance(value, list):
        raise DataError("expected a JSON list of objects or an object with a 'data' list, "
                        f"got {json_type(value)}", source=label)
    for i, item in enumerate(value, start=1):
        yield i, _as_row(item, RowContext(label, i))


# ---------------------------------------------------------------- parquet and datasets


def _parquet_rows(path: Path, label: str) -> Rows:
    """Rows of a parquet file, read batch by batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches():
            for item in batch.to_pylist():
                row += 1
                yield row, item
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"cannot read parquet: {short(str(e), 200)}", source=label) from None


def _select_split(obj: Any, split: str | None, label: str) -> Any:
    """The ``datasets.Dataset`` to read from ``obj`` (a Dataset or DatasetDict)."""
    import datasets

    if isinstance(obj, datasets.DatasetDict):
        names = list(obj)
        if split is None and len(names) == 1:
            return obj[names[0]]
        if split is None:
            raise DataError(f"the dataset has splits {names}; pass split=", source=label)
        if split not in obj:
            raise DataError(f"no split {split!r}; available: {names}", source=label)
        return obj[split]
    if isinstance(obj, datasets.Dataset):
        if split is not None and (obj.split is None or split != str(obj.split)):
            raise DataError(f"split={split!r} given, but the dataset has no splits",
                            source=label)
        return obj
    raise DataError(f"expected a datasets.Dataset or DatasetDict, got {type(obj).__name__}",
                    source=label)


def _dataset_rows(dataset: Any) -> Rows:
    """Rows of a ``datasets.Dataset``, numbered from 1."""
    yield from enumerate(dataset, start=1)


def _open_dir(path: Path, split: str | None) -> _Source:
    """A directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    import datasets

    label = str(path)
    try:
        obj = datasets.load_from_disk(label)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(f"not a dataset saved with save_to_disk ({short(str(e), 200)})",
                        source=label) from None
    return _Source(label, path.name, _dataset_rows(_select_split(obj, split, label)))


_READERS: dict[str, Callable[[Path, str], Rows]] = {
    ".jsonl": _jsonl_rows, ".ndjson": _jsonl_rows, ".json": _json_rows,
    ".parquet": _parquet_rows,
}


def _open(source: Any, split: str | None) -> _Source:
    """Resolve ``source`` into its rows; source-level problems raise ``DataError``."""
    if isinstance(source, (str, os.PathLike)):
        path, label = Path(source), str(source)
        if path.is_dir():
            return _open_dir(path, split)
        if not path.exists():
            raise DataError("file not found", source=label)
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise DataError(f"unsupported file type {path.suffix!r}; expected .jsonl, .json, "
                            ".parquet or a directory saved with save_to_disk", source=label)
        if split is not None:
            raise DataError(f"split={split!r} given, but a {path.suffix} file has no splits",
                            source=label)
        return _Source(label, path.name, reader(path, label))
    datasets = sys.modules.get("datasets")  # a Dataset object implies datasets is imported
    if datasets and isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        table = _select_split(source, split, DATASET_LABEL)
        return _Source(DATASET_LABEL, DATASET_LABEL, _dataset_rows(table))
    raise DataError(f"unsupported source of type {type(source).__name__}; expected a path "
                    "or a datasets.Dataset / DatasetDict", source=short(source))


# ---------------------------------------------------------------- public API


def load_rows(source: Any, split: str | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(row number, row)`` from ``source``; the first malformed row raises."""
    src = _open(source, split)
    count = 0
    for row, value in src.rows:
        if isinstance(value, RowError):
            raise value
        count += 1
        yield row, value
    if count == 0:
        raise DataError("no rows", source=src.label)


def _load(source: Any, split: str | None, build: Callable[[dict, RowContext, str], R],
          on_error: str, stats: LoadStats | None) -> list[R]:
    """Build one record per row with ``build``; raise or skip-and-count malformed rows."""
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    stats = stats if stats is not None else LoadStats()
    src = _open(source, split)
    records: list[R] = []
    read = skipped = 0
    for row, value in src.rows:
        read += 1
        try:
            if isinstance(value, RowError):
                raise value
            records.append(build(value, RowContext(src.label, row), f"{src.name}:{row}"))
        except RowError as err:
            if on_error == "raise":
                raise
            skipped += 1
            stats.skip(err)
    stats.read, stats.kept = stats.read + read, stats.kept + len(records)
    if read == 0:
        raise DataError("no rows", source=src.label)
    if skipped:
        log.warning("%s: skipped %d malformed rows; %s", src.label, skipped, stats.report())
    if not records:
        raise DataError(f"no valid rows; {stats.report()}", source=src.label)
    return records


def load_preferences(source: Any, split: str | None = None, *, on_error: str = "raise",
                     stats: LoadStats | None = None) -> list[PreferencePair]:
    """Preference pairs from ``source`` (formats: see ``prefopt.data.formats``)."""
    return _load(source, split, preference_from_row, on_error, stats)


def load_demonstrations(source: Any, split: str | None = None, *, on_error: str = "raise",
                        stats: LoadStats | None = None) -> list[Demonstration]:
    """Demonstrations from ``messages`` or ``prompt`` + ``completion`` / ``response`` rows."""
    return _load(source, split, demonstration_from_row, on_error, stats)


def load_prompts(source: Any, split: str | None = None, *, on_error: str = "raise",
                 stats: LoadStats | None = None) -> list[PromptRecord]:
    """Prompt records from ``prompt`` rows (optional ``family``, ``id``; the rest to meta)."""
    return _load(source, split, prompt_from_row, on_error, stats)


def load_unpaired(source: Any, split: str | None = None, *, on_error: str = "raise",
                  stats: LoadStats | None = None) -> list[UnpairedExample]:
    """Unpaired (KTO) examples from ``prompt`` / ``completion`` / ``label`` rows."""
    return _load(source, split, unpaired_from_row, on_error, stats)
