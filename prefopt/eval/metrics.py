"""Load prefopt's Hugging Face `evaluate` metric modules from the repository, offline.

The modules live in `<repo>/evals/metrics/<name>/<name>.py`, where `<repo>` is the
parent of the `prefopt` package directory. They are loaded by the path of their .py
file: with evaluate 0.4.x a local file path (or a directory holding `<name>.py`) goes
through `LocalEvaluationModuleFactory` and never reaches the Hub, whereas a bare name
like "win_rate" would be looked up on the Hub.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import prefopt
from prefopt.errors import ConfigError

OFFLINE_ENV = ("HF_EVALUATE_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def metrics_dir() -> Path:
    """`<repo>/evals/metrics`, located from `prefopt.__file__` (a source checkout or an
    editable install; a wheel does not ship `evals/`)."""
    return Path(prefopt.__file__).resolve().parent.parent / "evals" / "metrics"


def available_metrics(root: Path | None = None) -> list[str]:
    """Names of the metric modules under `root` (default `metrics_dir()`)."""
    root = metrics_dir() if root is None else Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / f"{p.name}.py").is_file())


def metric_path(name: str, root: Path | None = None) -> Path:
    """Path of `<root>/<name>/<name>.py`; a ConfigError naming close matches otherwise."""
    root = metrics_dir() if root is None else Path(root)
    path = root / name / f"{name}.py"
    if path.is_file():
        return path
    names = available_metrics(root)
    if not names:
        raise ConfigError(f"no metric modules found under {root}: prefopt's evaluate metrics "
                          "need a source checkout (pip install -e .)")
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown metric '{name}'.{hint} Available: {', '.join(names)}")


def load_metric(name: str, root: Path | None = None, **load_kwargs):
    """`evaluate.load` of the prefopt metric `name`, offline and in memory.

    Sets HF_EVALUATE_OFFLINE / HF_HUB_OFFLINE / HF_DATASETS_OFFLINE to 1 unless the
    caller set them (evaluate reads them when first imported), and defaults to
    `keep_in_memory=True` so no Arrow cache files are written. Returns an
    `evaluate.EvaluationModule`.
    """
    path = metric_path(name, root)
    for var in OFFLINE_ENV:
        os.environ.setdefault(var, "1")
    import evaluate  # imported here so the offline variables are set first

    load_kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(str(path), **load_kwargs)
