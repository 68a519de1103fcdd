"""experiments/: each script still runs against the library's API (a smoke run on a tiny model)."""
import torch

from experiments import random_cross_attention
from minibart import BartForConditionalGeneration
from minibert import BertModel, load_tokenizer
from minibert.checkpoint import copy_tokenizer_files


def test_random_cross_attention(tiny_bert_dir, tmp_path):
    """The control checkpoint is from_bert's warm start with fresh cross-attention: N(0, init_std) weights, zero
    biases, unit LayerNorm; every other tensor is the warm start's, and the tokenizer files come along."""
    bert_dir = tmp_path / "bert"  # random LayerNorms too, so that copied and fresh ones differ
    bert = BertModel.from_pretrained(tiny_bert_dir)
    with torch.no_grad():
        for p in bert.parameters():
            p.add_(torch.randn_like(p))
    bert.save_pretrained(bert_dir)
    copy_tokenizer_files(tiny_bert_dir, bert_dir)

    out = random_cross_attention.main(["--bert", str(bert_dir), str(tmp_path / "control")])
    warm = BartForConditionalGeneration.from_bert(bert_dir).state_dict()
    control = BartForConditionalGeneration.from_pretrained(out)
    std = control.config.init_std
    fresh = 0
    for name, value in control.state_dict().items():
        if ".encoder_attn_layer_norm." in name:
            assert torch.equal(value, torch.ones_like(value) if name.endswith("weight") else torch.zeros_like(value))
        elif ".encoder_attn." in name and name.endswith("bias"):
            assert torch.equal(value, torch.zeros_like(value))
        elif ".encoder_attn." in name:
            assert abs(value.std().item() - std) < 0.2 * std and abs(value.mean().item()) < 0.2 * std
        else:
            assert torch.equal(value, warm[name]), name
            continue
        assert not torch.equal(value, warm[name]), name
        fresh += 1
    assert fresh == 8 * control.config.decoder_layers  # q, kv, out (weight and bias) and the LayerNorm's two
    assert load_tokenizer(out).get_vocab() == load_tokenizer(tiny_bert_dir).get_vocab()
