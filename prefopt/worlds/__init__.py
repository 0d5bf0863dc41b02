"""Embedded worlds: self-contained testbeds with a gold reward. ``get_world(name)``."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from prefopt.errors import ConfigError
from prefopt.worlds.base import RewardSource, World


def _minihh(preset: str, seed: int) -> World:
    from prefopt.worlds.minihh import MiniHH

    return MiniHH(preset=preset, seed=seed)


WORLDS: dict[str, Callable[[str, int], World]] = {"minihh": _minihh}


def get_world(name: str, preset: str = "default", seed: int = 0) -> World:
    """The world registered under ``name``; ``preset`` and ``seed`` pick its base model."""
    if name not in WORLDS:
        close = difflib.get_close_matches(name, list(WORLDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown world '{name}' (known: {', '.join(WORLDS)}){hint}")
    return WORLDS[name](preset, seed)


__all__ = ["RewardSource", "World", "WORLDS", "get_world"]
