"""Batched sampling with left padding, EOS stopping and temperature."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prefopt.data.collate import collate_prompts

# Process-wide generation counters, read by ``prefopt run`` for the budget report.
GENERATED = {"prompts": 0, "tokens": 0}


@dataclass
class SamplingConfig:
    max_new_tokens: int = 48
    temperature: float = 0.7
    """Sampling temperature T. PPO divides the training logits by T as well."""
    top_p: float = 1.0
    do_sample: bool = True


@dataclass
class Rollout:
    """Prompts and sampled responses as token tensors.

    ``prompt_ids`` (B, P) is left-padded; ``response_ids`` (B, R) is right-padded with the
    pad token after the first EOS; ``response_mask`` (B, R) is 1 on response tokens up to and
    including the EOS. ``has_eos`` (B,) says whether the response stopped by itself.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    has_eos: torch.Tensor
    texts: list[str]

    def sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P+R) full token ids and attention mask."""
        ids = torch.cat([self.prompt_ids, self.response_ids], 1)
        return ids, torch.cat([self.prompt_mask, self.response_mask], 1)

    def completion_mask(self) -> torch.Tensor:
        """(B, P+R) mask of response tokens aligned with ``sequences()``."""
        return torch.cat([torch.zeros_like(self.prompt_mask), self.response_mask], 1)


def response_mask_after_eos(response_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor,
                                                                              torch.Tensor]:
    """Mask up to and including the first EOS; (mask (B, R), has_eos (B,))."""
    is_eos = response_ids == eos_id
    has_eos = is_eos.any(-1)
    first = torch.where(has_eos, is_eos.float().argmax(-1),
                        torch.full_like(has_eos, response_ids.shape[1], dtype=torch.long))
    positions = torch.arange(response_ids.shape[1]).unsqueeze(0)
    return (positions <= first.unsqueeze(1)).long(), has_eos


@torch.no_grad()
def sample(model, tokenizer, prompt_ids: list[list[int]], cfg: SamplingConfig) -> Rollout:
    """Sample one response per prompt with the KV cache (transformers ``generate``)."""
    batch = collate_prompts(prompt_ids, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    out = model.generate(
        **batch, max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
        temperature=cfg.temperature if cfg.do_sample else None,
        top_p=cfg.top_p if cfg.do_sample else None, top_k=0 if cfg.do_sample else None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    response = out[:, batch["input_ids"].shape[1]:].cpu()
    mask, has_eos = response_mask_after_eos(response, tokenizer.eos_token_id)
    response = torch.where(mask.bool(), response, torch.full_like(response,
                                                                  tokenizer.pad_token_id))
    GENERATED["prompts"] += response.shape[0]
    GENERATED["tokens"] += int(mask.sum())
    texts = [tokenizer.decode(r[m.bool() & (r != tokenizer.eos_token_id)],
                              skip_special_tokens=True).strip()
             for r, m in zip(response, mask)]
    return Rollout(batch["input_ids"].cpu(), batch["attention_mask"].cpu(), response, mask,
                   has_eos, texts)
