"""Where a run's records come from: files and datasets, or the embedded world.

``data.train`` / ``data.eval`` name a file (.jsonl, .json, .parquet), a saved ``datasets``
directory, or a world source (``world:demonstrations``, ``world:prompts``, ``world:pairs``,
``world:unpaired``). Every loader reports what it kept and skipped into ``ctx.reports``.
"""

from __future__ import annotations

from prefopt.data import loaders
from prefopt.data.records import Demonstration, PreferencePair, PromptRecord, UnpairedExample
from prefopt.errors import ConfigError

# Default sizes of world sources per preset: (train, eval).
WORLD_SIZES = {
    "tiny": {"demonstrations": (192, 32), "prompts": (64, 32), "pairs": (128, 32)},
    "default": {"demonstrations": (3000, 200), "prompts": (512, 200), "pairs": (1500, 200)},
}
WORLD_KINDS = ("demonstrations", "prompts", "pairs", "unpaired")


def _spec(ctx, which: str) -> str | None:
    return ctx.cfg.data.train if which == "train" else ctx.cfg.data.eval


def _world_kind(spec: str) -> str:
    kind = spec.split(":", 1)[1]
    if kind not in WORLD_KINDS:
        raise ConfigError(f"data source '{spec}': unknown world source; use one of "
                          + ", ".join(f"world:{k}" for k in WORLD_KINDS))
    return kind


def world_size(ctx, kind: str, which: str) -> int:
    data = ctx.cfg.data
    n = data.n_train if which == "train" else data.n_eval
    preset = ctx.cfg.world.preset if ctx.cfg.world else "default"
    return n or WORLD_SIZES[preset][kind][0 if which == "train" else 1]


def _split(which: str) -> str:
    return "train" if which == "train" else "validation"


def _world(ctx, spec: str):
    if ctx.world is None:
        raise ConfigError(f"data source '{spec}' needs a world; set world.name in the recipe")
    return ctx.world


def _file(ctx, spec, which, loader):
    stats = loaders.LoadStats()
    rows = loader(spec, ctx.cfg.data.split, on_error=ctx.cfg.data.on_error, stats=stats)
    ctx.reports[f"{which}/{spec}"] = {"read": stats.read, "kept": stats.kept,
                                      **{f"skipped/{k}": v for k, v in stats.skipped.items()}}
    return rows


def demonstrations(ctx, which: str = "train") -> list[Demonstration]:
    spec = _spec(ctx, which)
    if spec is None:
        return []
    if spec.startswith("world:"):
        kind = _world_kind(spec)
        if kind != "demonstrations":
            raise ConfigError(f"data.{which}: SFT needs demonstrations, got '{spec}'")
        n = world_size(ctx, kind, which)
        return _world(ctx, spec).demonstrations(_split(which), n, ctx.cfg.train.seed)
    return _file(ctx, spec, which, loaders.load_demonstrations)


def prompts(ctx, which: str = "train") -> list[PromptRecord]:
    spec = _spec(ctx, which)
    if spec is None:
        return []
    if spec.startswith("world:"):
        n = world_size(ctx, "prompts", which)
        return _world(ctx, spec).prompts(_split(which), n, ctx.cfg.train.seed)
    return _file(ctx, spec, which, loaders.load_prompts)


def pairs(ctx, which: str = "train", policy=None) -> list[PreferencePair]:
    """Preference pairs; world pairs are sampled from ``policy`` and labelled by annotators."""
    spec = _spec(ctx, which)
    if spec is None:
        return []
    if spec.startswith("world:"):
        from prefopt.feedback.pairs import world_pairs

        n = world_size(ctx, "pairs", which)
        return world_pairs(ctx, _world(ctx, spec), policy, _split(which), n)
    return _file(ctx, spec, which, loaders.load_preferences)


def unpaired(ctx, which: str = "train", policy=None) -> list[UnpairedExample]:
    """KTO rows; from preference pairs (chosen desirable, rejected not) when given pairs."""
    spec = _spec(ctx, which)
    if spec is None:
        return []
    if spec.startswith("world:") or _looks_like_pairs(spec):
        return [u for p in pairs(ctx, which, policy) for u in pair_to_unpaired(p)]
    return _file(ctx, spec, which, loaders.load_unpaired)


def _looks_like_pairs(spec: str) -> bool:
    try:
        _, row = next(loaders.load_rows(spec))
    except Exception:  # the real loader reports the problem with file/row/field
        return False
    return "chosen" in row and "rejected" in row


def pair_to_unpaired(p: PreferencePair) -> list[UnpairedExample]:
    """A hard pair gives one desirable and one undesirable example (Ethayarajh et al. 2024)."""
    return [UnpairedExample(p.prompt, p.chosen, True, f"{p.id}:chosen"),
            UnpairedExample(p.prompt, p.rejected, False, f"{p.id}:rejected")]


def prompts_for_probe(ctx, n: int) -> list[PromptRecord]:
    """Validation prompts for the training probe: the world's, else the eval prompts."""
    if ctx.world is not None:
        return ctx.world.prompts("validation", n, ctx.cfg.train.seed + 1)
    spec = ctx.cfg.data.eval or ctx.cfg.data.train
    rows = loaders.load_prompts(spec, ctx.cfg.data.split)
    return rows[:n]
