"""minicore.quantize.inference_weights: weights for CPU inference (packed fp32 or bf16, dynamic int8)."""
import copy

import pytest
import torch
from torch import nn

from minibart import BartConfig, BartForConditionalGeneration
from minicore.errors import UserError
from minicore.quantize import PackedLinear, inference_weights

CONFIG = dict(vocab_size=60, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
              decoder_attention_heads=4, encoder_ffn_dim=24, decoder_ffn_dim=40, max_position_embeddings=40,
              init_std=0.3, eos_token_id=46, forced_eos_token_id=None, dropout=0.0)
needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


@pytest.fixture(scope="module")
def bart():
    torch.manual_seed(0)
    return BartForConditionalGeneration(BartConfig(**CONFIG)).eval()


def source():
    return torch.randint(3, 60, (3, 7), generator=torch.Generator().manual_seed(0))


@needs_onednn
def test_packed_linear_computes_the_linear():
    """PackedLinear's forward is F.linear of the same weight and bias (up to summation order), for any leading shape;
    it keeps the linear's Parameters (state_dict unchanged) and survives copy.deepcopy."""
    linear = nn.Linear(24, 40)
    p = PackedLinear(linear)
    x = torch.randn(3, 5, 24)
    torch.testing.assert_close(p(x), linear(x), rtol=1e-5, atol=1e-5)
    assert p.state_dict().keys() == linear.state_dict().keys() and p.weight is linear.weight
    torch.testing.assert_close(copy.deepcopy(p)(x), linear(x), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_fp32_inference_weights_generate_the_same_tokens(bart):
    """fp32: every nn.Linear packed, the model left as it was, the same tokens as the plain model (greedy, beams)."""
    fast = inference_weights(bart, "fp32")
    assert not any(type(m) is nn.Linear for m in fast.modules()) and isinstance(fast.lm_head, PackedLinear)
    assert all(type(m) is not PackedLinear for m in bart.modules())
    assert fast.lm_head.weight is fast.model.shared.weight  # still tied
    for kw in (dict(), dict(num_beams=3, num_return_sequences=2), dict(num_beams=4, no_repeat_ngram_size=2),
               dict(num_beams=2, length_penalty=2.0, min_length=6), dict(do_sample=True, top_k=5)):
        torch.manual_seed(0)
        want = bart.generate(source(), max_length=12, **kw)
        torch.manual_seed(0)
        assert torch.equal(fast.generate(source(), max_length=12, **kw), want), kw


@needs_onednn
def test_bf16_inference_weights_are_bf16_and_close(bart):
    """bf16: every floating-point parameter in bfloat16, logits within bf16's rounding of fp32's, and generation
    runs (its tokens may differ where fp32's scores nearly tie)."""
    fast = inference_weights(bart, "bf16")
    assert {p.dtype for p in fast.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bart.parameters()} == {torch.float32}
    ids = source()
    with torch.no_grad():
        want, got = bart(ids, decoder_input_ids=ids), fast(ids, decoder_input_ids=ids).float()
    assert (got - want).abs().max() < 0.05 * want.abs().max()
    out = fast.generate(ids, num_beams=3, max_length=12)
    assert out.shape[0] == 3 and (out[:, 0] == bart.config.decoder_start_token_id).all()


def test_int8_inference_weights_quantize_linears_called_as_modules():
    """int8: each nn.Linear becomes a dynamically quantized one, within int8's rounding of the fp32 output."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 8)).eval()
    q = inference_weights(mlp, "int8")
    assert all(type(m).__name__ == "Linear" and type(m) is not nn.Linear for m in (q[0], q[2]))
    x = torch.randn(5, 32)
    want = mlp(x)
    assert (q(x) - want).abs().max() < 0.05 * want.abs().max()


def test_int8_bart_generates(bart):
    """int8 BART (every projection and the LM head called as its module): logits within int8's rounding of fp32's
    (a tenth of the largest logit: per-row int8 weights and per-call int8 inputs over a dozen projections), and
    generation runs on the quantized modules."""
    q, ids = inference_weights(bart, "int8"), source()
    assert not any(type(m) is torch.nn.Linear for m in q.modules())
    with torch.no_grad():
        want, got = bart(ids, decoder_input_ids=ids), q(ids, decoder_input_ids=ids)
    assert (got - want).abs().max() < 0.1 * want.abs().max()
    out = q.generate(ids, num_beams=3, max_length=12)
    assert out.shape[0] == 3 and (out[:, 0] == bart.config.decoder_start_token_id).all()


def test_unknown_weights_are_refused(bart):
    with pytest.raises(UserError, match=r"unknown weight precision \(weights, 'fp16'\): use one of fp32, bf16, int8"):
        inference_weights(bart, "fp16")
