"""Per-token log-probs of the next token, without a full-vocabulary log-softmax copy.

``token_logprobs`` runs the backbone once, then applies the LM head and the selective
log-softmax in chunks of rows, so only ``chunk`` rows of (T, V) logits exist at a time.
With ``recompute=True`` each chunk is checkpointed and its logits are recomputed in the
backward pass instead of being stored. The result equals
``log_softmax(model(x).logits / temperature).gather(-1, next_tokens)`` (the naive reference,
``naive_token_logprobs``), which the tests check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[..., index] as logit[index] - logsumexp(logits). (…, V) -> (…)."""
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    # Low precision: logsumexp in bf16 loses too much, so go row by row in fp32.
    return torch.stack([
        F.log_softmax(row.float(), -1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        for row, idx in zip(logits, index)
    ])


def unwrap_causal_lm(model):
    """The transformers *ForCausalLM inside a PeftModel / DDP wrapper."""
    while hasattr(model, "module"):  # DDP / accelerate wrappers
        model = model.module
    if hasattr(model, "get_base_model"):  # peft
        model = model.get_base_model()
    return model


def backbone_and_head(model):
    """(backbone, lm_head) of a causal LM, or None when the split is not standard or may
    not be called part by part (FSDP with tied embeddings: prefopt.engine.sharding)."""
    from prefopt.engine.sharding import direct_calls_ok

    causal = unwrap_causal_lm(model)
    prefix = getattr(causal, "base_model_prefix", None)
    backbone = getattr(causal, prefix, None) if prefix else None
    head = causal.get_output_embeddings() if hasattr(causal, "get_output_embeddings") else None
    if (backbone is None or head is None or _has_logit_postprocessing(causal)
            or not direct_calls_ok(causal)):
        return None
    return backbone, head


def _has_logit_postprocessing(causal) -> bool:
    cfg = causal.config
    return bool(getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None))


def _chunk_logprobs(head, hidden, targets, temperature):
    logits = head(hidden).float() / temperature  # (c, T-1, V)
    return selective_log_softmax(logits, targets)


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   temperature: float = 1.0, chunk: int = 4,
                   recompute: bool = False, where: torch.Tensor | None = None) -> torch.Tensor:
    """log π(x_{t+1} | x_{≤t}) for t = 0..T-2. (B, T) -> (B, T-1).

    ``where`` (B, T-1), optional: the positions whose log-prob is needed (e.g. the
    completion mask shifted by one). The LM head then runs only on those positions, and the
    others are 0 — on a prompt-heavy batch or a large vocabulary most of the head's FLOPs
    and memory go away. Without it every position is computed.
    """
    position_ids = position_ids_from_mask(attention_mask)
    split = backbone_and_head(model)
    is_wrapped = hasattr(model, "module")  # DDP must see its own forward for gradient sync
    if split is None or is_wrapped:
        out = naive_token_logprobs(model, input_ids, attention_mask, temperature)
        return out if where is None else out.masked_fill(~where.bool(), 0.0)
    backbone, head = split
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids).last_hidden_state[:, :-1]  # (B, T-1, H)
    targets = input_ids[:, 1:]
    if where is not None:
        return _selected_logprobs(head, hidden, targets, where.bool(), temperature,
                                  chunk * targets.shape[1], recompute)
    out = []
    for i in range(0, input_ids.shape[0], chunk):
        h, y = hidden[i:i + chunk], targets[i:i + chunk]
        if recompute and torch.is_grad_enabled():
            out.append(checkpoint(_chunk_logprobs, head, h, y, temperature, use_reentrant=False))
        else:
            out.append(_chunk_logprobs(head, h, y, temperature))
    return torch.cat(out)


def _selected_logprobs(head, hidden, targets, where, temperature, chunk_tokens, recompute):
    """The head and selective log-softmax on the N selected positions only, ``chunk_tokens``
    at a time; scattered back into zeros. hidden (B, T-1, H), where (B, T-1) -> (B, T-1)."""
    h, y = hidden[where], targets[where]  # (N, H), (N,)
    parts = []
    for i in range(0, h.shape[0], max(chunk_tokens, 1)):
        args = (head, h[i:i + chunk_tokens], y[i:i + chunk_tokens], temperature)
        if recompute and torch.is_grad_enabled():
            parts.append(checkpoint(_chunk_logprobs, *args, use_reentrant=False))
        else:
            parts.append(_chunk_logprobs(*args))
    picked = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    out = torch.zeros(targets.shape, dtype=picked.dtype, device=hidden.device)
    return out.masked_scatter(where, picked)


def naive_token_logprobs(model, input_ids, attention_mask, temperature: float = 1.0):
    """Reference implementation: full logits, full log-softmax, gather. (B, T) -> (B, T-1)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids_from_mask(attention_mask)).logits
    logp = F.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    return logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def sequence_logprobs(token_logps: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Σ_t log π over completion tokens. token_logps (B, T-1), completion_mask (B, T) -> (B,)."""
    return (token_logps * completion_mask[:, 1:].to(token_logps.dtype)).sum(-1)
