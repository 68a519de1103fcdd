"""Fine-tune BERT for SQuAD 2.0 / 1.1 span extraction (Devlin et al. 2019, section 4.2-4.3), in
the style of Hugging Face's run_squad.py. The default is the original run: bert-base-uncased,
SQuAD 2.0, a seeded 20% of the training questions, 1 epoch, batch 16, AdamW lr 3e-5 with a linear
decay, max_seq_length 384, doc_stride 128; then the official EM/F1 on the whole dev set.

Validation: --validation-questions training questions (seeded) are held out first, and --train-fraction
samples the training questions from the rest, so no question is in both. Their SQuAD F1 (val_f1), at
each epoch end and every --eval-every steps, chooses the best checkpoint (--keep-best) and stops early
(--early-stopping-patience). The dev set is evaluated once, at the end.

Data: --data-dir with the official files (train-v2.0.json and dev-v2.0.json, or -v1.1 with --version
1.1), or --train-file and --dev-file, each the official JSON (.json) or JSONL in the flattened Hugging
Face layout (.jsonl), one question a line (both lists empty for an unanswerable question):
    {"id": ..., "title": ..., "context": ..., "question": ..., "answers": {"text": [...], "answer_start": [...]}}

    python train_squad.py                                                    # data from the Hub
    python train_squad.py --model minilm --data-dir path/to/squad --output-dir out/squad
    python train_squad.py --version 1.1 --train-file path/to/train-v1.1.json --dev-file path/to/dev-v1.1.json
    python train_squad.py --model minilm --train-file path/to/train.jsonl --dev-file path/to/dev.jsonl \\
        --eval-every 500 --keep-best --output-dir out/squad_own
"""
import argparse
import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from data.squad import (Answer, SquadExample, SquadFeature, collate, featurize, load_squad_hub, read_squad_file,
                        sample_questions, select_answers)
from data.squad_metrics import compute_exact, compute_f1, squad_evaluate
from minibert import BertForQuestionAnswering, load_tokenizer, qa_loss
from minicore.errors import UserError
from minicore.files import write_json, write_text
from minicore.validation import check_length, check_vocabulary
from minitasks.question_answering import span_logits
from minitrain.batching import batch_indices
from minitrain.cli import ArgumentParser, check_files, run
from minitrain.distributed import is_main_process, world_size
from minitrain.options import add_training_args, number
from minitrain.runs import finish_run, prepare_run, run_info, start_run
from minitrain.saving import fingerprint
from minitrain.training import Task, best_or_last, fit

EVAL_BATCH_SIZE = 64
N_BEST_SIZE = 20  # candidate starts and ends per window (run_squad.py)
MAX_ANSWER_LENGTH = 30  # tokens
FILES = {"2.0": ("train-v2.0.json", "dev-v2.0.json"), "1.1": ("train-v1.1.json", "dev-v1.1.json")}


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    add_training_args(p, evaluation=True, model="google-bert/bert-base-uncased", output_dir="out/squad", epochs=1,
                      batch_size=16, lr=3e-5, weight_decay=0.0, warmup_ratio=0.0, max_grad_norm=1.0, seed=42,
                      log_every=50)
    d = p.add_argument_group("data")
    d.add_argument("--version", choices=["2.0", "1.1"], default="2.0",
                   help="SQuAD version: 2.0 has unanswerable questions, 1.1 does not")
    d.add_argument("--data-dir", help=f"folder with the official files ({', '.join(sum(FILES.values(), ()))}); "
                                      "without it and the files below: the Hub (rajpurkar/squad_v2, rajpurkar/squad)")
    d.add_argument("--train-file", help="training questions: official SQuAD JSON (.json) or flattened JSONL (.jsonl); "
                                        "overrides --data-dir")
    d.add_argument("--dev-file", help="questions of the final evaluation, in either format; overrides --data-dir")
    d.add_argument("--validation-questions", type=number(int, 0, True), default=500,
                   help="training questions held out (seeded) for validation during training; 0 = none")
    d.add_argument("--train-fraction", type=number(float, 0, False, 1, hi_ok=True), default=0.2,
                   help="seeded fraction of the other training questions to train on")
    d.add_argument("--max-eval-examples", type=number(int, 1, True), default=None,
                   help="evaluate on a seeded sample of this many dev questions (smoke / CPU runs)")
    f = p.add_argument_group("features and answers")
    f.add_argument("--max-seq-length", type=number(int, 1, True), default=384,
                   help="input tokens per window: [CLS] question [SEP] context [SEP]")
    f.add_argument("--doc-stride", type=number(int, 1, True), default=128,
                   help="context tokens from one window's start to the next's")
    f.add_argument("--max-query-length", type=number(int, 1, True), default=64,
                   help="question tokens kept (the rest is cut)")
    f.add_argument("--null-threshold", type=number(float, -math.inf, True), default=0.0,
                   help="SQuAD 2.0: answer '' when null score > best span score + this")
    args = p.parse_args(argv)
    if args.max_seq_length <= args.max_query_length + 3:
        p.error(f"argument --max-seq-length: expected more than --max-query-length + 3 = {args.max_query_length + 3} "
                f"([CLS], [SEP], [SEP] and a context token beside the question), got {args.max_seq_length}")
    if args.validation_questions == 0:
        for flag, value in (("--keep-best", args.keep_best), ("--eval-every", args.eval_every),
                            ("--early-stopping-patience", args.early_stopping_patience)):
            if value:
                p.error(f"argument {flag}: needs validation questions, got --validation-questions 0")
    return args


def load_split(args, split: str) -> tuple[list[SquadExample], str]:
    """-> (examples, where they came from) for split "train" or "dev"."""
    flag, path = f"--{split}-file", getattr(args, f"{split}_file")
    check_files([(flag, path)], "give a SQuAD file (.json or .jsonl)")
    if path is None and args.data_dir:
        path = Path(args.data_dir) / FILES[args.version][split == "dev"]
        if not path.is_file():
            raise UserError(f"no {path.name} for SQuAD {args.version}", "--data-dir", args.data_dir,
                            f"give the folder of the official files, or pass {flag}")
    if path is None:
        hub = "rajpurkar/squad_v2" if args.version == "2.0" else "rajpurkar/squad"
        return load_squad_hub(args.version, "train" if split == "train" else "validation"), f"hub:{hub}"
    examples = read_squad_file(path)
    impossible = [e.id for e in examples if e.is_impossible]
    if args.version == "1.1" and impossible:
        raise UserError(f"--version 1.1, but {len(impossible)} questions have no answer (SQuAD 2.0 data), the first",
                        str(path), impossible[0], "pass --version 2.0")
    return examples, str(path)


def split_training(questions: list[SquadExample], args) -> tuple[list[SquadExample], list[SquadExample]]:
    """-> (training questions, validation questions): --validation-questions held out (seeded), then a
    seeded --train-fraction of the rest, each in the file's order. Without validation questions the
    training questions are those --train-fraction alone picks."""
    n = len(questions)
    if args.validation_questions >= n:
        raise UserError(f"the training data has {n} questions, none left to train on", "--validation-questions",
                        args.validation_questions, f"pass fewer than {n}")
    # a random stream of its own: with --seed's, the training sample would pick the neighbours (often
    # questions on the same paragraph) of the held-out questions
    held = set(random.Random(f"validation {args.seed}").sample(range(n), args.validation_questions))
    rest = [e for i, e in enumerate(questions) if i not in held]
    train = sample_questions(rest, args.train_fraction, args.seed)
    if not train:
        raise UserError(f"keeps none of the {len(rest)} training questions", "--train-fraction", args.train_fraction,
                        f"pass at least {1 / len(rest):.3g}")
    return train, [e for i, e in enumerate(questions) if i in held]


def evaluate(model, examples: list[SquadExample], features: list[SquadFeature], args, amp: torch.dtype | None,
             progress: bool = False) -> tuple[list[Answer], dict]:
    """-> (the model's answer to each example, the official SQuAD metrics of those answers)."""
    version_2 = args.version == "2.0"
    starts, ends = span_logits(model, features, batch_size=EVAL_BATCH_SIZE, amp_dtype=amp, progress=progress)
    answers = select_answers(examples, features, starts, ends, version_2=version_2, n_best_size=N_BEST_SIZE,
                             max_answer_length=MAX_ANSWER_LENGTH, null_threshold=args.null_threshold)
    scores = squad_evaluate({e.id: e.answer_texts for e in examples}, {e.id: a.text for e, a in zip(examples, answers)},
                            {e.id: a.null_odds for e, a in zip(examples, answers)} if version_2 else None)
    return answers, scores


def mark(context: str, spans: list[tuple[int, int, str, str]], width: int = 250) -> str:
    """A context excerpt around the spans (start, end, open, close), each wrapped in its markers;
    at equal positions the first span is the outer one."""
    lo = max(0, min((s for s, *_ in spans), default=0) - width)
    hi = min(len(context), max((e for _, e, *_ in spans), default=0) + width)
    inserts = sorted([(s, 1, i, o) for i, (s, _, o, _) in enumerate(spans)] +
                     [(e, 0, -i, c) for i, (_, e, _, c) in enumerate(spans)])
    out, pos = [], lo
    for at, _, _, text in inserts:
        out += [context[pos:at], text]
        pos = at
    out.append(context[pos:hi])
    return ("…" if lo > 0 else "") + "".join(out).replace("\n", " ") + ("…" if hi < len(context) else "")


def samples_md(examples: list[SquadExample], predictions: dict, null_odds: dict, args) -> str:
    """Five seeded dev questions, two of them unanswerable when the data has any."""
    rng = random.Random(args.seed)
    impossible = [e for e in examples if e.is_impossible]
    answerable = [e for e in examples if not e.is_impossible]
    k = min(2, len(impossible)) if args.version == "2.0" else 0
    picks = rng.sample(impossible, k) + rng.sample(answerable, min(5 - k, len(answerable)))
    lines = [f"# SQuAD {args.version} dev: 5 samples", "",
             f"Model `{args.model}` fine-tuned by train_squad.py. In the context excerpts the (first) gold "
             "answer is marked [[like this]] and the model's answer {{like this}}.", ""]
    for n, ex in enumerate(picks, 1):
        pred = predictions[ex.id]
        spans = [(s, s + len(ex.answer_texts[0]), "[[", "]]") for s in ex.answer_starts[:1]]
        near = ex.answer_starts[0] if ex.answer_starts else 0
        found = [m.start() for m in re.finditer(re.escape(pred), ex.context)] if pred else []
        if found:  # the prediction's occurrence nearest the gold answer
            at = min(found, key=lambda a: abs(a - near))
            spans.append((at, at + len(pred), "{{", "}}"))
        golds = list(dict.fromkeys(ex.answer_texts))
        em = max(compute_exact(g, pred) for g in golds or [""])
        f1 = max(compute_f1(g, pred) for g in golds or [""])
        lines += [f"## {n}. {ex.question.strip()}", "",
                  f"`{ex.id}` ({'unanswerable' if ex.is_impossible else 'answerable'})", "",
                  "> " + mark(ex.context, spans), "",
                  f"- prediction: {repr(pred) if pred else '(no answer)'}",
                  f"- gold: {' | '.join(repr(g) for g in golds) if golds else '(no answer)'}",
                  f"- EM {em}, F1 {f1:.2f}" + (f", null odds {null_odds[ex.id]:.3f}" if args.version == "2.0" else ""),
                  ""]
    return "\n".join(lines)


def load_model(args, device) -> tuple[BertForQuestionAnswering, object]:
    """-> (the model, its tokenizer), after the checks that they and --max-seq-length fit together."""
    tok = load_tokenizer(args.model)
    model = BertForQuestionAnswering.from_pretrained(args.model).to(device)
    check_length("--max-seq-length", args.max_seq_length, model.config.max_position_embeddings)
    check_vocabulary(tok.get_vocab_size(), model.config.vocab_size, args.model)
    return model, tok


@dataclass
class Data:
    """The questions of each split, where they come from, and (`featurize_data`) their features (windows)."""
    all_train: list[SquadExample]  # the training file's questions, before the validation and --train-fraction cuts
    questions: dict[str, list[SquadExample]]  # train, validation, dev
    source: dict[str, str]  # train, dev
    features: dict[str, list[SquadFeature]] | None = None
    cut: dict[str, int] | None = None  # questions cut to --max-query-length, per split
    featurize_s: float = 0.0


def load_data(args) -> Data:
    """The training questions (minus the held-out validation questions, then --train-fraction), the validation
    and the dev questions (--max-eval-examples samples them)."""
    all_train, train_source = load_split(args, "train")
    train, validation = split_training(all_train, args)
    dev, dev_source = load_split(args, "dev")
    if args.max_eval_examples is not None and args.max_eval_examples < len(dev):
        dev = sample_questions(dev, args.max_eval_examples / len(dev), args.seed)
    return Data(all_train, {"train": train, "validation": validation, "dev": dev},
                {"train": train_source, "dev": dev_source})


def featurize_data(data: Data, tok, args) -> None:
    """Each split's features, and how many of its questions were cut to --max-query-length."""
    t = time.perf_counter()
    data.features = {name: featurize(split, tok, args.max_seq_length, args.doc_stride, args.max_query_length)
                     for name, split in data.questions.items()}
    data.featurize_s = time.perf_counter() - t
    data.cut = {name: sum(len(q.ids) > args.max_query_length
                          for q in tok.encode_batch([e.question for e in split], add_special_tokens=False))
                for name, split in data.questions.items()}


def qa_task(model, data: Data, args, cfg) -> Task:
    """What fit needs: shuffled batches of training features, the span loss, the validation questions' SQuAD F1."""
    train, validation = data.features["train"], data.questions["validation"]

    def batches(epoch):
        return batch_indices(len(train), cfg.batch_size, cfg.seed, epoch)

    def collate_features(idx):
        return collate([train[i] for i in idx], model.config.pad_token_id)

    def loss_fn(m, b):
        start, end = m(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        return qa_loss(start, end, b["start_positions"], b["end_positions"]), len(b["input_ids"])

    def validate(m):
        _, scores = evaluate(m, validation, data.features["validation"], args, cfg.amp_dtype)
        return {"val_exact": round(scores["exact"], 4), "val_f1": round(scores["f1"], 4)}
    return Task(batches, collate_features, loss_fn, evaluate=validate if validation else None,
                metric="val_f1" if validation else None, unit="features", tokenizer_from=args.model,
                fingerprint=fingerprint([f.input_ids for f in train], [f.start_position for f in train],
                                        [f.end_position for f in train]))


def log_start(log, data: Data, args, cfg, steps_per_epoch: int) -> None:
    """The data, then run_squad.py's banner."""
    q, f = data.questions, data.features
    log.print(f"SQuAD {args.version}: {len(q['train'])} training questions ({100 * args.train_fraction:.3g}% of "
              f"{len(data.all_train) - len(q['validation'])}, seed {args.seed}) and {len(q['validation'])} validation "
              f"questions (held out, seeded) from {data.source['train']}; {len(q['dev'])} dev questions from "
              f"{data.source['dev']}; featurized in {data.featurize_s:.1f} s")
    if any(data.cut.values()):
        log.print(f"questions longer than --max-query-length {args.max_query_length} tokens, cut to it: "
                  f"{data.cut['train']} training, {data.cut['validation']} validation, {data.cut['dev']} dev")
    total = cfg.epochs * steps_per_epoch
    log.print("***** Running training *****")
    log.print(f"  Num examples = {len(f['train'])}")
    log.print(f"  Num Epochs = {cfg.epochs}")
    per_device = cfg.batch_size / (world_size() * cfg.grad_accum_steps)
    log.print(f"  Instantaneous batch size per device = {per_device:.3g} ({world_size()} process(es), "
              f"{cfg.device.type})")
    log.print(f"  Total train batch size (w. parallel, distributed & accumulation) = {cfg.batch_size}")
    log.print(f"  Gradient Accumulation steps = {cfg.grad_accum_steps}")
    log.print(f"  Total optimization steps = {total}"
              + (f" (stopping after {min(total, cfg.max_steps)}: --max-steps)" if cfg.max_steps else ""))
    log.print(f"  Validation = {len(q['validation'])} questions, {len(f['validation'])} features"
              if q["validation"] else "  Validation = none (--validation-questions 0)")
    log.event("train_start", questions=len(q["train"]), features=len(f["train"]),
              validation_questions=len(q["validation"]), epochs=cfg.epochs, batch_size=cfg.batch_size,
              grad_accum_steps=cfg.grad_accum_steps, world_size=world_size(), precision=cfg.precision,
              total_steps=total, device=str(cfg.device))


def dev_evaluation(model, data: Data, args, cfg, log, evaluated: str) -> tuple[dict, dict, dict, float]:
    """The final evaluation on the dev questions -> (scores, predictions, null odds, seconds), logged."""
    dev, dev_features = data.questions["dev"], data.features["dev"]
    log.print("***** Running evaluation *****")
    log.print(f"  Model = {evaluated}")
    log.print(f"  Num examples = {len(dev)} questions, {len(dev_features)} features"
              + (f" (a seeded sample: --max-eval-examples {args.max_eval_examples})" if args.max_eval_examples else ""))
    log.print(f"  Batch size = {EVAL_BATCH_SIZE}")
    t = time.perf_counter()
    answers, scores = evaluate(model, dev, dev_features, args, cfg.amp_dtype, progress=True)
    eval_s = time.perf_counter() - t
    predictions = {e.id: a.text for e, a in zip(dev, answers)}
    null_odds = {e.id: a.null_odds for e, a in zip(dev, answers)}
    if args.version == "2.0":
        scores["no_answer_baseline_f1"] = squad_evaluate({e.id: e.answer_texts for e in dev},
                                                         dict.fromkeys(predictions, ""))["f1"]
    log.event("eval", **scores, eval_time_s=round(eval_s, 2), model=evaluated)
    for k, v in scores.items():
        log.print(f"  {k} = {v:.4f}" if isinstance(v, float) else f"  {k} = {v}")
    return scores, predictions, null_odds, eval_s


def main(argv=None) -> dict:
    """Fine-tune on the training questions (validated on held-out ones), then the official metrics on the dev
    questions, predictions.json, null_odds.json (2.0), samples.md and metrics.json."""
    args = parse_args(argv)
    cfg, t0 = prepare_run(args)
    version_2 = args.version == "2.0"
    data = load_data(args)
    model, tok = load_model(args, cfg.device)
    featurize_data(data, tok, args)
    task = qa_task(model, data, args, cfg)
    log = start_run(cfg, fingerprints={".": task.fingerprint})
    log_start(log, data, args, cfg, len(task.batches(0)))
    result = fit(model, cfg, task, log)
    if not is_main_process():  # rank 0 alone evaluates and writes
        return result
    epoch_s = sum(h["epoch_time_s"] for h in result["history"])
    features_per_s = sum(h["examples_per_s"] * h["epoch_time_s"] for h in result["history"]) / max(epoch_s, 1e-9)
    # no history: a run resumed at or past --max-steps from a mid-epoch checkpoint trained nothing (it evaluates)
    loss = f", average loss = {result['history'][-1]['train_loss']:.4f}" if result["history"] else ""
    log.print(f" global_step = {result['step']}{loss}, {features_per_s:.1f} features/s")

    evaluated = best_or_last(result)
    scores, predictions, null_odds, eval_s = dev_evaluation(model, data, args, cfg, log, evaluated)
    out, q, f, dev = Path(args.output_dir), data.questions, data.features, data.questions["dev"]
    write_json(out / "predictions.json", predictions)
    if version_2:
        write_json(out / "null_odds.json", null_odds)
    write_text(out / "samples.md", samples_md(dev, predictions, null_odds, args))
    metrics = {"task": f"squad{args.version}", "model": args.model, **scores, "evaluated_model": evaluated,
               "eval_set": (f"seeded sample of {len(dev)} dev questions" if args.max_eval_examples else
                            f"full dev set ({len(dev)} questions)"),
               "data": {"train": data.source["train"], "dev": data.source["dev"],
                        "train_file_questions": len(data.all_train), "train_questions": len(q["train"]),
                        "train_features": len(f["train"]), "validation_questions": len(q["validation"]),
                        "validation_features": len(f["validation"]), "dev_questions": len(dev),
                        "dev_features": len(f["dev"]), "questions_cut": data.cut},
               "precision": cfg.precision, "n_best_size": N_BEST_SIZE, "max_answer_length": MAX_ANSWER_LENGTH,
               "eval_batch_size": EVAL_BATCH_SIZE,
               "steps": result["step"], "epochs": result["history"], "validations": result["evals"],
               "best_validation": result["best"], "stopped_early": result["stopped_early"],
               "train_time_s": round(epoch_s, 2), "features_per_s": round(features_per_s, 2),
               "featurize_time_s": round(data.featurize_s, 2), "eval_time_s": round(eval_s, 2),
               "checkpoint": result["checkpoint"],
               **run_info(args, cfg.device, None if argv is None else ["train_squad.py", *argv])}
    return finish_run(log, metrics, t0, f"predictions.json, {'null_odds.json, ' if version_2 else ''}samples.md")


if __name__ == "__main__":
    run(main)
