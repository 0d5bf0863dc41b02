"""The critic/judge interface and its local Hugging Face implementation.

A :class:`ChatBackend` answers chat conversations: ``generate`` samples replies (critiques,
revisions, chain-of-thought judgements) and ``choice_logprobs`` scores fixed replies such as
"(A)" and "(B)" for soft labels (Bai et al. 2022, sec. 4.1). ``LocalHFBackend`` wraps any
causal LM; ``prefopt.algorithms.cai.http_backend.OpenAIChatBackend`` talks to a server.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch

from prefopt.data.records import Messages


@runtime_checkable
class ChatBackend(Protocol):
    """Something that can answer chat conversations."""

    def generate(self, conversations: list[Messages], max_new_tokens: int,
                 temperature: float) -> list[str]:
        """One assistant reply per conversation (greedy at temperature 0)."""
        ...

    def choice_logprobs(self, conversations: list[Messages],
                        choices: Sequence[str]) -> list[list[float] | None]:
        """log-prob of each choice string as the assistant's reply; None where the backend
        cannot give log-probs"""
        ...


def cut_at_eos(ids: list[int], eos_ids: set[int]) -> list[int]:
    """The tokens before the first EOS (all of them when there is none)."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[:i]
    return ids


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """model.eval() for the block, then the caller's train/eval mode back."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class LocalHFBackend:
    """A Hugging Face causal LM as a :class:`ChatBackend`.

    Prompts are rendered with ``tokenizer.apply_chat_template(conv,
    add_generation_prompt=True, tokenize=False)`` and tokenized without extra special
    tokens (the template carries them). Generation batches with left padding.
    """

    def __init__(self, model, tokenizer, batch_size: int = 8,
                 device: str | torch.device | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.device = torch.device(device) if device is not None else next(
            model.parameters()).device
        eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    def render(self, conversation: Messages) -> str:
        """The prompt text whose continuation is the next assistant turn."""
        return self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True,
                                                  tokenize=False)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) input ids and attention mask, padded on the left."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def generate(self, conversations: list[Messages], max_new_tokens: int,
                 temperature: float) -> list[str]:
        """One reply per conversation: new tokens only, cut at the first EOS."""
        sample = temperature > 0
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=sample, pad_token_id=self.pad_id,
                      eos_token_id=sorted(self.eos_ids) or None)
        if sample:
            kwargs.update(temperature=temperature, top_p=1.0, top_k=0)
        out: list[str] = []
        with _eval_mode(self.model):
            for i in range(0, len(conversations), self.batch_size):
                seqs = [self._encode(self.render(c))
                        for c in conversations[i:i + self.batch_size]]
                ids, mask = self._left_pad(seqs)
                gen = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
                for row in gen[:, ids.shape[1]:].tolist():   # (B, T_new)
                    out.append(self.tokenizer.decode(cut_at_eos(row, self.eos_ids),
                                                     skip_special_tokens=True))
        return out

    def _choice_sequences(self, conversations: list[Messages],
                          choices: Sequence[str]) -> list[tuple[list[int], int]]:
        """(tokens of prompt + choice, index of the first choice token) per (conv, choice).

        Prompt and choice are tokenized together; the choice starts where that encoding
        leaves the prompt's own encoding (a token merged across the boundary is scored).
        """
        seqs = []
        for conv in conversations:
            prompt = self.render(conv)
            ctx = self._encode(prompt)
            for choice in choices:
                full = self._encode(prompt + choice)
                start = common_prefix_len(ctx, full)
                if start == len(full) or start == 0:
                    raise ValueError(f"choice {choice!r} adds no token after the prompt "
                                     "or the prompt is empty")
                seqs.append((full, start))
        return seqs

    @torch.no_grad()
    def _score(self, batch: list[tuple[list[int], int]]) -> list[float]:
        """Σ_t log p(y_t | y_<t) over the choice tokens of each right-padded sequence."""
        width = max(len(s) for s, _ in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (s, _) in enumerate(batch):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        logits = self.model(input_ids=ids.to(self.device),
                            attention_mask=mask.to(self.device)).logits   # (B, T, V)
        scores = []
        for i, (s, start) in enumerate(batch):
            # logits at t predict token t+1: rows start-1 .. len-2 predict the choice tokens
            rows = logits[i, start - 1:len(s) - 1].float().log_softmax(-1)   # (k, V)
            target = torch.tensor(s[start:], device=rows.device)[:, None]   # (k, 1)
            scores.append(rows.gather(1, target).sum().item())
        return scores

    def choice_logprobs(self, conversations: list[Messages],
                        choices: Sequence[str]) -> list[list[float] | None]:
        """log p(choice | rendered prompt) for every choice: the sum of its token log-probs.

        Equivalent to gather(log_softmax(model(prompt + choice).logits)) over the choice
        tokens; only the choice positions get a log-softmax.
        """
        seqs = self._choice_sequences(conversations, choices)
        flat: list[float] = []
        with _eval_mode(self.model):
            for i in range(0, len(seqs), self.batch_size):
                flat += self._score(seqs[i:i + self.batch_size])
        k = len(choices)
        return [flat[j * k:(j + 1) * k] for j in range(len(conversations))]
