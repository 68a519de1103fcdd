"""Put a trained model to work: answer questions (squad), classify sentences (cola, alias classify) or
paraphrase sentences (paraphrase), from a file or stdin, one JSON line out per input.

    python predict.py squad --model path/to/squad-checkpoint --input questions.jsonl --output answers.jsonl
    python predict.py cola --model path/to/cola-checkpoint --input sentences.txt
    echo "The cat sat on the mat." | python predict.py paraphrase --model path/to/paraphrase-checkpoint \\
        --num-beams 4 --num-return-sequences 3

Input (--input, default stdin): JSONL, one object a line, with the fields
    squad        "question" and "context"
    cola         "sentence"
    paraphrase   "source"
or, for cola and paraphrase, plain text: one sentence a line. Blank lines are skipped. --format auto
reads a .jsonl file as JSONL, a .txt file as text, and anything else (stdin) as JSONL when its first
non-blank line starts with "{", else as text.

Output (--output, default stdout; a file is written whole or not at all): JSONL, one object per input,
in input order: the input's fields (a text line becomes {"sentence": ...} or {"source": ...}), plus
    squad        "answer" ("" for no answer), "score" (start + end logit of the span; the null score
                 when the answer is ""), "start" and "end" (character offsets: context[start:end] == answer)
    cola         "label" (the most probable label's name, from the checkpoint's id2label) and
                 "probabilities" ({label name: probability}, in label id order)
    paraphrase   "paraphrases" (a list of --num-return-sequences strings)
An input field of one of these names is replaced (a note on stderr says so). An empty input gives an
empty output. Every check runs before anything is written: a bad line, field, flag or checkpoint is
one error line and exit status 1.

The predictions come from the functions the training scripts evaluate with (data.squad.answer,
data.classification.classify, data.paraphrase.paraphrase): long contexts are cut into the same
windows, and the answer is selected over them as in evaluation.
"""
import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from data.files import decode_text, read_table, string_field
from data.squad import SquadExample
from data.tokens import count_cut
from minibart import BartForConditionalGeneration
from minibart.generation import check_generation_args
from minibert import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    load_tokenizer,
    resolve,
)
from minicore.checkpoint import read_config
from minicore.errors import UserError
from minicore.files import to_json, write_text
from minicore.runtime import (
    PRECISIONS,
    amp_dtype,
    pick_device,
    resolve_precision,
    set_seed,
)
from minicore.validation import InvalidValue
from minitasks.classification import classify
from minitasks.paraphrasing import paraphrase
from minitasks.question_answering import answer
from minitrain.cli import ArgumentParser, run
from minitrain.options import number

MAX_QUERY_LENGTH = 64  # question tokens kept, as in training (data.squad.featurize)
GENERATION_FLAGS = ("num_beams", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "max_length", "do_sample",
                    "top_k", "top_p", "temperature", "num_return_sequences")


@dataclass(frozen=True)
class Task:
    model_class: type
    model_type: str  # config.json's model_type
    head: str | None  # the weight (HF name) of the task's head, which a checkpoint must hold
    fields: tuple[str, ...]  # the input's fields
    outputs: tuple[str, ...]  # the fields a prediction adds
    length: str  # the flag of the input's length in tokens
    kind: str  # what a checkpoint for the task is, in words
    trainer: str  # the script that writes one


TASKS = {
    "squad": Task(BertForQuestionAnswering, "bert", "qa_outputs.weight", ("question", "context"),
                  ("answer", "score", "start", "end"), "--max-seq-length", "BERT question-answering",
                  "train_squad.py"),
    "cola": Task(BertForSequenceClassification, "bert", "classifier.weight", ("sentence",),
                 ("label", "probabilities"), "--max-length", "BERT sentence-classification", "train_cola.py"),
    "paraphrase": Task(BartForConditionalGeneration, "bart", None, ("source",), ("paraphrases",), "--max-seq-length",
                       "BART", "train_paraphrase.py"),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="task", required=True, metavar="{squad,cola,paraphrase}")

    squad = sub.add_parser("squad", help="answer each question from its context (SQuAD)",
                           description="Answer each JSONL line's question from its context (SQuAD 2.0 or 1.1).")
    add_common_args(squad, text=False)
    squad.add_argument("--version", choices=["2.0", "1.1"], default="2.0",
                       help="2.0: answer '' when the model finds no answer; 1.1: always answer (a SQuAD 1.1 model)")
    squad.add_argument("--null-threshold", type=float, default=0.0,
                       help="SQuAD 2.0: answer '' when the null score > the best span's score + this (the official "
                            "evaluate-v2.0.py's best_f1_thresh)")
    squad.add_argument("--max-seq-length", type=number(int, MAX_QUERY_LENGTH + 4, True), default=384,
                       help="tokens per window: [CLS] question [SEP] context piece [SEP]")
    squad.add_argument("--doc-stride", type=number(int, 1, True), default=128,
                       help="context tokens between the starts of consecutive windows")

    cola = sub.add_parser("cola", aliases=["classify"], help="classify each sentence (CoLA or your own labels)",
                          description="Classify each sentence with a sentence-classification checkpoint.")
    add_common_args(cola, text=True)
    cola.add_argument("--max-length", type=number(int, 3, True),
                      help="tokens per sentence, [CLS] and [SEP] included; longer ones are cut (a note on stderr "
                           "counts them) (default: the model's max_position_embeddings)")
    cola.set_defaults(task="cola")

    para = sub.add_parser("paraphrase", help="paraphrase each sentence with a BART checkpoint",
                          description="Paraphrase each sentence with a BART checkpoint. The generation flags default\n"
                                      "to the checkpoint's generation_config.json, then to transformers' defaults.")
    add_common_args(para, text=True)
    para.add_argument("--max-seq-length", type=number(int, 3, True),
                      help="source tokens, special tokens included; longer ones are cut (a note on stderr counts "
                           "them) (default: the model's max_position_embeddings)")
    para.add_argument("--seed", type=int, default=0, help="seeds the sampling (--do-sample)")
    g = para.add_argument_group("generation (default: the checkpoint's generation config, else transformers')")
    g.add_argument("--num-beams", type=int, help="beam search with this many beams (1: greedy or sampling)")
    g.add_argument("--no-repeat-ngram-size", type=int, help="no n-gram of this size twice in an output (0: off)")
    g.add_argument("--encoder-no-repeat-ngram-size", type=int,
                   help="no n-gram of this size from the source (against copies; 0: off)")
    g.add_argument("--max-length", type=int, help="generated tokens, the decoder start token included")
    g.add_argument("--do-sample", action=argparse.BooleanOptionalAction,
                   help="sample (with beams: beam sampling) instead of taking the most probable tokens")
    g.add_argument("--top-k", type=int, help="sample among the k most probable tokens (0: all)")
    g.add_argument("--top-p", type=float, help="sample among the most probable tokens that cover this probability")
    g.add_argument("--temperature", type=float, help="divide the scores by this before sampling")
    g.add_argument("--num-return-sequences", type=int, help="paraphrases per input (at most --num-beams)")
    return p.parse_args(argv)


def add_common_args(p: argparse.ArgumentParser, text: bool) -> None:
    p.add_argument("--model", required=True,
                   help="checkpoint folder (HF layout) written by the task's training script, or a Hub id")
    p.add_argument("--input", help="JSONL file" + (", or text with one sentence a line" if text else "")
                   + " (default: stdin)")
    p.add_argument("--output", help="JSONL file, written atomically (default: stdout)")
    if text:
        p.add_argument("--format", choices=["auto", "jsonl", "text"], default="auto",
                       help="how to read the input; auto: by the extension (.jsonl, .txt), else JSONL when the "
                            "first non-blank line starts with '{'")
    else:
        p.set_defaults(format="jsonl")
    p.add_argument("--batch-size", type=number(int, 1, True), default=32, help="inputs (SQuAD: windows) per batch")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="autocast dtype of the forward pass (default: bf16 on a GPU that has it, else fp32)")


# ----------------------------------------------------------------------------- the checkpoint

def open_checkpoint(args, task: Task) -> Path:
    """The checkpoint's folder, once it is known to be of the task's kind and to hold its head."""
    try:
        folder = resolve(args.model)
        config = read_config(folder)
    except (FileNotFoundError, ImportError) as e:
        raise UserError(str(e), "--model", fix=f"give a folder written by {task.trainer}") from None
    model_type = config.get("model_type")
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
    """generate()'s arguments: each flag given, else the checkpoint's generation config, else transformers'
    default; checked against the model's config, a bad one naming its flag."""
    flags = {name: getattr(args, name) for name in GENERATION_FLAGS}
    try:
        settings = check_generation_args(config, **flags)
    except InvalidValue as e:
        origin = "" if flags.get(e.name) is not None else f" from the generation config of {args.model}; pass {e.flag}"
        raise e.as_flag(origin) from None
    return {k: v for k, v in settings.items() if v is not None}


def max_tokens(args, flag: str, config) -> int:
    """A length flag's value, or its default: the model's positions (more is an error naming the flag)."""
    value, positions = getattr(args, flag[2:].replace("-", "_")), config.max_position_embeddings
    if value is not None and value > positions:
        raise UserError("longer than the model's positions", flag, value, f"use at most {positions}")
    return value or positions


def label_names(config, model: str) -> list[str]:
    """config.labels, checked to be unique strings, so that they key a dict."""
    names = config.labels
    if not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
        raise UserError("id2label needs a distinct name for each label", f"--model {model}: config.json", names,
                        "give each label its own name")
    return names


# ----------------------------------------------------------------------------- input and output

def read_inputs(args, task: Task) -> list[dict]:
    """The input's objects, in order; a text line becomes {field: line}. Errors name the line and the field."""
    name = args.input or "<stdin>"
    try:
        data = Path(args.input).read_bytes() if args.input else sys.stdin.buffer.read()
    except (FileNotFoundError, IsADirectoryError) as e:
        raise UserError(e.strerror, "--input", args.input, "give a JSONL or text file") from None
    text = decode_text(data, name)
    if input_format(args, text) == "text":
        field, = task.fields
        return [{field: line.removesuffix("\r")} for line in text.split("\n") if line.strip()]
    rows = read_table(name, list(task.fields), kind="jsonl", text=text)
    for row in rows:
        for field in task.fields:
            string_field(name, row, field)
    return [row.values for row in rows]


def input_format(args, text: str) -> str:
    if args.format != "auto":
        return args.format
    suffix = Path(args.input).suffix.lower() if args.input else ""
    if suffix in (".jsonl", ".txt"):
        return "jsonl" if suffix == ".jsonl" else "text"
    first = next((line for line in text.split("\n") if line.strip()), "")
    return "jsonl" if first.lstrip().startswith("{") else "text"


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def note_cut(tokenizer, texts: list[str], max_length: int, flag: str) -> None:
    cut = count_cut(tokenizer, texts, max_length)
    if cut:
        note(f"{cut} of {len(texts)} inputs are longer than {flag} {max_length} tokens and were cut to it")


# ----------------------------------------------------------------------------- the three tasks

def answer_questions(model, tok, rows: list[dict], args, length: int, **inference) -> list[dict]:
    examples = [SquadExample(str(i), r["question"], r["context"], [], [], True) for i, r in enumerate(rows)]
    answers = answer(model, tok, examples, batch_size=args.batch_size, version_2=args.version == "2.0",
                     null_threshold=args.null_threshold, max_seq_length=length, doc_stride=args.doc_stride,
                     max_query_length=MAX_QUERY_LENGTH, **inference)
    return [{"answer": a.text, "score": a.score, "start": a.start, "end": a.end} for a in answers]


def classify_sentences(model, tok, rows: list[dict], args, length: int, labels: list[str], **inference) -> list[dict]:
    sentences = [r["sentence"] for r in rows]
    note_cut(tok, sentences, length, "--max-length")
    probs = classify(model, tok, sentences, max_length=length, batch_size=args.batch_size, **inference)  # [N, L]
    return [{"label": labels[int(p.argmax())], "probabilities": dict(zip(labels, p.tolist()))} for p in probs]


def paraphrase_sources(model, tok, rows: list[dict], args, length: int, generation: dict, **inference) -> list[dict]:
    sources = [r["source"] for r in rows]
    note_cut(tok, sources, length, "--max-seq-length")
    set_seed(args.seed)
    outputs = paraphrase(model, tok, sources, max_seq_length=length, batch_size=args.batch_size, **inference,
                         **generation)
    return [{"paraphrases": out} for out in outputs]


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    task = TASKS[args.task]
    if args.output and Path(args.output).is_dir():
        raise UserError("a folder, not a file", "--output", args.output, "give the path of the JSONL file to write")
    device = pick_device(args.device)
    precision = resolve_precision(args.precision, device)
    folder = open_checkpoint(args, task)
    config = task.model_class.read_hf_config(folder)  # checked, weights not read yet
    length = max_tokens(args, task.length, config)
    if args.task == "cola":
        labels = label_names(config, args.model)
    elif args.task == "paraphrase":
        generation = generation_settings(args, config)
    try:
        tok = load_tokenizer(folder)
    except FileNotFoundError as e:
        raise UserError(f"no tokenizer ({e})", "--model", args.model, f"give a folder written by {task.trainer}, "
                        "which holds the tokenizer files") from None
    rows = read_inputs(args, task)
    model = task.model_class.from_pretrained(folder).to(device)

    inference = dict(amp_dtype=amp_dtype(precision), progress=args.input is not None)
    if args.task == "squad":
        predictions = answer_questions(model, tok, rows, args, length, **inference)
    elif args.task == "cola":
        predictions = classify_sentences(model, tok, rows, args, length, labels, **inference)
    else:
        predictions = paraphrase_sources(model, tok, rows, args, length, generation, **inference)
    replaced = [f for f in task.outputs if any(f in r for r in rows)]
    if replaced:
        many = len(replaced) > 1
        note(f"the input field{'s' * many} {', '.join(map(repr, replaced))} {'are' if many else 'is'} replaced by the "
             f"prediction's (rename {'them' if many else 'it'} in the input to keep the input's)")
    records = [{**r, **p} for r, p in zip(rows, predictions)]
    text = "".join(to_json(r) + "\n" for r in records)
    if args.output:
        write_text(args.output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return records


if __name__ == "__main__":
    run(main)
