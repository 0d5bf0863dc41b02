"""Precomputed reference log-probs for offline pair data, cached on disk.

DPO's reference π_ref is fixed for the whole run (unless TR-DPO syncs it), so
log π_ref(y_w|x) and log π_ref(y_l|x) can be computed once for every pair, in one batched
no-grad pass, and the reference need not stay in memory: in full mode the frozen copy is
never created (the policy *is* the reference before its first step); under LoRA/QLoRA the
pass runs with the adapters disabled.

The cache is ``CACHE_DIR/<key>.safetensors`` with tensors ``chosen`` and ``rejected`` (N,),
in the order of the encoded pairs. The key is a SHA-256 over everything the numbers depend
on (``cache_key``): the model's files, the load mode and dtype, the tokenizer, the exact
token ids of every pair and ``max_length``. A matching file is loaded; anything else
recomputes. Files are written to a temporary name and renamed, so a reader never sees a
half-written cache and concurrent writers (several ranks) cannot corrupt it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from prefopt.data.batching import EncodedPair
from prefopt.data.collate import collate_pairs
from prefopt.policy.load import resolve_model_path
from prefopt.policy.logprobs import sequence_logprobs, token_logprobs
from prefopt.policy.policy import Policy

log = logging.getLogger(__name__)
CACHE_VERSION = 1
"""Bump when the cached quantity or its layout changes; old files then never match."""


def model_fingerprint(path: str) -> dict:
    """What identifies a model's weights without reading them all.

    Local directory: the resolved absolute path, a content hash of ``config.json`` and of any
    ``*.safetensors.index.json``, and (name, size, mtime_ns) of every ``*.safetensors`` file.
    Hub ids (no local directory): the id only.
    """
    resolved = Path(resolve_model_path(path))
    if not resolved.is_dir():
        return {"path": path}
    out: dict = {"path": str(resolved.resolve())}
    for f in sorted(resolved.iterdir()):
        if f.name == "config.json" or f.name.endswith(".safetensors.index.json"):
            out[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()
        elif f.suffix == ".safetensors":
            st = f.stat()
            out[f.name] = [st.st_size, st.st_mtime_ns]
    return out


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of the vocabulary, the special tokens and the chat template."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    h.update(str(tokenizer.chat_template).encode())
    return h.hexdigest()


def data_fingerprint(pairs: Sequence[EncodedPair]) -> str:
    """SHA-256 of the token ids and completion masks of every pair, in order."""
    h = hashlib.sha256()
    for p in pairs:
        for enc in (p.chosen, p.rejected):
            h.update(json.dumps([enc.input_ids, enc.completion_mask]).encode())
    return h.hexdigest()


def cache_key(policy: Policy, pairs: Sequence[EncodedPair], max_length: int) -> str:
    """Hex key of (model files, mode, dtype, tokenizer, tokenized data, max_length)."""
    cfg = policy.cfg
    parts = {"version": CACHE_VERSION, "model": model_fingerprint(cfg.path), "mode": cfg.mode,
             "dtype": cfg.dtype, "tokenizer": tokenizer_fingerprint(policy.tokenizer),
             "data": data_fingerprint(pairs), "n": len(pairs), "max_length": max_length}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


@torch.no_grad()
def compute_reference_logps(policy: Policy, pairs: Sequence[EncodedPair],
                            batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π_ref(y_w|x), log π_ref(y_l|x)), (N,) each, float32 on the CPU.

    Full mode uses the policy's own weights (call this before training changes them), so
    no frozen copy is made; LoRA/QLoRA disable the adapters. One concatenated forward per
    batch: rows 0..b-1 chosen, b..2b-1 rejected. The model's train/eval mode is left as it
    is (dropout is off in prefopt models; bitsandbytes picks other CPU kernels in eval mode,
    which would make cached and live 4-bit reference log-probs differ).
    """
    pad = policy.tokenizer.pad_token_id
    chosen, rejected = [], []
    for i in range(0, len(pairs), batch_size):
        rows = pairs[i:i + batch_size]
        batch = collate_pairs([p.chosen for p in rows], [p.rejected for p in rows], pad)
        dev = {k: batch[k].to(policy.device)
               for k in ("input_ids", "attention_mask", "completion_mask")}
        args = (dev["input_ids"], dev["attention_mask"])
        where = dev["completion_mask"][:, 1:]
        if policy.uses_adapters:
            with policy.reference() as ref:
                t = token_logprobs(ref, *args, where=where)
        else:
            t = token_logprobs(policy.model, *args, where=where)
        s = sequence_logprobs(t, dev["completion_mask"]).float().cpu()
        chosen.append(s[:len(rows)])  # (b,)
        rejected.append(s[len(rows):])  # (b,)
    empty = torch.zeros(0)
    return torch.cat(chosen) if chosen else empty, torch.cat(rejected) if rejected else empty


def _write_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_or_compute(policy: Policy, pairs: Sequence[EncodedPair], cache_dir: str | Path,
                    max_length: int, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference log-probs of ``pairs`` from ``cache_dir`` when the key matches, else
    computed with ``compute_reference_logps`` and written there. (N,), (N,)."""
    key = cache_key(policy, pairs, max_length)
    path = Path(cache_dir) / f"{key}.safetensors"
    if path.is_file():
        try:
            t = load_file(str(path))
            if t["chosen"].shape == (len(pairs),) and t["rejected"].shape == (len(pairs),):
                log.info("reference log-probs: loaded %d pairs from %s", len(pairs), path)
                return t["chosen"], t["rejected"]
        except Exception as e:  # unreadable or foreign file: recompute and overwrite
            log.warning("reference cache %s unreadable (%s); recomputing", path, e)
    chosen, rejected = compute_reference_logps(policy, pairs, batch_size)
    _write_atomic(path, {"chosen": chosen.contiguous(), "rejected": rejected.contiguous()},
                  {"key": key, "model": policy.cfg.path, "n": str(len(pairs))})
    log.info("reference log-probs: computed %d pairs, cached in %s", len(pairs), path)
    return chosen, rejected
