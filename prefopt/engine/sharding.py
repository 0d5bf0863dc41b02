"""Parameter sharding with FSDP2 (``train.sharding: fsdp``).

``torch.distributed.fsdp.fully_shard`` turns a module into an FSDP *unit*: its parameters
become dim-0 shards (DTensors, 1/N of the elements on each of N processes), a forward
pre-hook all-gathers them and a post-hook frees them again, and after the backward pass
the gradients are reduce-scattered so each process keeps the gradient of its own shard.
Optimizer state follows the parameters, so weights, gradients and AdamW moments all cost
1/N per process. FSDP2 keeps module identity (no wrapper class around the model): the
modules and parameter names prefopt already uses stay where they are.

What becomes a unit (``shard_model``), and why:

- every decoder block (the ``nn.ModuleList`` whose children are the model's
  ``_no_split_modules`` classes): one block's full weights exist at a time;
- the backbone body and the LM head, each on its own: prefopt calls them directly (chunked
  log-probs run the body once, then the head on a few positions; the scalar models run the
  body only), and only a unit's own forward triggers its all-gather;
- with tied input/output embeddings the body and head share one weight, which cannot live
  in two units: the whole causal LM is then one unit around its blocks, and prefopt takes
  the plain ``model(...)`` forward (``direct_calls_ok``);
- any other child holding parameters (a scalar head), then the root, which owns nothing
  but ties the units together (one backward callback, shared communication state).

Gradients are *summed* across processes (``set_gradient_divide_factor(1.0)`` with plain
``SUM`` collectives, which gloo has too), not
averaged: the engine already back-propagates ``loss · w / W`` with W the weight of the
global batch (prefopt.engine.distributed), so the sum is the gradient of the global mean,
exactly as with the engine's own all-reduce, which skips sharded parameters.

Every FSDP forward and backward is a collective: all processes must run the same number
of them, in the same order. Generation is the exception (ranks decode prompts of their
own, for different numbers of steps), so it runs inside ``gathered``: every unit is
all-gathered once and kept whole until the end.

Checkpoints keep today's format (full tensors): ``full_tensor`` gathers a parameter,
``full_optimizer_state`` the AdamW moments, ``load_full`` and ``shard_optimizer_state``
cut them back into this process's shards. Nothing here issues a collective, or even
imports FSDP, for a model that is not sharded.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from prefopt.errors import ConfigError

_RESHARD = "_prefopt_reshard_after_forward"
"""Attribute holding each unit's own reshard-after-forward setting, restored after
``gathered`` (the root keeps its parameters after forward, the other units free them)."""


def _fsdp_module_cls():
    """FSDPModule, or None while torch.distributed.fsdp is not imported (then nothing can
    be sharded, and the checks below need no import)."""
    mod = sys.modules.get("torch.distributed.fsdp")
    return getattr(mod, "FSDPModule", None)


def is_unit(module) -> bool:
    cls = _fsdp_module_cls()
    return cls is not None and isinstance(module, cls)


def is_sharded(model: nn.Module) -> bool:
    """True when ``model`` or one of its sub-modules is an FSDP unit."""
    return _fsdp_module_cls() is not None and any(is_unit(m) for m in model.modules())


def is_dtensor(t) -> bool:
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(t, mod.DTensor)


# ---- which modules become units ------------------------------------------------------
@dataclass
class CausalPlan:
    """The units of one causal LM: its decoder ``blocks``, its ``body`` and ``head``
    (separate units unless ``tied``, when the causal LM itself is the unit)."""

    causal: nn.Module
    blocks: list[nn.Module]
    body: nn.Module
    head: nn.Module
    tied: bool


def causal_lms(model: nn.Module) -> list[nn.Module]:
    """The outermost transformers causal LMs inside ``model`` (PEFT wrappers, a scalar
    model's backbone): the modules with a body under ``base_model_prefix`` and an LM head."""
    found: list[nn.Module] = []
    for m in model.modules():
        if any(m is f or _contains(f, m) for f in found):
            continue
        # Class attributes and direct children only: PEFT wrappers forward unknown
        # attributes to the model inside, and would pass for a causal LM themselves.
        prefix = getattr(type(m), "base_model_prefix", None)
        if (prefix and isinstance(m._modules.get(prefix), nn.Module)
                and hasattr(type(m), "get_output_embeddings")
                and m.get_output_embeddings() is not None):
            found.append(m)
    return found


def _contains(outer: nn.Module, inner: nn.Module) -> bool:
    return any(m is inner for m in outer.modules())


def decoder_blocks(causal: nn.Module) -> list[nn.Module]:
    """The decoder blocks: children of the ``nn.ModuleList`` in the body whose members are
    all of the model's ``_no_split_modules`` classes (the blocks transformers never splits
    across devices); without that list, the longest ModuleList of the body."""
    body = getattr(causal, causal.base_model_prefix)
    names = set(getattr(causal, "_no_split_modules", None) or [])
    lists = [m for m in body.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    named = [ml for ml in lists if names and all(type(b).__name__ in names for b in ml)]
    chosen = named or sorted(lists, key=len, reverse=True)[:1]
    if not chosen:
        raise ConfigError(f"train.sharding=fsdp: no list of decoder blocks found in "
                          f"{type(causal).__name__}; cannot shard it")
    return [b for ml in chosen for b in ml]


def plan(causal: nn.Module) -> CausalPlan:
    body = getattr(causal, causal.base_model_prefix)
    head = causal.get_output_embeddings()
    emb = causal.get_input_embeddings()
    tied = any(p is q for p in head.parameters() for q in emb.parameters())
    return CausalPlan(causal, decoder_blocks(causal), body, head, tied)


def direct_calls_ok(causal: nn.Module) -> bool:
    """Whether prefopt may call the body and the LM head of ``causal`` on their own: always
    for an unsharded model; under FSDP only when each is a unit (untied embeddings)."""
    if not is_sharded(causal):
        return True
    p = plan(causal)
    return is_unit(p.body) and is_unit(p.head)


# ---- sharding ------------------------------------------------------------------------
def make_mesh(device: torch.device):
    """A 1-D mesh over every process (gloo on CPU, NCCL on GPU: the default group's)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (dist.get_world_size(),))


def shard_model(model: nn.Module, mesh, reshard_after_forward: bool = True) -> list[str]:
    """Make ``model`` an FSDP2 root with the units described in the module docstring;
    returns the units' names in module order (``""``, the root, first).

    Sums gradients across processes instead of averaging them, and initialises the root
    at once (FSDP otherwise makes the first unit that runs forward the root, which would
    be the body when prefopt calls it directly)."""
    from torch.distributed.fsdp import fully_shard

    def unit(m: nn.Module, reshard: bool) -> None:
        fully_shard(m, mesh=mesh, reshard_after_forward=reshard)
        setattr(m, _RESHARD, reshard)

    for p in (plan(c) for c in causal_lms(model)):
        for block in p.blocks:
            unit(block, reshard_after_forward)
        if p.tied:
            unit(p.causal, reshard_after_forward)
        else:
            unit(p.body, reshard_after_forward)
            unit(p.head, reshard_after_forward)
    _shard_leftovers(model, unit, reshard_after_forward)
    if not is_unit(model):
        unit(model, False)  # the root keeps its (few) parameters for the backward pass
    named = [(n, m) for n, m in model.named_modules() if is_unit(m)]
    for _, m in named:
        m.set_gradient_divide_factor(1.0)
        m.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no PREMUL_SUM)
    model._get_fsdp_state()._lazy_init()  # no public API: see the docstring
    return [n for n, _ in named]


def _shard_leftovers(module: nn.Module, unit, reshard: bool) -> None:
    """Children owning parameters outside every unit (a scalar head) become units, so a
    direct call to them gathers their weights as well. A unit manages its whole subtree
    (but for the units inside it): the search stops there."""
    if is_unit(module):
        return
    for child in module.children():
        if any(is_unit(m) for m in child.modules()):
            _shard_leftovers(child, unit, reshard)
        elif any(True for _ in child.parameters()):
            unit(child, reshard)


def shard_models(models: list[nn.Module], device: torch.device,
                 reshard_after_forward: bool = True) -> dict[int, list[str]]:
    """Shard every model (trainable ones and frozen reference copies) over all processes;
    {index: unit names}. Rank 0's trainable values are broadcast first, so the shards are
    cut from identical replicas whatever each process's initialisation did."""
    from prefopt.engine.distributed import broadcast_parameters

    mesh = make_mesh(device)
    out = {}
    for i, model in enumerate(models):
        if is_sharded(model):
            continue  # the same module listed twice
        broadcast_parameters([p for p in model.parameters() if p.requires_grad])
        out[i] = shard_model(model, mesh, reshard_after_forward)
    return out


def units(models) -> list[nn.Module]:
    return [m for model in models for m in model.modules() if is_unit(m)]


@contextmanager
def gathered(*models: nn.Module):
    """Inside, every unit of ``models`` holds its full parameters and keeps them through
    any number of forwards: one all-gather per unit on entry (every process must enter
    together), none inside, so processes may then run different numbers of forwards
    (generation with different lengths, or one process alone). Nested use and unsharded
    models are no-ops. Parameters are resharded on exit. DeepSpeed ZeRO-3 parameters are
    gathered and pinned the same way (``zero.gathered``)."""
    from prefopt.engine import zero

    todo = [u for u in units(models) if not getattr(u, "_prefopt_gathered", False)]
    for u in todo:
        u.unshard()
    for u in todo:
        u.set_reshard_after_forward(False, recurse=False)
        u._prefopt_gathered = True
    try:
        with zero.gathered(*models):
            yield
    finally:
        for u in todo:
            u.set_reshard_after_forward(getattr(u, _RESHARD, True), recurse=False)
            u.reshard()
            u._prefopt_gathered = False


def gathered_state_dict(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The full state dict of a sharded model inside ``gathered`` (the keys of
    ``model.state_dict()``), or None for an unsharded model (callers then use their usual
    save). ``state_dict()`` itself would return shards: FSDP reshards in its pre-hook.
    The tensors are the gathered storage itself, freed when ``gathered`` exits: use them
    inside it only."""
    if not is_sharded(model):
        return None
    if not all(getattr(u, "_prefopt_gathered", False) for u in units([model])):
        raise RuntimeError("gathered_state_dict needs the model inside sharding.gathered")
    out: dict[str, torch.Tensor] = {}
    for prefix, m in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        for name, p in m._parameters.items():
            if p is not None:
                out[dot + name] = p.detach()
        for name, b in m._buffers.items():
            if b is not None and name not in m._non_persistent_buffers_set:
                out[dot + name] = b.detach()
    return out


# ---- gradients -----------------------------------------------------------------------
def total_norm_float(norm) -> float:
    """A gradient norm as a float, the same on every process (a DTensor norm is reduced)."""
    return float(norm.full_tensor() if is_dtensor(norm) else norm)


# ---- checkpoints: full tensors out, shards back in -----------------------------------
def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor (an all-gather for a DTensor shard: every process must call it)."""
    return t.full_tensor() if is_dtensor(t) else t


def full_optimizer_state(optimizer) -> dict:
    """``optimizer.state_dict()`` with every sharded tensor gathered whole: the file format
    of an unsharded run (integer parameter ids, full moments). Collective when sharded."""
    state = optimizer.state_dict()
    state["state"] = {i: {k: full_tensor(v).cpu() if is_dtensor(v) else v
                          for k, v in s.items()}
                      for i, s in state["state"].items()}
    return state


def load_full(param: torch.Tensor, value: torch.Tensor) -> None:
    """Copy a full tensor into a parameter, or into this process's shard of it (no
    collective: every process holds ``value`` and keeps its own slice)."""
    with torch.no_grad():
        param.copy_(_like(value, param))


def _like(value: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if not is_dtensor(ref):
        return value
    from torch.distributed.tensor import distribute_tensor

    value = value.detach().to(device=ref.device, dtype=ref.dtype)
    return distribute_tensor(value, ref.device_mesh, ref.placements, src_data_rank=None)


def shard_optimizer_state(state: dict, optimizer) -> dict:
    """A full optimizer state dict with every tensor shaped like its sharded parameter
    (the AdamW moments) cut into this process's shard; scalars such as ``step`` stay.
    Parameter ids are the positions in ``optimizer.param_groups``, as in ``state_dict``."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    out = dict(state)
    out["state"] = {i: {k: _like(v, params[int(i)])
                        if isinstance(v, torch.Tensor) and v.shape == params[int(i)].shape
                        and v.dim() > 0 else v
                        for k, v in s.items()}
                    for i, s in state["state"].items()}
    return out
