import json
from pathlib import Path

import pytest

from data.paraphrase import (Pair, clean_spaces, collate, dedupe, drop_near_copies, first_non_copy, load_hub,
                             load_local, normalize, paraphrase_metrics, read_msrp, read_paws, read_quora,
                             read_squad_contexts, rescore, split_heldout, to_labels, unlabeled_text)
from data.tokens import encode
from minicore.errors import UserError
from minicore.tokenizer import load_tokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "paraphrase"

MSRP = ("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t1\t2\tHe called "the witness" a liar .\tReferring to him as "the witness", he lied.\n'
        "0\t3\t4\tNot a paraphrase.\tSomething else.\n"
        "1\t5\t6\tShares rose 5 % .\tThe stock gained 5 %.\n")
PAWS = ("id\tsentence1\tsentence2\tlabel\n"
        "1\tWhy do n't cats ( and dogs ) fly ?\tWhy can't cats and dogs fly ?\t1\n"
        "2\tA `` quoted '' word .\tAnother word .\t0\n"
        '3\tWhat is "AI" ?\tWhat does "AI" mean ?\t1\n')
QUORA = ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
         '0\t1\t2\tHow do I learn Python?\tWhat is the best way to learn Python?\t1\n'
         '1\t3\t4\tWhat is "deep" learning?\t"What is ""deep"" learning, really?"\t1\n'
         '2\t5\t6\t"A question spanning\ntwo lines?"\tAnother one?\t1\n'
         "3\t7\t8\tIs this a duplicate?\tNo it is not.\t0\n")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_msrp_bom_header_quotes_and_quality_filter(tmp_path):
    path = write(tmp_path / "msr_paraphrase_train.txt", MSRP)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    pairs = read_msrp(path)
    assert pairs == [Pair('He called "the witness" a liar.', 'Referring to him as "the witness", he lied.'),
                     Pair("Shares rose 5%.", "The stock gained 5%.")]
    raw = read_msrp(path, clean=False)
    assert raw[0].source == 'He called "the witness" a liar .'


def test_paws_label_filter_and_cleanup(tmp_path):
    pairs = read_paws(write(tmp_path / "train.tsv", PAWS))
    assert pairs == [Pair("Why don't cats (and dogs) fly?", "Why can't cats and dogs fly?"),
                     Pair('What is "AI"?', 'What does "AI" mean?')]


def test_quora_csv_quoting_and_duplicate_filter(tmp_path):
    pairs = read_quora(write(tmp_path / "quora_duplicate_questions.tsv", QUORA))
    assert [p.target for p in pairs] == ["What is the best way to learn Python?",
                                          'What is "deep" learning, really?', "Another one?"]
    assert pairs[1].source == 'What is "deep" learning?'
    assert pairs[2].source == "A question spanning two lines?"


@pytest.mark.parametrize("reader,text,message", [
    (read_msrp, "Quality\t#1 ID\t#2 ID\t#1 String\n1\t1\t2\ta\n",
     r"missing column '#2 String' \(.*bad\.tsv, line 1\): the columns there are 'Quality', '#1 ID'"),
    (read_paws, "id\tsentence1\tsentence2\tlabel\n1\ta\tb\n", r"expected 4 TSV fields .* got 3 \(.*bad\.tsv, line 2\)"),
    (read_paws, "id\tsentence1\tsentence2\tlabel\n1\ta\tb\t1\n2\ta\tb\tyes\n",
     r"expected 0 or 1 \(.*bad\.tsv, line 3, column 'label', 'yes'\)"),
    (read_msrp, "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n2\t1\t2\ta\tb\n",
     r"\(.*bad\.tsv, line 2, column 'Quality', '2'\)"),
    (read_quora, 'id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n0\t1\t2\t"a" b\tc\t1\n',
     r"malformed TSV .*\(.*bad\.tsv, line 2\)"),  # a stray quote is an error, not a silently merged field
    (read_paws, b"id\tsentence1\tsentence2\tlabel\n1\ta\tb\t1\n2\t\xff\tb\t1\n",
     r"not UTF-8 text \(.*bad\.tsv, line 3"),
])
def test_bad_files_name_file_line_and_column(tmp_path, reader, text, message):
    path = tmp_path / "bad.tsv"
    path.write_bytes(text) if isinstance(text, bytes) else write(path, text)
    with pytest.raises(UserError, match=message):
        reader(path)


@pytest.mark.parametrize("raw,clean", [
    ("Why do n't you ask ?", "Why don't you ask?"),
    ("I 'm sure it 's John 's , they 're here .", "I'm sure it's John's, they're here."),
    ("It costs $ 5 ( about 4 % ) !", "It costs $5 (about 4%)!"),
    ("What does `` Disallow : '' mean ?", 'What does "Disallow:" mean?'),
    ("Learn 'hacking ' ; now", "Learn 'hacking'; now"),
    ('He said " hi there " to me .', 'He said "hi there" to me.'),
    ('He called "the witness", of', 'He called "the witness", of'),   # raw quotes untouched
    ("left behind . . . there", "left behind... there"),
    ("uses .NET and .5 mm", "uses .NET and .5 mm"),                     # no word after a dot
    ("  two   spaces  ", "two spaces"),
    ("i don ' t know, it ' s fine", "i don't know, it's fine"),         # WordPiece decoding
    ("the u. s. and u. n. sent 1, 000 troops", "the u.s. and u.n. sent 1,000 troops"),
    ("a 41 - year - old e - mail at 10 : 30, 1. 5 % up", "a 41-year-old e-mail at 10:30, 1.5% up"),
    ("o ' connor said - - again - that", "o'connor said -- again-that"),
    ("in 2003, 15 people; plan a. then", "in 2003, 15 people; plan a. then"),  # not a number, not an acronym
])
def test_clean_spaces(raw, clean):
    assert clean_spaces(raw) == clean


def test_dedupe_keeps_first_and_drops_copies():
    pairs = [Pair("A b.", "C d."), Pair("a b .", "c d ."), Pair("Same.", "same ."), Pair("C d.", "A b.")]
    assert dedupe(pairs) == [Pair("A b.", "C d."), Pair("C d.", "A b.")]
    assert dedupe(pairs, drop_copies=False) == [pairs[0], pairs[2], pairs[3]]


def test_split_heldout_is_seeded_and_disjoint():
    pairs = [Pair(f"s{i}", f"t{i}") for i in range(50)]
    train, held = split_heldout(pairs, 10, seed=3)
    assert len(held) == 10 and len(train) == 40 and set(train).isdisjoint(held)
    assert split_heldout(pairs, 10, seed=3) == (train, held)
    assert split_heldout(pairs, 10, seed=4)[1] != held
    with pytest.raises(ValueError, match="n_heldout"):
        split_heldout(pairs, 51)


def test_load_local_finds_every_format(tmp_path):
    write(tmp_path / "msrp" / "msr_paraphrase_train.txt", MSRP)
    write(tmp_path / "msrp" / "msr_paraphrase_test.txt", MSRP)
    write(tmp_path / "paws_wiki" / "train.tsv", PAWS)
    write(tmp_path / "quora" / "quora_duplicate_questions.tsv", QUORA)
    assert len(load_local(tmp_path, "train")) == 2 + 2 + 3
    assert len(load_local(tmp_path, "test")) == 2
    with pytest.raises(ValueError, match="no dev file found"):
        load_local(tmp_path, "dev")


def test_unlabeled_text_pairs_then_squad(tmp_path):
    squad = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [
        {"context": "First context. Two sentences.", "qas": []}, {"context": "A b.", "qas": []}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad))
    assert read_squad_contexts(path) == ["First context. Two sentences.", "A b."]
    text = list(unlabeled_text([Pair("A b.", "C d."), Pair("C d.", "E f.")], [path]))
    assert text == ["A b.", "C d.", "E f.", "First context. Two sentences."]
    path.write_text(json.dumps({"data": [{"title": "no paragraphs"}]}))
    with pytest.raises(ValueError, match="squad.json"):
        read_squad_contexts(path)


def test_metrics_copy_baseline_and_perfect_output():
    src = ["the cat sat on the mat today .", "a quick brown fox jumps over it ."]
    ref = ["today the cat was sitting on the mat .", "over it jumps a quick brown fox ."]
    copy = paraphrase_metrics(src, ref, src)
    assert copy["copy_rate"] == 1.0 and copy["self_bleu"] == pytest.approx(100)
    assert copy["ibleu"] == pytest.approx(0.8 * copy["bleu"] - 20)
    perfect = paraphrase_metrics(src, ref, ref)
    assert perfect["bleu"] == pytest.approx(100) and perfect["copy_rate"] == 0.0
    assert perfect["ibleu"] > copy["ibleu"]
    assert paraphrase_metrics(src, ref, ["the cat", "a fox"])["length_ratio"] == pytest.approx((2 / 8 + 2 / 8) / 2)
    assert normalize("The Cat , sat .") == normalize("the cat, sat.")
    assert normalize("the u. s. agency") == normalize("The U.S. agency")  # a copy, however it is spaced
    assert paraphrase_metrics(src, ref, ["The cat sat on the mat today.", "a b"])["copy_rate"] == 0.5
    with pytest.raises(ValueError, match="equal"):
        paraphrase_metrics(src, ref, src[:1])


def test_drop_near_copies_keeps_real_rewrites():
    pairs = [Pair("The cat sat on the mat today.", "Today the cat sat on the mat."),          # word order only
             Pair("The cat sat on the mat today.", "The cat sat on the mat yesterday."),      # one word
             Pair("The cat sat on the mat today.", "A kitten was resting on a rug this morning.")]
    assert drop_near_copies(pairs, 50) == pairs[2:]
    assert drop_near_copies(pairs, 100) == pairs  # nothing below 100 is a copy
    assert drop_near_copies(pairs, 1e-9) == []


def test_first_non_copy_skips_copies_however_spaced():
    assert first_non_copy("The U.S. agency said.", ["the u. s. agency said .", "the us agency said.", "x"]) == \
        "the us agency said."
    assert first_non_copy("Same.", ["same .", "SAME."]) == "same ."  # only copies: the best


def test_rescore_reads_generations_and_names_bad_lines(tmp_path):
    path = tmp_path / "generations.jsonl"
    rows = [{"source": "The cat sat .", "reference": "A cat sat.", "paraphrase": "the cat sat."},
            {"source": "It rained today.", "reference": "Today it rained.", "paraphrase": "today it rained ."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = rescore(path, lowercase=True)
    assert result["eval"]["copy_rate"] == 0.5 and result["copy_baseline"]["copy_rate"] == 1.0
    sources, references = ["The cat sat.", "It rained today."], ["A cat sat.", "Today it rained."]
    outputs = ["the cat sat.", "today it rained."]
    assert result["eval"] == paraphrase_metrics(sources, references, outputs, lowercase=True)
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"source": "a", "reference": "b"}) + "\n")
    with pytest.raises(UserError, match=r"missing column 'paraphrase' \(.*generations.jsonl, line 2\)"):
        rescore(path)


def test_hub_unknown_name():
    with pytest.raises(ValueError, match="expected one of"):
        load_hub("nope", "train")


@pytest.mark.skipif(not (SHARED / "msrp").is_dir(), reason="no shared MSRP data")
def test_real_msrp_counts_and_copy_baseline():
    train = read_msrp(SHARED / "msrp" / "msr_paraphrase_train.txt")
    test = read_msrp(SHARED / "msrp" / "msr_paraphrase_test.txt")
    assert (len(train), len(test)) == (2753, 1147)
    m = paraphrase_metrics([p.source for p in test], [p.target for p in test], [p.source for p in test])
    assert m["bleu"] == pytest.approx(47.5, abs=0.2) and m["ibleu"] == pytest.approx(18.0, abs=0.2)


@pytest.mark.skipif(not (SHARED / "paws_qqp").is_dir(), reason="no shared PAWS-QQP data")
def test_real_paws_qqp_counts():
    pairs = read_paws(SHARED / "paws_qqp" / "train.tsv")
    assert len(pairs) == 3776
    assert not any(" ?" in p.source or " n't" in p.source or "``" in p.source for p in pairs)


def test_encode_labels_and_collate():
    tok = load_tokenizer("minilm")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    short, long = encode(tok, ["a cat.", "one two three four five six seven"], max_length=5)
    assert short[0] == cls and short[-1] == sep and len(short) == 5 and len(long) == 5 and long[-1] == sep
    assert to_labels(short, decoder_start_token_id=cls) == short[1:]   # BERT warm start: starts from [CLS]
    assert to_labels(short, decoder_start_token_id=sep) == short        # BART: starts from </s>, keeps <s>
    b = collate([[5, 6, 7], [8]], [[9], [10, 11]], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [[9, -100], [10, 11]]
    with pytest.raises(ValueError, match="max_length"):
        encode(tok, ["x"], 2)
