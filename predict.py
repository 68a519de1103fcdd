"""Put a trained model to work: answer questions (squad), classify sentences (cola, alias classify) or
paraphrase sentences (paraphrase), from a file or stdin, one JSON line out per input.

    python predict.py squad --model path/to/squad-checkpoint --input questions.jsonl --output answers.jsonl
    python predict.py cola --model path/to/cola-checkpoint --input sentences.txt
    echo "The cat sat on the mat." | python predict.py paraphrase --model path/to/paraphrase-checkpoint \\
        --num-beams 4 --num-return-sequences 3

Input (--input, default stdin): the formats the training scripts read, with the fields (columns)
    squad        "question" and "context"
    cola         "sentence" (--text-column)
    paraphrase   "source" (--source-column)
in JSONL (one object a line), a JSON array of objects (on one line or many; for squad also the official
SQuAD JSON, dev-v2.0.json), CSV or TSV with a header row, or, for cola and paraphrase, plain text: one
sentence a line. Blank lines are skipped. --format auto reads a file by its extension (.jsonl, .json,
.csv, .tsv, .txt); anything else (stdin) as JSON when it starts with "[" or "{" (JSONL when its first
line is an object), else as text.

Output (--output, default stdout): JSONL, one object per input, in input order: the input's fields (a
text line becomes {"sentence": ...} or {"source": ...}), plus
    squad        "answer" ("" for no answer), "score" (start + end logit of the span; the null score
                 when the answer is ""), "start" and "end" (character offsets: context[start:end] == answer)
    cola         "label" (the most probable label's name, from the checkpoint's id2label) and
                 "probabilities" ({label name: probability}, in label id order)
    paraphrase   "paraphrases" (a list of --num-return-sequences strings)
An input field of one of these names is replaced (a note on stderr says so). An empty input gives an
empty output. A file is written whole or not at all (a new file, then renamed over the old one); what is
not a regular file (/dev/stdout, a pipe, a link) is written to as it is. --output may not be the input.
Every check runs before anything is written: a bad line, field, flag or checkpoint is one error line and
exit status 1.

Lengths in tokens: --max-seq-length cuts each input (a note on stderr counts the inputs cut; squad cuts
the question to --max-query-length and the context into windows); --max-target-length bounds each
paraphrase. Paraphrases are generated with the checkpoint's generation settings (generation_config.json),
or, for a checkpoint that sets none, with those train_paraphrase.py evaluates with (the best of 4 beams,
no_repeat_ngram_size 3, at most 128 tokens); each generation flag given wins.

The predictions come from the functions the training scripts evaluate with (minitasks.answer, classify
and paraphrase): long contexts are cut into the same windows, and the answer is selected over them as in
evaluation.
"""
import argparse
import json
import math
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from data.files import KINDS, decode_text, parse_json, read_table, string_field, where
from data.squad import SquadExample, read_squad_json
from data.tokens import count_cut
from minibart import BartForConditionalGeneration
from minibart.config import GENERATION_DEFAULTS
from minibart.generation import check_generation_args
from minibert import BertForQuestionAnswering, BertForSequenceClassification, load_tokenizer, resolve
from minicore.checkpoint import read_config
from minicore.errors import UserError
from minicore.files import to_json, write_text
from minicore.quantize import WEIGHTS, inference_weights
from minicore.runtime import PRECISIONS, amp_dtype, pick_device, resolve_precision, set_seed
from minicore.validation import InvalidValue, check_length, check_vocabulary
from minitasks.classification import classify
from minitasks.paraphrasing import EVAL_GENERATION, paraphrase
from minitasks.question_answering import answer
from minitrain.cli import ArgumentParser, run
from minitrain.options import check_not_a_run_folder, number

# generate()'s arguments that are flags, and their flags
GENERATION_FLAGS = {"num_beams": "--num-beams", "no_repeat_ngram_size": "--no-repeat-ngram-size",
                    "encoder_no_repeat_ngram_size": "--encoder-no-repeat-ngram-size",
                    "max_length": "--max-target-length", "do_sample": "--do-sample", "top_k": "--top-k",
                    "top_p": "--top-p", "temperature": "--temperature",
                    "num_return_sequences": "--num-return-sequences"}
# without generation settings in the checkpoint: train_paraphrase.py's evaluation, its best beam
DEFAULT_GENERATION = {**EVAL_GENERATION, "num_return_sequences": 1}
FORMATS = {**KINDS, ".txt": "text"}  # the input's format by its extension: the training scripts' tables, and text


@dataclass(frozen=True)
class Task:
    model_class: type
    model_type: str  # config.json's model_type (a checkpoint without one is taken to be of this type)
    head: str | None  # the weight (HF name) of the task's head, which a checkpoint must hold
    fields: tuple[str, ...]  # the input's fields (the default of the column flag, for one field)
    column: str | None  # the flag naming the one input field, if it has one
    outputs: tuple[str, ...]  # the fields a prediction adds
    kind: str  # what a checkpoint for the task is, in words
    trainer: str  # the script that writes one


TASKS = {
    "squad": Task(BertForQuestionAnswering, "bert", "qa_outputs.weight", ("question", "context"), None,
                  ("answer", "score", "start", "end"), "BERT question-answering", "train_squad.py"),
    "cola": Task(BertForSequenceClassification, "bert", "classifier.weight", ("sentence",), "--text-column",
                 ("label", "probabilities"), "BERT sentence-classification", "train_cola.py"),
    "paraphrase": Task(BartForConditionalGeneration, "bart", None, ("source",), "--source-column", ("paraphrases",),
                       "BART", "train_paraphrase.py"),
}
TASK_NAMES = ("squad", "cola", "classify", "paraphrase")


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    check_task_first(p, sys.argv[1:] if argv is None else argv)
    sub = p.add_subparsers(dest="task", required=True, metavar="{squad,cola,paraphrase}")

    squad = sub.add_parser("squad", help="answer each question from its context (SQuAD)",
                           description="Answer each input's question from its context (SQuAD 2.0 or 1.1).")
    add_common_args(squad, "squad")
    squad.add_argument("--version", choices=["2.0", "1.1"], default="2.0",
                       help="2.0: answer '' when the model finds no answer; 1.1: always answer (a SQuAD 1.1 model)")
    squad.add_argument("--null-threshold", type=number(float, -math.inf, True), default=0.0,
                       help="SQuAD 2.0: answer '' when the null score > the best span's score + this (the official "
                            "evaluate-v2.0.py's best_f1_thresh)")
    squad.add_argument("--max-seq-length", type=number(int, 1, True), default=384,
                       help="input tokens per window: [CLS] question [SEP] context piece [SEP]")
    squad.add_argument("--max-query-length", type=number(int, 1, True), default=64,
                       help="question tokens kept; longer questions are cut (a note on stderr counts them)")
    squad.add_argument("--doc-stride", type=number(int, 1, True), default=128,
                       help="context tokens between the starts of consecutive windows")

    cola = sub.add_parser("cola", aliases=["classify"], help="classify each sentence (CoLA or your own labels)",
                          description="Classify each sentence with a sentence-classification checkpoint.")
    add_common_args(cola, "cola")
    cola.add_argument("--max-seq-length", type=number(int, 3, True),
                      help="input tokens per sentence, [CLS] and [SEP] included; longer ones are cut (a note on "
                           "stderr counts them) (default: the model's max_position_embeddings)")
    cola.set_defaults(task="cola")

    para = sub.add_parser("paraphrase", help="paraphrase each sentence with a BART checkpoint",
                          description="Paraphrase each sentence with a BART checkpoint. The generation flags\n"
                                      "default to the checkpoint's generation_config.json; for a checkpoint that sets\n"
                                      "none, to train_paraphrase.py's evaluation (the best of 4 beams,\n"
                                      "no_repeat_ngram_size 3, at most 128 tokens).")
    add_common_args(para, "paraphrase")
    para.add_argument("--max-seq-length", type=number(int, 3, True),
                      help="input tokens per source, special tokens included; longer ones are cut (a note on stderr "
                           "counts them) (default: the model's max_position_embeddings)")
    para.add_argument("--seed", type=int, default=0, help="seeds the sampling (--do-sample)")
    g = para.add_argument_group("generation (default: the checkpoint's generation config, else train_paraphrase.py's "
                                "evaluation)")
    g.add_argument("--num-beams", type=int, help="beam search with this many beams (1: greedy or sampling)")
    g.add_argument("--no-repeat-ngram-size", type=int, help="no n-gram of this size twice in an output (0: off)")
    g.add_argument("--encoder-no-repeat-ngram-size", type=int,
                   help="no n-gram of this size from the source (against copies; 0: off)")
    g.add_argument("--max-target-length", type=int,
                   help="output tokens per paraphrase, the decoder start token included")
    g.add_argument("--do-sample", action=argparse.BooleanOptionalAction,
                   help="sample (with beams: beam sampling) instead of taking the most probable tokens")
    g.add_argument("--top-k", type=int, help="sample among the k most probable tokens (0: all)")
    g.add_argument("--top-p", type=float, help="sample among the most probable tokens that cover this probability")
    g.add_argument("--temperature", type=float, help="divide the scores by this before sampling")
    g.add_argument("--num-return-sequences", type=int, help="paraphrases per input (at most --num-beams)")
    args = p.parse_args(argv)
    if args.task == "squad" and args.max_seq_length < args.max_query_length + 4:
        p.error(f"argument --max-seq-length: expected a value >= {args.max_query_length + 4} (--max-query-length "
                f"{args.max_query_length}, [CLS], two [SEP] and a context token), got {args.max_seq_length}")
    return args


def check_task_first(p: argparse.ArgumentParser, argv: list[str]) -> None:
    """The task comes first (after --debug): said so, instead of argparse's "invalid choice" for whatever came."""
    first = next((a for a in argv if a != "--debug"), None)
    if first not in (*TASK_NAMES, "-h", "--help"):
        got = f", got {first!r}" if first else ""
        p.error(f"the task comes first: predict.py {{squad,cola,paraphrase}} --model CHECKPOINT ...{got}")


def add_common_args(p: argparse.ArgumentParser, task: str) -> None:
    fields = " and ".join(map(repr, TASKS[task].fields))
    p.add_argument("--model", required=True,
                   help="checkpoint folder (HF layout) written by the task's training script, or a Hub id")
    p.add_argument("--input", help=f"the inputs, with {fields}: a JSONL, JSON, CSV, TSV"
                   + (" or text" if task != "squad" else "") + " file (default: stdin)")
    p.add_argument("--output", help="JSONL file, written whole or not at all; another path than --input "
                                    "(default: stdout)")
    formats = ["auto", "jsonl", "json", "csv", "tsv"] + ["text"] * (task != "squad")
    p.add_argument("--format", choices=formats, default="auto",
                   help="how to read the input; auto: by the extension (.jsonl, .json, .csv, .tsv, .txt), else JSON "
                        "when it starts with '[' or '{'" + (", else text" if task != "squad" else ""))
    if TASKS[task].column:
        p.add_argument(TASKS[task].column, default=TASKS[task].fields[0],
                       help="the input's column (JSON: key) of the text, as in training")
    p.add_argument("--batch-size", type=number(int, 1, True), default=32, help="inputs (SQuAD: windows) per batch")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="autocast dtype of the forward pass (default: bf16 on a GPU that has it, else fp32)")
    p.add_argument("--weights", choices=WEIGHTS, default="fp32",
                   help="the weights' precision for inference on CPU: fp32 (as trained), bf16 (half the bytes to "
                        "read), "
                        "int8 (dynamic quantization of every linear layer: a quarter of the bytes; outputs within "
                        "int8's rounding of fp32's)")


def input_fields(args, task: Task) -> tuple[str, ...]:
    return (getattr(args, task.column[2:].replace("-", "_")),) if task.column else task.fields


# ----------------------------------------------------------------------------- the checkpoint

def open_checkpoint(args, task: Task) -> Path:
    """The checkpoint's folder, once it is known to be of the task's kind and to hold its head."""
    check_not_a_run_folder(args.model)
    try:
        folder = resolve(args.model)
        config = read_config(folder)
    except (FileNotFoundError, ImportError) as e:
        raise UserError(str(e), "--model", fix=f"give a folder written by {task.trainer}") from None
    model_type = config.get("model_type", task.model_type)  # none: as training reads it, the model class's own
    if model_type != task.model_type:
        fix = f"give a {task.kind} checkpoint, such as one written by {task.trainer}"
        if args.task == "paraphrase" and model_type == "bert":
            fix += f" (train_paraphrase.py --model {args.model} fine-tunes a BART warm-started from this BERT)"
        raise UserError(f"not a {task.kind} checkpoint (its model_type is {model_type!r})", "--model", args.model,
                        fix)
    if task.head and not any(n == task.head or n.endswith("." + task.head) for n in weight_names(folder)):
        raise UserError(f"not a {task.kind} checkpoint: it has no {task.head}", "--model", args.model,
                        f"fine-tune it first with {task.trainer}, and give the folder it writes")
    return folder


def weight_names(folder: Path) -> set[str]:
    """The names of a checkpoint's tensors, read without loading the tensors."""
    path = folder / "model.safetensors"
    if path.exists():
        try:
            with safe_open(path, "pt") as f:
                return set(f.keys())
        except (SafetensorError, OSError) as e:
            raise UserError(f"unreadable weights ({e})", str(path), fix="repair or replace the checkpoint") from None
    path = folder / "pytorch_model.bin"
    if path.exists():
        return set(torch.load(path, map_location="cpu", weights_only=True))
    raise UserError("no weights", "--model", str(folder), "expected model.safetensors or pytorch_model.bin")


def generation_settings(args, config) -> dict:
    """generate()'s arguments: each flag given, else the checkpoint's generation settings, else, when it sets
    none, train_paraphrase.py's evaluation (DEFAULT_GENERATION), else transformers' defaults; checked against the
    model's config, a bad one naming its flag."""
    given = {name: getattr(args, flag[2:].replace("-", "_")) for name, flag in GENERATION_FLAGS.items()}
    given = {name: value for name, value in given.items() if value is not None}
    own = any(getattr(config, name) is not None for name in GENERATION_DEFAULTS)
    defaults = {} if own else DEFAULT_GENERATION
    try:
        settings = check_generation_args(config, **{**defaults, **given})
    except InvalidValue as e:
        if e.name not in GENERATION_FLAGS:
            raise
        origin = ("" if e.name in given else f" from the generation config of {args.model}" if own
                  else " by default (train_paraphrase.py's, for a checkpoint without generation settings)")
        raise e.as_flag(origin + (f"; pass {GENERATION_FLAGS[e.name]}" if origin else ""), GENERATION_FLAGS) from None
    return {k: v for k, v in settings.items() if v is not None}


def max_tokens(args, config) -> int:
    """--max-seq-length, or its default: the model's positions (more is an error naming the flag)."""
    if args.max_seq_length is not None:
        check_length("--max-seq-length", args.max_seq_length, config.max_position_embeddings)
    return args.max_seq_length or config.max_position_embeddings


def label_names(config, model: str) -> list[str]:
    """config.labels (in label id order), checked to be unique strings, so that they key a dict."""
    names = config.labels
    if not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
        raise UserError("id2label needs a distinct name for each label", f"--model {model}: config.json", names,
                        "give each label its own name")
    return names


# ----------------------------------------------------------------------------- input and output

def read_inputs(args, task: Task) -> list[dict]:
    """The input's objects, in order; a text line becomes {field: line}. Errors name the line and the field."""
    name, fields = args.input or "<stdin>", input_fields(args, task)
    try:
        data = Path(args.input).read_bytes() if args.input else sys.stdin.buffer.read()
    except (FileNotFoundError, IsADirectoryError) as e:
        raise UserError(e.strerror, "--input", args.input, "give a JSONL, JSON, CSV, TSV or text file") from None
    text = decode_text(data, name)
    kind = input_format(args, text, name)
    if kind == "text":
        if len(fields) > 1:
            raise UserError(f"plain text has no fields {' and '.join(map(repr, fields))}", "--input", name,
                            "give JSONL, JSON, CSV or TSV")
        return [{fields[0]: line.removesuffix("\r")} for line in text.split("\n") if line.strip()]
    if kind == "json" and args.task == "squad":
        root = parse_json(text, name)
        if isinstance(root, dict) and "data" in root:  # the official SQuAD JSON
            return [{"id": e.id, "question": e.question, "context": e.context} for e in read_squad_json(root, name)]
    rows = read_table(name, list(fields), kind=kind, text=text)
    for row in rows:
        for field in fields:
            string_field(name, row, field)
    return [row.values for row in rows]


def input_format(args, text: str, name: str) -> str:
    """--format, else the input's extension, else what it starts with: "[" or "{" JSON (JSONL when its first
    non-blank line is an object), anything else text. Text that starts with "[" or "{" but is not JSON is an
    error that says how to read it as text."""
    if args.format != "auto":
        return args.format
    suffix = Path(args.input).suffix.lower() if args.input else ""
    if suffix in FORMATS:
        return FORMATS[suffix]
    start = text.lstrip()[:1]
    if start not in ("[", "{"):
        return "text"
    first = next(line for line in text.split("\n") if line.strip())
    if start == "{" and json_error(first) is None:
        return "jsonl"
    error = json_error(text)
    if error is None:
        return "json"
    fix = f"it starts with {start!r}, so it was read as JSON: " + (
        "check the JSON" if args.task == "squad" else "pass --format text to read it as text, one input a line")
    raise UserError(f"not valid JSON ({error.msg})", where(name, error.lineno), fix=fix)


def json_error(text: str) -> json.JSONDecodeError | None:
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        return e
    return None


def check_output(args) -> None:
    """--output is a file's path, and not the input's (which it would replace)."""
    if not args.output:
        return
    out = Path(args.output)
    if out.is_dir():
        raise UserError("a folder, not a file", "--output", args.output, "give the path of the JSONL file to write")
    if args.input and out.exists() and Path(args.input).is_file() and os.path.samefile(args.input, out):
        raise UserError("the input file itself", "--output", args.output,
                        "write the predictions to another file: they would replace the inputs")


def write_output(path: str, text: str) -> None:
    """A regular file (or a new one) is replaced atomically; anything else (a device such as /dev/null or
    /dev/stdout, a pipe, a link) is written to, so that it stays what it is."""
    if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        write_text(path, text)


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def note_cut(tokenizer, texts: list[str], max_length: int) -> None:
    cut = count_cut(tokenizer, texts, max_length)
    if cut:
        note(f"{cut} of {len(texts)} inputs are longer than --max-seq-length {max_length} tokens and were cut to it")


# ----------------------------------------------------------------------------- the three tasks

def answer_questions(model, tok, rows: list[dict], args, length: int, **inference) -> list[dict]:
    questions = [r["question"] for r in rows]
    cut = sum(len(q.ids) > args.max_query_length for q in tok.encode_batch(questions, add_special_tokens=False))
    if cut:  # featurize keeps a question's first --max-query-length tokens
        note(f"{cut} of {len(rows)} questions are longer than --max-query-length {args.max_query_length} tokens and "
             "were cut to it")
    examples = [SquadExample(str(i), r["question"], r["context"], [], [], True) for i, r in enumerate(rows)]
    answers = answer(model, tok, examples, batch_size=args.batch_size, version_2=args.version == "2.0",
                     null_threshold=args.null_threshold, max_seq_length=length, doc_stride=args.doc_stride,
                     max_query_length=args.max_query_length, **inference)
    return [{"answer": a.text, "score": a.score, "start": a.start, "end": a.end} for a in answers]


def classify_sentences(model, tok, texts: list[str], args, length: int, labels: list[str], **inference) -> list[dict]:
    note_cut(tok, texts, length)
    probs = classify(model, tok, texts, max_seq_length=length, batch_size=args.batch_size, **inference)  # [N, L]
    return [{"label": labels[int(p.argmax())], "probabilities": dict(zip(labels, p.tolist()))} for p in probs]


def paraphrase_sources(model, tok, texts: list[str], args, length: int, generation: dict, **inference) -> list[dict]:
    note_cut(tok, texts, length)
    set_seed(args.seed)
    outputs = paraphrase(model, tok, texts, max_seq_length=length, batch_size=args.batch_size, **inference,
                         **generation)
    return [{"paraphrases": out} for out in outputs]


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    task = TASKS[args.task]
    check_output(args)
    device = pick_device(args.device)
    precision = resolve_precision(args.precision, device)
    if args.weights == "int8" and device.type != "cpu":
        raise UserError("int8 weights run on the CPU only", "--weights", "int8", "pass --device cpu, or --weights bf16")
    folder = open_checkpoint(args, task)
    config = task.model_class.read_hf_config(folder)  # checked, weights not read yet
    length = max_tokens(args, config)
    if args.task == "cola":
        labels = label_names(config, args.model)
    elif args.task == "paraphrase":
        generation = generation_settings(args, config)
    try:
        tok = load_tokenizer(folder)
    except FileNotFoundError as e:
        raise UserError(f"no tokenizer ({e})", "--model", args.model, f"give a folder written by {task.trainer}, "
                        "which holds the tokenizer files") from None
    check_vocabulary(tok.get_vocab_size(), config.vocab_size, args.model)
    rows = read_inputs(args, task)
    model = task.model_class.from_pretrained(folder).to(device)
    if args.weights != "fp32":
        model = inference_weights(model, args.weights)

    inference = dict(amp_dtype=amp_dtype(precision), progress=args.input is not None)
    if args.task == "squad":
        predictions = answer_questions(model, tok, rows, args, length, **inference)
    else:
        texts = [r[input_fields(args, task)[0]] for r in rows]
        if args.task == "cola":
            predictions = classify_sentences(model, tok, texts, args, length, labels, **inference)
        else:
            predictions = paraphrase_sources(model, tok, texts, args, length, generation, **inference)
    replaced = [f for f in task.outputs if any(f in r for r in rows)]
    if replaced:
        many = len(replaced) > 1
        note(f"the input field{'s' * many} {', '.join(map(repr, replaced))} {'are' if many else 'is'} replaced by the "
             f"prediction's (rename {'them' if many else 'it'} in the input to keep the input's)")
    records = [{**r, **p} for r, p in zip(rows, predictions)]
    text = "".join(to_json(r) + "\n" for r in records)
    if args.output:
        write_output(args.output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return records


if __name__ == "__main__":
    run(main)
