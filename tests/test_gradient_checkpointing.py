"""gradient_checkpointing_enable / _disable on every model class: the same gradients as the plain run, and less kept
for the backward pass."""
import pytest
import torch

from minibart import BartConfig, BartForConditionalGeneration, BartModel
from minibert import BertConfig, BertForQuestionAnswering, BertForSequenceClassification, BertModel
from minicore.layers import Block

BERT = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=32)
BART = BartConfig(vocab_size=60, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32,
                  attention_dropout=0.1, activation_dropout=0.1)
IDS = torch.randint(3, 60, (2, 12), generator=torch.Generator().manual_seed(0))
MASK = torch.tensor([[1] * 12, [1] * 8 + [0] * 4])  # the second row padded
LABELS = IDS[:, :7]


def loss_of(model) -> torch.Tensor:
    """A scalar reading every output of the model, in training mode (dropout on)."""
    if isinstance(model, BartForConditionalGeneration):
        return model(IDS, MASK, labels=LABELS, return_loss=True)
    if isinstance(model, BartModel):
        return model(IDS, MASK, LABELS).square().mean()
    out = model(IDS, MASK)
    return sum(o.square().mean() for o in (out if isinstance(out, tuple) else (out,)))


def run(model, checkpointing: bool) -> tuple[int, dict[str, torch.Tensor]]:
    """-> (bytes the graph keeps for backward after the forward pass, the gradients), from one seeded step.

    Kept: the distinct storages autograd saves outside checkpointed blocks, plus each block's input (a checkpoint
    holds it to run the block again, in backward, where the block's own saves are made one block at a time; the
    plain run saves it anyway)."""
    (model.gradient_checkpointing_enable if checkpointing else model.gradient_checkpointing_disable)()
    model.zero_grad()
    kept = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    def keep_input(block, args) -> None:
        keep(args[0])

    hooks = [b.register_forward_pre_hook(keep_input) for b in model.modules() if isinstance(b, Block)]
    torch.manual_seed(1)  # the same dropout masks in both runs
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = loss_of(model)
    for h in hooks:
        h.remove()
    loss.backward()
    return sum(kept.values()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("cls, config", [(BertModel, BERT), (BertForSequenceClassification, BERT),
                                         (BertForQuestionAnswering, BERT), (BartModel, BART),
                                         (BartForConditionalGeneration, BART)])
def test_checkpointing_gives_the_plain_gradients_and_keeps_less(cls, config):
    """With dropout on: every parameter's gradient equals the plain run's (the recomputation draws the same masks),
    and the graph keeps under half the bytes for backward; disabling brings the plain run back."""
    torch.manual_seed(0)
    model = cls(config).train()
    plain_bytes, plain = run(model, checkpointing=False)
    checkpointed_bytes, checkpointed = run(model, checkpointing=True)
    assert checkpointed.keys() == plain.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-6, atol=1e-7, msg=name)
    assert checkpointed_bytes < plain_bytes / 2, (checkpointed_bytes, plain_bytes)
    assert run(model, checkpointing=False)[0] == plain_bytes


def test_checkpointing_leaves_evaluation_and_generation_alone():
    """In eval mode or without gradients nothing is checkpointed: the same logits and the same generated tokens."""
    torch.manual_seed(0)
    model = BartForConditionalGeneration(BART).eval()
    with torch.no_grad():
        logits, tokens = model(IDS, MASK, LABELS), model.generate(IDS, MASK, num_beams=2, max_length=6)
        model.gradient_checkpointing_enable()
        assert model.model.encoder.gradient_checkpointing and model.model.decoder.gradient_checkpointing
        assert torch.equal(model(IDS, MASK, LABELS), logits)
        assert torch.equal(model.generate(IDS, MASK, num_beams=2, max_length=6), tokens)
