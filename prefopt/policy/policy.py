"""The policy: a causal LM (full, LoRA or QLoRA) with its tokenizer and its reference.

Under LoRA/QLoRA the reference policy is the same base with the adapters disabled, so one
model in memory serves both. In full mode the reference is a frozen copy made on first use
(the algorithms make it at build time, so under FSDP it exists before sharding and is
sharded with the policy: ``frozen_models``).
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from pathlib import Path

import torch

from prefopt.data.records import Messages
from prefopt.data.tokenize import encode_prompt
from prefopt.errors import TrainingError
from prefopt.policy.generate import Rollout, SamplingConfig, sample
from prefopt.policy.load import ModelConfig, add_adapter, load_causal_lm, load_tokenizer
from prefopt.policy.logprobs import sequence_logprobs, token_logprobs


class Policy:
    def __init__(self, model, tokenizer, cfg: ModelConfig):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self._frozen_ref = None

    @property
    def uses_adapters(self) -> bool:
        return self.cfg.mode in ("lora", "qlora")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def frozen_models(self) -> list[torch.nn.Module]:
        """The full-mode reference copy, once made (sharded with the policy under FSDP)."""
        return [self._frozen_ref] if self._frozen_ref is not None else []

    # ---- log-probs -------------------------------------------------------------------
    def token_logprobs(self, input_ids, attention_mask, temperature: float = 1.0, model=None,
                       where=None):
        """(B, T) -> (B, T-1) log-probs of each next token under the policy; with ``where``
        (B, T-1) only those positions are computed and the rest are 0."""
        return token_logprobs(model or self.model, input_ids, attention_mask, temperature,
                              where=where)

    def sequence_logprobs(self, batch: dict, temperature: float = 1.0) -> tuple[torch.Tensor,
                                                                                  torch.Tensor]:
        """(Σ completion log-probs (B,), per-token log-probs (B, T-1)) for a collated batch."""
        mask = batch["completion_mask"]
        t = self.token_logprobs(batch["input_ids"], batch["attention_mask"], temperature,
                                where=mask[:, 1:])
        return sequence_logprobs(t, mask), t

    @contextmanager
    def reference(self):
        """Yield the reference model: adapters disabled (LoRA/QLoRA) or a frozen copy."""
        if self.uses_adapters:
            with self.model.disable_adapter(), torch.no_grad():
                yield self.model
            return
        if self._frozen_ref is None:
            if _sharded(self.model):
                raise TrainingError(
                    "train.sharding=fsdp: the full-mode reference copy must be made before "
                    "sharding (a sharded model cannot be copied); take the reference at build "
                    "time (`policy.freeze_reference()`), or use LoRA or a precomputed "
                    "reference (dpo.reference: precomputed)")
            self._frozen_ref = copy.deepcopy(self.model).eval().requires_grad_(False)
        with torch.no_grad():
            yield self._frozen_ref

    def freeze_reference(self) -> None:
        """Full mode: copy π_ref from the current weights now (before any update or a resume
        loads new ones, and before FSDP shards the policy). LoRA/QLoRA: nothing to do."""
        if not self.uses_adapters:
            with self.reference():
                pass

    @torch.no_grad()
    def reference_token_logprobs(self, input_ids, attention_mask, temperature: float = 1.0,
                                 where=None):
        with self.reference() as ref:
            return token_logprobs(ref, input_ids, attention_mask, temperature, where=where)

    def sync_reference(self, alpha: float = 1.0) -> None:
        """π_ref ← α·π_θ + (1−α)·π_ref (TR-DPO, Gorbatovski et al. 2024). Full mode only."""
        if self.uses_adapters:
            raise ValueError("reference sync needs mode=full (the LoRA reference is the base)")
        from prefopt.engine.zero import drop_whole_copy, local_tensor

        with self.reference() as ref, torch.no_grad():  # shard by shard when sharded
            for p_ref, p in zip(ref.parameters(), self.model.parameters()):
                local_tensor(p_ref).mul_(1 - alpha).add_(local_tensor(p).detach(), alpha=alpha)
                drop_whole_copy(p_ref)

    # ---- generation ------------------------------------------------------------------
    def encode_prompts(self, prompts: list[Messages]) -> list[list[int]]:
        return [encode_prompt(self.tokenizer, p) for p in prompts]

    def generate(self, prompts: list[Messages], cfg: SamplingConfig | None = None,
                 batch_size: int = 32) -> Rollout:
        """Sample one response per prompt; batched, left-padded, stopping at EOS.

        Under FSDP the weights are gathered once for the whole call (every process calls
        ``generate`` together), so processes may then decode different prompts for
        different numbers of steps with no collective in between."""
        from prefopt.engine.sharding import gathered

        cfg = cfg or SamplingConfig()
        ids = self.encode_prompts(prompts)
        was_training = self.model.training
        self.model.eval()
        with gathered(self.model):
            parts = [sample(self.model, self.tokenizer, ids[i:i + batch_size], cfg)
                     for i in range(0, len(ids), batch_size)]
        self.model.train(was_training)
        return concat_rollouts(parts, self.tokenizer.pad_token_id)

    # ---- save ------------------------------------------------------------------------
    def save(self, out_dir: str | Path, merged: bool = False) -> Path:
        """Save as a PEFT adapter directory (lora/qlora) or a transformers model (full).

        ``merged=True`` folds LoRA adapters into full-precision weights, loadable by
        plain transformers (not available for 4-bit bases). A sharded model is saved whole
        from inside ``sharding.gathered`` (``prefopt.run.save_final``).
        """
        from prefopt.engine.sharding import gathered_state_dict
        from prefopt.engine.zero import any_partitioned

        out = Path(out_dir)
        model = self.model
        state = gathered_state_dict(model)  # None unless sharded
        if merged and self.uses_adapters:
            if self.cfg.mode == "qlora":
                raise ValueError("cannot merge adapters into a 4-bit base; export the adapter")
            if state is not None or any_partitioned([model]):
                raise ValueError("cannot merge adapters of a sharded model; save the adapter")
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(out, safe_serialization=True, state_dict=state)
        self.tokenizer.save_pretrained(out)
        meta = {"mode": "full" if merged else self.cfg.mode, "base": self.cfg.path}
        (out / "prefopt_model.json").write_text(json.dumps(meta, indent=2))
        return out


def _sharded(model) -> bool:
    from prefopt.engine.sharding import is_sharded

    return is_sharded(model)


def concat_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """Join rollouts of several generation batches, re-padding to common widths."""
    if len(parts) == 1:
        return parts[0]

    def cat(tensors, left):
        width = max(t.shape[1] for t in tensors)
        padded = []
        for t in tensors:
            pad = torch.full((t.shape[0], width - t.shape[1]), 0, dtype=t.dtype)
            padded.append(torch.cat([pad, t] if left else [t, pad], 1))
        return torch.cat(padded)

    def cat_ids(tensors, left):
        out = cat([t + 1 for t in tensors], left) - 1  # pad with -1, then with pad_id
        return torch.where(out < 0, torch.full_like(out, pad_id), out)

    return Rollout(
        cat_ids([p.prompt_ids for p in parts], left=True),
        cat([p.prompt_mask for p in parts], left=True),
        cat_ids([p.response_ids for p in parts], left=False),
        cat([p.response_mask for p in parts], left=False),
        torch.cat([p.has_eos for p in parts]),
        [t for p in parts for t in p.texts],
    )


def load_policy(cfg: ModelConfig) -> Policy:
    """Tokenizer + model in the configured mode, adapters attached, dropout off."""
    tokenizer = load_tokenizer(cfg.path, cfg.trust_remote_code)
    model = add_adapter(load_causal_lm(cfg, tokenizer), cfg)
    return Policy(model, tokenizer, cfg)
