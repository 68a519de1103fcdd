"""Bad input, end to end: each mistake a user can make with the three training scripts, predict.py, the data
readers, a checkpoint or generate() ends in one clear error that names the culprit (flag, file, line or field)
and its value, without a traceback and before anything is written; a folder that already holds a run keeps
every byte. The scripts run in-process through `minitrain.cli.run` (as their `__main__` does), a few as real
processes to pin the process path."""
import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_BERT
from test_cola import write_cola
from test_run_faults import cola_args, finished_cola, snapshot  # noqa: F401 (finished_cola: a fixture)
from test_squad import squad_json
from test_train_squad import write_squad

import predict
import train_cola
import train_paraphrase
import train_squad
from data.classification import read_labeled
from data.cola import read_tsv
from data.files import read_json, read_table
from data.paraphrase import read_msrp, read_pairs, read_squad_contexts
from data.squad import SquadExample, featurize, read_squad_file
from minibart import BartForConditionalGeneration
from minibert import BertConfig, BertForSequenceClassification, BertModel, load_tokenizer
from minicore.checkpoint import copy_tokenizer_files
from minicore.errors import UserError
from minitrain.cli import run

ROOT = Path(__file__).resolve().parents[1]
LATIN1 = "café".encode("latin-1")  # b"caf\xe9": not UTF-8


# ----------------------------------------------------------------------------- the material: data and checkpoints

def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def squad_with(change) -> str:
    """squad_json() (questions q0-q2 and an unanswerable one) after `change(d)`."""
    d = squad_json()
    change(d)
    return json.dumps(d)


def qa(d, n: int = 0) -> dict:
    return d["data"][0]["paragraphs"][0]["qas"][n]


def damaged(src: Path, dst: Path, config: dict | None = None, generation: dict | None = None, drop: str | None = None,
            truncate: str | None = None, text: str | None = None) -> Path:
    """A copy of the checkpoint `src` with fields of config.json (`config`) or generation_config.json
    (`generation`) changed, a file removed (`drop`), truncated to 100 bytes (`truncate`) or config.json
    replaced by `text`."""
    shutil.copytree(src, dst)
    for name, change in (("config.json", config), ("generation_config.json", generation)):
        if change:
            values = json.loads((dst / name).read_text())
            (dst / name).write_text(json.dumps({**values, **change}))
    if drop:
        (dst / drop).unlink()
    if truncate:
        (dst / truncate).write_bytes((dst / truncate).read_bytes()[:100])
    if text is not None:
        (dst / "config.json").write_text(text)
    return dst


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert_dir) -> SimpleNamespace:
    """Good data and checkpoints for every script, and bad files and checkpoints of every kind (`bad`)."""
    root = tmp_path_factory.mktemp("bad_input")
    bad = root / "bad"
    bart = root / "bart"
    BartForConditionalGeneration.from_bert(tiny_bert_dir).save_pretrained(bart)
    copy_tokenizer_files(tiny_bert_dir, bart)
    cls = root / "cls"
    BertForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2).save_pretrained(cls)
    copy_tokenizer_files(tiny_bert_dir, cls)
    pairs = "source,target\n" + "".join(f"Sentence number {i} is here.,Here is sentence {i}.\n" for i in range(6))
    held_out = pairs.replace("entence", "tatement")
    w = SimpleNamespace(bert=tiny_bert_dir, bart=bart, cls=cls, bad=bad, cola=write_cola(root / "cola"),
                        cola2=write_cola(root / "cola2", seed=1), squad=write_squad(root / "squad", 2),
                        pairs=write(root / "pairs.csv", pairs), pairs_test=write(root / "pairs_test.csv", held_out))
    topics = "sentence,label\n" + "".join(f"Sentence {i}.,{'ab'[i % 2]}\n" for i in range(8))
    for name, content in {
        # tables
        "latin1.csv": b"sentence,label\nfine,a\n" + LATIN1 + b",b\n",
        "quote.csv": 'sentence,label\n"unclosed,a\nfine,b\n',
        "fields.csv": "sentence,label\nfine,a\none,two,three\n",
        "empty_text.jsonl": '{"sentence": "ok", "label": "a"}\n{"sentence": " ", "label": "b"}\n',
        "list_label.jsonl": '{"sentence": "ok", "label": "a"}\n{"sentence": "no", "label": ["b"]}\n',
        "broken.jsonl": '{"sentence": "ok", "label": "a"}\n{"sentence": "no", "label": \n',
        "topics.txt": topics,
        "no_header.csv": "",
        "empty_target.csv": "source,target\nA sentence.,Another one.\nA source.,\n",
        "copies.csv": "source,target\n" + "".join(f"Copy {i} .,Copy {i}.\n" for i in range(4)),
        "msrp.txt": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\nyes\t1\t2\tA .\tB .\n",
        # SQuAD
        "negative_start.json": squad_with(lambda d: qa(d)["answers"][0].update(answer_start=-5)),
        "far_start.json": squad_with(lambda d: qa(d)["answers"][0].update(answer_start=500)),
        "empty_answer.json": squad_with(lambda d: qa(d)["answers"][0].update(text="")),
        "moved_answer.json": squad_with(lambda d: qa(d)["answers"][0].update(answer_start=3)),
        "duplicate_ids.json": squad_with(lambda d: qa(d, 1).update(id="q0")),
        "impossible.json": squad_with(lambda d: qa(d).update(is_impossible=True)),
        "int_context.json": squad_with(lambda d: d["data"][0]["paragraphs"][0].update(context=7)),
        "truncated.json": squad_with(lambda d: None)[:200],
        "latin1.json": b'{"version": "v2.0",\n "data": ["' + LATIN1 + b'"]}',
        "no_questions.jsonl": "\n",
        "bad_answers.jsonl": json.dumps({"id": "a", "title": "t", "context": "Paris.", "question": "Where?",
                                         "answers": {"text": ["Paris"], "answer_start": ["0"]}}) + "\n",
        "squad.txt": "{}",
        # predict.py's input
        "no_field.jsonl": '{"sentence": "ok"}\n{"text": "no sentence field"}\n',
        "latin1.txt": b"fine\n" + LATIN1 + b"\n",
        "numbers.jsonl": '{"sentence": 5}\n',
        "no_context.jsonl": '{"question": "Why?"}\n',
        "topics.csv": topics,
        "cased.csv": topics.replace(",a\n", ",Sports\n").replace(",b\n", ",sports\n"),
        "dup_header.csv": "sentence,label,label\nFine.,a,b\n",
        "lines.json": '{"sentence": "one"}\n{"sentence": "two"}\n',
        "items.json": '[\n  {"sentence": "one"},\n  "two"\n]\n',
        "braces.dat": "{curly} is how this line starts\n",
        "empty_question.json": squad_with(lambda d: qa(d).update(question=" ")),
    }.items():
        write(bad / name, content)
    bad_cola = write_cola(bad / "cola_fields")
    write(bad_cola / "in_domain_train.tsv", (bad_cola / "in_domain_train.tsv").read_text() + "src\t1\tonly three\n")
    bad_label = write_cola(bad / "cola_label")
    write(bad_label / "in_domain_dev.tsv", "src\t2\t\tA sentence.\n")
    # checkpoints: config.json with bad types and values, missing or damaged files
    for name, kw in {
        "str_hidden": dict(config={"hidden_size": "32"}),
        "heads5": dict(config={"num_attention_heads": 5}),
        "dropout": dict(config={"hidden_dropout_prob": 1.5}),
        "vocab_negative": dict(config={"vocab_size": -1}),
        "bool_layers": dict(config={"num_hidden_layers": True}),
        "wide": dict(config={"hidden_size": 64, "num_attention_heads": 2}),
        "config_not_json": dict(text="{\"hidden_size\": 32,"),
        "config_list": dict(text="[1, 2]"),
        "no_config": dict(drop="config.json"),
        "no_weights": dict(drop="model.safetensors"),
        "truncated_weights": dict(truncate="model.safetensors"),
    }.items():
        setattr(w, name, damaged(tiny_bert_dir, root / name, **kw))
    w.short = root / "short"  # 16 positions
    BertModel(BertConfig(**{**TINY_BERT, "max_position_embeddings": 16})).save_pretrained(w.short)
    copy_tokenizer_files(tiny_bert_dir, w.short)
    w.cls_str_hidden = damaged(cls, root / "cls_str_hidden", config={"hidden_size": "32"})
    w.bart_d_model = damaged(bart, root / "bart_d_model", config={"d_model": "32"})
    w.bart_start = damaged(bart, root / "bart_start", generation={"decoder_start_token_id": 99999})
    w.bart_beams = damaged(bart, root / "bart_beams", config={"num_beams": 0})
    return w


# ----------------------------------------------------------------------------- the scripts, in-process

MAINS = {"cola": train_cola.main, "rows": train_cola.main, "squad": train_squad.main, "para": train_paraphrase.main,
         "para-eval": train_paraphrase.main,
         "predict": predict.main}
BASE = {  # each case's flags come after these, so they win
    "cola": "--model {bert} --data-dir {cola} --output-dir {out} --device cpu --batch-size 4 --max-steps 1",
    "rows": "--model {bert} --output-dir {out} --device cpu --batch-size 4 --max-steps 1",  # train_cola.py, own files
    "squad": "--model {bert} --data-dir {squad} --output-dir {out} --device cpu --batch-size 4 --max-steps 1 "
             "--validation-questions 2",
    "para": "--model {bert} --train-file {pairs} --test-file {pairs_test} --output-dir {out} --device cpu "
            "--batch-size 2 --max-steps 1 --max-target-length 8 --max-seq-length 16",
    "para-eval": "--model {bert} --test-file {pairs_test} --output-dir {out} --device cpu",
    "predict": "",  # predict.py's cases give the whole command line
}

SCRIPT_CASES = [  # (script, flags, exit status, what the error line must hold)
    # flags: a bad value is refused by the parser (status 2), naming the flag and the value
    ("cola", "--lr abc", 2, ["--lr", "'abc'"]),
    ("cola", "--lr 0", 2, ["--lr", "'0'"]),
    ("cola", "--lr nan", 2, ["--lr", "'nan'"]),
    ("cola", "--epochs 0", 2, ["--epochs", "'0'"]),
    ("cola", "--batch-size -1", 2, ["--batch-size", "'-1'"]),
    ("cola", "--warmup-ratio 1.5", 2, ["--warmup-ratio", "'1.5'"]),
    ("cola", "--save-total-limit 0", 2, ["--save-total-limit", "'0'"]),
    ("cola", "--max-seq-length 2", 2, ["--max-seq-length", "2"]),
    ("cola", "--precision fp8", 2, ["--precision", "'fp8'"]),
    ("cola", "--grad-accum-steps 8", 1, ["--batch-size", "4", "--grad-accum-steps 8"]),
    ("cola", "--device tpu", 1, ["--device", "tpu"]),
    ("cola", "--resume", 1, ["no checkpoint to resume", "--output-dir"]),
    ("cola", "--output-dir {pairs}", 1, ["not a folder", "--output-dir", "pairs.csv"]),
    # data: the file, the line and the value
    ("cola", "--data-dir {bad}/nowhere", 1, ["--data-dir", "nowhere"]),
    ("cola", "--data-dir {bad}/cola_fields", 1, ["in_domain_train.tsv", "line 41"]),
    ("cola", "--data-dir {bad}/cola_label", 1, ["in_domain_dev.tsv", "line 1", "'2'"]),
    ("rows", "--train-file {bad}/latin1.csv", 1, ["not UTF-8", "latin1.csv, line 3", "xe9"]),
    ("rows", "--train-file {bad}/quote.csv", 1, ["malformed CSV", "quote.csv, line"]),
    ("rows", "--train-file {bad}/fields.csv", 1, ["fields.csv, line 3", "got 3"]),
    ("rows", "--train-file {bad}/empty_text.jsonl", 1, ["empty_text.jsonl, line 2, column 'sentence'"]),
    ("rows", "--train-file {bad}/list_label.jsonl", 1, ["list_label.jsonl, line 2, column 'label'",
                                                                   "['b']"]),
    ("rows", "--train-file {bad}/broken.jsonl", 1, ["not valid JSON", "broken.jsonl, line 2"]),
    ("rows", "--train-file {bad}/topics.txt", 1, ["unknown table format", "topics.txt", "'.txt'"]),
    ("rows", "--train-file {bad}/no_header.csv", 1, ["no header row", "no_header.csv"]),
    ("rows", "--train-file {bad}/dup_header.csv", 1, ["the header names the column 'label' 2 times",
                                                     "dup_header.csv, line 1"]),
    ("rows", "--train-file {bad}/topics.csv --text-column label --label-column sentence", 1,
     ["8 of the 8 rows have a label no other row has", "topics.csv, column 'sentence'", "--label-column",
      "--text-column"]),
    ("rows", "--train-file {bad}/cased.csv", 1, ["the labels 'Sports' and 'sports' differ only in how",
                                                "cased.csv, column 'label'"]),
    # checkpoints: the folder or file, the field and the value
    ("cola", "--model {bad}/nowhere", 1, ["nowhere"]),
    ("cola", "--model {str_hidden}", 1, ["str_hidden", "hidden_size", "'32'"]),
    ("cola", "--model {heads5}", 1, ["heads5", "num_attention_heads", "5"]),
    ("cola", "--model {dropout}", 1, ["dropout", "hidden_dropout_prob", "1.5"]),
    ("cola", "--model {vocab_negative}", 1, ["vocab_negative", "vocab_size", "-1"]),
    ("cola", "--model {bool_layers}", 1, ["bool_layers", "num_hidden_layers", "True"]),
    ("cola", "--model {wide}", 1, ["wide", "shape", "64"]),
    ("cola", "--model {short}", 1, ["--max-seq-length", "64", "16"]),
    ("cola", "--model {config_not_json}", 1, ["config_not_json", "config.json", "line 1"]),
    ("cola", "--model {config_list}", 1, ["config_list", "config.json"]),
    ("cola", "--model {no_config}", 1, ["no_config", "config.json"]),
    ("cola", "--model {no_weights}", 1, ["no_weights", "model.safetensors"]),
    ("cola", "--model {truncated_weights}", 1, ["truncated_weights", "model.safetensors"]),
    ("cola", "--model {bart}", 1, ["bart/config.json", "model_type", "'bart'"]),
    # train_squad.py
    ("squad", "--doc-stride -3", 2, ["--doc-stride", "'-3'"]),
    ("squad", "--version 3.0", 2, ["--version", "'3.0'"]),
    ("squad", "--train-file {bad}/negative_start.json", 1, ["negative_start.json", "'q0'", "answer_start -5"]),
    ("squad", "--train-file {bad}/far_start.json", 1, ["far_start.json", "'q0'", "answer_start 500"]),
    ("squad", "--train-file {bad}/empty_answer.json", 1, ["empty_answer.json", "'q0'", "empty answer text"]),
    ("squad", "--train-file {bad}/moved_answer.json", 1, ["moved_answer.json", "'q0'", "answer_start 3"]),
    ("squad", "--train-file {bad}/duplicate_ids.json", 1, ["duplicate question id", "duplicate_ids.json", "'q0'"]),
    ("squad", "--train-file {bad}/impossible.json", 1, ["impossible.json", "is_impossible is True"]),
    ("squad", "--train-file {bad}/int_context.json", 1, ["int_context.json", "context must be str, got int"]),
    ("squad", "--train-file {bad}/truncated.json", 1, ["not valid JSON", "truncated.json, line 1"]),
    ("squad", "--dev-file {bad}/latin1.json", 1, ["not UTF-8", "latin1.json, line 2"]),
    ("squad", "--train-file {bad}/no_questions.jsonl", 1, ["no questions", "no_questions.jsonl"]),
    ("squad", "--train-file {bad}/bad_answers.jsonl", 1, ["malformed answers", "bad_answers.jsonl, line 1"]),
    ("squad", "--train-file {bad}/squad.txt", 1, ["unknown SQuAD file format", "squad.txt"]),
    ("squad", "--train-file {bad}/empty_question.json", 1, ["empty question", "empty_question.json", "'q0'"]),
    ("squad", "--model {bart}", 1, ["bart/config.json", "model_type", "'bart'"]),
    ("squad", "--model {short} --max-seq-length 100", 1, ["--max-seq-length", "100", "16"]),
    # train_paraphrase.py: generation flags are checked before training
    ("para", "--top-p 1.5", 2, ["--top-p", "1.5"]),
    ("para", "--num-beams 0", 2, ["--num-beams", "0"]),
    ("para", "--top-k -1", 2, ["--top-k", "-1"]),
    ("para", "--max-target-length 1024", 1, ["--max-target-length", "1024"]),
    ("para", "--max-seq-length 600", 1, ["--max-seq-length", "600"]),
    ("para-eval", "--eval-only", 1, ["--eval-only", "BERT checkpoint", "--model"]),
    ("para", "--train-file {bad}/empty_target.csv", 1, ["empty_target.csv, line 3, column 'target'"]),
    ("para", "--train-file {bad}/copies.csv", 1, ["no training pairs left"]),
    ("para", "--denoise-steps 1 --denoise-text {bad}/latin1.json", 1, ["not UTF-8", "latin1.json, line 2"]),
    ("para", "--denoise-steps 1 --denoise-text {bad}/truncated.json", 1, ["not valid JSON", "truncated.json"]),
    ("para", "--denoise-steps 1 --denoise-text {bad}/int_context.json", 1, ["int_context.json", "context"]),
    ("para", "--model {bart_d_model}", 1, ["bart_d_model", "d_model", "'32'"]),
    ("para", "--model {bart_start}", 1, ["decoder_start_token_id", "99999"]),
    # predict.py
    ("predict", "cola --model {bert} --input {bad}/topics.txt", 1, ["--model", "classifier.weight"]),
    ("predict", "squad --model {cls} --input {bad}/no_context.jsonl", 1, ["--model", "qa_outputs.weight"]),
    ("predict", "paraphrase --model {bert} --input {bad}/topics.txt", 1, ["--model", "model_type is 'bert'"]),
    ("predict", "cola --model {bad}/nowhere --input {bad}/topics.txt", 1, ["--model", "nowhere"]),
    ("predict", "cola --model {cls} --input {bad}/nowhere.txt", 1, ["--input", "nowhere.txt"]),
    ("predict", "cola --model {cls} --input {bad}/latin1.txt", 1, ["not UTF-8", "latin1.txt, line 2"]),
    ("predict", "cola --model {cls} --input {bad}/no_field.jsonl", 1, ["missing column 'sentence'",
                                                                      "no_field.jsonl, line 2"]),
    ("predict", "cola --model {cls} --input {bad}/numbers.jsonl", 1, ["numbers.jsonl, line 1, column 'sentence'",
                                                                     "5"]),
    ("predict", "cola --model {cls} --input {bad}/topics.txt --output {bad}", 1, ["--output", "a folder"]),
    ("predict", "cola --model {cls} --input {bad}/topics.txt --format jsonl", 1, ["not valid JSON",
                                                                                 "topics.txt, line 1"]),
    ("predict", "cola --model {cls} --input {bad}/topics.txt --max-seq-length 9999", 1, ["--max-seq-length", "9999"]),
    ("predict", "cola --model {cls} --input {bad}/braces.dat", 1, ["not valid JSON", "braces.dat, line 1",
                                                                  "pass --format text"]),
    ("predict", "cola --model {cls} --input {bad}/lines.json", 1, ["not valid JSON (Extra data)",
                                                                  "lines.json, line 2"]),
    ("predict", "cola --model {cls} --input {bad}/items.json", 1, ["expected a JSON object, got str",
                                                                  "items.json, line 3"]),
    ("predict", "cola --model {cls} --input {bad}/dup_header.csv", 1, ["the header names the column 'label' 2 times",
                                                                      "dup_header.csv, line 1"]),
    ("predict", "cola --model {cls} --input {bad}/topics.csv --output {bad}/topics.csv", 1,
     ["the input file itself", "--output", "topics.csv"]),
    ("predict", "--model {cls} --input {bad}/topics.txt", 2, ["the task comes first", "{squad,cola,paraphrase}",
                                                              "'--model'"]),
    ("predict", "{cls} --input {bad}/topics.txt", 2, ["the task comes first", "cls'"]),
    ("predict", "squad --model {cls} --input {bad}/no_context.jsonl --null-threshold nan", 2,
     ["--null-threshold", "'nan'"]),
    ("predict", "paraphrase --model {bart} --input {bad}/topics.txt --num-beams 1 --num-return-sequences 3", 1,
     ["argument --num-return-sequences", "--num-beams > 1 or --do-sample", "3"]),
    ("predict", "paraphrase --model {bart} --input {bad}/topics.txt --max-target-length 9999", 1,
     ["argument --max-target-length", "9999"]),
    ("predict", "squad --model {cls} --input {bad}/no_context.jsonl --doc-stride 0", 2, ["--doc-stride", "'0'"]),
    ("predict", "paraphrase --model {bart} --input {bad}/topics.txt --top-p 0", 1, ["--top-p", "0"]),
    ("predict", "paraphrase --model {bart} --input {bad}/topics.txt --num-beams 0", 1, ["--num-beams", "0"]),
    ("predict", "paraphrase --model {bart} --input {bad}/topics.txt --temperature nan --do-sample", 1,
     ["--temperature", "nan"]),
    ("predict", "paraphrase --model {bart_beams} --input {bad}/topics.txt", 1,
     ["bart_beams/config.json", "num_beams", "0"]),
    ("predict", "paraphrase --model {bart_start} --input {bad}/topics.txt", 1, ["decoder_start_token_id", "99999"]),
    ("predict", "cola --model {truncated_weights} --input {bad}/topics.txt", 1, ["truncated_weights",
                                                                                "model.safetensors"]),
]


def case_id(case) -> str:
    return f"{case[0]}:{case[1]}"


def fails(main, argv: list[str], capsys) -> tuple[int, str]:
    """Run `main` as its __main__ does (minitrain.cli.run) -> (exit status, stderr); it must exit non-zero."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run(main, argv)
    out = capsys.readouterr()
    assert not out.out.strip() or main is not predict.main, out.out  # predict.py: no prediction on stdout
    return exit_.value.code, out.err


def one_clear_line(err: str, culprits: list[str]) -> None:
    """One line "error: ...", no traceback, naming every culprit."""
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    missing = [c for c in culprits if c not in lines[0]]
    assert not missing, f"{missing} not in {lines[0]!r}"


@pytest.mark.parametrize("case", SCRIPT_CASES, ids=case_id)
def test_a_bad_start_is_one_line_and_writes_nothing(world, tmp_path, capsys, case):
    script, flags, status, culprits = case
    out = tmp_path / "out"
    values = {**vars(world), "out": out}
    argv = [a.format(**values) for a in (BASE[script] + " " + flags).split()]
    code, err = fails(MAINS[script], argv, capsys)
    assert code == status, err
    one_clear_line(err, culprits)
    assert not out.exists()


# ----------------------------------------------------------------------------- a folder that holds a run

RUN_CASES = [  # (flags after a finished run's own, exit status, what the error line must hold)
    ("--resume --epochs 3", 1, ["--epochs 2 in the checkpoint, 3 now"]),
    ("--resume --warmup-ratio 0.5", 1, ["--warmup-ratio 0.0 in the checkpoint, 0.5 now"]),
    ("--resume --grad-accum-steps 2", 1, ["--grad-accum-steps 1 in the checkpoint, 2 now"]),
    ("--resume --precision bf16", 1, ["--precision 'fp32' in the checkpoint, 'bf16' now"]),
    ("--resume --model {cls}", 1, ["--model", "in the checkpoint", "cls"]),
    ("--resume --data-dir {cola2}", 1, ["the training data (fingerprint)"]),
    ("--resume --max-seq-length 8", 1, ["the training data (fingerprint)"]),
    ("--resume --device tpu", 1, ["--device", "tpu"]),
    ("--overwrite --lr abc", 2, ["--lr", "'abc'"]),
    ("--overwrite --model {str_hidden}", 1, ["hidden_size", "'32'"]),
    ("--overwrite --model {truncated_weights}", 1, ["truncated_weights", "model.safetensors"]),
    ("--overwrite --data-dir {bad}/cola_label", 1, ["in_domain_dev.tsv", "line 1", "'2'"]),
    ("--overwrite --max-seq-length 600", 1, ["--max-seq-length", "600"]),
]


@pytest.mark.parametrize("flags,status,culprits", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_a_bad_start_in_a_run_folder_changes_no_byte(world, finished_cola, tmp_path, capsys,  # noqa: F811
                                                     flags, status, culprits):
    data, finished = finished_cola
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    before = snapshot(out)
    argv = cola_args(world.bert, data, out) + [a.format(**vars(world)) for a in flags.split()]
    code, err = fails(train_cola.main, argv, capsys)
    assert code == status, err
    one_clear_line(err, culprits)
    assert snapshot(out) == before



def test_resume_past_damaged_weights_falls_back_saying_so(world, finished_cola, tmp_path):  # noqa: F811
    """The latest checkpoint's model.safetensors cut short: --resume continues from the one before, and the log
    names the damaged file."""
    data, finished = finished_cola
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    weights = out / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
    m = train_cola.main(cola_args(world.bert, data, out) + ["--resume", "--max-steps", "4"])
    log = (out / "train.log").read_text()
    assert m["steps"] == 4 and f"{weights} is unreadable" in log
    assert f"resuming from {out / 'checkpoint-2'} at step 2" in log


def test_resume_with_other_pairs_changes_no_byte(world, tmp_path, capsys):
    """train_paraphrase.py resumed on other training pairs: refused before the folder is touched."""
    out = tmp_path / "out"
    argv = [a.format(**vars(world), out=out) for a in BASE["para"].split()]
    train_paraphrase.main(argv)
    before = snapshot(out)
    other = write(tmp_path / "other.csv", world.pairs.read_text().replace("number", "no."))
    code, err = fails(train_paraphrase.main, argv + ["--resume", "--train-file", str(other)], capsys)
    assert code == 1
    one_clear_line(err, ["the training data (fingerprint)", str(out / "checkpoint")])
    assert snapshot(out) == before

# ----------------------------------------------------------------------------- library calls

@pytest.fixture(scope="module")
def bart(world):
    return BartForConditionalGeneration.from_pretrained(world.bart)


@pytest.fixture(scope="module")
def tok(world):
    return load_tokenizer(world.bert)


def squad_example(context="apple river house", start=0, text="apple") -> list[SquadExample]:
    return [SquadExample("q", "what?", context, [text], [start], False)]


IDS = torch.tensor([[101, 2023, 2003, 102], [101, 2009, 102, 0]])
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])

LIBRARY_CASES = [  # (name, call(world, fixtures), exception, what its message must hold)
    # readers
    ("squad negative answer_start", lambda w, f: read_squad_file(w.bad / "negative_start.json"), UserError,
     ["negative_start.json", "'q0'", "answer_start -5"]),
    ("squad answer_start past the context", lambda w, f: read_squad_file(w.bad / "far_start.json"), UserError,
     ["far_start.json", "'q0'", "500"]),
    ("squad empty answer text", lambda w, f: read_squad_file(w.bad / "empty_answer.json"), UserError,
     ["empty_answer.json", "'q0'", "empty answer text"]),
    ("squad duplicate ids", lambda w, f: read_squad_file(w.bad / "duplicate_ids.json"), UserError,
     ["duplicate_ids.json", "'q0'", "qas[0] and", "qas[1]"]),
    ("squad not UTF-8", lambda w, f: read_squad_file(w.bad / "latin1.json"), UserError,
     ["not UTF-8", "latin1.json, line 2"]),
    ("squad JSONL answer_start as text", lambda w, f: read_squad_file(w.bad / "bad_answers.jsonl"), UserError,
     ["bad_answers.jsonl, line 1, column 'answers'", "'0'"]),
    ("squad zero questions", lambda w, f: read_squad_file(w.bad / "no_questions.jsonl"), UserError,
     ["no questions", "no_questions.jsonl"]),
    ("squad empty question", lambda w, f: read_squad_file(w.bad / "empty_question.json"), UserError,
     ["empty question", "empty_question.json", "'q0'"]),
    ("table header naming a column twice", lambda w, f: read_table(w.bad / "dup_header.csv", ["sentence"]), UserError,
     ["the header names the column 'label' 2 times", "dup_header.csv, line 1"]),
    ("JSON array of a non-object", lambda w, f: read_table(w.bad / "items.json", ["sentence"]), UserError,
     ["expected a JSON object, got str", "items.json, line 3"]),
    ("JSON lines in a .json file", lambda w, f: read_table(w.bad / "lines.json", ["sentence"]), UserError,
     ["not valid JSON (Extra data)", "lines.json, line 2"]),
    ("labels and texts swapped", lambda w, f: read_labeled(w.bad / "topics.csv", "label", "sentence"), UserError,
     ["look like texts", "topics.csv, column 'sentence'"]),
    ("labels written two ways", lambda w, f: read_labeled(w.bad / "cased.csv", "sentence", "label"), UserError,
     ["'Sports' and 'sports'", "cased.csv, column 'label'"]),
    ("table not UTF-8", lambda w, f: read_labeled(w.bad / "latin1.csv", "sentence", "label"), UserError,
     ["latin1.csv, line 3", "xe9"]),
    ("table without a header", lambda w, f: read_table(w.bad / "no_header.csv", ["sentence"]), UserError,
     ["no header row", "no_header.csv"]),
    ("label not text", lambda w, f: read_labeled(w.bad / "list_label.jsonl", "sentence", "label"), UserError,
     ["list_label.jsonl, line 2, column 'label'", "['b']"]),
    ("pairs empty target", lambda w, f: read_pairs(w.bad / "empty_target.csv", "source", "target"), UserError,
     ["empty_target.csv, line 3, column 'target'"]),
    ("pairs missing column", lambda w, f: read_pairs(w.pairs, "source", "paraphrase"), UserError,
     ["missing column 'paraphrase'", "pairs.csv, line 1"]),
    ("MSRP quality not 0/1", lambda w, f: read_msrp(w.bad / "msrp.txt"), UserError, ["msrp.txt, line 2", "yes"]),
    ("CoLA label 2", lambda w, f: read_tsv(w.bad / "cola_label" / "in_domain_dev.tsv"), UserError,
     ["in_domain_dev.tsv, line 1", "'2'"]),
    ("CoLA row of 3 fields", lambda w, f: read_tsv(w.bad / "cola_fields" / "in_domain_train.tsv"), UserError,
     ["in_domain_train.tsv, line 41", "got 3"]),
    ("JSON cut short", lambda w, f: read_json(w.bad / "truncated.json"), UserError,
     ["not valid JSON", "truncated.json, line 1"]),
    ("denoising text with a non-text context", lambda w, f: read_squad_contexts(w.bad / "int_context.json"),
     UserError, ["int_context.json", "context"]),
    ("denoising text not UTF-8", lambda w, f: read_squad_contexts(w.bad / "latin1.json"), UserError,
     ["not UTF-8", "latin1.json, line 2"]),
    ("doc_stride 0", lambda w, f: featurize(squad_example(), f["tok"], doc_stride=0), UserError, ["doc_stride", "0"]),
    ("doc_stride negative", lambda w, f: featurize(squad_example(), f["tok"], doc_stride=-4), UserError,
     ["doc_stride", "-4"]),
    ("max_query_length 0", lambda w, f: featurize(squad_example(), f["tok"], max_query_length=0), UserError,
     ["max_query_length", "0"]),
    ("max_seq_length below the question", lambda w, f: featurize(squad_example(), f["tok"], max_seq_length=4),
     UserError, ["max_seq_length", "4"]),
    # checkpoints
    ("config hidden_size '384'", lambda w, f: BertConfig.from_hf_dict({"hidden_size": "384"}), UserError,
     ["hidden_size", "'384'"]),
    ("config field of the wrong type", lambda w, f: BertModel.from_pretrained(w.str_hidden), UserError,
     ["str_hidden/config.json", "hidden_size", "'32'"]),
    ("config heads do not divide", lambda w, f: BertModel.from_pretrained(w.heads5), UserError,
     ["heads5/config.json", "num_attention_heads", "5"]),
    ("weights of another shape", lambda w, f: BertModel.from_pretrained(w.wide), UserError,
     ["wide", "shape mismatch", "(30522, 32)", "(30522, 64)"]),
    ("truncated weights", lambda w, f: BertModel.from_pretrained(w.truncated_weights), UserError,
     ["truncated_weights/model.safetensors"]),
    ("no weights", lambda w, f: BertModel.from_pretrained(w.no_weights), OSError,
     ["no_weights", "model.safetensors"]),
    ("BERT folder as a BART", lambda w, f: BartForConditionalGeneration.from_pretrained(w.bert), UserError,
     ["config.json", "model_type", "'bert'"]),
    ("BART folder as a BERT", lambda w, f: BertModel.from_pretrained(w.bart), UserError,
     ["bart/config.json", "model_type", "'bart'"]),
    # generate()
    ("id outside the vocabulary", lambda w, f: f["bart"].generate(torch.tensor([[101, 99999, 102]])), UserError,
     ["input_ids", "99999"]),
    ("negative id", lambda w, f: f["bart"].generate(torch.tensor([[101, -3, 102]])), UserError, ["input_ids", "-3"]),
    ("empty source", lambda w, f: f["bart"].generate(torch.empty(1, 0, dtype=torch.long)), UserError,
     ["empty source", "input_ids"]),
    ("a source with no real token", lambda w, f: f["bart"].generate(IDS, MASK * torch.tensor([[1], [0]])),
     UserError, ["empty source", "attention_mask row 1"]),
    ("float ids", lambda w, f: f["bart"].generate(IDS.float()), UserError, ["input_ids", "float32"]),
    ("source longer than the positions", lambda w, f: f["bart"].generate(torch.full((1, 513), 2023)), UserError,
     ["input_ids", "513", "512"]),
    ("length_penalty nan", lambda w, f: f["bart"].generate(IDS, num_beams=2, length_penalty=float("nan")),
     UserError, ["length_penalty", "nan"]),
    ("length_penalty inf", lambda w, f: f["bart"].generate(IDS, num_beams=2, length_penalty=float("inf")),
     UserError, ["length_penalty", "inf"]),
    ("num_beams 0", lambda w, f: f["bart"].generate(IDS, num_beams=0), UserError, ["num_beams", "0"]),
    ("top_p 0", lambda w, f: f["bart"].generate(IDS, do_sample=True, top_p=0.0), UserError, ["top_p", "0.0"]),
    ("top_p 1.5", lambda w, f: f["bart"].generate(IDS, do_sample=True, top_p=1.5), UserError, ["top_p", "1.5"]),
    ("top_k -1", lambda w, f: f["bart"].generate(IDS, do_sample=True, top_k=-1), UserError, ["top_k", "-1"]),
    ("temperature 0 in beam sampling",
     lambda w, f: f["bart"].generate(IDS, do_sample=True, num_beams=2, temperature=0.0), UserError,
     ["temperature", "0.0"]),
    ("negative temperature", lambda w, f: f["bart"].generate(IDS, do_sample=True, temperature=-1.0), UserError,
     ["temperature", "-1.0"]),
    ("max_length past the positions", lambda w, f: f["bart"].generate(IDS, max_length=1024), UserError,
     ["max_length", "1024"]),
    ("max_length 1", lambda w, f: f["bart"].generate(IDS, max_length=1), UserError, ["max_length", "1"]),
    ("max_new_tokens 0", lambda w, f: f["bart"].generate(IDS, max_new_tokens=0), UserError, ["max_new_tokens", "0"]),
    ("more sequences than beams", lambda w, f: f["bart"].generate(IDS, num_beams=2, num_return_sequences=3),
     UserError, ["num_return_sequences", "3"]),
    ("do_sample 'yes'", lambda w, f: f["bart"].generate(IDS, do_sample="yes"), UserError, ["do_sample", "'yes'"]),
    ("early_stopping 'sometimes'", lambda w, f: f["bart"].generate(IDS, num_beams=2, early_stopping="sometimes"),
     UserError, ["early_stopping", "'sometimes'"]),
    ("no_repeat_ngram_size -1", lambda w, f: f["bart"].generate(IDS, no_repeat_ngram_size=-1), UserError,
     ["no_repeat_ngram_size", "-1"]),
    ("decoder_start_token_id outside the vocabulary",
     lambda w, f: f["bart"].generate(IDS, decoder_start_token_id=30522), UserError,
     ["decoder_start_token_id", "30522"]),
    ("unknown argument", lambda w, f: f["bart"].generate(IDS, num_beam=2), UserError, ["num_beam"]),
]


@pytest.mark.parametrize("name,call,error,culprits", LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_a_bad_library_call_names_the_culprit(world, bart, tok, name, call, error, culprits):
    with pytest.raises(error) as e:
        call(world, {"bart": bart, "tok": tok})
    message = str(e.value)
    assert "\n" not in message.strip(), message
    missing = [c for c in culprits if c not in message]
    assert not missing, f"{missing} not in {message!r}"


def test_sampling_at_a_tiny_temperature_is_greedy(bart):
    """do_sample with a temperature near 0 takes its limit: the most probable token, as greedy search does."""
    torch.manual_seed(0)
    sampled = bart.generate(IDS, MASK, do_sample=True, temperature=1e-40, top_k=0, max_length=8)
    assert torch.equal(sampled, bart.generate(IDS, MASK, max_length=8))


# ----------------------------------------------------------------------------- failing disks and processes

@pytest.mark.parametrize("target", ["metrics.json", "model.safetensors"])
def test_a_full_disk_names_the_path(world, tmp_path, capsys, monkeypatch, target):
    """A write that fails with ENOSPC: exit 1, one line naming the file's path and the cause."""
    import minicore.checkpoint
    import minicore.files
    write = minicore.files.atomic_write

    def full(path, fn):
        if Path(path).name == target:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write(path, fn)
    monkeypatch.setattr(minicore.checkpoint, "atomic_write", full)
    monkeypatch.setattr(minicore.files, "atomic_write", full)
    out = tmp_path / "out"
    argv = [a.format(**vars(world), out=out) for a in BASE["cola"].split()]
    code, err = fails(train_cola.main, argv, capsys)
    assert code == 1
    one_clear_line(err.split("\r")[-1].splitlines()[-1], ["No space left on device", str(out), target])  # after the bar


def test_as_a_process_an_error_is_one_line_and_debug_shows_the_traceback(world, tmp_path, capsys):
    bad_flag = subprocess.run([sys.executable, "train_cola.py", "--lr", "abc"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    assert bad_flag.returncode == 2 and bad_flag.stdout == ""
    assert bad_flag.stderr == "error: argument --lr: expected float, got 'abc' (see train_cola.py --help)\n"
    argv = ["cola", "--model", str(world.cls_str_hidden), "--input", str(world.bad / "topics.txt")]
    bad_model = subprocess.run([sys.executable, "predict.py", *argv], cwd=ROOT, capture_output=True, text=True,
                               timeout=120)
    assert bad_model.returncode == 1 and bad_model.stdout == "" and "Traceback" not in bad_model.stderr
    one_clear_line(bad_model.stderr, ["hidden_size", "'32'"])
    with pytest.raises(UserError, match="hidden_size"):  # --debug: the exception itself, with its traceback
        run(predict.main, argv + ["--debug"])
