"""The control for the cross-attention copy in the BERT-to-BART warm start (minibart.checkpoint.bart_from_bert).

`from_bert` starts each decoder layer's cross-attention as a copy of that layer's self-attention, so that the
decoder can read the encoder from the first step. This script saves the same warm start with the cross-attention
(q, kv, out and its LayerNorm) initialized afresh instead, as a plain BERT-to-BART warm start would leave it
(Rothe et al. 2020 initialize cross-attention at random); fine-tuned alike, the two show what the copy gives.
Run from the repository root:

    python -m experiments.random_cross_attention out/random_cross/checkpoint
    python train_paraphrase.py --model out/random_cross/checkpoint --data-dir path/to/paraphrase --epochs 2 \\
        --batch-size 16 --lr 1e-4 --output-dir out/random_cross
"""
import argparse
from pathlib import Path

import torch

from minibart import BartForConditionalGeneration
from minicore.checkpoint import copy_tokenizer_files
from minicore.layers import init_weights


def randomize_cross_attention(model: BartForConditionalGeneration) -> None:
    """Each decoder layer's cross-attention and its LayerNorm as a fresh BART initializes them:
    N(0, init_std) weights, zero biases, unit LayerNorm."""
    for layer in model.model.decoder.layers:
        init_weights(layer.cross_attn, model.config.init_std)
        init_weights(layer.cross_attn_norm, model.config.init_std)


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("output", type=Path, help="the folder to write the checkpoint and tokenizer files to")
    p.add_argument("--bert", default="minilm", help="the BERT checkpoint to warm-start from (name or folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fresh cross-attention weights")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    model = BartForConditionalGeneration.from_bert(args.bert)
    randomize_cross_attention(model)
    model.save_pretrained(args.output)
    copy_tokenizer_files(args.bert, args.output)
    print(f"saved to {args.output}")
    return args.output


if __name__ == "__main__":
    main()
