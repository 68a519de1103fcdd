"""PyTorch's tools wrap our modules as they wrap transformers': every projection is called as its module, so a LoRA
adapter (peft), int8 dynamic quantization (torch.ao) and torch.compile each see and change what they should."""
import pytest
import torch
from torch import nn

from minibart import BartConfig, BartForConditionalGeneration
from minibert import BertConfig, BertForQuestionAnswering, BertForSequenceClassification

BERT = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
BART = BartConfig(vocab_size=60, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32,
                  dropout=0.0)
MODELS = {"bert-classification": (BertForSequenceClassification, BERT), "bert-qa": (BertForQuestionAnswering, BERT),
          "bart": (BartForConditionalGeneration, BART)}
IDS = torch.randint(3, 60, (2, 10), generator=torch.Generator().manual_seed(0))
MASK = torch.tensor([[1] * 10, [1] * 7 + [0] * 3])  # the second row padded


def model_of(name: str) -> nn.Module:
    cls, config = MODELS[name]
    torch.manual_seed(0)
    model = cls(config)
    with torch.no_grad():  # non-trivial biases and LayerNorms, and outputs that vary well beyond int8's rounding
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def output(model: nn.Module, name: str) -> torch.Tensor:
    """Every output of model `name` (or of a wrapper of it) as one tensor: logits, start and end scores."""
    if name == "bart":
        return model(IDS, MASK, labels=IDS[:, :6])  # the decoder reads the labels shifted right
    out = model(IDS, MASK)
    return torch.cat([o.flatten() for o in out]) if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", MODELS)
def test_every_lora_adapter_of_all_linear_changes_the_output_and_learns(name):
    """peft LoRA with target_modules="all-linear" wraps every nn.Linear of the model; each adapter, made non-zero
    alone (its lora_B), changes the output, and its A and B both receive a gradient."""
    peft = pytest.importorskip("peft")
    model = model_of(name)
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    lora = peft.get_peft_model(model, peft.LoraConfig(target_modules="all-linear", r=2, lora_alpha=2)).train()
    adapters = {n: m for n, m in lora.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}
    assert len(adapters) == n_linear
    base = output(lora, name).detach()
    for adapter_name, adapter in adapters.items():
        a, b = adapter.lora_A["default"].weight, adapter.lora_B["default"].weight
        with torch.no_grad():
            b.normal_()
        lora.zero_grad()
        out = output(lora, name)
        out.square().sum().backward()
        assert (out - base).abs().max() > 1e-4, f"{adapter_name}: adapter ignored"
        assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0, f"{adapter_name}: no gradient"
        with torch.no_grad():
            b.zero_()


@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated", "ignore:torch.quantize_per_tensor")
@pytest.mark.parametrize("name", MODELS)
def test_int8_dynamic_quantization_runs_and_stays_close_to_fp32(name):
    """torch.ao's quantize_dynamic replaces every nn.Linear by an int8 one, and the model runs through them all.

    Tolerance: int8 rounds each weight to one of 255 levels spanning its tensor's range, and each activation
    likewise at run time, about 0.5% of the range per projection; over the few projections in a row of these models
    that compounds to about 2% (measured 1.5 to 2.3%), so the outputs stay within 5% of fp32 in relative L2 norm.
    A projection skipped or mis-wired gives an error of order 100%; a model left in fp32 gives exactly 0."""
    model = model_of(name).eval()
    with torch.no_grad():
        want = output(model, name)
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        got = output(quantized, name)
    assert not any(isinstance(m, nn.Linear) for m in quantized.modules())
    error = ((got - want).norm() / want.norm()).item()
    assert 0 < error < 0.05, error


@pytest.mark.parametrize("name", MODELS)
def test_torch_compile_matches_eager(name):
    """torch.compile of the model gives eager's output and gradients in training mode. Backend aot_eager: Dynamo's
    capture and AOTAutograd's forward and backward graphs, which inductor would compile, in a second; inductor's
    C++ code generation adds half a minute or more per model on CPU."""
    model = model_of(name).train()
    eager = output(model, name)
    eager.square().sum().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch._dynamo.reset()
    got = output(torch.compile(model, backend="aot_eager"), name)
    got.square().sum().backward()
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-6)
    for n, grad in want.items():
        torch.testing.assert_close(model.get_parameter(n).grad, grad, rtol=1e-5, atol=1e-6, msg=n)
