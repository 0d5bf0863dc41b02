"""The shared data layer: records, loaders, tokenization and collators."""

from prefopt.data.records import (
    Demonstration,
    Messages,
    PreferencePair,
    PromptRecord,
    UnpairedExample,
)

__all__ = ["Demonstration", "Messages", "PreferencePair", "PromptRecord", "UnpairedExample"]
