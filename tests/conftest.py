"""Shared fixtures: tiny random checkpoints in Hugging Face layout, built once per test run."""
import importlib.util
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the offline error path must fail fast, not retry

from minibert import BertConfig, BertModel  # noqa: E402
from minicore.checkpoint import copy_tokenizer_files

# Every test model is tiny: extra threads gain nothing, and on a machine with few, busy cores they spin-wait
# for each other (3x slower on two).
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# curves.png needs matplotlib, an optional dependency (the [plot] extra): a run without it writes none, so a test
# expects the file only where it is installed, and a test of the plot itself skips, saying why.
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
needs_matplotlib = pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed (pip install "
                                      "'minibert[plot]'): a run writes no curves.png")

TINY_BERT = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=37, max_position_embeddings=512)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random tiny BERT with MiniLM's full uncased vocabulary and tokenizer files."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY_BERT)).save_pretrained(folder)
    copy_tokenizer_files("minilm", folder)
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
