"""Runs prefopt recipes in one process or under torchrun, for test_distributed.py.

    python -m torch.distributed.run --standalone --nproc_per_node 2 distributed_driver.py \
        RECIPE OUT [RECIPE OUT ...]

After each run every rank writes its trainable weights to OUT/weights-rank{R}.safetensors
(so the test can check that the replicas are identical). PPO's reward source is replaced by
``YesSource`` (share of "yes" tokens), which needs no trained reward model.
"""

import sys

import torch

from prefopt.algorithms import ppo
from prefopt.engine.trainer import Trainer
from prefopt.recipe import load_recipe
from prefopt.run import run_recipe

_fit = Trainer.fit


def fit_and_dump(self, resume=False):
    from safetensors.torch import save_file

    out = _fit(self, resume)
    weights = {n: p.detach().contiguous() for n, p in self.named.items()}
    rank = self.accelerator.process_index
    save_file(weights, str(self.out / f"weights-rank{rank}.safetensors"))
    return out


class YesSource:
    """reward = (number of "yes" tokens) / (number of response tokens)."""

    def __init__(self, spec, world, **kw):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(spec)
        self.yes = self.tok.convert_tokens_to_ids("yes")

    def score(self, records, responses):
        ids = [self.tok(r, add_special_tokens=False)["input_ids"] for r in responses]
        return torch.tensor([i.count(self.yes) / max(len(i), 1) for i in ids])


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    Trainer.fit = fit_and_dump
    ppo.load_reward_source = YesSource
    for recipe, out in zip(argv[0::2], argv[1::2]):
        run_recipe(load_recipe(recipe), out)


if __name__ == "__main__":
    main(sys.argv[1:])
