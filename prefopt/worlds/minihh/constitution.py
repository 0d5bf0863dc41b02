"""Where the minihh constitution lives, and a minimal loader for it.

The validating parser is ``prefopt.algorithms.cai.parse``; this loader only maps the YAML
(format documented in constitution.yaml) onto the shared dataclasses.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from prefopt.algorithms.cai.constitution import Constitution, FewShot, Principle

CONSTITUTION_PATH = Path(__file__).with_name("constitution.yaml")


def load_world_constitution(path: str | Path = CONSTITUTION_PATH) -> Constitution:
    """``yaml.safe_load`` of the world's constitution into ``Constitution``."""
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    principles = tuple(Principle(**p) for p in raw["principles"])
    few_shot = tuple(FewShot(**f) for f in raw.get("few_shot") or ())
    return Constitution(name=raw["name"], principles=principles, few_shot=few_shot)
