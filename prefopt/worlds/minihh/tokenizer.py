"""A word-level tokenizer for the minihh world, built offline with ``tokenizers``.

Pre-tokenization: spaces become a "▁" prefix on the next word (Metaspace, as SentencePiece
does), newlines and punctuation are their own tokens, so the Metaspace decoder restores
the text exactly: ``decode(encode(text)) == text`` for any text whose words are in the
vocabulary. The vocabulary is the special tokens (ids 0-6, in ``SPECIAL_TOKENS`` order)
followed by every word piece of the corpus and the world's lexicon, sorted. Out-of-vocabulary
pieces map to ``<unk>``; there is no lowercasing (the world is lowercase already and the
CAI comparison template keeps its capitals).

Chat template, per turn: ``<|user|>{content}``, ``<|system|>{content}``,
``<|assistant|>{content}<eos>``; ``add_generation_prompt`` appends ``<|assistant|>``.
``<pad>`` (id 0) is distinct from ``<eos>`` (id 1).
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from prefopt.algorithms.cai.prompts import ANSWER_A, ANSWER_B, ANSWER_CUE, COMPARISON_TEMPLATE
from prefopt.worlds.minihh import behaviours as B
from prefopt.worlds.minihh import lexicon as L
from prefopt.worlds.minihh.constitution import load_world_constitution
from prefopt.worlds.minihh.corpus import FLAWS, corpus
from prefopt.worlds.minihh.tasks import FAMILIES, SPLITS, family_pools

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
USER, ASSISTANT, SYSTEM = "<|user|>", "<|assistant|>", "<|system|>"
SPECIAL_TOKENS = (PAD, EOS, BOS, UNK, USER, ASSISTANT, SYSTEM)
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}<|user|>{{ message['content'] }}"
    "{%- elif message['role'] == 'system' -%}<|system|>{{ message['content'] }}"
    "{%- else -%}<|assistant|>{{ message['content'] }}<eos>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
CORPUS_DOCS = 3000   # conversations read to collect the vocabulary
POOL_SAMPLE = 300    # prompts read per sub-pool (every slot value shows up well before)


def pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Metaspace ("▁" before each word), then newlines and punctuation split off."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])


def decoder() -> decoders.Decoder:
    """Turns "▁" back into spaces and drops the one added at the start."""
    return decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)


def lexicon_texts() -> list[str]:
    """Texts that cover every word the world can say, beyond what the corpus samples."""
    rng = random.Random("minihh-lexicon")
    texts = [str(i) for i in range(90)] + list(string.ascii_lowercase)
    texts += [*L.FILLERS, *B.REFUSALS, *B.RAMBLES, *(text for text, _ in FLAWS.values())]
    for family in FAMILIES:
        for split in SPLITS:
            for pool in family_pools(family, split):
                texts += [r.prompt[0]["content"] for r in pool[:POOL_SAMPLE]]
                texts += [B.respond(r, b, rng) for r in pool[:POOL_SAMPLE]
                          for b in B.BEHAVIOURS for _ in range(2)]
    for p in load_world_constitution().principles:
        texts += [p.critique, p.revision, p.comparison]
    texts += [COMPARISON_TEMPLATE.format(conversation="", question="", a="", b=""),
              ANSWER_CUE, ANSWER_A, ANSWER_B]
    return texts


def collect_vocab(texts: Iterable[str]) -> dict[str, int]:
    """Special tokens first (ids 0-6), then every distinct word piece, sorted.

    Distinct texts are pre-tokenized in chunks joined by "\n " (a newline, then the space
    the next text's first word would get anyway), which yields the same pieces as one call
    per text at a fraction of the cost.
    """
    pt = pre_tokenizer()
    unique = sorted(set(texts))
    pieces = set()
    for i in range(0, len(unique), 500):
        chunk = "\n ".join(unique[i:i + 500])
        pieces.update(piece for piece, _ in pt.pre_tokenize_str(chunk))
    pieces -= set(SPECIAL_TOKENS)
    return {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *sorted(pieces)])}


def corpus_texts(n_docs: int, seed: int) -> list[str]:
    """Every message content of the corpus."""
    return [m["content"] for conv in corpus(n_docs, seed) for m in conv]


def build_tokenizer(out_dir: str | Path | None = None, seed: int = 0,
                    n_docs: int = CORPUS_DOCS) -> PreTrainedTokenizerFast:
    """Build the world's tokenizer (and ``save_pretrained`` it to ``out_dir`` when given)."""
    vocab = collect_vocab([*corpus_texts(n_docs, seed), *lexicon_texts()])
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoder()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in SPECIAL_TOKENS])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens=[USER, ASSISTANT, SYSTEM], model_max_length=1024,
        chat_template=CHAT_TEMPLATE)
    if out_dir is not None:
        hf.save_pretrained(str(out_dir))
    return hf
