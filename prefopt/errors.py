"""User-facing errors. Every error a user can cause by input is a PrefoptError subclass
whose message names where the problem is (file, row, field or config key)."""

from __future__ import annotations


class PrefoptError(Exception):
    """Base class of every error prefopt raises on purpose."""


class ConfigError(PrefoptError):
    """A recipe or override is invalid (unknown key, wrong type, bad value)."""


class DataError(PrefoptError):
    """An input row is malformed. The message names the file, the row and the field."""

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None,
                 field: str | None = None):
        where = []
        if source is not None:
            where.append(str(source))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.source, self.row, self.field = source, row, field


class ConstitutionError(PrefoptError):
    """A constitution file is malformed. The message names the file and the entry."""


class TrainingError(PrefoptError):
    """Training cannot go on (non-finite loss or gradient, unwritable output)."""
