"""Classification: the metrics for any number of labels (hand-computed, Gorodkin's definition, scikit-learn),
and `classify` against transformers on the same checkpoint."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from data.classification import accuracy, classification_metrics, macro_f1, matthews_corrcoef
from data.tokens import encode
from minibert import BertForSequenceClassification, load_tokenizer
from minitasks.classification import classify

labels = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=50)


def test_three_labels_hand_computed():
    gold, pred = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    # t = (3, 2, 1), p = (2, 2, 2), c = 4, n = 6: (4*6 - 12) / sqrt((36 - 12)(36 - 14)) = 12 / sqrt(528)
    assert matthews_corrcoef(gold, pred) == pytest.approx(12 / 528 ** 0.5)
    assert accuracy(gold, pred) == pytest.approx(4 / 6)
    # per-label F1 = 2TP / (2TP + FP + FN): 4/5, 2/4, 2/3
    assert macro_f1(gold, pred) == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)
    assert classification_metrics(gold, pred, 3).keys() == {"mcc", "accuracy", "macro_f1"}
    assert classification_metrics([0, 1], [0, 1], 2) == {"mcc": 1.0, "accuracy": 1.0}  # macro-F1 only past 2 labels
    assert matthews_corrcoef(gold, [1] * 6) == 0.0  # a constant prediction
    assert matthews_corrcoef([2, 0, 1], [0, 1, 2]) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="3 gold labels but 2 predictions"):
        accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="0 gold labels but 0 predictions"):
        macro_f1([], [])


def gorodkin(gold, pred, k=4) -> float:
    """R_K by its definition: the correlation of the centred one-hot label matrices."""
    x, y = np.eye(k)[gold], np.eye(k)[pred]
    x, y = x - x.mean(0), y - y.mean(0)
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom else 0.0


@settings(max_examples=80, deadline=None)
@given(labels)
def test_mcc_is_gorodkins_rk(pairs):
    gold, pred = [g for g, _ in pairs], [p for _, p in pairs]
    mcc = matthews_corrcoef(gold, pred)
    assert mcc == pytest.approx(gorodkin(gold, pred), abs=1e-12) and -1 <= mcc <= 1


@pytest.mark.filterwarnings("ignore:A single label was found")
@settings(max_examples=40, deadline=None)
@given(labels)
def test_metrics_equal_scikit_learn(pairs):
    metrics = pytest.importorskip("sklearn.metrics")
    gold, pred = [g for g, _ in pairs], [p for _, p in pairs]
    assert matthews_corrcoef(gold, pred) == pytest.approx(metrics.matthews_corrcoef(gold, pred), abs=1e-12)
    assert macro_f1(gold, pred) == pytest.approx(metrics.f1_score(gold, pred, average="macro", zero_division=0))
    assert accuracy(gold, pred) == pytest.approx(metrics.accuracy_score(gold, pred))


SENTENCES = ["The cat sat.", "A much longer sentence about dogs that run in the park all day.", "Hi.",
             "word " * 80, "Colourless green ideas sleep furiously."]


def test_classify_equals_transformers_one_sentence_at_a_time(tmp_path, tiny_bert_dir):
    """Batched, padded, length-sorted and truncated to max_length, the probabilities are those of
    transformers run on each sentence alone, in input order."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    BertForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3).save_pretrained(tmp_path)
    model = BertForSequenceClassification.from_pretrained(tmp_path)
    tok = load_tokenizer(tiny_bert_dir)
    model.train()
    probs = classify(model, tok, SENTENCES, max_seq_length=24, batch_size=2)
    assert model.training  # the caller's mode is restored
    assert probs.shape == (5, 3) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(-1), torch.ones(5))
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        want = torch.cat([hf(torch.tensor([ids])).logits.softmax(-1) for ids in encode(tok, SENTENCES, 24)])
    torch.testing.assert_close(probs, want, atol=1e-5, rtol=1e-5)
    fixed = classify(model, tok, SENTENCES, max_seq_length=24, batch_size=5, pad_to=24)  # the tutorial's padding
    torch.testing.assert_close(fixed, want, atol=1e-5, rtol=1e-5)
