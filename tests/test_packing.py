"""Skipping the padding (BertModel(..., skip_padding=True), minicore.attention.Packing) changes no output a head
reads."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert import BertConfig, BertForSequenceClassification, BertModel
from minicore.attention import Packing

CONFIG = BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=29,
                    max_position_embeddings=32, initializer_range=0.2, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, num_labels=3)
FAST = settings(max_examples=20, deadline=None)


@st.composite
def padded_batches(draw):
    """ids [B, L], attention_mask [B, L] right-padded, some rows possibly with no real token at all."""
    lengths = draw(st.lists(st.integers(0, 9), min_size=1, max_size=4))
    L = max(max(lengths), 1)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    mask = (torch.arange(L) < torch.tensor(lengths)[:, None]).long()
    return torch.randint(1, CONFIG.vocab_size, (len(lengths), L), generator=g) * mask, mask


def model(cls):
    torch.manual_seed(0)
    return cls(CONFIG).double()


@FAST
@given(padded_batches())
def test_skipping_padding_keeps_every_real_token_and_zeroes_the_padding(batch):
    """The real tokens' hidden states are those of the padded computation (a row with no real token counts as all
    real, as padding_mask lets it see every key); the padding's are 0."""
    ids, mask = batch
    bert = model(BertModel).eval()
    with torch.no_grad():
        padded, skipped = bert(ids, mask), bert(ids, mask, skip_padding=True)
    real = mask.bool() | ~mask.bool().any(-1, keepdim=True)
    assert torch.allclose(skipped[real], padded[real], rtol=0, atol=1e-12)
    assert not skipped[~real].any()


@FAST
@given(padded_batches())
def test_classifier_logits_and_gradients_are_those_of_the_padded_computation(batch):
    ids, mask = batch
    clf = model(BertForSequenceClassification).train()
    labels = torch.arange(len(ids)) % CONFIG.num_labels

    def loss_and_grads(logits):
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return [loss, *torch.autograd.grad(loss, list(clf.parameters()), allow_unused=True)]

    padded = clf.classifier(clf.bert.pool(clf.bert(ids, mask))).float()  # forward without skip_padding
    for a, b in zip(loss_and_grads(clf(ids, mask)), loss_and_grads(padded)):
        assert (a is None and b is None) or torch.allclose(a, b, rtol=0, atol=1e-12)


def test_pack_and_unpack_are_inverse_on_the_real_tokens():
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]])
    packing = Packing.of(mask)
    x = torch.arange(9.0).view(3, 3, 1)
    assert packing.pack(x).flatten().tolist() == [0, 1, 3, 4, 5, 6]  # row 1 has no real token: all of it counts
    assert torch.equal(packing.unpack(packing.pack(x)), x * torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]])[..., None])
