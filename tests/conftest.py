import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tiny import build_model  # noqa: E402

# Tiny models: one thread avoids oversubscription on small shared CPUs (several times
# faster here than two threads); numbers in the tests do not depend on it.
torch.set_num_threads(1)

ARCHS = ("llama", "qwen2", "gpt2", "gpt_neox")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """One tiny random model directory per architecture (with its tokenizer)."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {a: build_model(a, root / a) for a in ARCHS}


@pytest.fixture(scope="session")
def tiny_llama(tiny_models) -> Path:
    return tiny_models["llama"]
