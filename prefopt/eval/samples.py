"""Sampling for evaluation: responses of the policy and the reference, their log-probs, and
the ``samples.jsonl`` cache.

A model to evaluate is a full model directory, a PEFT adapter directory (merged into its
base once, ``prefopt.policy.load.resolve_model_path``), a hub id / ``world:NAME``, or a
best-of-n directory (``prefopt_policy.json``: sampled through
``prefopt.algorithms.best_of_n.best_of_n``). Rows are prompt-major: row r = i·k + s is sample
s of prompt i. The reference is sampled with the same seed as the policy.

Log-probs are taken on the policy's own sampled tokens (prompt masked, response up to and
including EOS) at the sampling temperature T, i.e. under π_T ∝ exp(logits / T), the
distribution the samples come from; the reference is scored on the same tokens at the same
T, so the KL is KL(π_T ‖ π_ref,T). With T = 1 that is the plain KL(π ‖ π_ref).
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from prefopt.data.records import PromptRecord
from prefopt.errors import ConfigError
from prefopt.policy import ModelConfig, Policy, SamplingConfig, load_policy
from prefopt.policy.logprobs import sequence_logprobs

SAMPLES_FILE = "samples.jsonl"
META_FILE = "samples.meta.json"
CACHE_VERSION = 1
COLUMNS = (("reference_responses", "reference_response"), ("logp_policy", "logp_policy"),
           ("logp_reference", "logp_reference"), ("token_logps", "token_logps"))
"""(Samples attribute, samples.jsonl column) of the optional generation columns."""


@dataclass
class Samples:
    """Responses to n prompts, k per prompt; row r = i·k + s (prompt-major)."""

    records: list[PromptRecord]
    k: int
    responses: list[str]
    reference_responses: list[str] | None = None
    logp_policy: list[float] | None = None
    """log π_T(y_r | x_r) = Σ_t log π_T(y_t | x, y_<t) over response tokens (EOS included)."""
    logp_reference: list[float] | None = None
    """log π_ref,T(y_r | x_r) of the policy's samples (same tokens)."""
    token_logps: list[list[float]] | None = None
    """Per-token log π_T of each response (for the entropy estimate)."""
    best_of_n: int | None = None
    """n when the policy is best-of-n (no log-probs; KL is the analytic bound)."""
    notes: dict[str, str] = field(default_factory=dict)
    """Why a generation-side quantity is missing (keyed by metric name)."""

    @property
    def prompt_index(self) -> np.ndarray:
        """(N,) prompt of each row."""
        return np.repeat(np.arange(len(self.records)), self.k)

    def row_records(self) -> list[PromptRecord]:
        return [r for r in self.records for _ in range(self.k)]


@dataclass
class BestOfNPolicy:
    """A best-of-n "model": the base policy, its reward source, n and temperature."""

    policy: Policy
    reward: object
    n: int
    temperature: float

    @property
    def tokenizer(self):
        return self.policy.tokenizer


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_plain_policy(path: str, dtype: str = "float32", device=None) -> Policy:
    """A frozen policy in eval mode from a model dir, an adapter dir, a hub id or world:NAME."""
    try:
        policy = load_policy(ModelConfig(path=str(path), mode="full", dtype=dtype))
    except OSError as e:  # transformers: neither a local directory nor a reachable hub id
        raise ConfigError(f"model '{path}': not a model, adapter or best-of-n directory, nor "
                          f"a reachable hub id ({e})") from None
    policy.model.to(device or default_device()).eval().requires_grad_(False)
    return policy


def load_eval_policy(model_dir: str, world=None, dtype: str = "float32", device=None):
    """A :class:`Policy`, or a :class:`BestOfNPolicy` for a ``prefopt_policy.json`` dir."""
    from prefopt.algorithms.best_of_n import POLICY_FILE, load_best_of_n

    if not (Path(model_dir) / POLICY_FILE).is_file():
        return load_plain_policy(model_dir, dtype, device)
    from prefopt.feedback.reward_sources import load_reward_source

    base, cfg = load_best_of_n(model_dir)
    reward = load_reward_source(cfg.reward, world, cfg.ensemble, cfg.ensemble_k,
                                device=device or default_device())
    return BestOfNPolicy(load_plain_policy(base, dtype, device), reward, cfg.n, cfg.temperature)


def sampling_config(temperature: float, max_new_tokens: int) -> SamplingConfig:
    """Temperature 0 means greedy decoding."""
    return SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature or 1.0,
                          do_sample=temperature > 0)


def sample_rows(model, rows: list[PromptRecord], spec) -> tuple[list[str], object]:
    """(texts, Rollout or None) for each row; seeded with ``spec.seed`` first.

    Best-of-n samples its n candidates at its own temperature (part of its definition) with
    the suite's token budget; it returns no rollout (its samples have no single π).
    """
    torch.manual_seed(spec.seed)
    if isinstance(model, BestOfNPolicy):
        from prefopt.algorithms.best_of_n import best_of_n

        cfg = sampling_config(model.temperature, spec.max_new_tokens)
        texts, _ = best_of_n(model.policy, rows, model.reward, model.n, cfg, spec.batch_size)
        return texts, None
    cfg = sampling_config(spec.temperature, spec.max_new_tokens)
    rollout = model.generate([r.prompt for r in rows], cfg, spec.batch_size)
    return rollout.texts, rollout


@torch.no_grad()
def rollout_logprobs(policy: Policy, rollout, temperature: float,
                     batch_size: int = 32) -> tuple[list[float], list[list[float]]]:
    """(Σ_t log π_T per row (N,), per-token log π_T of each row's response tokens)."""
    ids, mask = rollout.sequences()  # (N, P+R)
    completion = rollout.completion_mask()  # (N, P+R)
    seq: list[float] = []
    tokens: list[list[float]] = []
    for i in range(0, ids.shape[0], batch_size):
        c = completion[i:i + batch_size]
        t = policy.token_logprobs(ids[i:i + batch_size].to(policy.device),
                                  mask[i:i + batch_size].to(policy.device), temperature,
                                  where=c[:, 1:].to(policy.device)).float().cpu()  # (b, P+R-1)
        seq.extend(sequence_logprobs(t, c).tolist())
        tokens.extend(row[m].tolist() for row, m in zip(t, c[:, 1:].bool()))
    return seq, tokens


def same_tokenizer(a, b) -> bool:
    """True when token ids of ``a`` mean the same under ``b`` (vocab, EOS, chat template)."""
    return (a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id
            and a.chat_template == b.chat_template)


def _free_accelerator_memory() -> None:
    """Return a dropped model's memory to the GPU before the next model loads."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def generate_samples(model_dir: str, records: list[PromptRecord], spec, reference=None,
                     world=None, dtype: str = "float32", device=None) -> Samples:
    """Sample the policy (and the reference), then log π and log π_ref on the policy's
    samples. One model in memory at a time. ``spec``: an ``EvalSuite.sampling``."""
    rows = [r for r in records for _ in range(spec.samples_per_prompt)]
    policy = load_eval_policy(model_dir, world, dtype, device)
    texts, rollout = sample_rows(policy, rows, spec)
    s = Samples(records, spec.samples_per_prompt, texts)
    if isinstance(policy, BestOfNPolicy):
        s.best_of_n = policy.n
    elif spec.temperature > 0:
        s.logp_policy, s.token_logps = rollout_logprobs(policy, rollout, spec.temperature,
                                                        spec.batch_size)
    else:
        s.notes["kl"] = s.notes["entropy"] = "greedy decoding: responses are not samples of π"
    tokenizer = policy.tokenizer
    del policy  # one model in memory at a time
    _free_accelerator_memory()
    if reference:
        _add_reference(s, reference, rows, spec, rollout, tokenizer, world, dtype, device)
    return s


def _add_reference(s: Samples, reference, rows, spec, rollout, tokenizer, world, dtype,
                   device) -> None:
    ref = load_eval_policy(reference, world, dtype, device)
    s.reference_responses, _ = sample_rows(ref, rows, spec)
    if s.logp_policy is None:
        pass  # best-of-n or greedy policy: no KL to estimate (the note says why)
    elif isinstance(ref, BestOfNPolicy):
        s.notes["kl"] = "the reference is best-of-n: it has no log-probs"
    elif not same_tokenizer(tokenizer, ref.tokenizer):
        s.notes["kl"] = "the reference's tokenizer differs from the policy's"
    else:
        s.logp_reference, _ = rollout_logprobs(ref, rollout, spec.temperature, spec.batch_size)
    del ref
    _free_accelerator_memory()


# ---- cache -------------------------------------------------------------------------------
def write_atomic(path: str | Path, text: str) -> Path:
    """Write a file through a temporary file in the same directory and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fingerprint(path: str | None):
    """A model path and the (name, size, mtime) of the files directly in it."""
    if not path:
        return None
    p = Path(path)
    if not p.is_dir():
        return str(path)
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in p.iterdir()
                   if f.is_file())
    return [str(p.resolve()), files]


def cache_key(model_dir: str, reference: str | None, spec, dtype: str,
              records: list[PromptRecord]) -> str:
    """Hash of everything that determines the samples."""
    blob = {"version": CACHE_VERSION, "model": _fingerprint(model_dir),
            "reference": _fingerprint(reference), "sampling": asdict(spec), "dtype": dtype,
            "prompts": [[r.id, r.prompt] for r in records]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def sample_rows_json(s: Samples, scores: dict[str, list] | None = None) -> list[dict]:
    """One JSON object per row: prompt, responses, log-probs and any per-row scores."""
    rows = []
    for r, (rec, text) in enumerate(zip(s.row_records(), s.responses)):
        row = {"prompt_index": r // s.k, "sample": r % s.k, "id": rec.id,
               "family": rec.family, "prompt": rec.prompt, "response": text}
        for attr, name in COLUMNS:
            column = getattr(s, attr)
            if column is not None:
                row[name] = column[r]
        for name, column in (scores or {}).items():
            v = column[r]  # NaN (an unparseable judgement) → null: strict JSON
            row[name] = None if isinstance(v, float) and math.isnan(v) else v
        rows.append(row)
    return rows


def write_samples(out: str | Path, s: Samples, key: str,
                  scores: dict[str, list] | None = None) -> Path:
    """``OUT/samples.jsonl`` (one row per sample) and ``OUT/samples.meta.json`` (the key)."""
    out = Path(out)
    meta = {"key": key, "k": s.k, "best_of_n": s.best_of_n, "notes": s.notes}
    write_atomic(out / META_FILE, json.dumps(meta, indent=2))
    lines = [json.dumps(row, default=float) for row in sample_rows_json(s, scores)]
    return write_atomic(out / SAMPLES_FILE, "\n".join(lines) + "\n")


def read_samples(out: str | Path, records: list[PromptRecord], key: str) -> Samples | None:
    """The cached samples when ``OUT`` holds samples made with the same ``key``; else None."""
    out = Path(out)
    try:
        meta = json.loads((out / META_FILE).read_text())
        rows = [json.loads(line) for line in (out / SAMPLES_FILE).read_text().splitlines()
                if line.strip()]
    except (OSError, ValueError):
        return None
    if meta.get("key") != key or len(rows) != len(records) * meta["k"]:
        return None
    s = Samples(records, meta["k"], [row["response"] for row in rows],
                best_of_n=meta.get("best_of_n"), notes=meta.get("notes", {}))
    for attr, name in COLUMNS:
        if name in rows[0]:
            setattr(s, attr, [row[name] for row in rows])
    return s
