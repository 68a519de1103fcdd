"""Fine-tune BERT for SQuAD 2.0 / 1.1 span extraction (Devlin et al. 2019, section 4.2-4.3), in
the style of Hugging Face's run_squad.py. The default is the original run: bert-base-uncased,
SQuAD 2.0, a seeded 20% of the training questions, 1 epoch, batch 16, AdamW lr 3e-5 with a linear
decay, max_seq_length 384, doc_stride 128; then the official EM/F1 on the whole dev set.

    python train_squad.py                                                    # data from the Hub
    python train_squad.py --model minilm --data-dir ../shared/data/squad --output-dir results/squad
    python train_squad.py --version 1.1 --train-file X/train-v1.1.json --dev-file X/dev-v1.1.json
"""
import argparse
import random
import re
import time
from pathlib import Path

import torch

from data.squad import (SquadExample, collate, featurize, load_squad_hub, read_squad_file, sample_questions,
                        select_answers, span_logits)
from data.squad_metrics import compute_exact, compute_f1, squad_evaluate
from minibert import BertForQuestionAnswering, load_tokenizer, qa_loss
from minibert.cli import ArgumentParser
from minibert.training import (add_training_args, batch_indices, finish_run, fingerprint, fit,
                               is_main_process, prepare_run, run_info, start_run, world_size, write_json,
                               write_text)

EVAL_BATCH_SIZE = 64
FILES = {"2.0": ("train-v2.0.json", "dev-v2.0.json"), "1.1": ("train-v1.1.json", "dev-v1.1.json")}


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    add_training_args(p, model="bert-base-uncased", output_dir="out/squad", epochs=1, batch_size=16, lr=3e-5,
                      weight_decay=0.0, warmup_ratio=0.0, max_grad_norm=1.0, seed=42, log_every=50)
    p.add_argument("--version", choices=["2.0", "1.1"], default="2.0", help="SQuAD version")
    p.add_argument("--data-dir", help=f"folder with the official files ({', '.join(sum(FILES.values(), ()))}); "
                                      "default: the Hub (rajpurkar/squad_v2 or rajpurkar/squad)")
    p.add_argument("--train-file", help="official SQuAD JSON training file (overrides --data-dir)")
    p.add_argument("--dev-file", help="official SQuAD JSON dev file (overrides --data-dir)")
    p.add_argument("--train-fraction", type=float, default=0.2, help="seeded fraction of the training questions")
    p.add_argument("--max-eval-examples", type=int, default=None,
                   help="evaluate on a seeded sample of this many dev questions (smoke / CPU runs)")
    p.add_argument("--null-threshold", type=float, default=0.0,
                   help="SQuAD 2.0: answer '' when null score > best span score + this")
    args = p.parse_args(argv)
    if not 0 < args.train_fraction <= 1:
        p.error(f"argument --train-fraction: expected a value in (0, 1], got {args.train_fraction}")
    if args.max_eval_examples is not None and args.max_eval_examples < 1:
        p.error(f"argument --max-eval-examples: expected at least 1, got {args.max_eval_examples}")
    return args


def load_split(args, split: str) -> tuple[list[SquadExample], str]:
    """-> (examples, where they came from) for split "train" or "dev"."""
    path = args.train_file if split == "train" else args.dev_file
    if path is None and args.data_dir:
        path = Path(args.data_dir) / FILES[args.version][split == "dev"]
        if not path.exists():
            raise FileNotFoundError(f"--data-dir {args.data_dir}: no {path.name} for SQuAD {args.version} "
                                    f"(pass --{split}-file to use another file name)")
    if path is None:
        hub = "rajpurkar/squad_v2" if args.version == "2.0" else "rajpurkar/squad"
        return load_squad_hub(args.version, "train" if split == "train" else "validation"), f"hub:{hub}"
    examples = read_squad_file(path)
    if args.version == "1.1" and any(e.is_impossible for e in examples):
        raise ValueError(f"{path} has unanswerable questions: it is SQuAD 2.0, use --version 2.0")
    return examples, str(path)


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


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg, device, t0 = prepare_run(args)
    version_2 = args.version == "2.0"

    all_train, train_source = load_split(args, "train")
    train = sample_questions(all_train, args.train_fraction, args.seed)
    dev, dev_source = load_split(args, "dev")
    if args.max_eval_examples is not None and args.max_eval_examples < len(dev):
        dev = sample_questions(dev, args.max_eval_examples / len(dev), args.seed)
    tok = load_tokenizer(args.model)
    t = time.perf_counter()
    train_features = featurize(train, tok)
    dev_features = featurize(dev, tok)
    featurize_s = time.perf_counter() - t
    model = BertForQuestionAnswering.from_pretrained(args.model).to(device)
    log = start_run(cfg)
    pad_id = model.config.pad_token_id
    steps_per_epoch = -(-len(train_features) // args.batch_size)
    total_steps = min(args.epochs * steps_per_epoch, args.max_steps or args.epochs * steps_per_epoch)

    def batches(epoch):
        return batch_indices(len(train_features), args.batch_size, args.seed, epoch)

    def collate_features(idx):
        return collate([train_features[i] for i in idx], pad_id)

    def loss_fn(m, b):
        start, end = m(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        return qa_loss(start, end, b["start_positions"], b["end_positions"]), len(b["input_ids"])

    log.print(f"SQuAD {args.version}: {len(train)} of {len(all_train)} training questions "
              f"({100 * args.train_fraction:.3g}%, seed {args.seed}) from {train_source}, {len(dev)} dev questions "
              f"from {dev_source}; featurized in {featurize_s:.1f} s")
    log.print("***** Running training *****")
    log.print(f"  Num examples = {len(train_features)}")
    log.print(f"  Num Epochs = {args.epochs}")
    per_device = args.batch_size / (world_size() * args.grad_accum_steps)
    log.print(f"  Instantaneous batch size per device = {per_device:.3g} ({world_size()} process(es), {device.type})")
    log.print(f"  Total train batch size (w. parallel, distributed & accumulation) = {args.batch_size}")
    log.print(f"  Gradient Accumulation steps = {args.grad_accum_steps}")
    log.print(f"  Total optimization steps = {args.epochs * steps_per_epoch}"
              + (f" (stopping after {total_steps}: --max-steps)" if args.max_steps else ""))
    log.event("train_start", questions=len(train), features=len(train_features), epochs=args.epochs,
              batch_size=args.batch_size, grad_accum_steps=args.grad_accum_steps, world_size=world_size(),
              precision=cfg.precision, total_steps=args.epochs * steps_per_epoch, device=str(device))
    result = fit(model, cfg, batches, collate_features, loss_fn, log=log, tokenizer_from=args.model, unit="features",
                 fingerprint=fingerprint([f.input_ids for f in train_features],
                                         [f.start_position for f in train_features],
                                         [f.end_position for f in train_features]))
    if not is_main_process():  # rank 0 alone evaluates and writes
        return result
    epoch_s = sum(h["epoch_time_s"] for h in result["history"])
    features_per_s = sum(h["examples_per_s"] * h["epoch_time_s"] for h in result["history"]) / max(epoch_s, 1e-9)
    log.print(f" global_step = {result['step']}, average loss = {result['history'][-1]['train_loss']:.4f}, "
              f"{features_per_s:.1f} features/s")

    log.print("***** Running evaluation *****")
    log.print(f"  Num examples = {len(dev)} questions, {len(dev_features)} features"
              + (f" (a seeded sample: --max-eval-examples {args.max_eval_examples})" if args.max_eval_examples else ""))
    log.print(f"  Batch size = {EVAL_BATCH_SIZE}")
    t = time.perf_counter()
    starts, ends = span_logits(model, dev_features, batch_size=EVAL_BATCH_SIZE, progress=True,
                               amp_dtype=torch.bfloat16 if device.type == "cuda" else None)
    eval_s = time.perf_counter() - t
    answers = select_answers(dev, dev_features, starts, ends, version_2=version_2, null_threshold=args.null_threshold)
    predictions = {e.id: a.text for e, a in zip(dev, answers)}
    null_odds = {e.id: a.null_odds for e, a in zip(dev, answers)}
    gold = {e.id: e.answer_texts for e in dev}
    scores = squad_evaluate(gold, predictions, null_odds if version_2 else None)
    if version_2:
        scores["no_answer_baseline_f1"] = squad_evaluate(gold, dict.fromkeys(gold, ""))["f1"]
    log.event("eval", **scores, eval_time_s=round(eval_s, 2))
    for k, v in scores.items():
        log.print(f"  {k} = {v:.4f}" if isinstance(v, float) else f"  {k} = {v}")

    out = Path(args.output_dir)
    write_json(out / "predictions.json", predictions)
    if version_2:
        write_json(out / "null_odds.json", null_odds)
    write_text(out / "samples.md", samples_md(dev, predictions, null_odds, args))
    metrics = {"task": f"squad{args.version}", "model": args.model, **scores,
               "eval_set": (f"seeded sample of {len(dev)} dev questions" if args.max_eval_examples else
                            f"full dev set ({len(dev)} questions)"),
               "data": {"train": train_source, "dev": dev_source, "train_fraction": args.train_fraction,
                        "train_questions": len(train), "train_features": len(train_features),
                        "dev_questions": len(dev), "dev_features": len(dev_features)},
               "protocol": {"max_seq_length": 384, "doc_stride": 128, "max_query_length": 64, "n_best_size": 20,
                            "max_answer_length": 30, "null_threshold": args.null_threshold,
                            "batch_size": args.batch_size, "lr": args.lr, "epochs": args.epochs,
                            "weight_decay": args.weight_decay, "warmup_ratio": args.warmup_ratio,
                            "max_grad_norm": args.max_grad_norm, "seed": args.seed, "max_steps": args.max_steps,
                            "compile": args.compile, "precision": cfg.precision,
                            "grad_accum_steps": args.grad_accum_steps},
               "steps": result["step"], "epochs": result["history"], "train_time_s": round(epoch_s, 2),
               "features_per_s": round(features_per_s, 2), "featurize_time_s": round(featurize_s, 2),
               "eval_time_s": round(eval_s, 2), "checkpoint": result["checkpoint"],
               **run_info(args, device, None if argv is None else ["train_squad.py", *argv])}
    return finish_run(log, metrics, t0, f"predictions.json, {'null_odds.json, ' if version_2 else ''}samples.md")


if __name__ == "__main__":
    main()
