"""The MiniLM warm start with its decoder's cross-attention randomly initialized instead of copied from
self-attention (what a plain BERT-to-BART warm start gives): the control for that step of Task 3.

    python results/paraphrase/cpu_random_cross_attention/make_checkpoint.py runs/random_cross/checkpoint

Re-initializes each decoder layer's cross-attention projections (q, kv, out: normal(0, init_std), zero bias, as
init_weights does) and its LayerNorm (ones, zeros), and saves the model with MiniLM's tokenizer files.
"""
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from minibart import BartForConditionalGeneration  # noqa: E402
from minibert.checkpoint import resolve  # noqa: E402
from minibert.model import init_weights  # noqa: E402

out = Path(sys.argv[1])
torch.manual_seed(0)
model = BartForConditionalGeneration.from_bert("minilm")
for layer in model.model.decoder.layers:
    init_weights(layer.encoder_attn, model.config.init_std)
    torch.nn.init.ones_(layer.encoder_attn_layer_norm.weight)
    torch.nn.init.zeros_(layer.encoder_attn_layer_norm.bias)
model.save_pretrained(out)
for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
    if (resolve("minilm") / name).exists():
        shutil.copy(resolve("minilm") / name, out / name)
print(f"saved to {out}")
