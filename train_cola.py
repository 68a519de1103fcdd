"""Fine-tune BERT for sentence classification: CoLA as in C. McCormick & N. Ryan, "BERT Fine-Tuning Tutorial
with PyTorch" (2019, revised 2020), or your own labeled sentences.

CoLA (the default): bert-base-uncased, 64 input tokens, batch 32, AdamW lr 2e-5 eps 1e-8, linear decay without
warmup, gradient clipping 1.0, 4 epochs, seed 42; a seeded 90/10 split of in_domain_train, whose 10% is the
validation set (the Matthews correlation at each epoch end, or every --eval-every steps); at the end the
Matthews correlation on the 516 out-of-domain sentences (the tutorial's test set) and on the 527 in-domain dev
sentences. The data come from GLUE's CoLA on the Hugging Face Hub, or from the raw cola_public files
(--data-dir).

Your own data: --train-file, and optionally --validation-file and --test-file: CSV or TSV with a header row,
or JSONL, with a text column and a label column (--text-column, --label-column). Any number of labels: the
label set is that of the training file (integers in numeric order, other names alphabetically), and the saved
checkpoints name them in config.json (id2label), for predict.py and transformers. Without --validation-file
the seeded 90/10 split of the training file validates; without --test-file there are no test metrics.
Reported: Matthews correlation (MCC) and accuracy, and macro-F1 for more than two labels.

    python train_cola.py                                                       # the tutorial, data from the Hub
    python train_cola.py --model minilm --data-dir path/to/cola_public/raw --output-dir out/cola
    python train_cola.py --model minilm --train-file path/to/train.csv --test-file path/to/test.csv \\
        --text-column text --label-column topic --keep-best --output-dir out/topics
"""
import argparse
import csv
import io
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from data.classification import classification_metrics, label_names, read_labeled
from data.cola import FILES, N_IN_DOMAIN_DEV, collate, load_hub, load_raw, train_val_split
from data.tokens import count_cut, encode
from minibert import BertForSequenceClassification, load_tokenizer, resolve
from minicore.errors import UserError
from minicore.files import write_text
from minicore.validation import check_length, check_vocabulary
from minitasks.classification import classify
from minitrain.batching import batch_indices
from minitrain.cli import ArgumentParser, check_files, run
from minitrain.distributed import is_main_process
from minitrain.options import add_training_args
from minitrain.runs import finish_run, prepare_run, run_info, start_run
from minitrain.saving import fingerprint
from minitrain.training import Task, best_or_last, fit

COLA_LABELS = ["unacceptable", "acceptable"]  # CoLA's labels 0 and 1, named as GLUE names them
VALIDATION_FRACTION = 0.1  # the tutorial's 90/10 split


@dataclass
class Split:
    name: str  # train, validation, or a test set: out_of_domain and in_domain (CoLA), test (--test-file)
    source: str  # where its sentences come from, for the log and metrics.json
    texts: list[str]
    labels: list[int]  # label ids: indices into the label names


@dataclass
class Data:
    labels: list[str]  # the label names, by id
    train: Split
    validation: Split
    tests: list[Split]  # empty without --test-file

    @property
    def splits(self) -> list[Split]:
        return [self.train, self.validation, *self.tests]


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    add_training_args(p, evaluation=True, model="google-bert/bert-base-uncased", output_dir="out/cola", epochs=4,
                      batch_size=32, lr=2e-5, weight_decay=0.0, warmup_ratio=0.0, max_grad_norm=1.0, seed=42,
                      log_every=50)
    g = p.add_argument_group("data (when neither --data-dir nor --train-file is given: GLUE's CoLA from the Hub)")
    source = g.add_mutually_exclusive_group()
    source.add_argument("--data-dir", help="folder with the raw CoLA files (cola_public/raw: "
                                           f"{', '.join(FILES.values())})")
    source.add_argument("--train-file", help="your training sentences: CSV or TSV with a header row, or JSONL; "
                                             "its labels are the model's labels")
    g.add_argument("--validation-file", help="your validation sentences, in the same layout; when not given: a "
                                             "seeded 10%% of --train-file")
    g.add_argument("--test-file", help="your test sentences, in the same layout; when not given: no test metrics")
    g.add_argument("--text-column", default="sentence", help="the column (JSONL: the key) of the sentences")
    g.add_argument("--label-column", default="label", help="the column (JSONL: the key) of the labels")
    p.add_argument("--max-seq-length", type=int, default=64,
                   help="input tokens per sentence, [CLS] and [SEP] included; longer sentences are cut (the log "
                        "counts them)")
    p.add_argument("--pad-to-max", action="store_true", help="pad every batch to --max-seq-length (the tutorial)")
    p.add_argument("--bucket", action="store_true", help="batch sentences of similar length (faster)")
    args = p.parse_args(argv)
    if args.max_seq_length < 3:
        p.error(f"argument --max-seq-length: expected at least 3 ([CLS] token [SEP]), got {args.max_seq_length}")
    for flag in ("--validation-file", "--test-file"):
        path = getattr(args, flag[2:].replace("-", "_"))
        if path and not args.train_file:
            p.error(f"argument {flag}: only with --train-file (CoLA brings its own validation and test sets)")
        if path and Path(path).resolve() == Path(args.train_file).resolve():
            p.error(f"argument {flag}: the training file itself ({path}); its metrics would not measure "
                    "anything learned: give held-out sentences, or leave it out")
    return args


# ----------------------------------------------------------------------------- data

def load_data(args) -> Data:
    """The label names and the splits: the user's files (--train-file) or CoLA (--data-dir, or the Hub)."""
    return load_files(args) if args.train_file else load_cola(args)


def load_cola(args) -> Data:
    """CoLA as the tutorial uses it: the seeded 90/10 split of in_domain_train, and two test sets."""
    if args.data_dir:
        fix = f"give the folder of the raw CoLA files, cola_public/raw ({', '.join(FILES.values())})"
        if not Path(args.data_dir).is_dir():
            raise UserError("no such folder", "--data-dir", args.data_dir, fix)
        for name in FILES.values():
            if not (Path(args.data_dir) / name).is_file():
                raise UserError(f"no {name} in the folder", "--data-dir", args.data_dir, fix)
        splits = load_raw(args.data_dir)
        where = {split: str(Path(args.data_dir) / name) for split, name in FILES.items()}
    else:
        splits = load_hub()
        hub = "hub:nyu-mll/glue cola"
        where = {"train": f"{hub} train", "in_domain_dev": f"{hub} validation, rows 1-{N_IN_DOMAIN_DEV}",
                 "out_of_domain_dev": f"{hub} validation, rows {N_IN_DOMAIN_DEV + 1}-"
                                      f"{N_IN_DOMAIN_DEV + len(splits['out_of_domain_dev'])}"}
    train, val, train_from, val_from = split_off_validation(splits["train"], where["train"], args.seed)

    def split(name, source, examples):
        return Split(name, source, [e.sentence for e in examples], [e.label for e in examples])
    return Data(COLA_LABELS, split("train", train_from, train), split("validation", val_from, val),
                [split("out_of_domain", where["out_of_domain_dev"], splits["out_of_domain_dev"]),
                 split("in_domain", where["in_domain_dev"], splits["in_domain_dev"])])


def load_files(args) -> Data:
    """The user's files: the label set is that of --train-file; a label of the validation or test file
    outside it is an error naming the file and line."""
    check_files([("--train-file", args.train_file), ("--validation-file", args.validation_file),
                 ("--test-file", args.test_file)])
    def read(path, names=None):
        try:
            return read_labeled(path, args.text_column, args.label_column, names)
        except UserError as e:
            if not str(e).startswith("missing column"):
                raise
            raise UserError(f"{e}; name the columns with --text-column and --label-column") from None
    rows = read(args.train_file)
    names = label_names(rows)
    if len(names) < 2:
        raise UserError("a classifier needs at least two labels, the training file has one",
                        f"{args.train_file}, column {args.label_column!r}", names[0],
                        "give it sentences of each label (or name the right --label-column)")
    ids = {name: i for i, name in enumerate(names)}

    def split(name, source, rows):
        return Split(name, source, [r.text for r in rows], [ids[r.label] for r in rows])
    if args.validation_file:
        train, val = rows, read(args.validation_file, names)
        train_from, val_from = args.train_file, args.validation_file
    else:
        train, val, train_from, val_from = split_off_validation(rows, args.train_file, args.seed)
    tests = [split("test", args.test_file, read(args.test_file, names))] if args.test_file else []
    return Data(names, split("train", train_from, train), split("validation", val_from, val), tests)


def split_off_validation(rows: list, source: str, seed: int) -> tuple[list, list, str, str]:
    """The tutorial's seeded 90/10 split -> (the 90%, the 10%, where each comes from); an error when it
    leaves no training sentences (a CoLA file of one row; the user's files have two labels, so two rows)."""
    train, val = train_val_split(rows, VALIDATION_FRACTION, seed)
    if not train:
        raise UserError("no training sentences left after the seeded 90/10 split for validation", source,
                        f"{len(rows)} row{'s' * (len(rows) != 1)}", "give it at least 2 rows")
    return train, val, f"{source}: 90% (seeded split, --seed {seed})", f"{source}: 10% (seeded split, --seed {seed})"


# ----------------------------------------------------------------------------- model

def load_model(args, labels: list[str], device) -> tuple[BertForSequenceClassification, object]:
    """-> (a classifier of `labels` from --model, whose config (and so every checkpoint's config.json) names
    them; its tokenizer), after the checks that the model, its tokenizer and --max-seq-length fit together."""
    config = BertForSequenceClassification.read_hf_config(resolve(args.model))
    if "BertForSequenceClassification" in config.extra.get("architectures", []) and config.num_labels != len(labels):
        raise UserError(f"the model classifies {config.num_labels} labels, the data have {len(labels)}", "--model",
                        args.model, "start from its base model, or from a classifier of as many labels")
    check_length("--max-seq-length", args.max_seq_length, config.max_position_embeddings)
    tok = load_tokenizer(args.model)
    if tok.token_to_id("[PAD]") is None:
        raise UserError("the tokenizer has no [PAD] token", "--model", args.model, "use a BERT checkpoint whose "
                        "vocabulary has [PAD]")
    check_vocabulary(tok.get_vocab_size(), config.vocab_size, args.model)
    model = BertForSequenceClassification.from_pretrained(args.model, num_labels=len(labels))
    model.config.extra["id2label"] = {str(i): name for i, name in enumerate(labels)}  # to_hf_dict adds label2id
    return model.to(device), tok


def classification_task(data: Data, train_ids: list[list[int]], tok, args, cfg) -> Task:
    """What fit needs: the epoch's batches (bucketed by length with --bucket), padded batches, the
    cross-entropy, and the validation metrics (val_mcc chooses the best)."""
    pad_id, pad_to = tok.token_to_id("[PAD]"), args.max_seq_length if args.pad_to_max else None
    lengths = [len(x) for x in train_ids] if args.bucket else None

    def batches(epoch):
        return batch_indices(len(train_ids), cfg.batch_size, cfg.seed, epoch, lengths=lengths)

    def collate_examples(idx):
        return collate([train_ids[i] for i in idx], [data.train.labels[i] for i in idx], pad_id, pad_to)

    def loss_fn(m, b):
        return F.cross_entropy(m(b["input_ids"], b["attention_mask"]), b["labels"]), len(b["labels"])

    def validate(model):
        return {f"val_{k}": v for k, v in evaluate(model, tok, data.validation, len(data.labels), args, cfg)[0].items()}
    return Task(batches, collate_examples, loss_fn, evaluate=validate, metric="val_mcc", fingerprint=fingerprint(
        train_ids, data.train.labels), tokenizer_from=args.model)


# ----------------------------------------------------------------------------- evaluation

def evaluate(model, tokenizer, split: Split, num_labels: int, args, cfg) -> tuple[dict, torch.Tensor]:
    """-> ({"loss" (mean cross-entropy), "mcc", "accuracy", and "macro_f1" past two labels}, probabilities
    [N, num_labels] on the CPU)."""
    probs = classify(model, tokenizer, split.texts, max_seq_length=args.max_seq_length, batch_size=cfg.batch_size,
                     pad_to=args.max_seq_length if args.pad_to_max else None, amp_dtype=cfg.amp_dtype)
    loss = F.nll_loss(probs.clamp_min(torch.finfo(probs.dtype).tiny).log(), torch.tensor(split.labels)).item()
    scores = {"loss": loss, **classification_metrics(split.labels, probs.argmax(-1).tolist(), num_labels)}
    return {k: round(v, 6) for k, v in scores.items()}, probs


def predictions_tsv(split: Split, pred: list[int], names: list[str]) -> str:
    """One row per sentence, in the split's order: index, gold label, predicted label (names)."""
    out = io.StringIO()
    rows = csv.writer(out, dialect="excel-tab", lineterminator="\n")  # quotes a name holding a tab
    rows.writerow(["index", "label", "prediction"])
    rows.writerows([i, names[g], names[p]] for i, (g, p) in enumerate(zip(split.labels, pred)))
    return out.getvalue()


def samples_md(split: Split, probs: torch.Tensor, names: list[str], args, evaluated: str) -> str:
    """Five seeded sentences of `split`: gold label, prediction, and the model's probability of it."""
    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")
    pred = probs.argmax(-1).tolist()
    picks = sorted(random.Random(args.seed).sample(range(len(split.texts)), min(5, len(split.texts))))
    rows = [f"| {i} | {cell(split.texts[i])} | {cell(names[split.labels[i]])} | {cell(names[pred[i]])} | "
            f"{probs[i, pred[i]].item():.3f} |" for i in picks]
    return (f"# Samples of the {split.name} set\n\nModel: `{args.model}` fine-tuned by train_cola.py, the "
            f"{evaluated}. Sentences from {split.source}; probability = the model's probability of its "
            "prediction.\n\n| row | sentence | gold | predicted | probability |\n|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


def log_data(log, data: Data, cut: dict, args) -> None:
    """The labels and each split: its size, where it comes from, how many sentences were cut."""
    log.print(f"{'CoLA' if not args.train_file else 'data'}: {len(data.labels)} labels ("
              + ", ".join(f"{i} {name!r}" for i, name in enumerate(data.labels)) + ")")
    for s in data.splits:
        log.print(f"  {s.name}: {len(s.texts)} sentences from {s.source}"
                  + (f"; {cut[s.name]} cut to --max-seq-length {args.max_seq_length} tokens" if cut[s.name] else ""))
    if not data.tests:
        log.print("  test: none (no --test-file), so no test metrics")
    log.event("data", labels=data.labels, **{s.name: {"n": len(s.texts), "source": s.source, "truncated": cut[s.name]}
                                            for s in data.splits})


def log_history(log, history: list[dict]) -> None:
    """The tutorial's table: a row per epoch."""
    log.print("\n| epoch | training loss | valid. loss | valid. accur. | valid. MCC | training time | validation time |"
              "\n|---|---|---|---|---|---|---|")
    for h in history:
        log.print(f"| {h['epoch']}{' (partial)' if h['partial'] else ''} | {h['train_loss']:.4f} | "
                  f"{h['val_loss']:.4f} | {h['val_accuracy']:.4f} | {h['val_mcc']:.4f} | {h['epoch_time_s']:.1f} s | "
                  f"{h['eval_time_s']:.1f} s |")


def test(model, tok, data: Data, args, cfg, log) -> tuple[dict, dict]:
    """Each test set's metrics (and predictions_<name>.tsv) -> ({test set: metrics}, {test set: probabilities}),
    with the validation set's probabilities when there is no test set (for samples.md)."""
    scores, probs = {}, {}
    for s in data.tests:
        scores[s.name], probs[s.name] = evaluate(model, tok, s, len(data.labels), args, cfg)
        scores[s.name]["n"] = len(s.texts)
        log.event("test", split=s.name, **scores[s.name])
        log.print(f"{s.name}: MCC {scores[s.name]['mcc']:.3f} | accuracy {scores[s.name]['accuracy']:.3f}"
                  + (f" | macro-F1 {scores[s.name]['macro_f1']:.3f}" if "macro_f1" in scores[s.name] else "")
                  + f" | {len(s.texts)} sentences")
        write_text(f"{args.output_dir}/predictions_{s.name}.tsv",
                   predictions_tsv(s, probs[s.name].argmax(-1).tolist(), data.labels))
    if not data.tests:
        probs["validation"] = evaluate(model, tok, data.validation, len(data.labels), args, cfg)[1]
    return scores, probs


def main(argv=None) -> dict:
    """Fine-tune a classifier on the training sentences, validating on the validation set during training; then
    the test sets' metrics and predictions, samples.md and metrics.json."""
    args = parse_args(argv)
    cfg, t0 = prepare_run(args)
    data = load_data(args)
    model, tok = load_model(args, data.labels, cfg.device)
    train_ids = encode(tok, data.train.texts, args.max_seq_length)
    cut = {s.name: count_cut(tok, s.texts, args.max_seq_length) for s in data.splits}
    task = classification_task(data, train_ids, tok, args, cfg)
    log = start_run(cfg, fingerprints={".": task.fingerprint})
    log_data(log, data, cut, args)
    stop = f", stopping after {cfg.max_steps} (--max-steps)" if cfg.max_steps else ""
    log.print(f"model {args.model} | {cfg.epochs} epochs x {len(task.batches(0))} steps{stop} | "
              f"batch {cfg.batch_size} | lr {cfg.lr} | {cfg.precision} | device {cfg.device} | padding "
              + (f"fixed {args.max_seq_length}" if args.pad_to_max else "dynamic"))
    result = fit(model, cfg, task, log)
    if not is_main_process():  # rank 0 alone evaluates and writes
        return result

    log_history(log, result["history"])
    evaluated = best_or_last(result)
    log.print(f"test metrics of the {evaluated}" if data.tests else "no test metrics: no --test-file")
    scores, probs = test(model, tok, data, args, cfg, log)
    shown = (data.tests or [data.validation])[0]  # the samples: of the (first) test set, else of the validation set
    write_text(f"{args.output_dir}/samples.md", samples_md(shown, probs[shown.name], data.labels, args, evaluated))
    train_s = sum(h["epoch_time_s"] for h in result["history"])  # without validation
    metrics = {"task": "classification" if args.train_file else "cola", "model": args.model, "labels": data.labels,
               "data": {s.name: s.source for s in data.splits} | ({} if data.tests else
                                                                   {"test": "none (no --test-file)"}),
               "sizes": {s.name: len(s.texts) for s in data.splits}, "truncated": cut,
               **{f"mcc_{name}": s["mcc"] for name, s in scores.items()}, "test": scores, "evaluated_model": evaluated,
               "precision": cfg.precision, "steps": result["step"], "epochs": result["history"],
               "train_time_s": round(train_s, 2), "seconds_per_step": round(train_s / max(1, result["step"]), 4),
               "checkpoint": result["checkpoint"], "validations": result["evals"], "best_validation": result["best"],
               **run_info(args, cfg.device, None if argv is None else ["train_cola.py", *argv])}
    return finish_run(log, metrics, t0, "".join(f"predictions_{s.name}.tsv, " for s in data.tests) + "samples.md")


if __name__ == "__main__":
    run(main)
