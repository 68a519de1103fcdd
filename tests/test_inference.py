"""Model inputs and inference for the three tasks: pad_batch and encode (one rule for the mask),
length-sorted batches, squad.answer (the evaluation's span selection, spans of the context) and
paraphrase.paraphrase (the asked number of strings, in input order)."""
import json

import numpy as np
import pytest
import torch
from test_squad import tiny_squad

from data.squad import SquadExample, featurize, read_squad_file, select_answers
from data.tokens import encode, pad_batch
from minibart import BartForConditionalGeneration
from minibert import BertForQuestionAnswering, load_tokenizer
from minitasks.batching import sorted_batches
from minitasks.paraphrasing import paraphrase
from minitasks.question_answering import answer

# ----------------------------------------------------------------------------- pad_batch, encode

def test_pad_batch_masks_only_when_something_is_padded():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and ids.dtype == torch.long
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]] and mask.dtype == torch.long
    ids, mask = pad_batch([np.array([1, 2]), np.array([3, 4])], pad_id=0)  # numpy rows (SQuAD features)
    assert ids.tolist() == [[1, 2], [3, 4]] and mask is None
    ids, mask = pad_batch([[1, 2], [3, 4]], pad_id=0, pad_to=4)  # fixed width: padded, so masked
    assert ids.tolist() == [[1, 2, 0, 0], [3, 4, 0, 0]] and mask.sum().item() == 4
    assert pad_batch([[9], []], pad_id=-100)[0].tolist() == [[9], [-100]]  # label padding
    with pytest.raises(ValueError, match="a sequence of 3 tokens does not fit pad_to=2"):
        pad_batch([[1, 2, 3]], 0, pad_to=2)


def test_encode_keeps_the_end_token():
    tok = load_tokenizer("minilm")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    short, long = encode(tok, ["a cat.", "one two three four five six seven"], max_length=5)
    assert short == tok.encode("a cat.").ids and len(short) == 5
    assert long == tok.encode("one two three four").ids[:4] + [sep] and long[0] == cls
    with pytest.raises(ValueError, match="max_length: expected at least 3"):
        encode(tok, ["x"], 2)


def test_sorted_batches_cover_every_index_once_by_length():
    lengths = [5, 1, 3, 3, 9, 2, 1]
    batches = list(sorted_batches(lengths, 3))
    assert batches == [[1, 6, 5], [2, 3, 0], [4]]  # stable: equal lengths keep their order
    assert list(sorted_batches(lengths, 3, desc="Testing")) == batches  # the progress bar changes nothing


# ----------------------------------------------------------------------------- answer

@pytest.fixture(scope="module")
def qa(tiny_bert_dir):
    torch.manual_seed(0)
    return BertForQuestionAnswering.from_pretrained(tiny_bert_dir), load_tokenizer(tiny_bert_dir)


def squad_examples(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(tiny_squad(3, 1)))  # one context needs several windows
    return read_squad_file(path)


def test_answer_is_the_evaluation_span_selection(tmp_path, qa):
    """answer() picks what select_answers picks from logits computed one window at a time, without padding."""
    model, tok = qa
    examples = squad_examples(tmp_path)
    answers = answer(model, tok, examples, batch_size=3, version_2=True, null_threshold=0.0,
                     max_seq_length=64, doc_stride=32)
    features = featurize(examples, tok, max_seq_length=64, doc_stride=32)
    assert len(features) > len({f.example_index for f in features})  # several windows for some examples
    with torch.no_grad():
        logits = [model(torch.tensor(f.input_ids)[None], None, torch.tensor(f.token_type_ids)[None]) for f in features]
    want = select_answers(examples, features, [s[0].numpy() for s, _ in logits], [e[0].numpy() for _, e in logits],
                          version_2=True, null_threshold=0.0)
    assert [a.text for a in answers] == [w.text for w in want]
    assert [a.start for a in answers] == [w.start for w in want]
    np.testing.assert_allclose([a.null_odds for a in answers], [w.null_odds for w in want], atol=1e-5)


def test_answers_are_spans_of_their_contexts(tmp_path, qa):
    model, tok = qa
    examples = [SquadExample(e.id, e.question, e.context, [], [], True) for e in squad_examples(tmp_path)]
    spans = answer(model, tok, examples, batch_size=4, version_2=False, null_threshold=0.0)
    assert all(a.text and ex.context[a.start:a.end] == a.text for ex, a in zip(examples, spans))
    threshold = float(np.median([a.null_odds for a in spans]))  # half the questions fall below it
    answers = answer(model, tok, examples, batch_size=4, version_2=True, null_threshold=threshold)
    assert 0 < sum(a.text == "" for a in answers) < len(answers)
    for ex, a, s in zip(examples, answers, spans):
        assert ex.context[a.start:a.end] == a.text
        if a.null_odds > threshold:  # the official rule: no answer when null score > best span score + threshold
            assert (a.text, a.start, a.end) == ("", 0, 0) and a.score == pytest.approx(s.score + s.null_odds)
        else:
            assert (a.text, a.score) == (s.text, s.score)


# ----------------------------------------------------------------------------- paraphrase

@pytest.fixture(scope="module")
def bart(tiny_bert_dir):
    torch.manual_seed(0)
    return BartForConditionalGeneration.from_bert(tiny_bert_dir), load_tokenizer(tiny_bert_dir)


TEXTS = ["The cat sat on the mat.", "Hi.", "A much longer sentence about a dog that ran in the park.", "Why?"]


def test_paraphrase_returns_the_asked_number_in_input_order(bart):
    model, tok = bart
    out = paraphrase(model, tok, TEXTS, max_seq_length=16, batch_size=3, num_beams=3, num_return_sequences=2,
                     max_length=8)
    assert len(out) == len(TEXTS) and all(len(p) == 2 and all(isinstance(s, str) for s in p) for p in out)
    alone = [paraphrase(model, tok, [t], max_seq_length=16, batch_size=1, num_beams=3, num_return_sequences=2,
                        max_length=8)[0] for t in TEXTS]
    assert out == alone  # batched by length, padded, returned in input order
    assert [len(p) for p in paraphrase(model, tok, TEXTS[:2], max_seq_length=16, batch_size=2, max_length=6)] == [1, 1]


def test_paraphrase_groups_by_the_model_configs_num_return_sequences(bart):
    """A checkpoint whose generation_config.json sets num_return_sequences: each text gets that many."""
    model, tok = bart
    model.config.num_return_sequences, model.config.num_beams = 3, 3
    try:
        out = paraphrase(model, tok, TEXTS, max_seq_length=16, batch_size=2, max_length=8)
    finally:
        model.config.num_return_sequences, model.config.num_beams = None, None
    assert [len(p) for p in out] == [3] * len(TEXTS)
    assert out[1] == paraphrase(model, tok, TEXTS[1:2], max_seq_length=16, batch_size=1, max_length=8,
                                num_beams=3, num_return_sequences=3)[0]
